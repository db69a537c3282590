
-- meter.lua: appended to every script a tenant request runs (reserve,
-- unreserve, extend, check, list_range, release), whose own text is wrapped in
-- `local function body() ... end` just before this. It counts the request
-- against the tenant's rate limit and runs the body only if the limit allows,
-- in the same atomic step: one round trip, and a refused request changes
-- nothing. GCRA, exactly as rate_limit.lua.
--
-- The caller appends, after the script's own KEYS and ARGV:
--   KEYS[n]   the limit's key, cl:{T}:rl:<tier>:<read|write> (any key of the
--             tenant when unlimited)
--   ARGV[m-1] the interval between requests in microseconds; 0 = unlimited
--   ARGV[m]   burst, in requests
-- They are removed before the body runs, so it sees only its own arguments.
--
-- Returns {1, remaining, resetMs, <the body's reply>} when the request ran,
-- {0, retryAfterMs, resetMs} when it was refused.

local rl_key = table.remove(KEYS)
local rl_burst = tonumber(table.remove(ARGV))
local rl_interval = tonumber(table.remove(ARGV))
if rl_interval == 0 then
  return {1, 0, 0, body()}
end
local rl_t = clock()
local rl_now = tonumber(rl_t[1]) * 1000000 + tonumber(rl_t[2])
local rl_tat = tonumber(redis.call('GET', rl_key) or '0')
if rl_tat < rl_now then
  rl_tat = rl_now
end
local rl_allow_at = rl_tat - (rl_burst - 1) * rl_interval
if rl_now < rl_allow_at then
  return {0, math.ceil((rl_allow_at - rl_now) / 1000), math.ceil((rl_tat - rl_now) / 1000)}
end
rl_tat = rl_tat + rl_interval
redis.call('SET', rl_key, string.format('%d', rl_tat), 'PX', string.format('%d', math.ceil((rl_tat - rl_now) / 1000) + 1))
local rl_remaining = math.floor((rl_now - (rl_tat - rl_burst * rl_interval)) / rl_interval)
return {1, rl_remaining, math.ceil((rl_tat - rl_now) / 1000), body()}
