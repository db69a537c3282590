-- key_add.lua: add an API key record to a tenant, within its tier's key limit.
--
-- KEYS[1]  c:{<tag>}:t (hash: id name tier createdAt jwt hw n)
-- KEYS[2]  c:{<tag>}:k (hash: keyId -> JSON {id,label,createdAt,hash,scope})
-- ARGV[1]  keyId    ARGV[2]  the JSON record without createdAt, as a prefix
--          (ends just before the closing brace)
-- ARGV[3..6]  key limits for free, starter, pro, enterprise (-1 = unlimited)
--
-- Returns {1, createdAtMs} when added, {0} when the tenant does not exist,
-- {2, limit} when the limit is reached.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local tier = redis.call('HGET', KEYS[1], 'tier')
if not tier then
  return {0}
end
local limits = {free = ARGV[3], starter = ARGV[4], pro = ARGV[5], enterprise = ARGV[6]}
local limit = tonumber(limits[tier] or '-1')
if limit >= 0 and redis.call('HLEN', KEYS[2]) >= limit then
  return {2, limit}
end
local ats = string.format('%.0f', now_ms)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ',"createdAt":' .. ats .. '}')
return {1, now_ms}
