-- release.lua: release one reservation by name, whoever holds it — the admin's
-- force release, or a locklock release (which checks the lock's secret).
-- (Runs after the events.lua prelude.)
--
-- KEYS[1]  cl:{T}:idx    KEYS[2]  cl:{T}:exp    KEYS[3]  cl:{T}:meta
-- KEYS[4]  cl:{T}:r:<resource>    KEYS[5]  cl:{T}:f:<resource>
-- KEYS[6]  cl:{T}:q:<requester the caller read as holder>
-- KEYS[7]  cl:{T}:ev     the tenant's event stream (and channel name)
-- ARGV[1]  resource    ARGV[2]  requester the caller read as holder
-- ARGV[3]  how long (ms) a fencing counter outlives its grant
-- ARGV[4]  events retained per tenant
-- ARGV[5]  the event: FORCE_RELEASED (admin) or UNRESERVED (locklock)
-- ARGV[6]  apiKeyLabel for the event
-- ARGV[7]  '1' to require the lock's secret, '0' not to (admin)
-- ARGV[8]  the hash of the secret presented ('' for none)
--
-- Returns {1, requester} when released, {0} when not held, {2, requester}
-- when the holder is not ARGV[2] any more (the caller re-reads and retries),
-- {3} when the lock has a secret and ARGV[8] is not its hash (nothing changes).
-- The hashes are SHA-256 of a salted secret, so comparing them reveals nothing
-- usable about the secret.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local cur = redis.call('HMGET', KEYS[4], 'rq', 'tk', 'ea', 'ft', 'sh')
if not cur[1] or (cur[3] ~= '' and tonumber(cur[3]) <= now_ms) then
  return {0}
end
if ARGV[7] == '1' and cur[5] and cur[5] ~= ARGV[8] then
  return {3}
end
if cur[1] ~= ARGV[2] then
  return {2, cur[1]}
end
ev_open(KEYS[7], ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[2], cur[2])
redis.call('HDEL', KEYS[3], cur[2])
redis.call('PEXPIRE', KEYS[5], ARGV[3])
ev_emit(ARGV[5], ARGV[1], cur[1], ARGV[6], string.format('%.0f', now_ms), cur[3], cur[4])
ev_close()
return {1, cur[1]}
