-- sweep_due.lua: list reservations of one tenant whose expiry time has passed.
--
-- KEYS[1]  cl:{T}:exp    KEYS[2]  cl:{T}:meta
-- ARGV[1]  the most entries to return
--
-- Returns a flat array {token1, meta1, token2, meta2, ...}; meta is the JSON
-- {r,q,l,f,e} that reserve.lua / extend.lua stored. Read-only: sweep_expire.lua
-- re-checks every entry, so two instances sweeping at once do no harm.

local t = redis.call('TIME')
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, tok in ipairs(due) do
  out[#out + 1] = tok
  out[#out + 1] = redis.call('HGET', KEYS[2], tok) or ''
end
return out
