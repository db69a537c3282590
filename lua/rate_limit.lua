-- rate_limit.lua: one request against a GCRA limit (generic cell rate
-- algorithm): `rate` requests per second with a burst of `burst`, for the whole
-- fleet, since its state (the theoretical arrival time) lives here.
--
-- KEYS[1]  the limit's key (e.g. cl:ip:<address> for public locklock locks)
-- ARGV[1]  the interval between requests, in microseconds (1e6 / rate)
-- ARGV[2]  burst, in requests
--
-- Returns {allowed (1/0), remaining, retryAfterMs, resetMs}: remaining is how
-- many more requests would pass right now; resetMs is when the limit is whole
-- again; retryAfterMs (when refused) is when the next request will pass.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, 0, math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000)}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
local remaining = math.floor((now - (tat - burst * interval)) / interval)
return {1, remaining, 0, math.ceil((tat - now) / 1000)}
