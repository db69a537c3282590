-- events_read.lua: the events of a tenant after a given id, for resume.
--
-- KEYS[1]  c:{<tag>}:ev  the tenant's event stream
-- ARGV[1]  the last id the client saw ("ms-seq"), or '' for the largest id
--          (nothing can follow it, and XRANGE refuses to start after it)
-- ARGV[2]  the most to return
--
-- Returns {lastGeneratedId or '', firstRetainedId or '', trimmed, entries}:
-- trimmed is how many entries the stream has dropped (MAXLEN), entries is
-- XRANGE's reply for ids strictly after ARGV[1]. The caller compares the ids:
-- a client id below the first retained one after a trim, or above the last
-- generated one (from a history that was lost), gets a GAP instead.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'', '', 0, {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local f = {}
for i = 1, #info, 2 do
  f[info[i]] = info[i + 1]
end
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
end
return {f['last-generated-id'], f['recorded-first-entry-id'] or '',
        tonumber(f['entries-added']) - tonumber(f['length']), entries}
