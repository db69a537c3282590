-- validate.lua: check writers' fencing tokens against the holds now
-- (read-only; contract section 16).
-- Composed as: clock.lua, pages.lua, holds.lua, this file as the metered body, meter.lua
-- (lua/README.md).
--
-- KEYS[i]  P h:<resource> for each item i
-- ARGV[i]  the fencing token item i presents, in decimal
--
-- Returns one array per item: {1, requester, expiresAtMs or -1} when an active
-- hold of the resource has that token (CURRENT), else {0, the holder's
-- fencingToken or -1 when the resource is free} (STALE).
-- The tokens are compared as decimal text, so a token beyond Lua's exact
-- integers can never be taken for another.

local t = clock()
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local out = {}

for i = 1, #KEYS do
  local h = hold_decode(redis.call('GET', KEYS[i]))
  if not hold_live(h, now_ms) then
    out[i] = {0, -1}
  elseif num(h.ft) == ARGV[i] then
    out[i] = {1, h.rq, h.ea == 0 and -1 or h.ea}
  else
    out[i] = {0, h.ft}
  end
end
return out
