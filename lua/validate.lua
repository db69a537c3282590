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
local p = #KEYS > 0 and string.match(KEYS[1], '^(.-)h:') or ''

for i = 1, #KEYS do
  local h = rec_load(p, string.sub(KEYS[i], #p + 3))
  local x = h
  if h and h.grp then
    -- The group's hold of that token, if any (tokens have at most 17 digits).
    local t = ARGV[i]
    x = #t <= 17 and grp_get(h, string.rep('0', 17 - #t) .. t) or nil
    out[i] = {0, -1}
  else
    out[i] = {0, hold_live(h, now_ms) and h.ft or -1}
  end
  if hold_live(x, now_ms) and num(x.ft) == ARGV[i] then
    out[i] = {1, x.rq, x.ea == 0 and -1 or x.ea}
  end
end
return out
