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
--                   expiresAtMs or 0, fencingToken, bucket slot k, locklock
--                   [, warnBeforeSeconds w, warning bucket slot wk]}
--                  where locklock is '' for a Reservation API hold, else 'L'
--                  followed by the hash of the lock's secret (may be empty);
--                  w and wk only for a hold with an expiry warning (contract
--                  section 18: absent, a hold without one costs no byte more).
--                  PEXPIREAT expiresAt + GRACE_MS: the hold is free from
--                  expiresAt on (every script compares with TIME); the key
--                  itself stays a while so the next reserve can still announce
--                  its EXPIRED first, and the sweeper deletes it.
--                  (Shared holds and semaphores: a group, P g: and P e:
--                  below; docs/design/kinds.md.)
--   P i / P q      paged sets (pages.lua): listing by resource, and by
--                  requester (`<requester>\0<resource>`); a hold of a group
--                  is `<resource>\0<fencing token, 17 digits>` in both
--   P x:<s>:<k>    hash resource -> MessagePack {requester, label, expiresAtMs,
--                  fencingToken} (a hold of a group: `<resource>\0<token>` ->
--                  the same and its kind code): the holds whose expiresAt falls in second s,
--                  at most BUCKET (32) entries per k (so it stays a listpack); what
--                  EXPIRED needs survives the hold key. A hold with an expiry
--                  warning also has `\1<member>` -> MessagePack {expiresAtMs,
--                  fencingToken, w, k} in the bucket of second floor((expiresAt
--                  - w s) / 1000), slot wk (warn_file below): EXPIRING.
--   P xc           hash second -> slots handed out in that second's buckets
--   P xd           zset second -> second: the seconds that have buckets
--
-- Fencing tokens: max(hw + 1, now in µs), so they rise across every hold of
-- the tenant (and so of each resource) with no per-resource state, and keep
-- rising across a clock step back and a restart with the saved mark.

local GRACE_MS = 600000
local BUCKET = 32
-- The most shared holders of one resource (a semaphore's limit is at most this).
local MAX_HOLDERS = 10000

local function hold_of(h)
  return {tok = h[1], rq = h[2], lb = h[3], at = h[4], ea = h[5], ft = h[6], k = h[7], ll = h[8],
          w = h[9] or 0, wk = h[10] or 0}
end

-- An exclusive hold's record (a shared or semaphore resource's key is a
-- hash: rec_load below).
local function hold_decode(raw)
  if not raw then
    return nil
  end
  return hold_of(cmsgpack.unpack(raw))
end

local function hold_encode(h)
  if h.w and h.w > 0 then
    return cmsgpack.pack({h.tok, h.rq, h.lb, h.at, h.ea, h.ft, h.k, h.ll, h.w, h.wk})
  end
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
local function bucket_file(p, res, k, rq, lb, ea, ft, kc)
  local bk = bucket_key(p, ea, k)
  local entries = bucket_pending[bk]
  if not entries then
    entries = {}
    bucket_pending[bk] = entries
  end
  if kc then
    entries[res] = cmsgpack.pack({rq, lb, ea, ft, kc})
  else
    entries[res] = cmsgpack.pack({rq, lb, ea, ft})
  end
end

-- Files a hold with a TTL in its expiry bucket; `wanted` is how many more
-- holds this script may still file (the size of the run to ask for).
local function bucket_add(p, res, h, wanted)
  h.k = bucket_slot(p, h.ea, wanted)
  bucket_file(p, res, h.k, h.rq, h.lb, h.ea, h.ft)
end

-- Takes the entry `field` out of bucket `bk`: true when it was there.
local function bucket_drop(bk, field)
  local entries = bucket_pending[bk]
  if entries and entries[field] then
    -- Filed by this script and not written yet: it is in Redis no longer
    -- (the same hold's earlier entry was removed before it was filed again).
    entries[field] = nil
    return true
  end
  return redis.call('HDEL', bk, field) == 1
end

-- Expiry warnings (contract section 18, EXPIRING). A hold with
-- warnBeforeSeconds `w` has a warning entry `\1<member>` (a resource has no
-- control characters, so it never collides with a hold's entry) in the bucket
-- of second floor((ea - w s) / 1000), slot `wk`, both kept in its record:
-- MessagePack {ea, ft, w, k}, `k` the slot of the hold's own expiry entry. The
-- sweeper announces EXPIRING from that expiry entry (requester, label, kind)
-- when it still has this ea and ft; every path that moves or drops the expiry
-- entry drops the warning with it (bucket_rem), so a warning is never stale.
-- The warning's second is w seconds before the expiry's, so a sweep that finds
-- both due announces EXPIRING first.
local function warn_field(m)
  return '\1' .. m
end

local function warn_at(ea, w)
  return ea - w * 1000
end

-- Gives hold `h` (ea, w set) the slot of its warning; `wanted` as for
-- bucket_slot. A hold without a warning, or without a TTL, gets none.
local function warn_slot(p, h, wanted)
  h.wk = 0
  if h.w and h.w > 0 and h.ea > 0 then
    h.wk = bucket_slot(p, warn_at(h.ea, h.w), wanted)
  end
end

-- Files the warning entry of hold `h` (member `m`; ea ft k w wk set), to be
-- written by bucket_flush(); nothing without a warning.
local function warn_file(p, m, h)
  if not (h.w and h.w > 0 and h.ea > 0) then
    return
  end
  local bk = bucket_key(p, warn_at(h.ea, h.w), h.wk)
  local entries = bucket_pending[bk]
  if not entries then
    entries = {}
    bucket_pending[bk] = entries
  end
  entries[warn_field(m)] = cmsgpack.pack({h.ea, h.ft, h.w, h.k})
end

-- Takes hold `h`'s warning entry out: true when it was still there (its
-- EXPIRING not announced yet).
local function warn_rem(p, m, h)
  if h.w and h.w > 0 and h.ea > 0 then
    return bucket_drop(bucket_key(p, warn_at(h.ea, h.w), h.wk), warn_field(m))
  end
  return false
end

-- A hold past its time is retired by a script other than the sweeper (a
-- reserve taking the resource over, a release finding it lapsed): its
-- EXPIRING, when still due, is announced first, just before its EXPIRED, as
-- the sweeper would have. `kc` the group's kind code (nil: exclusive).
local function warn_due(p, res, m, h, at, kc)
  if warn_rem(p, m, h) then
    ev_emit('EXPIRING', res, h.rq, h.lb, at, num(h.ea), num(h.ft), kc)
  end
end

-- Takes a hold's entries (its expiry and its warning) out of their buckets.
local function bucket_rem(p, res, h)
  if h.ea > 0 then
    bucket_drop(bucket_key(p, h.ea, h.k), res)
    warn_rem(p, res, h)
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
  warn_due(p, res, res, old, at)
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

-- Semaphores and shared locks (contract section 15; docs/design/kinds.md).
-- A kind code is '' (exclusive), 's' (shared) or a semaphore's limit in
-- decimal. The holds of a shared or semaphore resource are a group:
--   P g:<resource>  hash: k -> kind code; f<token17> -> the hold (the
--                   MessagePack array of an exclusive hold); t<release token>
--                   -> token17 (token17: the fencing token in 17 digits)
--   P e:<resource>  zset token17 -> expiresAt (+inf without a TTL): who is
--                   live, counted in O(log N)
-- so a grant, a release or an extend costs O(log N) whatever the holders.
-- Both keys go with the group's last hold. A hold of a group is named
-- `<resource>\0<token17>` in the indexes and the expiry buckets, so members
-- sort by resource, then by fencing token.

local function ft17(ft)
  return string.format('%017d', ft)
end

local function member_of(res, h, grouped)
  if grouped then
    return res .. '\0' .. ft17(h.ft)
  end
  return res
end

-- The record of a resource: nil, an exclusive hold (P h:<resource>), or a
-- group handle {grp, key, ek, res, kc} (P g:<resource>). A resource has one
-- or the other, never both.
local function rec_load(p, res)
  local raw = redis.call('GET', p .. 'h:' .. res)
  if raw then
    return hold_decode(raw)
  end
  local key = p .. 'g:' .. res
  local kc = redis.call('HGET', key, 'k')
  if kc then
    return {grp = true, key = key, ek = p .. 'e:' .. res, res = res, kc = kc}
  end
  return nil
end

-- A group about to get its first hold.
local function grp_new(p, res, kc)
  return {grp = true, key = p .. 'g:' .. res, ek = p .. 'e:' .. res, res = res, kc = kc, fresh = true}
end

local function grp_hold(raw)
  return raw and hold_of(cmsgpack.unpack(raw))
end

local function grp_count(g, now_ms)
  return redis.call('ZCOUNT', g.ek, '(' .. num(now_ms), '+inf')
end

local function grp_get(g, f)
  return grp_hold(redis.call('HGET', g.key, 'f' .. f))
end

local function grp_by_token(g, tok)
  local f = redis.call('HGET', g.key, 't' .. tok)
  return f and grp_get(g, f)
end

-- The holds whose members (token17s) are `ms`, in fencing order.
local function grp_holds(g, ms)
  local out = {}
  for i = 1, #ms, 1000 do
    local fields = {}
    for j = i, math.min(i + 999, #ms) do
      fields[#fields + 1] = 'f' .. ms[j]
    end
    for _, r in ipairs(redis.call('HMGET', g.key, unpack(fields))) do
      if r then
        out[#out + 1] = grp_hold(r)
      end
    end
  end
  table.sort(out, function(x, y) return x.ft < y.ft end)
  return out
end

-- The live holds (fencing order), and those past their time.
local function grp_live(g, now_ms)
  return grp_holds(g, redis.call('ZRANGEBYSCORE', g.ek, '(' .. num(now_ms), '+inf'))
end

local function grp_lapsed(g, now_ms)
  return grp_holds(g, redis.call('ZRANGEBYSCORE', g.ek, '-inf', num(now_ms)))
end

-- The oldest live hold: the listing index has the group's holds in fencing
-- order, and holds past their time are retired within a second or two.
local function grp_oldest(p, g, now_ms)
  local ms = pg_range(p .. 'i', '[' .. g.res .. '\0', '(' .. g.res .. '\1', 8)
  for _, m in ipairs(ms) do
    local x = grp_get(g, string.sub(m, #g.res + 2))
    if hold_live(x, now_ms) then
      return x
    end
  end
  return grp_live(g, now_ms)[1]
end

-- Writes hold `x` of group `g` (new or changed).
local function grp_put(g, x)
  local f = ft17(x.ft)
  if g.fresh then
    redis.call('HSET', g.key, 'k', g.kc, 'f' .. f, hold_encode(x), 't' .. x.tok, f)
    g.fresh = false
  else
    redis.call('HSET', g.key, 'f' .. f, hold_encode(x), 't' .. x.tok, f)
  end
  redis.call('ZADD', g.ek, x.ea == 0 and '+inf' or num(x.ea), f)
end

-- Takes hold `x` out of group `g`; the group's keys go with its last hold.
local function grp_remove(g, x)
  local f = ft17(x.ft)
  redis.call('ZREM', g.ek, f)
  if redis.call('ZCARD', g.ek) == 0 then
    redis.call('DEL', g.key, g.ek)
  else
    redis.call('HDEL', g.key, 'f' .. f, 't' .. x.tok)
  end
end

-- The holders of a record now: their kind code (nil when none) and the live
-- holds, oldest first (O(N) for a group: for check, force release).
local function holders(h, now_ms)
  if not h then
    return nil, {}
  end
  if h.grp then
    local live = grp_live(h, now_ms)
    if #live == 0 then
      return nil, live
    end
    return h.kc, live
  end
  if hold_live(h, now_ms) then
    return '', {h}
  end
  return nil, {}
end

-- Whether a request of kind `kc` may join `n` holders of kind `hk`: 'ok',
-- 'held' (ALREADY_HELD) or 'mismatch' (LIMIT_MISMATCH).
local function join(hk, n, kc)
  if n == 0 then
    return 'ok'
  elseif hk == '' then
    if kc == '' or kc == 's' then
      return 'held'
    end
    return 'mismatch'
  elseif hk == 's' then
    if kc == 's' then
      return n < MAX_HOLDERS and 'ok' or 'held'
    elseif kc == '' then
      return 'held'
    end
    return 'mismatch'
  elseif kc ~= hk then
    return 'mismatch'
  end
  return n < tonumber(hk) and 'ok' or 'held'
end

-- The ALREADY_HELD row of holders (kind hk, `n` of them, the oldest `o`) with
-- `qlen` waiters: {0, heldBy, expiresAt or -1, queueLength, holders,
-- available or -1}.
local function held_row(hk, n, o, qlen)
  local avail = -1
  if hk and hk ~= '' and hk ~= 's' then
    avail = tonumber(hk) - n
  end
  if o then
    return {0, o.rq, o.ea == 0 and -1 or o.ea, qlen, n, avail}
  end
  return {0, '', -1, qlen, 0, -1}
end

-- Files a hold in the listing and requester indexes.
local function index_hold(p, res, h, grouped)
  local m = member_of(res, h, grouped)
  pg_add(p .. 'i', m)
  pg_add(p .. 'q', h.rq .. '\0' .. m)
end

-- Takes a hold out of the indexes and its expiry bucket.
local function forget_hold(p, res, h, grouped)
  local m = member_of(res, h, grouped)
  pg_rem(p .. 'i', m)
  pg_rem(p .. 'q', h.rq .. '\0' .. m)
  bucket_rem(p, m, h)
end

-- Retires what a record holds past its time (EXPIRED each, as the sweeper
-- would, which then finds nothing left; an exclusive record's key goes):
-- returns how many were retired.
local function retire_lapsed(p, res, h, now_ms, at)
  if not h then
    return 0
  end
  if not h.grp then
    if hold_live(h, now_ms) then
      return 0
    end
    warn_due(p, res, res, h, at)
    ev_emit('EXPIRED', res, h.rq, h.lb, at, num(h.ea), num(h.ft))
    forget_hold(p, res, h, false)
    redis.call('DEL', p .. 'h:' .. res)
    return 1
  end
  local gone = 0
  for _, x in ipairs(grp_lapsed(h, now_ms)) do
    warn_due(p, res, member_of(res, x, true), x, at, h.kc)
    ev_emit('EXPIRED', res, x.rq, x.lb, at, num(x.ea), num(x.ft), h.kc)
    forget_hold(p, res, x, true)
    grp_remove(h, x)
    gone = gone + 1
  end
  return gone
end

-- Grants `hold` (tok rq lb at ea ft ll, and w: its warning, 0 for none) of
-- group `g`: the hold, its indexes, its expiry bucket (and warning), RESERVED.
-- `wanted` as for bucket_slot.
local function group_grant(p, g, hold, wanted, at)
  hold.k = 0
  if hold.ea > 0 then
    local m = member_of(g.res, hold, true)
    hold.k = bucket_slot(p, hold.ea, wanted)
    bucket_file(p, m, hold.k, hold.rq, hold.lb, hold.ea, hold.ft, g.kc)
    warn_slot(p, hold, wanted)
    warn_file(p, m, hold)
  end
  grp_put(g, hold)
  index_hold(p, g.res, hold, true)
  ev_emit('RESERVED', g.res, hold.rq, hold.lb, at, hold.ea > 0 and num(hold.ea) or '', num(hold.ft), g.kc)
end

-- The group a grant of kind `kc` on `res` joins, given the record `h` there
-- (what retire_lapsed left of it): `h` itself, or a new group (an exclusive
-- record past its time was retired and its key deleted by then).
local function group_for(p, res, h, kc)
  if h and h.grp and redis.call('EXISTS', h.key) == 1 then
    return h
  end
  return grp_new(p, res, kc)
end

-- Takes the live hold `x` of record `h` (`x` is `h` for an exclusive record)
-- out of the record at `key`, its indexes and its expiry bucket, and
-- announces `kind` (UNRESERVED, FORCE_RELEASED) with `label`. The caller
-- counts it off the tenant and hands the resource over.
local function drop_hold(p, key, res, h, x, kind, label, at)
  if h.grp then
    grp_remove(h, x)
  else
    redis.call('DEL', key)
  end
  forget_hold(p, res, x, h.grp)
  ev_emit(kind, res, x.rq, label, at, x.ea == 0 and '' or num(x.ea), num(x.ft), h.grp and h.kc or nil)
end

-- An exclusive hold of `rq` takes `res` over from the record `old` there
-- (nothing, an exclusive hold past its time, or a group whose holds all
-- passed theirs): what is there is retired (EXPIRED first) and the indexes
-- name the new hold. The caller writes the hold key; returns by how much the
-- tenant's hold count changes.
local function take_over(p, res, old, rq, now_ms, at)
  local by_name, by_requester = p .. 'i', p .. 'q'
  if not old then
    pg_add(by_name, res)
    pg_add(by_requester, rq .. '\0' .. res)
    return 1
  elseif old.grp then
    local gone = retire_lapsed(p, res, old, now_ms, at)
    pg_add(by_name, res)
    pg_add(by_requester, rq .. '\0' .. res)
    return 1 - gone
  end
  retire_before_grant(p, res, old, rq, at)
  if old.rq ~= rq then
    pg_add(by_requester, rq .. '\0' .. res)
  end
  return 0
end

-- The tenant's lease policy (contract section 17), read from P t by every
-- script that needs it, so a change applies fleet-wide from the next request.
-- Fields of P t, in seconds ('0' or absent: none, or the default):
--   pmt maxTtlSeconds, prt requireTtl ('1'), pmh maxHoldSeconds,
--   pld lockDelaySeconds, pmw maxWaitSeconds (default 60).
-- policy_load answers them in ms: {mt, rt, mh, ld, mw}; read once per call.
local POLICY_FIELDS = {'pmt', 'prt', 'pmh', 'pld', 'pmw'}
local pol = nil
local function policy_load(p, raw)
  if not pol then
    local r = raw or redis.call('HMGET', p .. 't', unpack(POLICY_FIELDS))
    local function ms(v, default)
      return (tonumber(v or '') or default) * 1000
    end
    pol = {mt = ms(r[1], 0), rt = r[2] == '1', mh = ms(r[3], 0), ld = ms(r[4], 0), mw = ms(r[5], 60)}
  end
  return pol
end

-- Lock delay (lockDelaySeconds): after a hold of `res` ended by EXPIRED (at
-- its expiresAt) or FORCE_RELEASED (now), the resource takes no new holder
-- until availableAt = end + delay: P d:<resource>, a string availableAt ms
-- that expires then (PXAT). UNRESERVED starts none. Waiters keep their place:
-- the hand-over does not grant while it lasts, and the waiters' instances
-- poll (wait_poll.lua) at least once a second, so they get it then.
-- waits.lua (in every script that emits events) hooks it to ev_emit.
local function delay_after(p, res, end_ms, now_ms)
  local ld = policy_load(p).ld
  if ld > 0 and end_ms + ld > now_ms then
    local key = p .. 'd:' .. res
    local cur = tonumber(redis.call('GET', key) or '0')
    if end_ms + ld > cur then
      redis.call('SET', key, num(end_ms + ld), 'PXAT', num(end_ms + ld))
    end
  end
end

-- availableAt when `res` (whose record is `h`) is in its lock delay now, else
-- nil. A hold past its time that no script has retired yet counts as ended
-- at its expiresAt.
local function delay_until(p, res, h, now_ms)
  local ld = policy_load(p).ld
  if ld == 0 then
    return nil
  end
  local at = tonumber(redis.call('GET', p .. 'd:' .. res) or '0')
  if h and h.grp then
    local last = redis.call('ZREVRANGEBYSCORE', h.ek, num(now_ms), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)[2]
    if last then
      at = math.max(at, tonumber(last) + ld)
    end
  elseif h and h.ea > 0 and h.ea <= now_ms then
    at = math.max(at, h.ea + ld)
  end
  if at > now_ms then
    return at
  end
  return nil
end

-- maxHoldSeconds: the TTL in ms a grant at `now` gets for `ttl` (0: none),
-- and whether the policy capped it (no hold lasts past reservedAt + mh).
local function hold_clamp(ttl)
  local mh = pol and pol.mh or 0
  if mh > 0 and (ttl == 0 or ttl > mh) then
    return mh, true
  end
  return ttl, false
end

-- The row of a grant (reserve.lua's RESERVED row): {1, reservedAt,
-- expiresAt or -1, fencingToken, releaseToken[, waited ms]} and, when the
-- tenant has maxHoldSeconds, {..., waited or -1, holdDeadline, capped 0/1}.
local function granted(at, ea, ft, tok, waited, capped)
  local row = {1, at, ea == 0 and -1 or ea, ft, tok}
  if waited then
    row[6] = waited
  end
  local mh = pol and pol.mh or 0
  if mh > 0 then
    row[6] = waited or -1
    row[7] = at + mh
    row[8] = capped and 1 or 0
  end
  return row
end
