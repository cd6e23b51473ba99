-- Forgets a room the archive index named, if no publish named it within the grace.
-- KEYS: the archive index. ARGV: room, grace ms. Returns 1 when it went.
-- The caller saw the room's queue empty first; a publish names the room before its script
-- runs, so a publish in flight keeps it (its score is recent).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= nowMs() - tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
