-- ARGV: connId, userId, lifetime ms, keys TTL ms.
-- Returns {first (0/1), earliest expiry, vanished users}.
local conn, user = ARGV[1], ARGV[2]
local now = nowMs()
local vanished = purge(now)
local first = 0
if redis.call('HEXISTS', conns, conn) == 0 then
  redis.call('HSET', conns, conn, user)
  if redis.call('HINCRBY', users, user, 1) == 1 then first = 1 end
end
redis.call('ZADD', expiries, int(now + tonumber(ARGV[3])), conn)
if first == 1 then
  -- The user was present until now through a connection that just expired: presence never
  -- lapsed, so neither a leave nor a join.
  local rest, found = without(vanished, user)
  if found then vanished = rest; first = 0 end
end
keep(ARGV[4])
return { first, earliest(), vanished }
