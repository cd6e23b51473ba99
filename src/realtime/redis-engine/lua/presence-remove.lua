-- ARGV: connId, userId. Returns {last (0/1), vanished users (other than this one)}.
local conn, user = ARGV[1], ARGV[2]
local vanished = purge(nowMs())
local last = 0
if redis.call('HGET', conns, conn) == user then
  redis.call('HDEL', conns, conn)
  redis.call('ZREM', expiries, conn)
  if redis.call('HINCRBY', users, user, -1) <= 0 then
    redis.call('HDEL', users, user)
    last = 1
  end
else
  -- This connection expired a moment ago: its removal is the user's leave, reported once.
  local rest, found = without(vanished, user)
  if found then vanished = rest; last = 1 end
end
return { last, vanished }
