-- list_read.lua: read one page of listed resources and drop dead index entries.
--
-- KEYS[1]  the index the page came from: cl:{T}:idx, or cl:{T}:q:<requester>
-- KEYS[1+i] cl:{T}:r:<resource> for each listed resource i
-- ARGV[1]  the requester the index belongs to ('' for the tenant-wide index)
-- ARGV[1+i] resource i
--
-- Returns the live entries in the order given, each
-- {resource, requester, reservedAtMs, expiresAtMs or -1, fencingToken, apiKeyLabel}.
-- An entry whose reservation is gone, expired, or (in a requester index) now held
-- by someone else is removed from KEYS[1], so indexes never keep dead entries.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local want = ARGV[1]
local out = {}

for i = 2, #KEYS do
  local res = ARGV[i]
  local cur = redis.call('HMGET', KEYS[i], 'rq', 'at', 'ea', 'ft', 'lb')
  local live = cur[1] and (cur[3] == '' or tonumber(cur[3]) > now_ms)
  if live and (want == '' or cur[1] == want) then
    out[#out + 1] = {res, cur[1], tonumber(cur[2]), cur[3] == '' and -1 or tonumber(cur[3]),
                     tonumber(cur[4]), cur[5]}
  elseif not live or want ~= '' then
    redis.call('ZREM', KEYS[1], res)
  end
end
return out
