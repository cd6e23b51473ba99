-- Names a room as having publications for the archive, before its publish. KEYS: the archive
-- index. ARGV: room. The score is Redis's clock, so every node judges the grace the same.
redis.call('ZADD', KEYS[1], nowMs(), ARGV[1])
return 1
