-- clock.lua: a prelude (see lua/README.md) — the store clock, read once per
-- script call: clock() answers Redis TIME, asking Redis only the first time.

local clock_t = nil

local function clock()
  if not clock_t then
    clock_t = redis.call('TIME')
  end
  return clock_t
end

