-- idem.lua: a prelude of every metered script (see lua/README.md) — the
-- Idempotency-Key record of a request (contract section 14), which meter.lua
-- reads before the body runs and writes after it, in the same atomic step as
-- the body's effect: a committed effect always has its record.
--
-- The caller appends, after the meter's key and arguments, for a request with
-- an Idempotency-Key:
--   KEYS  P ik:<id>  the record: MessagePack {fingerprint, reply}, PX retention
--         P ik!      zset id -> created µs: the tenant's records, oldest first
--         the read limit's key (a repeat counts as a read)
--   ARGV  fingerprint, retention ms, most records the tenant keeps, the read
--         limit's interval µs and burst, then '1'
-- and for a request without one only ARGV '0'. They are removed here, before
-- meter.lua takes its own and the body sees its own.
--
-- The body sets `idem_keep` to what a repeat must answer (its reply, compact:
-- the rows the script returns, not the JSON answer); left nil, nothing is
-- recorded (a refused or failed request is not: contract section 14).

local idem = nil
local idem_keep = nil
if table.remove(ARGV) == '1' then
  local burst = tonumber(table.remove(ARGV))
  local interval = tonumber(table.remove(ARGV))
  local cap = tonumber(table.remove(ARGV))
  local ttl = table.remove(ARGV)
  local fp = table.remove(ARGV)
  local rl_key = table.remove(KEYS)
  local index = table.remove(KEYS)
  local key = table.remove(KEYS)
  idem = {key = key, index = index, rl_key = rl_key, fp = fp, ttl = ttl, cap = cap,
          interval = interval, burst = burst}
end

-- The recorded answer of this request's key: {how, reply} where how is 0 (no
-- record), 1 (a repeat: reply is what to answer), 2 (the key was used for
-- another request) or 3 (the request under the key is still waiting: its
-- record is pending, see idem_pending).
local function idem_lookup()
  if not idem then
    return 0, nil
  end
  local raw = redis.call('GET', idem.key)
  if not raw then
    return 0, nil
  end
  local rec = cmsgpack.unpack(raw)
  if rec[1] ~= idem.fp then
    return 2, nil
  end
  if rec[2] == false then
    return 3, nil
  end
  return 1, rec[2]
end

-- Records that the request under this key waits (contract section 12): a
-- repeat meanwhile is IDEMPOTENCY_KEY_IN_USE. The grant (waits.lua) writes the
-- answer in its own step; a wait that ends without one removes the record.
-- Answers {record key, fingerprint, retention ms} for the waiter's record.
local function idem_pending(now_us, until_ms)
  if not idem then
    return nil
  end
  redis.call('SET', idem.key, cmsgpack.pack({idem.fp, false}), 'PXAT', string.format('%d', until_ms + 60000))
  redis.call('ZADD', idem.index, string.format('%d', now_us), string.sub(idem.key, #idem.index + 1))
  redis.call('PEXPIRE', idem.index, idem.ttl)
  return {idem.key, idem.fp, tonumber(idem.ttl)}
end

-- Records `idem_keep` under the request's key, and keeps the tenant's records
-- within their number: the oldest go first (their keys expire by themselves
-- too; the index forgets those on the way).
local function idem_record(now_us)
  if not idem or idem_keep == nil then
    return
  end
  local id = string.sub(idem.key, #idem.index + 1)
  local kp = string.sub(idem.index, 1, -2) .. ':'
  redis.call('SET', idem.key, cmsgpack.pack({idem.fp, idem_keep}), 'PX', idem.ttl)
  redis.call('ZREMRANGEBYSCORE', idem.index, '-inf', string.format('(%d', now_us - tonumber(idem.ttl) * 1000))
  redis.call('ZADD', idem.index, string.format('%d', now_us), id)
  local over = redis.call('ZCARD', idem.index) - idem.cap
  if over > 0 then
    local old = redis.call('ZPOPMIN', idem.index, over)
    for i = 1, #old, 2 do
      redis.call('DEL', kp .. old[i])
    end
  end
  redis.call('PEXPIRE', idem.index, idem.ttl)
end
