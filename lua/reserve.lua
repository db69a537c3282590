-- reserve.lua: reserve a batch of resources for one tenant, atomically, in order.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, waits.lua, idem.lua,
-- then this file as the body that meter.lua (appended) runs when the rate
-- limit allows (lua/README.md).
--
-- KEYS[1]  P t     the tenant (must exist: a deleted tenant gets nothing)
-- KEYS[2]  P ev    the tenant's event stream (and channel name)
-- KEYS[2+i] P h:<resource> for each item i (i = 1..n)
-- ARGV[1]  apiKeyLabel of the caller    ARGV[2]  n, the number of items
-- ARGV[3]  events retained per tenant
-- ARGV[4]  most holds the tenant may have ("0": no limit; the public locklock
--          tenant has one)
-- ARGV[5]  most holds the first item's requester may have ("0": no limit; a
--          public lock's requester is the client's address)
-- ARGV[6]  '' for Reservation API holds, or 'L' + the hash of its secret for a
--          locklock lock (one item)
-- ARGV[7]  '1': all or nothing (contract section 13): if any item would get
--          ALREADY_HELD, nothing is written and the others answer ABORTED
-- ARGV[8]  how long to wait in ms ('0': no wait; contract section 12): when
--          some item cannot be granted now, the request joins the line of
--          every item (waits.lua) and answers QUEUED
-- ARGV[9]  the waiter's id    ARGV[10] most waiters the tenant may have
-- then per item five values starting at ARGV[5*i+6]: resource, requester, ttl
--   in ms ("0" for none; negative: a locklock default, lowered to the
--   tenant's maxTtlSeconds), the release token to hand out (16 bytes), and the
--   kind code ('' exclusive, 's' shared, a semaphore's limit; holds.lua)
-- then, after the items, per item its warnBeforeSeconds at ARGV[5*n+10+i]
--   ('0': no expiry warning; else at least 1 and below the TTL, contract
--   section 18): the hold gets a warning entry, EXPIRING (holds.lua warn_file)
-- No barging: an item whose resource has a line answers ALREADY_HELD (with
-- the line's length), even when the resource is free. An item whose resource
-- has holders of another kind answers LIMIT_MISMATCH (before the line is looked
-- at; it never waits); so does a locklock lock (ARGV[6] not '') on shared or
-- semaphore holders (contract section 15, docs/design/kinds.md).
--
-- The tenant's lease policy (contract section 17; holds.lua policy_load)
-- refuses a request before anything is done: {-5, item, why, limit}, why 1 a
-- ttl above maxTtlSeconds (limit), 2 no ttl under requireTtl, 3 a wait above
-- maxWaitSeconds (item 0); nothing is recorded for an Idempotency-Key.
-- Returns -1 when the tenant does not exist, -2 when it holds its most
-- already, -3 when the requester does, -4 when the tenant has its most
-- waiters, else {rows, earliest}: one row per item, in order,
--   {1, reservedAtMs, expiresAtMs or -1, fencingToken, releaseToken}   RESERVED
--     (with maxHoldSeconds: {..., -1, holdDeadline, capped}; holds.lua granted)
--   {0, heldBy or '', expiresAtMs or -1, queueLength, holders, available or -1}
--                                                        ALREADY_HELD (the
--                                                        oldest holder's)
--   {3}                                                  ABORTED (all or nothing)
--   {4, placeInLine, heldBy or '', expiresAtMs or -1}    QUEUED (waiting)
--   {5, the holders' kind code}                          LIMIT_MISMATCH
--   {6, availableAtMs}                                   LOCK_DELAY
-- and `earliest`, a second to move the tenant to in the fleet's due index (0:
-- no change; see holds.lua due_close).
-- A hold whose expiresAt has passed counts as free. If its EXPIRED is still
-- due (the sweeper has not run yet) it is announced here, before the RESERVED.

local t = clock()
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local ats = num(now_ms)
local label = ARGV[1]
local n = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
local ll = ARGV[6]
local p = string.sub(KEYS[1], 1, -2)
-- Item i's expiry warning in seconds (0: none), from the list after the items.
local function warn_of(i, ttl)
  local w = tonumber(ARGV[5 * n + 10 + i] or '0')
  return ttl > 0 and w or 0
end

local tenant = redis.call('HMGET', KEYS[1], 'tier', 'hw', 'n', unpack(POLICY_FIELDS))
if not tenant[1] then
  return -1
end
-- The tenant's lease policy (holds.lua policy_load): refusals first, before
-- anything is written or counted.
policy_load(p, {tenant[4], tenant[5], tenant[6], tenant[7], tenant[8]})
local wait_ms = tonumber(ARGV[8])
if wait_ms > pol.mw then
  return {-5, 0, 3, pol.mw / 1000}
end
-- Each item's TTL in ms (0: none) after the policy, and whether maxHoldSeconds
-- capped it.
local ttls, capped = {}, {}
for i = 1, n do
  local ttl = tonumber(ARGV[5 * i + 8])
  if ttl < 0 then
    -- A locklock lock without expires_in: its default, lowered to maxTtlSeconds.
    ttl = -ttl
    if pol.mt > 0 and ttl > pol.mt then
      ttl = pol.mt
    end
  end
  if pol.mt > 0 and ttl > pol.mt then
    return {-5, i, 1, pol.mt / 1000}
  elseif pol.rt and ttl == 0 then
    return {-5, i, 2, 0}
  end
  ttls[i], capped[i] = hold_clamp(ttl)
end
local hw = tonumber(tenant[2] or '0')
local held = tonumber(tenant[3] or '0')
if cap > 0 and held + n > cap then
  return -2
end
local per_rq = tonumber(ARGV[5])
if per_rq > 0 then
  -- Counted from the requester index (holds past their time are retired
  -- within a second or two): O(log N + the limit).
  local rq = ARGV[12]
  if #pg_range(p .. 'q', '[' .. rq .. '\0', '(' .. rq .. '\1', per_rq) >= per_rq then
    return -3
  end
end

-- Whether the tenant has any line at all: if not, no item needs to look.
local lines = redis.call('ZCARD', p .. 'wn') > 0
local is_lock = ll ~= ''

-- What an item of kind `kc` answers on a resource whose state is `st`
-- ({hk, n, o, qlen, g}: the holders' kind, how many, the oldest (found when
-- needed, for a group `g`), the line's length); nil when it can be granted now.
local function verdict(st, kc)
  if st.n > 0 and ((is_lock and st.hk ~= '') or join(st.hk, st.n, kc) == 'mismatch') then
    return {5, st.hk}
  end
  if st.delay and join(st.hk, st.n, kc) ~= 'held' then
    return {6, st.delay}
  end
  local why = st.qlen > 0 or join(st.hk, st.n, kc) == 'held'
  if not why then
    return nil
  end
  if st.n > 0 and not st.o and st.g then
    st.o = grp_oldest(p, st.g, now_ms)
  end
  return held_row(st.hk, st.n, st.o, st.qlen)
end

-- The state of resource `res` whose record is `h` (rec_load); `qlen`, the
-- length of its line when the caller knows it.
local function state_of(res, h, qlen)
  local st = {qlen = qlen or (lines and wl_length(p, res) or 0), n = 0}
  if pol.ld > 0 then
    st.delay = delay_until(p, res, h, now_ms)
  end
  if h and h.grp then
    st.g = h
    st.n = grp_count(h, now_ms)
    st.hk = st.n > 0 and h.kc or nil
  elseif hold_live(h, now_ms) then
    st.hk, st.n, st.o = '', 1, h
  end
  return st
end

-- All or nothing, and waiting: the batch as it would go, read only (each
-- item sees what the earlier ones would leave). A batch that cannot go now
-- aborts, or, when it may wait and no item mismatches (nor its own earlier
-- items), joins the lines.
if ARGV[7] == '1' or wait_ms > 0 then
  local rows, sims, failed, mismatch = {}, {}, false, false
  -- What the batch's own items take of each resource: an item that cannot
  -- join them (an exclusive resource named twice, more permits than the
  -- semaphore has) can never be granted, so the batch does not wait.
  local own = {}
  for i = 1, n do
    local a = 5 * i + 6
    local res, kc = ARGV[a], ARGV[a + 4]
    local o = own[res] or {n = 0}
    own[res] = o
    if join(o.hk, o.n, kc) ~= 'ok' then
      mismatch = true
    end
    o.hk, o.n = kc, o.n + 1
    local st = sims[res]
    if not st then
      st = state_of(res, rec_load(p, res))
      sims[res] = st
    end
    rows[i] = verdict(st, kc)
    if rows[i] then
      failed = true
      mismatch = mismatch or rows[i][1] == 5
    else
      if st.n == 0 then
        local ttl = ttls[i]
        st.o = {rq = ARGV[a + 1], ea = ttl > 0 and now_ms + ttl or 0}
      end
      st.hk, st.n = kc, st.n + 1
    end
  end
  if failed and wait_ms > 0 and not mismatch then
    if wl_count(p, now_ms) >= tonumber(ARGV[10]) then
      return -4
    end
    local items = {}
    for i = 1, n do
      local a = 5 * i + 6
      items[i] = {ARGV[a], ARGV[a + 1], ttls[i], ARGV[a + 3], ARGV[a + 4]}
      -- A waiter's item keeps its warning (6th, only when it has one): armed
      -- when the hand-over grants it.
      local w = warn_of(i, items[i][3])
      if w > 0 then
        items[i][6] = w
      end
    end
    local ik = idem_pending(now_us, now_ms + wait_ms)
    local places = wl_enter(p, ARGV[9], label, ll, ik, items, now_ms, now_ms + wait_ms)
    for i = 1, n do
      local r = rows[i]
      if not r or r[1] ~= 0 then
        r = {0, '', -1}
      end
      rows[i] = {4, places[i], r[2], r[3]}
    end
    return {rows, 0}
  elseif failed then
    idem_keep = {all_or_nothing(rows, n, {3}), 0}
    return idem_keep
  end
end
ev_open(KEYS[2], ARGV[3])

local out = {}
-- The items of a batch mostly share one TTL: their expiry's strings are made once.
local last_ea, eas, pxat = nil, '', ''
for i = 1, n do
  local key = KEYS[2 + i]
  pg_more = n - i
  local a = 5 * i + 6
  local res, rq, ttl, tok, kc = ARGV[a], ARGV[a + 1], ttls[i], ARGV[a + 3], ARGV[a + 4]
  local w = warn_of(i, ttl)
  local qlen = lines and wl_length(p, res) or 0
  -- In its lock delay (only a tenant with lockDelaySeconds looks).
  local delayed = nil
  if kc == '' and qlen == 0 and pol.ld > 0 then
    delayed = delay_until(p, res, rec_load(p, res), now_ms)
  end
  if kc ~= '' then
    -- A shared hold or a permit: joins the group, if it may.
    local h = rec_load(p, res)
    local row = verdict(state_of(res, h, qlen), kc)
    if row then
      out[i] = row
    else
      local gone = retire_lapsed(p, res, h, now_ms, ats)
      local ea = ttl > 0 and now_ms + ttl or 0
      local ft = math.max(hw + 1, now_us)
      hw = ft
      group_grant(p, group_for(p, res, h, kc),
        {tok = tok, rq = rq, lb = label, at = now_ms, ea = ea, ft = ft, ll = ll, w = w}, n - i + 1, ats)
      held = held + 1 - gone
      out[i] = granted(now_ms, ea, ft, tok, nil, capped[i])
    end
  elseif qlen > 0 then
    -- No barging: the line comes first, even for a free resource.
    out[i] = verdict(state_of(res, rec_load(p, res), qlen), kc)
  elseif delayed then
    out[i] = {6, delayed}
  else
    local ea = 0
    if ttl > 0 then
      ea = now_ms + ttl
      if ea ~= last_ea then
        last_ea, eas, pxat = ea, num(ea), num(ea + GRACE_MS)
      end
    end
    local ft = math.max(hw + 1, now_us)
    local k = 0
    if ttl > 0 then
      k = bucket_slot(p, ea, n - i + 1)
    end
    -- Most names are free: write the hold unless one is there (SET NX GET,
    -- one call); only when one is there, look at it. (The record of
    -- hold_encode, packed here without the intermediate table.) A shared or
    -- semaphore resource has its group (P g:) instead.
    local set = {'SET', key, cmsgpack.pack({tok, rq, label, now_ms, ea, ft, k, ll}), 'NX', 'GET'}
    -- With an expiry warning: its slot, and the record's two more elements.
    local wh = {ea = ea, ft = ft, k = k, w = w}
    if w > 0 then
      warn_slot(p, wh, n - i + 1)
      set[3] = cmsgpack.pack({tok, rq, label, now_ms, ea, ft, k, ll, w, wh.wk})
    end
    if ttl > 0 then
      set[6] = 'PXAT'
      set[7] = pxat
    end
    local old
    if redis.call('EXISTS', p .. 'g:' .. res) == 1 then
      old = rec_load(p, res)
    else
      old = redis.call(unpack(set))
      old = old and hold_decode(old)
    end
    local row = nil
    if old then
      row = verdict(state_of(res, old, 0), kc)
    end
    if row then
      out[i] = row
    else
      held = held + take_over(p, res, old, rq, now_ms, ats)
      if old then
        -- What was there passed its time (its EXPIRED is announced): the
        -- new hold is written over it, or where its group was.
        local write = {'SET', key, set[3]}
        if ttl > 0 then
          write[4] = 'PXAT'
          write[5] = pxat
        end
        redis.call(unpack(write))
      end
      hw = ft
      if ttl > 0 then
        bucket_file(p, res, k, rq, label, ea, ft)
        warn_file(p, res, wh)
      end
      ev_emit('RESERVED', res, rq, label, ats, ttl > 0 and eas or '', num(ft))
      out[i] = granted(now_ms, ea, ft, tok, nil, capped[i])
    end
  end
end
redis.call('HSET', KEYS[1], 'hw', num(hw), 'n', num(held))
bucket_flush()
local earliest = due_close(p)
ev_close()
idem_keep = {out, 0}
return {out, earliest}
