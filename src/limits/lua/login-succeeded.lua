-- A sign-in succeeded: forget the pair, give the address its failure back while its window
-- lasts. KEYS: as login-attempt.lua. ARGV: now ms.
redis.call('DEL', KEYS[2])
local a = redis.call('HMGET', KEYS[1], 'n', 'ends')
if (tonumber(a[2]) or 0) > tonumber(ARGV[1]) and (tonumber(a[1]) or 0) > 0 then redis.call('HINCRBY', KEYS[1], 'n', -1) end
return 0
