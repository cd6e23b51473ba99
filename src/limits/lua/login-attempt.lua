-- A sign-in attempt. KEYS: the address's window, the address and username pair.
-- ARGV: now ms, address window ms, failures per address, failures before a delay, first delay
-- ms, max delay ms, how long a pair is remembered ms. Returns 0 (go ahead, counted as a
-- failure until login-succeeded.lua) or the ms to wait.
-- Both keys of an attempt carry the address's hash tag, so one script reaches both in Redis
-- Cluster. Times are the caller's clock, not Redis's TIME: the waits are seconds to minutes,
-- the nodes' clocks agree to milliseconds, and the policy can then be tested on a fake clock.
-- A key outlives its meaning by at most the clock skew; the times in the data decide.
-- Times are written with '%.0f': a bare Lua number is written with 14 significant digits.
local now = tonumber(ARGV[1])
local windowMs = tonumber(ARGV[2])
local perAddress = tonumber(ARGV[3])
local free = tonumber(ARGV[4])
local firstMs = tonumber(ARGV[5])
local maxMs = tonumber(ARGV[6])
local memoryMs = tonumber(ARGV[7])
local a = redis.call('HMGET', KEYS[1], 'n', 'ends')
local an = tonumber(a[1]) or 0
local ends = tonumber(a[2]) or 0
if ends <= now then
  an = 0
  ends = now + windowMs
end
local p = redis.call('HMGET', KEYS[2], 'n', 'last')
local pn = tonumber(p[1]) or 0
local last = tonumber(p[2]) or 0
if last + memoryMs <= now then pn = 0 end
local wait = 0
if an >= perAddress then wait = ends - now end
if pn >= free then
  local pairWait = last + math.min(maxMs, firstMs * 2 ^ (pn - free)) - now
  if pairWait > wait then wait = pairWait end
end
if wait > 0 then return math.ceil(wait) end
redis.call('HSET', KEYS[1], 'n', an + 1, 'ends', string.format('%.0f', ends))
redis.call('PEXPIRE', KEYS[1], math.ceil(ends - now))
redis.call('HSET', KEYS[2], 'n', pn + 1, 'last', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[2], memoryMs)
return 0
