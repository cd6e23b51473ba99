-- Gives a room's archive lease back. KEYS: archive queue, lease. ARGV: node id.
-- Returns the entries waiting (published while the batch was written: the caller goes on).
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return redis.call('XLEN', KEYS[1])
