-- events.lua: a prelude, prepended (by src/store/redis.rs) to every script that
-- changes reservations. Each event is appended to the tenant's stream (the
-- bounded history that `Last-Event-ID` resumes from) and the script's events are
-- published once, as one message, on the tenant's channel (live fan-out). Both
-- happen inside the calling script, so an event exists exactly when its change
-- happened, and the stream id is the event id.
--
-- ev_open(streamKey, retain) first; ev_emit(...) per event; ev_close() last.
-- The channel has the stream key's name. All values are strings; the message is
-- a JSON array of {id, type, resource, requester, label, atMs, expiresAtMs or '',
-- fencingToken, kind code}: the kind code of holds.lua ('' exclusive, 's'
-- shared, the limit of a semaphore), stored in the stream as field `m` only
-- when it is not ''.

local ev_key, ev_retain, ev_out = nil, 0, {}
-- The events that end a hold, and their code in `ended` (clock.lua).
local ev_ends = {UNRESERVED = 1, EXPIRED = 2, FORCE_RELEASED = 3}
-- Called with (resource, end ms, now ms) for each EXPIRED (ended at its expiresAt) and
-- FORCE_RELEASED (ended now): holds.lua starts the resource's lock delay there.
local ev_on_end = nil

local function ev_open(key, retain)
  ev_key, ev_retain = key, retain
end

local function ev_emit(kind, res, rq, label, at, ea, ft, kc)
  local id
  if kc and kc ~= '' then
    id = redis.call('XADD', ev_key, 'MAXLEN', '~', ev_retain, '*',
      't', kind, 'r', res, 'q', rq, 'l', label, 'a', at, 'x', ea, 'f', ft, 'm', kc)
  else
    kc = ''
    id = redis.call('XADD', ev_key, 'MAXLEN', '~', ev_retain, '*',
      't', kind, 'r', res, 'q', rq, 'l', label, 'a', at, 'x', ea, 'f', ft)
  end
  ev_out[#ev_out + 1] = {id, kind, res, rq, label, at, ea, ft, kc}
  local e = ev_ends[kind]
  if e then
    ended[#ended + 1] = e
    ended[#ended + 1] = math.max(0, tonumber(at) - math.floor(tonumber(ft) / 1000))
    if e > 1 and ev_on_end then
      ev_on_end(res, e == 2 and tonumber(ea) or tonumber(at), tonumber(at))
    end
  end
end

local function ev_close()
  if #ev_out > 0 then
    redis.call('PUBLISH', ev_key, cjson.encode(ev_out))
  end
end

