-- wait_poll.lua: the waiting instance's look at one of its waiters (contract
-- section 12), at least once a second: refreshes its heartbeat, tries the
-- hand-over of each of its resources (so a grant never depends on a message:
-- a lost one only delays it), and answers where it stands.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, waits.lua, then
-- this file (lua/README.md).
--
-- KEYS[1]  P t     the tenant    KEYS[2]  P ev    the event stream
-- ARGV[1]  the waiter's id    ARGV[2]  events retained per tenant
--
-- Returns -1 when the waiter is gone, {1, rows, earliest, ended} when it was
-- granted (rows as reserve.lua's RESERVED rows), else {0, places, earliest,
-- ended}: its place in each line; earliest as reserve.lua's, ended the holds
-- a hand-over retired (clock.lua).

local t = clock()
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local p = string.sub(KEYS[1], 1, -2)
local wid = ARGV[1]
local earliest = 0
local w = wl_get(p, wid)
if not w then
  return -1
end
if w.st == 0 then
  w.hb = now_ms + WL_HEARTBEAT_MS
  redis.call('ZADD', p .. 'wn', w.hb, wid)
  redis.call('SET', p .. 'W:' .. wid, cmsgpack.pack(w), 'KEEPTTL')
  ev_open(KEYS[2], ARGV[2])
  for _, it in ipairs(w.it) do
    wl_handover(p, it[1], now_ms, now_us, num(now_ms))
  end
  bucket_flush()
  earliest = due_close(p)
  ev_close()
  wl_close()
  w = wl_get(p, wid)
  if not w then
    return -1
  end
end
if w.st == 1 then
  return {1, w.rows, earliest, ended}
end
local places = {}
for i, it in ipairs(w.it) do
  places[i] = (redis.call('ZRANK', wl_line(p, it[1]), wid) or -1) + 1
end
return {0, places, earliest, ended}
