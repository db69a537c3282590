-- list_range.lua: one page of a listing index (names in byte order).
--
-- KEYS[1]  the index: cl:{T}:idx or cl:{T}:q:<requester>
-- ARGV[1]  ZRANGEBYLEX min, ARGV[2] max, ARGV[3] count
--
-- Returns up to count member names.

return redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
