-- tenant_update.lua: change a tenant's name and/or tier if it exists.
--
-- KEYS[1]  c:{<tag>}:t (hash: id name tier createdAt jwt hw n)
-- ARGV     field/value pairs to set (name, tier, jwt)
--
-- Returns the tenant hash as a flat field/value array, or {} when it does not
-- exist.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return redis.call('HGETALL', KEYS[1])
