-- unreserve.lua: release a batch of holds of one tenant, atomically, in order.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, waits.lua, idem.lua,
-- this file as the metered body, meter.lua (lua/README.md).
--
-- KEYS[1]  P t     the tenant    KEYS[2]  P ev    the event stream
-- KEYS[2+i] P h:<resource> for each item i
-- ARGV[1]  n    ARGV[2]  apiKeyLabel of the caller    ARGV[3]  events retained
-- ARGV[4]  '1': all or nothing (contract section 13): if any item would fail,
--          nothing is written and the others answer ABORTED
-- then per item three values starting at ARGV[3*i+2]: resource, requester,
--   release token (16 bytes; anything else never matches)
--
-- Returns -1 when the tenant does not exist, else {codes, earliest}: one
-- integer per item, 1 UNRESERVED, 0 NOT_HELD, 2 INVALID_TOKEN, 3 ABORTED, and
-- the second to move the tenant to in the fleet's due index (0: none) when a
-- hand-over granted a waiter.

local t = clock()
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local ats = num(now_ms)
local n = tonumber(ARGV[1])
local label = ARGV[2]
local p = string.sub(KEYS[1], 1, -2)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end

-- The live hold of record `h` that item i names (by requester and release
-- token), with the code of the item's answer when there is none: 0 NOT_HELD
-- (no live holder left, `gone`: holds an earlier item released), 2
-- INVALID_TOKEN.
local function find(i, h, gone)
  local rq, tok = ARGV[3 * i + 3], ARGV[3 * i + 4]
  gone = gone or {}
  if h and h.grp then
    local x = grp_by_token(h, tok)
    if hold_live(x, now_ms) and x.rq == rq and not gone[x.ft] then
      return x, nil
    end
    local left = grp_count(h, now_ms)
    for _ in pairs(gone) do
      left = left - 1
    end
    return nil, left > 0 and 2 or 0
  end
  if not hold_live(h, now_ms) or gone[h.ft] then
    return nil, 0
  elseif h.rq == rq and h.tok == tok then
    return h, nil
  end
  return nil, 2
end

-- All or nothing: the batch as it would go, read only (a hold released by an
-- earlier item of the batch is no longer there for a later one).
if ARGV[4] == '1' then
  local rows, gone_now, failed = {}, {}, false
  for i = 1, n do
    local res = ARGV[3 * i + 2]
    gone_now[res] = gone_now[res] or {}
    local x, code = find(i, rec_load(p, res), gone_now[res])
    if x then
      gone_now[res][x.ft] = true
    end
    rows[i] = code
    failed = failed or code ~= nil
  end
  if failed then
    idem_keep = {all_or_nothing(rows, n, 3), 0}
    return idem_keep
  end
end
ev_open(KEYS[2], ARGV[3])

local out = {}
local gone = 0
for i = 1, n do
  local key = KEYS[2 + i]
  pg_more = n - i
  local a = 3 * i + 2
  local res, rq = ARGV[a], ARGV[a + 1]
  local h = rec_load(p, res)
  local x, failed = find(i, h, nil)
  if failed then
    out[i] = failed
  else
    -- (Of a group only this hold goes; others past their time keep their
    -- EXPIRED for the sweeper.)
    drop_hold(p, key, res, h, x, 'UNRESERVED', label, ats)
    gone = gone + 1
    -- The head of the resource's line gets it, in this step.
    wl_handover(p, res, now_ms, now_us, ats)
    out[i] = 1
  end
end
if gone > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -gone)
end
bucket_flush()
local earliest = due_close(p)
ev_close()
wl_close()
idem_keep = {out, 0}
return {out, earliest}
