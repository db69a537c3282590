-- list.lua: one page of a tenant's live holds, in byte order of resource.
-- Composed as: clock.lua, pages.lua, holds.lua, this file as the metered body, meter.lua
-- (lua/README.md).
--
-- KEYS[1]  P t     the tenant (it gives the prefix P, and the lease policy)
-- ARGV[1]  'i' to walk the listing index (members: resources), 'q' for the
--          requester index (members: `<requester>\0<resource>`)
-- ARGV[2]  ZRANGEBYLEX min ('-', '[<member>' or '(<member>')
-- ARGV[3]  ZRANGEBYLEX max ('+' or '(<member bound>')
-- ARGV[4]  how many live holds to return at most
-- ARGV[5]  the requester for 'q' (only its holds count), '' for 'i'
--
-- Returns {rows, last, more}: rows of {resource, requester, reservedAtMs,
-- expiresAtMs or -1, fencingToken, apiKeyLabel, kind code[, holdDeadline:
-- with the tenant's maxHoldSeconds, holds.lua]}, one per hold (a
-- group's holds are members `<resource>\0<token>`, holds.lua); `last`, the
-- last member read ('' if none), without the requester prefix; more = 1 when members may follow. Entries of holds past their
-- time (the sweeper retires them within a second or two) are skipped, and at
-- most 2 * count + 100 entries are read, so a page costs O(log N + count);
-- `more` is 0 only when no live hold follows.

local t = clock()
local now_ms = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local p = string.sub(KEYS[1], 1, -2)
local which, min, max = ARGV[1], ARGV[2], ARGV[3]
local count = tonumber(ARGV[4])
local want_rq = ARGV[5]
local strip = 0
if which == 'q' then
  strip = #want_rq + 1
end
local budget = 2 * count + 100
local mh = policy_load(p).mh
local rows, names, last, ended = {}, {}, '', false
-- The record of the last resource read.
local cache_res, cache_h = nil, nil

-- The hold a member names: `<resource>` an exclusive hold, `<resource>\0<token>`
-- one of a group's; with its kind code.
local function hold_named(name)
  local z = string.find(name, '\0', 1, true)
  local res = z and string.sub(name, 1, z - 1) or name
  if res ~= cache_res then
    cache_res, cache_h = res, rec_load(p, res)
  end
  local h = cache_h
  if not h then
    return res, nil
  elseif not z then
    return res, (not h.grp) and h or nil, ''
  elseif not h.grp then
    return res, nil
  end
  return res, grp_get(h, string.sub(name, z + 1)), h.kc
end

-- One live hold past the page tells whether another page follows.
while #rows <= count and budget > 0 and not ended do
  local chunk = math.min(budget, count + 1 - #rows)
  local members = pg_range(p .. which, min, max, chunk)
  for i = 1, #members do
    local name = string.sub(members[i], strip + 1)
    budget = budget - 1
    local res, h, kc = hold_named(name)
    if hold_live(h, now_ms) and (want_rq == '' or h.rq == want_rq) then
      rows[#rows + 1] = {res, h.rq, h.at, h.ea == 0 and -1 or h.ea, h.ft, h.lb, kc}
      if mh > 0 then
        rows[#rows][8] = h.at + mh
      end
      names[#rows] = name
    end
    last = name
  end
  ended = #members < chunk
  if #members > 0 then
    min = '(' .. members[#members]
  end
end
if #rows > count then
  rows[#rows] = nil
  return {rows, names[count], 1}
end
return {rows, last, ended and 0 or 1}
