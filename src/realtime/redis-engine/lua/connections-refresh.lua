-- KEYS: the user's set. ARGV: lifetime ms, key TTL ms, this node's connIds of that user.
local expiry = int(nowMs() + tonumber(ARGV[1]))
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
