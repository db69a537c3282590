-- extend.lua: set the TTL of a batch of held reservations to ttl from now.
-- (Runs after the events.lua prelude.)
--
-- KEYS[1]  cl:{T}:exp    KEYS[2]  cl:{T}:meta
-- KEYS[3]  cl:{T}:ev     the tenant's event stream (and channel name)
-- then per item i, two keys starting at KEYS[2*i+2]:
--   cl:{T}:r:<resource>, cl:{T}:f:<resource>
-- ARGV[1]  n    ARGV[2]  how long (ms) a fencing counter outlives its grant
-- ARGV[3]  apiKeyLabel of the caller    ARGV[4]  events retained per tenant
-- then per item four values starting at ARGV[4*i+1]: resource, requester, token,
--   ttl in ms
--
-- Returns one array per item: {1, expiresAtMs} EXTENDED, {0} NOT_HELD,
-- {2} INVALID_TOKEN. The fencing token does not change.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local ats = string.format('%.0f', now_ms)
local n = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local label = ARGV[3]
local out = {}
ev_open(KEYS[3], ARGV[4])

for i = 1, n do
  local lock, fence = KEYS[2 * i + 2], KEYS[2 * i + 3]
  local a = 4 * i + 1
  local res, rq, tok, ttl = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local cur = redis.call('HMGET', lock, 'rq', 'tk', 'ea', 'ft', 'lb')
  if not cur[1] or (cur[3] ~= '' and tonumber(cur[3]) <= now_ms) then
    out[i] = {0}
  elseif cur[1] ~= rq or cur[2] ~= tok then
    out[i] = {2}
  else
    local ea = now_ms + ttl
    local eas = string.format('%.0f', ea)
    redis.call('HSET', lock, 'ea', eas)
    redis.call('PEXPIREAT', lock, eas)
    local last = tonumber(string.match(redis.call('GET', fence) or '0', '^(%d+)')) or 0
    local fts = string.format('%.0f', math.max(last, tonumber(cur[4])))
    redis.call('SET', fence, fts .. ' ' .. tok, 'PXAT', string.format('%.0f', ea + keep))
    redis.call('ZADD', KEYS[1], eas, tok)
    redis.call('HSET', KEYS[2], tok, cjson.encode({r = res, q = rq, l = cur[5], f = cur[4], e = eas}))
    ev_emit('EXTENDED', res, rq, label, ats, eas, cur[4])
    out[i] = {1, ea}
  end
end
ev_close()
return out
