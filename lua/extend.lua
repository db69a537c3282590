-- extend.lua: set the TTL of a batch of holds to ttl from now, atomically.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, this file as the metered
-- body, meter.lua (lua/README.md).
--
-- KEYS[1]  P t     the tenant    KEYS[2]  P ev    the event stream
-- KEYS[2+i] P h:<resource> for each item i
-- ARGV[1]  n    ARGV[2]  apiKeyLabel of the caller    ARGV[3]  events retained
-- ARGV[4]  '1': all or nothing (contract section 13): if any item would fail,
--          nothing is written and the others answer ABORTED
-- then per item four values starting at ARGV[4*i+1]: resource, requester,
--   release token (16 bytes), ttl in ms
-- then, after the items, per item its warnBeforeSeconds at ARGV[4*n+4+i]
--   ('0': the hold keeps the warning it has, if any; else it replaces it):
--   the warning is re-armed for the new expiry (contract section 18,
--   holds.lua warn_file). A kept warning not below the new TTL is due at once.
--
-- Returns -1 when the tenant does not exist, {-5, item, 1, maxTtlSeconds}
-- when an item's ttl is above the tenant's maxTtlSeconds (nothing done, as
-- reserve.lua's refusals), else {rows, earliest}: one row
-- per item, {1, expiresAtMs} EXTENDED (with maxHoldSeconds: {1, expiresAtMs,
-- holdDeadline, capped}), {0} NOT_HELD, {2} INVALID_TOKEN,
-- {3} ABORTED, and
-- the second to move the tenant to in the fleet's due index (0: none). The
-- fencing token does not change.

local t = clock()
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local ats = num(now_ms)
local n = tonumber(ARGV[1])
local label = ARGV[2]
local p = string.sub(KEYS[1], 1, -2)
-- Item i's new expiry warning in seconds (0: keep the hold's).
local function warn_of(i)
  return tonumber(ARGV[4 * n + 4 + i] or '0')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
-- The tenant's lease policy (holds.lua): a ttl above maxTtlSeconds refuses
-- the request before anything is done.
policy_load(p)
if pol.mt > 0 then
  for i = 1, n do
    if tonumber(ARGV[4 * i + 4]) > pol.mt then
      return {-5, i, 1, pol.mt / 1000}
    end
  end
end

-- The new expiry of hold `x` for `ttl` from now, and its row: maxHoldSeconds
-- never lets it pass reservedAt + maxHoldSeconds (capped; a hold already past
-- that deadline, made before the policy, expires now).
local function extended(x, ttl)
  local ea = now_ms + ttl
  if pol.mh == 0 then
    return ea, {1, ea}
  end
  local deadline = x.at + pol.mh
  local capped = ea > deadline
  if capped then
    ea = math.max(deadline, now_ms)
  end
  return ea, {1, ea, deadline, capped and 1 or 0}
end

-- The live hold of record `h` that item i names (by requester and release
-- token), or the item's answer: {0} NOT_HELD (no live holder), {2}
-- INVALID_TOKEN. Extending never changes another item's answer.
local function find(i, h)
  local rq, tok = ARGV[4 * i + 2], ARGV[4 * i + 3]
  if h and h.grp then
    local x = grp_by_token(h, tok)
    if hold_live(x, now_ms) and x.rq == rq then
      return x, nil
    end
    return nil, grp_count(h, now_ms) > 0 and {2} or {0}
  end
  if not hold_live(h, now_ms) then
    return nil, {0}
  elseif h.rq == rq and h.tok == tok then
    return h, nil
  end
  return nil, {2}
end

if ARGV[4] == '1' then
  local rows, failed = {}, false
  for i = 1, n do
    local _, row = find(i, rec_load(p, ARGV[4 * i + 1]))
    rows[i] = row
    failed = failed or row ~= nil
  end
  if failed then
    idem_keep = {all_or_nothing(rows, n, {3}), 0}
    return idem_keep
  end
end
ev_open(KEYS[2], ARGV[3])

local out = {}
for i = 1, n do
  local key = KEYS[2 + i]
  local a = 4 * i + 1
  local res, rq, ttl = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 3])
  local h = rec_load(p, res)
  local x, failed = find(i, h)
  if failed then
    out[i] = failed
  elseif h.grp then
    local kc = h.kc
    local m = member_of(res, x, true)
    bucket_rem(p, m, x)
    local row
    x.ea, row = extended(x, ttl)
    x.k = bucket_slot(p, x.ea, n - i + 1)
    bucket_file(p, m, x.k, x.rq, x.lb, x.ea, x.ft, kc)
    -- The warning (bucket_rem took the old one) re-armed for the new expiry.
    if warn_of(i) > 0 then
      x.w = warn_of(i)
    end
    warn_slot(p, x, n - i + 1)
    warn_file(p, m, x)
    grp_put(h, x)
    ev_emit('EXTENDED', res, rq, label, ats, num(x.ea), num(x.ft), kc)
    out[i] = row
  else
    bucket_rem(p, res, h)
    local row
    h.ea, row = extended(h, ttl)
    bucket_add(p, res, h, n - i + 1)
    if warn_of(i) > 0 then
      h.w = warn_of(i)
    end
    warn_slot(p, h, n - i + 1)
    warn_file(p, res, h)
    redis.call('SET', key, hold_encode(h), 'PXAT', num(h.ea + GRACE_MS))
    ev_emit('EXTENDED', res, rq, label, ats, num(h.ea), num(h.ft))
    out[i] = row
  end
end
bucket_flush()
local earliest = due_close(p)
ev_close()
idem_keep = {out, 0}
return {out, earliest}
