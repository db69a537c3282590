-- validate.lua: check writers' fencing tokens against the holds now
-- (read-only; contract section 16).
-- Composed as: clock.lua, pages.lua, holds.lua, this file as the metered body, meter.lua
-- (lua/README.md).
--
-- KEYS[i]  P h:<resource> for each item i
-- ARGV[i]  the fencing token item i presents, in decimal
--
-- Returns one array per item: {1, requester, expiresAtMs or -1} when an active
-- hold of the resource has that token (CURRENT), else {0, the exclusive
-- holder's fencingToken, or -1 when the resource is free or held shared or as
-- a semaphore} (STALE).
-- The tokens are compared as decimal text, so a token beyond Lua's exact
-- integers can never be taken for another.

local t = clock()
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local out = {}

for i = 1, #KEYS do
  local hk, live = holders(hold_decode(redis.call('GET', KEYS[i])), now_ms)
  out[i] = {0, hk == '' and live[1].ft or -1}
  for _, x in ipairs(live) do
    if num(x.ft) == ARGV[i] then
      out[i] = {1, x.rq, x.ea == 0 and -1 or x.ea}
    end
  end
end
return out
