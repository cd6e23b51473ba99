-- GCRA: one take of up to ARGV[3] units for the key KEYS[1]. ARGV: interval ms, tolerance ms, units wanted.
-- Returns {granted, 0} or {0, ms until one unit would fit}.
-- Redis's clock (TIME) for every node, so the nodes' clocks need not agree. Takes up to
-- ARGV[3] units at once (a lease; see createRedisRateLimiter): as many as fit under the
-- tolerance, at least one, or none with the wait until one would fit. The key lives exactly as
-- long as it carries debt.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local fits = math.floor((tolerance - (tat - now)) / interval)
if fits < 1 then return { 0, math.ceil(tat + interval - now - tolerance) } end
local granted = math.min(wanted, fits)
local nextTat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.3f', nextTat), 'PX', math.max(1, math.ceil(nextTat - now)))
return { granted, 0 }
