-- Drops entries PostgreSQL confirmed and reads the next batch. KEYS: archive queue, queue
-- bytes, lease. ARGV: node id, lease ms, batch size, then pairs of entry id and its bytes.
-- Only entries still there count off their bytes (another node may have trimmed them already).
-- Renews the lease if this node holds it. Returns {waiting, next entries (at most a batch)}.
local freed = 0
for i = 4, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then freed = freed + tonumber(ARGV[i + 1]) end
end
if freed > 0 then
  if redis.call('DECRBY', KEYS[2], int(freed)) <= 0 then redis.call('DEL', KEYS[2]) end
end
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return { redis.call('XLEN', KEYS[1]), redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[3]) }
