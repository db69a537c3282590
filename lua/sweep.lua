-- sweep.lua: retire a tenant's holds whose time has passed, exactly once each.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, waits.lua, then this
-- file (lua/README.md).
--
-- KEYS[1]  P t     the tenant    KEYS[2]  P ev    the event stream
-- ARGV[1]  events retained per tenant    ARGV[2]  the most holds to retire
--
-- Walks the due seconds (P xd up to now) and their buckets. Each hold past its
-- time is retired: EXPIRED (with the label of the key that made it), its
-- bucket entry removed, and — unless a newer hold already took the resource —
-- its hold key and index entries. A second whose buckets are empty is dropped.
-- Idempotent: a bucket entry is there until it is retired, so a second
-- sweeper (another instance) finds nothing left to do.
-- A due expiry warning (`\1<member>`, holds.lua warn_file) is dropped and
-- announced as EXPIRING when the hold's expiry entry still has its expiresAt
-- and fencing token. Seconds are walked in order and a warning's second is
-- before its hold's expiry's, so a hold whose warning and expiry both fell due
-- (no instance ran) shows EXPIRING before EXPIRED. Warnings count towards
-- ARGV[2] but not in `retired`.
--
-- Each EXPIRED starts the resource's lock delay when the tenant has one
-- (holds.lua delay_after): the hand-over then grants nothing until it ends.
-- Returns {retired, more, next, ended}: more = 1 when the limit stopped it,
-- next the tenant's earliest second that still has buckets (-1: none), ended
-- the holds retired (clock.lua).

local t = clock()
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local ats = num(now_ms)
local p = string.sub(KEYS[1], 1, -2)
local limit = tonumber(ARGV[2])
ev_open(KEYS[2], ARGV[1])

local retired, more, warned = 0, 0, 0
local freed = {}
pg_more = limit
local seconds = redis.call('ZRANGEBYSCORE', p .. 'xd', '-inf', math.floor(now_ms / 1000), 'LIMIT', 0, 16)
for _, s in ipairs(seconds) do
  local slots = tonumber(redis.call('HGET', p .. 'xc', s) or '0')
  local emptied = true
  for k = 0, math.floor((slots - 1) / BUCKET) do
    local bk = p .. 'x:' .. s .. ':' .. k
    local kv = redis.call('HGETALL', bk)
    for j = 1, #kv, 2 do
      local res = kv[j]
      local e = cmsgpack.unpack(kv[j + 1])
      local rq, lb, ea, ft = e[1], e[2], e[3], e[4]
      -- An expiry warning: {ea, ft, w, k}, due w seconds before ea.
      local warning = string.byte(res, 1) == 1
      local due = ea
      if warning then
        ea, ft = e[1], e[2]
        due = warn_at(ea, e[3])
      end
      if due > now_ms or retired + warned >= limit then
        emptied = false
        if due <= now_ms then
          more = 1
        end
      elseif warning then
        redis.call('HDEL', bk, res)
        local m = string.sub(res, 2)
        local raw = redis.call('HGET', bucket_key(p, ea, e[4]), m)
        local x = raw and cmsgpack.unpack(raw)
        if x and x[3] == ea and x[4] == ft then
          local z = string.find(m, '\0', 1, true)
          ev_emit('EXPIRING', z and string.sub(m, 1, z - 1) or m, x[1], x[2], ats, num(ea), num(ft), x[5] or '')
        end
        warned = warned + 1
      elseif string.find(res, '\0', 1, true) then
        -- A hold of a group (`<resource>\0<token>`): it leaves the group.
        local field = res
        res = string.sub(field, 1, string.find(field, '\0', 1, true) - 1)
        redis.call('HDEL', bk, field)
        local cur = rec_load(p, res)
        ev_emit('EXPIRED', res, rq, lb, ats, num(ea), num(ft), e[5] or '')
        pg_rem(p .. 'i', field)
        pg_rem(p .. 'q', rq .. '\0' .. field)
        if cur and cur.grp then
          local x = grp_get(cur, string.sub(field, #res + 2))
          if x and x.ft == ft then
            grp_remove(cur, x)
            freed[#freed + 1] = res
          end
        end
        retired = retired + 1
      else
        ev_emit('EXPIRED', res, rq, lb, ats, num(ea), num(ft))
        redis.call('HDEL', bk, res)
        local key = p .. 'h:' .. res
        local cur = rec_load(p, res)
        if not cur or cur.ft == ft then
          redis.call('DEL', key)
          unindex(p, res, rq)
          -- The head of the resource's line gets it, in this step.
          freed[#freed + 1] = res
        elseif cur.rq ~= rq then
          pg_rem(p .. 'q', rq .. '\0' .. res)
        end
        retired = retired + 1
      end
    end
  end
  if emptied then
    redis.call('HDEL', p .. 'xc', s)
    redis.call('ZREM', p .. 'xd', s)
  end
end
if retired > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'n', -retired)
end
for _, res in ipairs(freed) do
  wl_handover(p, res, now_ms, now_us, ats)
end
bucket_flush()
due_close(p)
ev_close()
wl_close()
local first = redis.call('ZRANGE', p .. 'xd', '0', '0', 'WITHSCORES')[2]
return {retired, more, first and tonumber(first) or -1, ended}
