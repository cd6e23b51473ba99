-- ARGV: lifetime ms, keys TTL ms, last batch (1/0), connIds of this node (one batch of them).
-- Extends them; the last batch then purges (after all of this node's batches are extended, so
-- a slow node's own connections are not purged under it). Returns {earliest expiry ('' before
-- the last batch), vanished users, connIds that are gone (purged by another node while this
-- one was late)}.
local now = nowMs()
local expiry = int(now + tonumber(ARGV[1]))
local missing = {}
for i = 4, #ARGV do
  if redis.call('HEXISTS', conns, ARGV[i]) == 1 then redis.call('ZADD', expiries, expiry, ARGV[i])
  else missing[#missing + 1] = ARGV[i] end
end
keep(ARGV[2])
if ARGV[3] ~= '1' then return { '', {}, missing } end
local vanished = purge(now)
return { earliest(), vanished, missing }
