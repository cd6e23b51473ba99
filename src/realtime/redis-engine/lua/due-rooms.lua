-- KEYS: the presence room index. ARGV: batch size. Rooms whose earliest expiry has passed.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(nowMs()), 'LIMIT', 0, tonumber(ARGV[1]))
