-- waits.lua: a prelude (see lua/README.md) — the lines of waiting requests
-- (contract section 12) and the hand-over that grants a freed resource to the
-- head of its line in the same atomic step as the release. Needs events.lua,
-- pages.lua and holds.lua before it. Design: docs/design/waiting.md.
--
-- Keys of a tenant (P its prefix):
--   P w:<resource>  zset waiter id -> ticket: the resource's line, in ticket
--                   order (one ticket counter per tenant, `wt` in P t, so all
--                   lines order waiters alike and multi-item waits cannot
--                   deadlock)
--   P W:<waiter>    string, the waiter: a MessagePack map
--                   {lb = label, ll = locklock mark (as holds.lua's),
--                    tk = ticket, hb = heartbeat deadline ms, en = entered ms,
--                    it = {{resource, requester, ttl ms, release token,
--                           kind code (holds.lua)[, warnBeforeSeconds]}...},
--                    (the 6th only for an item with an expiry warning,
--                    armed by the grant: holds.lua warn_file)
--                    st = 0 waiting / 1 granted, rows = the grant's rows,
--                    ik = {record key, fingerprint, retention ms} of its
--                    Idempotency-Key, when it has one (idem.lua)}
--   P wn            zset waiter id -> heartbeat deadline: the tenant's waiters
-- A grant is announced on `c:grants` as "<tenant id> <waiter id>".

-- Every EXPIRED and FORCE_RELEASED starts the resource's lock delay
-- (holds.lua delay_after; events.lua ev_on_end).
ev_on_end = function(res, end_ms, now_ms)
  delay_after(string.sub(ev_key, 1, -3), res, end_ms or now_ms, now_ms)
end

local WL_CHANNEL = 'c:grants'
-- A waiter's record outlives its wait by this much (its instance collects a
-- grant made at the last moment).
local WL_KEEP_MS = 60000
-- A waiter whose instance has not polled for this long is skipped.
local WL_HEARTBEAT_MS = 15000

-- Contention counters (the dashboard's most contended resources):
--   P cw  zset resource -> requests that joined its line
--   P co  zset resource -> waits in its line that ended without a grant
--         (timed out; not a client that went away)
-- Each keeps the CONTENTION_MAX resources with the highest counts (the lowest
-- goes when a new one comes) and goes an hour after its last change, so it
-- stays small and tells of recent contention.
local CONTENTION_MAX = 1000
local CONTENTION_KEEP_MS = 3600000
local function contention_count(p, which, res)
  local key = p .. which
  redis.call('ZINCRBY', key, 1, res)
  if redis.call('ZCARD', key) > CONTENTION_MAX then
    redis.call('ZREMRANGEBYRANK', key, 0, 0)
  end
  redis.call('PEXPIRE', key, CONTENTION_KEEP_MS)
end

local function wl_line(p, res)
  return p .. 'w:' .. res
end

-- How many wait in the line of `res`.
local function wl_length(p, res)
  return redis.call('ZCARD', wl_line(p, res))
end

local function wl_get(p, wid)
  local raw = redis.call('GET', p .. 'W:' .. wid)
  return raw and cmsgpack.unpack(raw)
end

local function wl_put(p, wid, w, until_ms)
  redis.call('SET', p .. 'W:' .. wid, cmsgpack.pack(w), 'PXAT', num(until_ms + WL_KEEP_MS))
end

-- A wait that ended without a grant: its Idempotency-Key record, still
-- pending, goes (a retry executes again).
local function wl_unpend(w)
  if not w.ik then
    return
  end
  local raw = redis.call('GET', w.ik[1])
  if raw and cmsgpack.unpack(raw)[2] == false then
    redis.call('DEL', w.ik[1])
  end
end

-- Takes a waiter out of every line and out of the tenant's waiters.
local function wl_forget(p, wid, w)
  for _, it in ipairs(w.it) do
    redis.call('ZREM', wl_line(p, it[1]), wid)
  end
  redis.call('ZREM', p .. 'wn', wid)
end

-- The waiters this script granted, announced by wl_close.
local wl_granted = {}

-- Grants waiter `w` every item, if it heads the line of each and each can
-- join its resource's holders (a hold past its time counts as free and is
-- retired here, EXPIRED first; docs/design/kinds.md for the kinds).
-- The grant is the grant of reserve.lua: the hold, its indexes, its expiry
-- bucket, a fencing token above the tenant's mark, RESERVED; its rows add
-- how long the waiter waited (ms). The tenant's lease policy applies (holds.lua):
-- no grant during a lock delay, the TTL capped at maxHoldSeconds.
local function wl_try(p, wid, w, now_ms, now_us, ats)
  policy_load(p)
  local sims = {}
  for _, it in ipairs(w.it) do
    local res, kc = it[1], it[5] or ''
    local head = redis.call('ZRANGE', wl_line(p, res), 0, 0)
    if head[1] ~= wid then
      return false
    end
    local st = sims[res]
    if not st then
      local h = rec_load(p, res)
      -- In its lock delay: the waiter keeps its place (holds.lua).
      if delay_until(p, res, h, now_ms) then
        return false
      end
      if h and h.grp then
        st = {n = grp_count(h, now_ms)}
        st.hk = st.n > 0 and h.kc or nil
      elseif hold_live(h, now_ms) then
        st = {hk = '', n = 1}
      else
        st = {n = 0}
      end
      sims[res] = st
    end
    if join(st.hk, st.n, kc) ~= 'ok' then
      return false
    end
    st.hk, st.n = kc, st.n + 1
  end
  local tn = redis.call('HMGET', p .. 't', 'hw', 'n', 'id')
  local hw, held = tonumber(tn[1] or '0'), tonumber(tn[2] or '0')
  local lb = w.lb
  local rows = {}
  for i, it in ipairs(w.it) do
    local res, rq, ttl, tok, kc = it[1], it[2], it[3], it[4], it[5] or ''
    -- The item's expiry warning (0: none); `w` is the waiter.
    local iw = it[6] or 0
    local key = p .. 'h:' .. res
    local old = rec_load(p, res)
    local ft = math.max(hw + 1, now_us)
    hw = ft
    local capped
    ttl, capped = hold_clamp(ttl)
    local ea = now_ms + ttl
    if kc ~= '' then
      local gone = retire_lapsed(p, res, old, now_ms, ats)
      group_grant(p, group_for(p, res, old, kc),
        {tok = tok, rq = rq, lb = lb, at = now_ms, ea = ea, ft = ft, ll = w.ll or '', w = iw}, 1, ats)
      held = held + 1 - gone
    else
      held = held + take_over(p, res, old, rq, now_ms, ats)
      local k = bucket_slot(p, ea, 1)
      local rec = {tok, rq, lb, now_ms, ea, ft, k, w.ll or ''}
      local wh = {ea = ea, ft = ft, k = k, w = iw}
      if iw > 0 then
        warn_slot(p, wh, 1)
        rec[9], rec[10] = iw, wh.wk
      end
      redis.call('SET', key, cmsgpack.pack(rec), 'PXAT', num(ea + GRACE_MS))
      bucket_file(p, res, k, rq, lb, ea, ft)
      warn_file(p, res, wh)
      ev_emit('RESERVED', res, rq, lb, ats, num(ea), num(ft))
    end
    rows[i] = granted(now_ms, ea, ft, tok, now_ms - (w.en or now_ms), capped)
  end
  redis.call('HSET', p .. 't', 'hw', num(hw), 'n', num(held))
  wl_forget(p, wid, w)
  if w.ik then
    -- The request's Idempotency-Key answers with the grant from now on.
    redis.call('SET', w.ik[1], cmsgpack.pack({w.ik[2], {rows, 0}}), 'PX', w.ik[3])
  end
  w.st = 1
  w.rows = rows
  wl_put(p, wid, w, now_ms)
  wl_granted[#wl_granted + 1] = (tn[3] or '') .. ' ' .. wid
  return true
end

-- Hands the resource `res` to the head of its line when it can be granted,
-- and on to the next head while they can join (consecutive shared heads,
-- semaphore heads while permits last); a granted waiter's other lines of
-- shared or semaphore items get a hand-over of their own (their next head may
-- join it now). Heads whose heartbeat is stale (their instance died) or whose
-- record is gone are dropped on the way, from every line, and the lines they
-- leave get a hand-over of their own.
local function wl_handover(p, res, now_ms, now_us, ats, depth)
  depth = depth or 0
  local line = wl_line(p, res)
  while true do
    local head = redis.call('ZRANGE', line, 0, 0)[1]
    if not head then
      return
    end
    local w = wl_get(p, head)
    if w and w.st == 0 and w.hb >= now_ms then
      if not wl_try(p, head, w, now_ms, now_us, ats) then
        return
      end
      local multi = false
      for _, it in ipairs(w.it) do
        local kc = it[5] or ''
        if kc ~= '' then
          if it[1] == res then
            multi = true
          elseif depth < 2 then
            wl_handover(p, it[1], now_ms, now_us, ats, depth + 1)
          end
        end
      end
      if not multi then
        return
      end
    elseif w and w.st == 0 then
      wl_forget(p, head, w)
      wl_unpend(w)
      redis.call('DEL', p .. 'W:' .. head)
      if depth < 2 then
        for _, it in ipairs(w.it) do
          if it[1] ~= res then
            wl_handover(p, it[1], now_ms, now_us, ats, depth + 1)
          end
        end
      end
    else
      redis.call('ZREM', line, head)
    end
  end
end

-- Announces this script's grants (after ev_close, so their RESERVED events are
-- in the stream before a waiter learns of its grant).
local function wl_close()
  for _, msg in ipairs(wl_granted) do
    redis.call('PUBLISH', WL_CHANNEL, msg)
  end
end

-- How many live waiters the tenant has (stale ones are forgotten here; the
-- lines drop them at their next hand-over).
local function wl_count(p, now_ms)
  redis.call('ZREMRANGEBYSCORE', p .. 'wn', '-inf', '(' .. num(now_ms))
  return redis.call('ZCARD', p .. 'wn')
end

-- Puts waiter `wid` in the line of each of `items` ({resource, requester, ttl
-- ms, release token, kind code}) with a new ticket, until `until_ms` at the latest, and
-- answers its place (1-based) in each line. `ll`: the locklock mark its holds
-- get ('' for Reservation API holds).
local function wl_enter(p, wid, lb, ll, ik, items, now_ms, until_ms)
  local tk = redis.call('HINCRBY', p .. 't', 'wt', 1)
  local hb = now_ms + WL_HEARTBEAT_MS
  local places = {}
  for i, it in ipairs(items) do
    local line = wl_line(p, it[1])
    redis.call('ZADD', line, tk, wid)
    places[i] = redis.call('ZRANK', line, wid) + 1
    contention_count(p, 'cw', it[1])
  end
  redis.call('ZADD', p .. 'wn', hb, wid)
  wl_put(p, wid, {lb = lb, ll = ll, ik = ik, tk = tk, hb = hb, en = now_ms, it = items, st = 0, rows = {}}, until_ms)
  return places
end
