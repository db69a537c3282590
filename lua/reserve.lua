-- reserve.lua: reserve a batch of resources for one tenant, atomically, in order.
-- (Runs after the events.lua prelude.)
--
-- KEYS[1]  cl:{T}:idx   zset (score 0) of held resources, for listing
-- KEYS[2]  cl:{T}:exp   zset release-token -> expiresAt (ms), for the sweeper
-- KEYS[3]  cl:{T}:meta  hash release-token -> JSON {r,q,l,f,e[,x]}, for the sweeper
-- KEYS[4]  cl:{T}:tenant, which must exist (a deleted tenant gets nothing)
-- KEYS[5]  cl:{T}:ev    the tenant's event stream (and channel name)
-- then per item i (i = 1..n), three keys starting at KEYS[3*i+3]:
--   cl:{T}:r:<resource>   hash rq tk at ea ft lb [sh] (the reservation; PEXPIREAT)
--   cl:{T}:f:<resource>   string "<last fencing token> <its release token>"
--                         (no TTL while held)
--   cl:{T}:q:<requester>  zset (score 0) of the requester's resources
-- ARGV[1]  apiKeyLabel of the caller
-- ARGV[2]  n, the number of items
-- ARGV[3]  how long (ms) a fencing counter outlives its grant
-- ARGV[4]  events retained per tenant
-- ARGV[5]  most reservations the tenant may hold ("0": no limit; the public
--          locklock tenant has one)
-- then per item five values starting at ARGV[5*i+1]: resource, requester,
--   ttl in ms ("0" for no TTL), the release token to hand out, and the hash of
--   a locklock secret ('' for none; kept as field sh)
--
-- Returns -1 when the tenant does not exist, -2 when it holds its most
-- reservations already, else one array per item, in order:
--   {1, releaseToken, reservedAtMs, expiresAtMs or -1, fencingToken}   RESERVED
--   {0, heldBy, expiresAtMs or -1}                                   ALREADY_HELD
-- A reservation whose expiresAt has passed counts as free even while its key
-- still exists. If its EXPIRED event is still due (the sweeper has not run yet),
-- it is emitted here, before the new RESERVED, and marked (x) so the sweeper,
-- which still cleans up after it, does not emit it again.

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local ats = string.format('%.0f', now_ms)
local label = ARGV[1]
local n = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local out = {}

if redis.call('EXISTS', KEYS[4]) == 0 then
  return -1
end
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('ZCARD', KEYS[1]) + n > cap then
  return -2
end
ev_open(KEYS[5], ARGV[4])

for i = 1, n do
  local lock, fence, ridx = KEYS[3 * i + 3], KEYS[3 * i + 4], KEYS[3 * i + 5]
  local a = 5 * i + 1
  local res, rq, ttl, tok, sh = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4]
  local cur = redis.call('HMGET', lock, 'rq', 'ea')
  if cur[1] and (cur[2] == '' or tonumber(cur[2]) > now_ms) then
    out[i] = {0, cur[1], cur[2] == '' and -1 or tonumber(cur[2])}
  else
    local fv = redis.call('GET', fence) or '0'
    local last = tonumber(string.match(fv, '^(%d+)')) or 0
    local prev = string.match(fv, '^%d+ (.+)$')
    if prev then
      -- The previous grant's expiry, not yet announced: announce it first.
      local due = redis.call('ZSCORE', KEYS[2], prev)
      local raw = due and tonumber(due) <= now_ms and redis.call('HGET', KEYS[3], prev)
      if raw then
        local m = cjson.decode(raw)
        if not m.x then
          ev_emit('EXPIRED', m.r, m.q, m.l, ats, m.e, m.f)
          m.x = 1
          redis.call('HSET', KEYS[3], prev, cjson.encode(m))
        end
      end
    end
    -- Strictly above the last token, and never below the clock in microseconds,
    -- so tokens keep rising even after the counter expired or Redis lost it.
    local ft = math.max(last + 1, now_us)
    local fts = string.format('%.0f', ft)
    local ea, eas = -1, ''
    if ttl > 0 then
      ea = now_ms + ttl
      eas = string.format('%.0f', ea)
    end
    redis.call('DEL', lock)
    redis.call('HSET', lock, 'rq', rq, 'tk', tok, 'at', ats, 'ea', eas, 'ft', fts, 'lb', label)
    if sh ~= '' then
      redis.call('HSET', lock, 'sh', sh)
    end
    if ttl > 0 then
      redis.call('PEXPIREAT', lock, eas)
      redis.call('SET', fence, fts .. ' ' .. tok, 'PXAT', string.format('%.0f', ea + keep))
      redis.call('ZADD', KEYS[2], eas, tok)
      redis.call('HSET', KEYS[3], tok, cjson.encode({r = res, q = rq, l = label, f = fts, e = eas}))
    else
      redis.call('SET', fence, fts)
    end
    redis.call('ZADD', KEYS[1], 0, res)
    redis.call('ZADD', ridx, 0, res)
    ev_emit('RESERVED', res, rq, label, ats, eas, fts)
    out[i] = {1, tok, now_ms, ea, ft}
  end
end
ev_close()
return out
