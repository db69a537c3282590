-- check.lua: read the state of a batch of resources (read-only).
-- Composed as: clock.lua, pages.lua, holds.lua, this file as the metered body, meter.lua
-- (lua/README.md).
--
-- KEYS[i]  P h:<resource> for each item i
--
-- Returns one array per item: {1, requester, reservedAtMs, expiresAtMs or -1,
-- fencingToken, apiKeyLabel, queueLength} when held exclusively, {2, kind
-- code, queueLength, {{requester, reservedAtMs, expiresAtMs or -1,
-- fencingToken, apiKeyLabel}...}} when held shared or as a semaphore (the live
-- holders, oldest first), {0, queueLength} when free (queueLength: the
-- waiters in the resource's line, waits.lua). With the tenant's lease policy
-- (holds.lua): an exclusive row adds its holdDeadline (maxHoldSeconds), a
-- group's adds maxHoldSeconds in ms (0: none), and a free row adds
-- availableAt (-1: not in a lock delay).

local t = clock()
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local out = {}
local p = nil
-- Lines exist only while the tenant has waiters.
local lines = false
if #KEYS > 0 then
  p = string.match(KEYS[1], '^(.-)h:')
  lines = p and redis.call('ZCARD', p .. 'wn') > 0
  policy_load(p)
end

for i = 1, #KEYS do
  local h = rec_load(p, string.sub(KEYS[i], #p + 3))
  local qlen = 0
  if lines then
    qlen = redis.call('ZCARD', p .. 'w:' .. string.sub(KEYS[i], #p + 3))
  end
  local hk, live = holders(h, now_ms)
  if hk == '' then
    out[i] = {1, h.rq, h.at, h.ea == 0 and -1 or h.ea, h.ft, h.lb, qlen}
    if pol.mh > 0 then
      out[i][8] = h.at + pol.mh
    end
  elseif hk then
    local rows = {}
    for j, x in ipairs(live) do
      rows[j] = {x.rq, x.at, x.ea == 0 and -1 or x.ea, x.ft, x.lb}
    end
    out[i] = {2, hk, qlen, rows, pol.mh}
  else
    out[i] = {0, qlen, delay_until(p, string.sub(KEYS[i], #p + 3), h, now_ms) or -1}
  end
end
return out
