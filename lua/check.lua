-- check.lua: read the state of a batch of resources (read-only).
--
-- KEYS[i]  cl:{T}:r:<resource> for each item i
--
-- Returns one array per item: {1, requester, reservedAtMs, expiresAtMs or -1,
-- fencingToken, apiKeyLabel} when held, {0} when free.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local out = {}

for i = 1, #KEYS do
  local cur = redis.call('HMGET', KEYS[i], 'rq', 'at', 'ea', 'ft', 'lb')
  if cur[1] and (cur[3] == '' or tonumber(cur[3]) > now_ms) then
    out[i] = {1, cur[1], tonumber(cur[2]), cur[3] == '' and -1 or tonumber(cur[3]),
              tonumber(cur[4]), cur[5]}
  else
    out[i] = {0}
  end
end
return out
