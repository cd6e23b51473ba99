-- Cluster-wide connection counts: one sorted set per user (or API key), connId -> expiry.
-- KEYS: the user's set. ARGV: connId, limit, lifetime ms, key TTL ms.
-- Returns 1 (reserved) or 0 (at the limit).
local now = nowMs()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], int(now + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
