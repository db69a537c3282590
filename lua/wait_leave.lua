-- wait_leave.lua: a waiter leaves (contract section 12): its wait ended
-- (timeout, shutdown) or its client went away. It leaves every line, and the
-- lines it leaves get a hand-over (the next waiter may go now). A grant that
-- came first is the client's answer — or, when the client went away, is
-- released again at once (UNRESERVED) and handed on.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, waits.lua, then
-- this file (lua/README.md).
--
-- KEYS[1]  P t     the tenant    KEYS[2]  P ev    the event stream
-- ARGV[1]  the waiter's id    ARGV[2]  events retained per tenant
-- ARGV[3]  '1' when the client went away
--
-- Returns -1 when the waiter is gone, {1, rows} when it had been granted (and
-- the client is there), {2} when a grant was released again, else {0, rows}:
-- per item {placeInLine, heldBy or '', expiresAtMs or -1}; each followed by
-- earliest (reserve.lua's) and ended (the holds this call ended, clock.lua).

local t = clock()
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local ats = num(now_ms)
local p = string.sub(KEYS[1], 1, -2)
local wid = ARGV[1]
local earliest = 0
local w = wl_get(p, wid)
if not w then
  return -1
end
redis.call('DEL', p .. 'W:' .. wid)
if w.st == 1 and ARGV[3] ~= '1' then
  return {1, w.rows, 0, ended}
end
ev_open(KEYS[2], ARGV[2])
local answer
if w.st == 1 then
  -- Granted while the client went away: released again, if still held.
  local gone = 0
  for i, it in ipairs(w.it) do
    local res, rq = it[1], it[2]
    local key = p .. 'h:' .. res
    local h = rec_load(p, res)
    local x = h
    if h and h.grp then
      x = grp_by_token(h, it[4])
    end
    if hold_live(x, now_ms) and x.tok == it[4] and x.rq == rq then
      drop_hold(p, key, res, h, x, 'UNRESERVED', w.lb, ats)
      gone = gone + 1
    end
  end
  if gone > 0 then
    redis.call('HINCRBY', KEYS[1], 'n', -gone)
  end
  -- Nobody got the grant: a retry under its Idempotency-Key executes again.
  if w.ik then
    redis.call('DEL', w.ik[1])
  end
  answer = {2}
else
  local rows = {}
  for i, it in ipairs(w.it) do
    local place = (redis.call('ZRANK', wl_line(p, it[1]), wid) or -1) + 1
    local h = rec_load(p, it[1])
    local o = nil
    if h and h.grp then
      o = grp_oldest(p, h, now_ms)
    elseif hold_live(h, now_ms) then
      o = h
    end
    if o then
      rows[i] = {place, o.rq, o.ea == 0 and -1 or o.ea}
    else
      rows[i] = {place, '', -1}
    end
  end
  wl_forget(p, wid, w)
  wl_unpend(w)
  -- A wait that ended without a grant (not a client that went away) is
  -- counted against each of its resources (waits.lua contention_count).
  if ARGV[3] ~= '1' then
    for _, it in ipairs(w.it) do
      contention_count(p, 'co', it[1])
    end
  end
  answer = {0, rows}
end
for _, it in ipairs(w.it) do
  wl_handover(p, it[1], now_ms, now_us, ats)
end
bucket_flush()
earliest = due_close(p)
ev_close()
wl_close()
answer[#answer + 1] = earliest
answer[#answer + 1] = ended
return answer
