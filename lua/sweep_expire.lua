-- sweep_expire.lua: retire expired reservations of one tenant, exactly once each.
-- (Runs after the events.lua prelude.)
--
-- KEYS[1]  cl:{T}:idx    KEYS[2]  cl:{T}:exp    KEYS[3]  cl:{T}:meta
-- KEYS[4]  cl:{T}:ev     the tenant's event stream (and channel name)
-- then per item i, two keys starting at KEYS[2*i+3]:
--   cl:{T}:r:<resource>, cl:{T}:q:<requester of the expired grant>
-- ARGV[1]  n    ARGV[2]  events retained per tenant
-- then per item three values starting at ARGV[3*i]: token, resource, requester
--
-- Returns the number of grants retired. An item is retired only while its
-- token is still in KEYS[2] with a deadline in the past, so it is idempotent:
-- a second sweeper (another instance) finds nothing left to do. Each retired
-- grant emits EXPIRED (with the label of the key that made it) unless
-- reserve.lua already did (meta flag x).

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local ats = string.format('%.0f', now_ms)
local n = tonumber(ARGV[1])
local retired = 0
ev_open(KEYS[4], ARGV[2])

for i = 1, n do
  local lock, ridx = KEYS[2 * i + 3], KEYS[2 * i + 4]
  local a = 3 * i
  local tok, res, rq = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local score = redis.call('ZSCORE', KEYS[2], tok)
  if score and tonumber(score) <= now_ms then
    local raw = redis.call('HGET', KEYS[3], tok)
    if raw then
      local m = cjson.decode(raw)
      if not m.x then
        ev_emit('EXPIRED', m.r, m.q, m.l, ats, m.e, m.f)
      end
    end
    local cur = redis.call('HMGET', lock, 'rq', 'tk', 'ea')
    if cur[2] == tok then
      -- Still the same grant, past its deadline: gone for good.
      redis.call('DEL', lock)
      cur = {false, false, false}
    end
    local live = cur[1] and (cur[3] == '' or tonumber(cur[3]) > now_ms)
    if not live then
      redis.call('ZREM', KEYS[1], res)
    end
    if not live or cur[1] ~= rq then
      redis.call('ZREM', ridx, res)
    end
    redis.call('ZREM', KEYS[2], tok)
    redis.call('HDEL', KEYS[3], tok)
    retired = retired + 1
  end
end
ev_close()
return retired
