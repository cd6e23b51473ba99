-- Takes (or renews) a room's archive lease and reads its first batch. KEYS: archive queue,
-- lease. ARGV: node id, lease ms, batch size.
-- Returns {waiting, entries}: waiting is the queue's length when this node holds the lease now
-- (entries: the oldest, at most a batch), 0 when the queue is empty (no lease taken), -1 when
-- another node holds it.
local waiting = redis.call('XLEN', KEYS[1])
if waiting == 0 then return { 0, {} } end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return { -1, {} } end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return { waiting, redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[3]) }
