-- contention.lua: a tenant's contention counters (waits.lua contention_count),
-- read-only: the resources that most requests waited for.
--
-- KEYS[1]  P cw    KEYS[2]  P co    ARGV[1]  how many resources at most
--
-- Returns {resource, waits, timedOut, ...}: the resources with the most waits
-- first (a resource only timed-out waits counted for comes after them).

local n = tonumber(ARGV[1])
local out, seen = {}, {}
local waits = redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
for i = 1, #waits, 2 do
  local res = waits[i]
  seen[res] = true
  out[#out + 1] = res
  out[#out + 1] = tonumber(waits[i + 1])
  out[#out + 1] = tonumber(redis.call('ZSCORE', KEYS[2], res) or '0')
end
local left = n - #out / 3
if left > 0 then
  local outs = redis.call('ZREVRANGE', KEYS[2], 0, n - 1, 'WITHSCORES')
  for i = 1, #outs, 2 do
    if left > 0 and not seen[outs[i]] then
      out[#out + 1] = outs[i]
      out[#out + 1] = 0
      out[#out + 1] = tonumber(outs[i + 1])
      left = left - 1
    end
  end
end
return out
