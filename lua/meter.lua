
-- meter.lua: appended to every script a tenant request runs (reserve,
-- unreserve, extend, check, validate, list, release, and rate_limit), whose own text is
-- wrapped in `local function body() ... end` just before this, with idem.lua
-- among its preludes. It counts the request against the tenant's rate limit
-- and runs the body only if the limit allows, in the same atomic step: one
-- round trip, and a refused request changes nothing. GCRA, one copy.
--
-- The caller appends, after the script's own KEYS and ARGV (and before what
-- idem.lua takes):
--   KEYS[n]   the limit's key, c:{<tag>}:rl:<tier>:<read|write> (any key of
--             the tenant when unlimited)
--   ARGV[m-1] the interval between requests in microseconds; 0 = unlimited
--   ARGV[m]   burst, in requests
-- They are removed before the body runs, so it sees only its own arguments.
--
-- A request whose Idempotency-Key has a record is not run again: it is
-- counted against the read limit instead and answered from the record.
--
-- Returns {1, remaining, resetMs, reply, how, ended} when the request ran or
-- was answered — how 0: the body ran (reply is its reply), 1: a repeat (reply
-- is the recorded one), 2: the key was used for another request, 3: the
-- request under the key is still waiting (reply 0 for both); ended: the holds
-- the body ended (clock.lua) —
-- and {0, retryAfterMs, resetMs} when it was refused.

local rl_key = table.remove(KEYS)
local rl_burst = tonumber(table.remove(ARGV))
local rl_interval = tonumber(table.remove(ARGV))
local how, reply = idem_lookup()
if how ~= 0 then
  rl_key, rl_interval, rl_burst = idem.rl_key, idem.interval, idem.burst
end
local rl_remaining, rl_reset = 0, 0
if rl_interval > 0 then
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
  rl_remaining = math.floor((rl_now - (rl_tat - rl_burst * rl_interval)) / rl_interval)
  rl_reset = math.ceil((rl_tat - rl_now) / 1000)
end
if how == 0 then
  reply = body()
  if idem_keep ~= nil then
    local t = clock()
    idem_record(tonumber(t[1]) * 1000000 + tonumber(t[2]))
  end
elseif how >= 2 then
  reply = 0
end
return {1, rl_remaining, rl_reset, reply, how, ended}
