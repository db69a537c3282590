-- unreserve.lua: release a batch of reservations for one tenant, atomically.
-- (Runs after the events.lua prelude.)
--
-- KEYS[1]  cl:{T}:idx    KEYS[2]  cl:{T}:exp    KEYS[3]  cl:{T}:meta
-- KEYS[4]  cl:{T}:ev     the tenant's event stream (and channel name)
-- then per item i, three keys starting at KEYS[3*i+2]:
--   cl:{T}:r:<resource>, cl:{T}:f:<resource>, cl:{T}:q:<requester>
-- ARGV[1]  n    ARGV[2]  how long (ms) a fencing counter outlives its grant
-- ARGV[3]  apiKeyLabel of the caller    ARGV[4]  events retained per tenant
-- then per item three values starting at ARGV[3*i+2]: resource, requester, token
--
-- Returns one integer per item: 1 UNRESERVED, 0 NOT_HELD, 2 INVALID_TOKEN.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local ats = string.format('%.0f', now_ms)
local n = tonumber(ARGV[1])
local keep = ARGV[2]
local label = ARGV[3]
local out = {}
ev_open(KEYS[4], ARGV[4])

for i = 1, n do
  local lock, fence, ridx = KEYS[3 * i + 2], KEYS[3 * i + 3], KEYS[3 * i + 4]
  local a = 3 * i + 2
  local res, rq, tok = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local cur = redis.call('HMGET', lock, 'rq', 'tk', 'ea', 'ft')
  if not cur[1] or (cur[3] ~= '' and tonumber(cur[3]) <= now_ms) then
    out[i] = 0
  elseif cur[1] ~= rq or cur[2] ~= tok then
    out[i] = 2
  else
    redis.call('DEL', lock)
    redis.call('ZREM', KEYS[1], res)
    redis.call('ZREM', ridx, res)
    redis.call('ZREM', KEYS[2], tok)
    redis.call('HDEL', KEYS[3], tok)
    redis.call('PEXPIRE', fence, keep)
    ev_emit('UNRESERVED', res, rq, label, ats, cur[3], cur[4])
    out[i] = 1
  end
end
ev_close()
return out
