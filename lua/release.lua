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
-- Returns {1, requester, earliest} when released (earliest: the second to move
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
local h = hold_decode(redis.call('GET', KEYS[3]))
if not hold_live(h, now_ms) then
  idem_keep = {0}
  return {0}
end
if ARGV[5] == '1' then
  if string.sub(h.ll, 1, 1) ~= 'L' then
    return {4}
  end
  local sh = string.sub(h.ll, 2)
  if sh ~= '' and sh ~= ARGV[6] then
    return {3}
  end
end
ev_open(KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
unindex(p, res, h.rq)
bucket_rem(p, res, h)
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
ev_emit(ARGV[3], res, h.rq, ARGV[4], num(now_ms), h.ea == 0 and '' or num(h.ea), num(h.ft))
-- The head of the resource's line gets it, in this step.
wl_handover(p, res, now_ms, now_us, num(now_ms))
bucket_flush()
local earliest = due_close(p)
ev_close()
wl_close()
idem_keep = {1, h.rq, 0}
return {1, h.rq, earliest}
