-- key_rotate.lua: give an existing API key a new secret hash (same id, label,
-- scope: every field but the hash is kept as it is).
--
-- KEYS[1]  c:{<tag>}:k (hash: keyId -> JSON {id,label,createdAt,hash,scope})
-- ARGV[1]  keyId    ARGV[2]  the new secret's hash
--
-- Returns {oldHash, newRecordJson}, or {} when the key does not exist. The
-- record changes at once, so the old secret fails verification from this moment
-- even on an instance that still finds its mapping.

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return {}
end
local rec = cjson.decode(raw)
local old = rec.hash
rec.hash = ARGV[2]
local json = cjson.encode(rec)
redis.call('HSET', KEYS[1], ARGV[1], json)
return {old, json}
