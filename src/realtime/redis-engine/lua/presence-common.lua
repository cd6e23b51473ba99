-- Functions every presence script starts with (after common.lua). KEYS of a room's presence:
-- a hash connId -> userId, a sorted set connId -> expiry (server ms) and a hash userId -> live
-- connection count. purge() drops expired connections and returns the users whose last
-- connection that was: each such user gets exactly one `leave`, from whoever purged them (a
-- removal is atomic, so only one caller sees it).
local conns, expiries, users = KEYS[1], KEYS[2], KEYS[3]
local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', expiries, '-inf', int(now), 'LIMIT', 0, 1000)
  local vanished = {}
  for _, conn in ipairs(dead) do
    local user = redis.call('HGET', conns, conn)
    redis.call('HDEL', conns, conn)
    redis.call('ZREM', expiries, conn)
    if user and redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
      vanished[#vanished + 1] = user
    end
  end
  return vanished
end
local function without(list, item)
  local out, found = {}, false
  for _, v in ipairs(list) do if v == item and not found then found = true else out[#out + 1] = v end end
  return out, found
end
local function earliest()
  local first = redis.call('ZRANGE', expiries, 0, 0, 'WITHSCORES')
  return first[2] or ''
end
local function keep(ms)
  redis.call('PEXPIRE', conns, ms)
  redis.call('PEXPIRE', expiries, ms)
  redis.call('PEXPIRE', users, ms)
end
