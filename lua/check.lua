-- check.lua: read the state of a batch of resources (read-only).
-- Composed as: clock.lua, pages.lua, holds.lua, this file as the metered body, meter.lua
-- (lua/README.md).
--
-- KEYS[i]  P h:<resource> for each item i
--
-- Returns one array per item: {1, requester, reservedAtMs, expiresAtMs or -1,
-- fencingToken, apiKeyLabel} when held, {0} when free.

local t = clock()
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local out = {}

for i = 1, #KEYS do
  local h = hold_decode(redis.call('GET', KEYS[i]))
  if hold_live(h, now_ms) then
    out[i] = {1, h.rq, h.at, h.ea == 0 and -1 or h.ea, h.ft, h.lb}
  else
    out[i] = {0}
  end
end
return out
