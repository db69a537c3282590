-- clock.lua: a prelude (see lua/README.md) — the store clock, read once per
-- script call: clock() answers Redis TIME, asking Redis only the first time.
-- And `ended`, the holds this call ended, for cooplocker_hold_seconds:
-- {end, age in ms, ...} (end 1 released, 2 expired, 3 force released; the age
-- by the store clock, from the fencing token, which is the grant's time in µs).
-- events.lua fills it; meter.lua, sweep.lua and wait_poll.lua return it last.

local clock_t = nil

local function clock()
  if not clock_t then
    clock_t = redis.call('TIME')
  end
  return clock_t
end


local ended = {}
