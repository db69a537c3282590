-- holds.lua: a prelude (see lua/README.md) — the hold record, its expiry
-- bucket, and the steps every script shares to grant, drop and retire a hold.
-- Needs events.lua and pages.lua before it.
--
-- Keys of a tenant (P = `c:{<tag>}:`, the tenant's prefix; all in one Cluster
-- slot):
--   P t            hash: id name tier createdAt jwt, hw (the fencing high-water
--                  mark), n (holds, live or awaiting their EXPIRED)
--   P h:<resource> string, the hold: a MessagePack array
--                  {token(16 raw bytes), requester, label, reservedAtMs,
--                   expiresAtMs or 0, fencingToken, bucket slot k, locklock}
--                  where locklock is '' for a Reservation API hold, else 'L'
--                  followed by the hash of the lock's secret (may be empty).
--                  PEXPIREAT expiresAt + GRACE_MS: the hold is free from
--                  expiresAt on (every script compares with TIME); the key
--                  itself stays a while so the next reserve can still announce
--                  its EXPIRED first, and the sweeper deletes it.
--   P i / P q      paged sets (pages.lua): listing by resource, and by
--                  requester (`<requester>\0<resource>`)
--   P x:<s>:<k>    hash resource -> MessagePack {requester, label, expiresAtMs,
--                  fencingToken}: the holds whose expiresAt falls in second s,
--                  at most BUCKET (32) entries per k (so it stays a listpack); what
--                  EXPIRED needs survives the hold key
--   P xc           hash second -> slots handed out in that second's buckets
--   P xd           zset second -> second: the seconds that have buckets
--
-- Fencing tokens: max(hw + 1, now in µs), so they rise across every hold of
-- the tenant (and so of each resource) with no per-resource state, and keep
-- rising across a clock step back and a restart with the saved mark.

local GRACE_MS = 600000
local BUCKET = 32

local function hold_decode(raw)
  if not raw then
    return nil
  end
  local h = cmsgpack.unpack(raw)
  return {tok = h[1], rq = h[2], lb = h[3], at = h[4], ea = h[5], ft = h[6], k = h[7], ll = h[8]}
end

local function hold_encode(h)
  return cmsgpack.pack({h.tok, h.rq, h.lb, h.at, h.ea, h.ft, h.k, h.ll})
end

local function hold_live(h, now_ms)
  return h and (h.ea == 0 or h.ea > now_ms)
end

-- A whole number as Redis wants it: '%d' (a C long here) is exact up to
-- 2^53 like the numbers themselves, and far cheaper than formatting a double.
local function num(x)
  return string.format('%d', x)
end

-- The bucket of a hold that expires at `ea` in slot `k`.
-- (The last one built is kept: a batch's holds mostly share it.)
local bk_s, bk_k, bk_key = nil, nil, nil
local function bucket_key(p, ea, k)
  local s = math.floor(ea / 1000)
  if s ~= bk_s or k ~= bk_k then
    bk_s, bk_k, bk_key = s, k, p .. 'x:' .. num(s) .. ':' .. k
  end
  return bk_key
end

-- Slots are handed out in runs, so a batch asks for its second's count once.
local slot_runs = {}
-- Seconds this script put buckets in: second -> true.
local new_seconds = {}

local function bucket_slot(p, ea, wanted)
  local sn = math.floor(ea / 1000)
  local run = slot_runs[sn]
  if not run or run.next > run.last then
    local s = num(sn)
    local hi = redis.call('HINCRBY', p .. 'xc', s, num(wanted))
    run = {next = hi - wanted, last = hi - 1}
    slot_runs[sn] = run
    new_seconds[s] = true
  end
  local slot = run.next
  run.next = slot + 1
  return math.floor(slot / BUCKET)
end

-- Bucket entries this script files, written by bucket_flush() in one HSET per
-- bucket (a batch's holds mostly share one): bucket key -> resource -> value.
local bucket_pending = {}

-- Files the entry of the hold of `res` expiring at `ea` in its bucket (slot
-- k, see bucket_slot), to be written by bucket_flush(). Only what EXPIRED
-- needs, not the whole hold record: an entry must stay within the 64 bytes of
-- a listpack value (hash-max-listpack-value) for the bucket to stay compact.
local function bucket_file(p, res, k, rq, lb, ea, ft)
  local bk = bucket_key(p, ea, k)
  local entries = bucket_pending[bk]
  if not entries then
    entries = {}
    bucket_pending[bk] = entries
  end
  entries[res] = cmsgpack.pack({rq, lb, ea, ft})
end

-- Files a hold with a TTL in its expiry bucket; `wanted` is how many more
-- holds this script may still file (the size of the run to ask for).
local function bucket_add(p, res, h, wanted)
  h.k = bucket_slot(p, h.ea, wanted)
  bucket_file(p, res, h.k, h.rq, h.lb, h.ea, h.ft)
end

local function bucket_rem(p, res, h)
  if h.ea > 0 then
    local bk = bucket_key(p, h.ea, h.k)
    local entries = bucket_pending[bk]
    if entries and entries[res] then
      -- Filed by this script and not written yet: it is in Redis no longer
      -- (the same hold's earlier entry was removed before it was filed again).
      entries[res] = nil
    else
      redis.call('HDEL', bk, res)
    end
  end
end

-- Writes the entries bucket_add filed. Scripts that file call it before they end.
local function bucket_flush()
  for bk, entries in pairs(bucket_pending) do
    local args = {}
    for res, v in pairs(entries) do
      args[#args + 1] = res
      args[#args + 1] = v
    end
    if #args > 0 then
      redis.call('HSET', bk, unpack(args))
    end
  end
  bucket_pending = {}
end

-- Records the seconds this script filed holds in; returns the earliest of them
-- when it is earlier than every second the tenant had before (the caller then
-- moves the tenant up in the fleet's due index), else 0.
local function due_close(p)
  if next(new_seconds) == nil then
    return 0
  end
  local first = redis.call('ZRANGE', p .. 'xd', '0', '0', 'WITHSCORES')[2]
  first = first and tonumber(first)
  local earliest = 0
  for s, _ in pairs(new_seconds) do
    local sn = tonumber(s)
    redis.call('ZADD', p .. 'xd', 'NX', sn, s)
    if (not first or sn < first) and (earliest == 0 or sn < earliest) then
      earliest = sn
    end
  end
  return earliest
end

-- Takes a hold out of the indexes (its key is deleted by the caller).
local function unindex(p, res, rq)
  pg_rem(p .. 'i', res)
  pg_rem(p .. 'q', rq .. '\0' .. res)
end

-- Announces the EXPIRED of a hold past its time that the sweeper has not
-- retired yet, and retires it here: its bucket entry goes (so the sweeper will
-- not announce it again) and so does its requester index entry unless the same
-- requester takes the resource now. The listing entry stays for the new hold.
local function retire_before_grant(p, res, old, new_rq, at)
  ev_emit('EXPIRED', res, old.rq, old.lb, at, num(old.ea), num(old.ft))
  bucket_rem(p, res, old)
  if old.rq ~= new_rq then
    pg_rem(p .. 'q', old.rq .. '\0' .. res)
  end
end

-- All or nothing (contract section 13): the answer of a batch of n items in
-- which some failed, `rows` holding the failures' rows: the others become
-- `aborted` (ABORTED).
local function all_or_nothing(rows, n, aborted)
  for i = 1, n do
    rows[i] = rows[i] or aborted
  end
  return rows
end
