-- release.lua: release one hold by name, without its release token — the
-- admin's force release, or a locklock release.
-- Composed as: clock.lua, events.lua, pages.lua, holds.lua, waits.lua, idem.lua,
-- this file as the metered body, meter.lua (lua/README.md).
--
-- KEYS[1]  P t     the tenant    KEYS[2]  P ev    the event stream
-- KEYS[3]  P h:<resource>
-- ARGV[1]  resource    ARGV[2]  events retained per tenant
-- ARGV[3]  the event: FORCE_RELEASED (admin) or UNRESERVED (locklock)
-- ARGV[4]  apiKeyLabel for the event
-- ARGV[5]  '1' for a locklock release (it may release only locklock locks,
--          with their secret), '0' for the admin
-- ARGV[6]  the hash of the secret presented ('' for none)
--
-- FORCE_RELEASED starts the resource's lock delay (holds.lua delay_after, by
-- the events.lua hook), so the hand-over below grants nothing until it ends.
-- A group (shared holds, a semaphore's permits) is released whole: one event
-- per hold. Returns {1, requester, earliest} when released (the oldest
-- holder's requester; earliest: the second to move
-- the tenant to in the fleet's due index when a hand-over granted a waiter, 0:
-- none), {0} when not held, {3} when the lock
-- has a secret and ARGV[6] is not its hash, {4} when a locklock release meets
-- a hold made through the Reservation API (released only with its
-- releaseToken); in the last two cases nothing changes, and nothing is
-- recorded for an Idempotency-Key. The hashes are SHA-256
-- of a salted secret, so comparing them reveals nothing usable.

local t = clock()
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local p = string.sub(KEYS[1], 1, -2)
local res = ARGV[1]
local h = rec_load(p, res)
local hk, live = holders(h, now_ms)
if #live == 0 then
  idem_keep = {0}
  return {0}
end
if ARGV[5] == '1' then
  -- Shared holds and permits are Reservation API holds (contract section 15).
  if hk ~= '' or string.sub(h.ll, 1, 1) ~= 'L' then
    return {4}
  end
  local sh = string.sub(h.ll, 2)
  if sh ~= '' and sh ~= ARGV[6] then
    return {3}
  end
end
ev_open(KEYS[2], ARGV[2])
local ats = num(now_ms)
-- A group's holds past their time get their EXPIRED first; then every live
-- hold is released, oldest first.
local lapsed = 0
if h.grp then
  lapsed = retire_lapsed(p, res, h, now_ms, ats)
end
for _, x in ipairs(live) do
  drop_hold(p, KEYS[3], res, h, x, ARGV[3], ARGV[4], ats)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'n', -(#live + lapsed))
end
-- The head of the resource's line gets it, in this step.
wl_handover(p, res, now_ms, now_us, ats)
bucket_flush()
local earliest = due_close(p)
ev_close()
wl_close()
idem_keep = {1, live[1].rq, 0}
return {1, live[1].rq, earliest}
