-- pages.lua: a prelude (see lua/README.md) — a sorted set of names kept as
-- small pages, so each entry costs its own bytes plus a few, not the ~128 bytes
-- of a skiplist entry. Used for the listing index (`c:{T}:i`, members are
-- resources) and the requester index (`c:{T}:q`, members are
-- `<requester>\0<resource>`).
--
-- A set named B is:
--   B:           page 0, a zset (score 0), every member below the first split
--   B:<low>      the page whose members are >= <low> and below the next page's
--   B!           the directory: a zset (score 0) of every <low> but page 0's
-- Pages hold at most PG_MAX members, so Redis keeps each one as a listpack
-- (zset-max-listpack-entries defaults to 128) as long as members are at most
-- 64 bytes; a longer member turns only its own page into a skiplist.
-- A page that empties is dropped with its directory entry; a small one is
-- merged into the page before it, so the directory never outgrows the data.
--
-- These keys are derived from B inside the script rather than passed in KEYS:
-- which pages a name touches is only known here. They all carry the tenant's
-- hash tag, so they live in the script's own Cluster slot.
--
-- Every comparison is made by Redis (memcmp), never by Lua (whose string
-- comparison follows the server's locale).

-- 32 keeps each insert's linear search and move inside a page short (a page
-- costs about 100 bytes of key and 130 of directory entry, 4-8 bytes a name).
local PG_MAX, PG_MIN = 32, 4

-- The <low> of the page that holds (or would hold) `m` ('' for page 0).
local function pg_low(b, m)
  local d = redis.call('ZREVRANGEBYLEX', b .. '!', '[' .. m, '-', 'LIMIT', '0', '1')
  return d[1] or ''
end

-- Lua compares strings with strcoll, so by the server's locale, while Redis
-- compares with memcmp. Only where the two agree (the C and C.UTF-8 locales,
-- which redis-server runs with unless its environment sets another) may a
-- script remember the bounds of the page it last used in a set and skip the
-- directory for names that fall inside them — most names of a batch, when
-- they are alike.
local pg_bytewise = nil
local function pg_collation_is_bytewise()
  if pg_bytewise == nil then
    pg_bytewise = ('B' < 'a') and ('Z' < '_') and ('a\0' < 'a\1') and ('\127' < '\128')
      and ('\128' < '\255') and ('ab' < 'b')
  end
  return pg_bytewise
end
local pg_bounds = {}
local pg_last_low = {}
-- How many more names the calling script will add or remove after this one:
-- bounds are worth asking for (one more call) only when some will.
local pg_more = 0

-- The page key and <low> for `m`, from the remembered bounds when they cover it.
local function pg_page(b, m)
  local c = pg_bounds[b]
  if c and m >= c.low and (not c.high or m < c.high) then
    return c.page, c.low
  end
  local low = pg_low(b, m)
  local page = b .. ':' .. low
  -- Ask for the page's upper bound only once two names in a row fell in it:
  -- names in no order would only pay for it.
  if pg_more > 0 and pg_last_low[b] == low and pg_collation_is_bytewise() then
    local high = redis.call('ZRANGEBYLEX', b .. '!', '(' .. low, '+', 'LIMIT', '0', '1')[1]
    pg_bounds[b] = {low = low, high = high or false, page = page}
  end
  pg_last_low[b] = low
  return page, low
end

-- Counts of pages this script has already looked at: a batch that adds many
-- names to one page asks for its size once.
local pg_count = {}

local function pg_add(b, m)
  local page = pg_page(b, m)
  if redis.call('ZADD', page, '0', m) == 0 then
    return
  end
  local n = pg_count[page]
  if n then
    n = n + 1
  else
    n = redis.call('ZCARD', page)
  end
  if n > PG_MAX then
    -- Split: the upper half becomes a page of its own — or, when the new
    -- name is the page's last (names arriving in order), only the new name,
    -- so pages filled in order stay full instead of half empty.
    local half = math.floor(n / 2)
    if redis.call('ZRANGE', page, '-1', '-1')[1] == m then
      half = n - 1
    end
    local upper = redis.call('ZRANGE', page, half, -1)
    local args = {}
    for i = 1, #upper do
      args[2 * i - 1] = '0'
      args[2 * i] = upper[i]
    end
    redis.call('ZADD', b .. ':' .. upper[1], unpack(args))
    redis.call('ZREMRANGEBYRANK', page, half, -1)
    redis.call('ZADD', b .. '!', '0', upper[1])
    pg_count[b .. ':' .. upper[1]] = #upper
    pg_bounds[b] = nil
    n = half
  end
  pg_count[page] = n
end

local function pg_rem(b, m)
  local page, low = pg_page(b, m)
  if redis.call('ZREM', page, m) == 0 then
    return
  end
  local n = pg_count[page]
  if n then
    n = n - 1
  else
    n = redis.call('ZCARD', page)
  end
  pg_count[page] = n
  if low == '' or n >= PG_MIN then
    return
  end
  if n == 0 then
    redis.call('ZREM', b .. '!', low)
    pg_bounds[b] = nil
    return
  end
  -- Merge a small page into the one before it when both fit in one.
  local prev = redis.call('ZREVRANGEBYLEX', b .. '!', '(' .. low, '-', 'LIMIT', '0', '1')[1] or ''
  local ppage = b .. ':' .. prev
  local pn = redis.call('ZCARD', ppage)
  if pn + n <= PG_MAX / 2 then
    local members = redis.call('ZRANGE', page, 0, -1)
    local args = {}
    for i = 1, #members do
      args[2 * i - 1] = '0'
      args[2 * i] = members[i]
    end
    redis.call('ZADD', ppage, unpack(args))
    redis.call('DEL', page)
    redis.call('ZREM', b .. '!', low)
    pg_count[ppage] = pn + n
    pg_count[page] = nil
    pg_bounds[b] = nil
  end
end

-- Up to `count` members from `min` (a ZRANGEBYLEX bound: '-', '[x' or '(x') to
-- `max` ('+' or '(x'), in order, walking pages: O(log pages + count).
local function pg_range(b, min, max, count)
  local low = ''
  if min ~= '-' then
    low = pg_low(b, string.sub(min, 2))
  end
  local out = {}
  while true do
    local got = redis.call('ZRANGEBYLEX', b .. ':' .. low, min, max, 'LIMIT', '0', count - #out)
    for i = 1, #got do
      out[#out + 1] = got[i]
    end
    if #out >= count then
      return out
    end
    local nxt = redis.call('ZRANGEBYLEX', b .. '!', '(' .. low, max, 'LIMIT', '0', '1')[1]
    if not nxt then
      return out
    end
    low = nxt
  end
end

