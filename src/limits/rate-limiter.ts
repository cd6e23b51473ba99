import type { Redis } from 'ioredis'
import { hashTag, redisScript, runScript } from '../redis.js'
import { withLocalFallback, type FallbackLog } from './fallback.js'

/**
 * A rate per key (a user's publishes): `ratePerSecond` sustained, `burst` at once, by the
 * generic cell rate algorithm (GCRA). One number per key — the theoretical arrival time of
 * the next unit — so it is exact at any rate, needs no timers, and runs as one atomic step in
 * Redis when every node of a cluster must share the budget.
 */
export interface RateLimiter {
  /** Takes one unit for `key`: allowed, or refused with how long until one would be allowed. */
  take(key: string): Promise<RateDecision>
}

export interface RateDecision {
  allowed: boolean
  /** 0 when allowed. */
  retryAfterMs: number
}

export interface RateLimiterOptions {
  ratePerSecond: number
  burst: number
  /** Memory bound of the in-process implementation: past it, keys at rest are dropped first. */
  maxKeys?: number
  now?: () => number
}

const ALLOWED: RateDecision = { allowed: true, retryAfterMs: 0 }

export function createMemoryRateLimiter (options: RateLimiterOptions): RateLimiter {
  const { maxKeys = 100_000, now = Date.now } = options
  const interval = 1000 / options.ratePerSecond
  const tolerance = interval * options.burst
  /** key → theoretical arrival time (ms). A key whose time has passed is at rest: full burst. */
  const arrivals = new Map<string, number>()

  function makeRoom (at: number): void {
    for (const [key, tat] of arrivals) if (tat <= at) arrivals.delete(key)
    // Still full: every key is mid-burst; drop the oldest insertions (they lose their debt).
    for (const key of arrivals.keys()) {
      if (arrivals.size < maxKeys) break
      arrivals.delete(key)
    }
  }

  return {
    async take (key) {
      const at = now()
      const tat = Math.max(arrivals.get(key) ?? at, at)
      const next = tat + interval
      const over = next - at - tolerance
      if (over > 0) return { allowed: false, retryAfterMs: Math.ceil(over) }
      if (!arrivals.has(key) && arrivals.size >= maxKeys) makeRoom(at)
      arrivals.set(key, next)
      return ALLOWED
    }
  }
}

// Redis's clock (TIME) for every node, so the nodes' clocks need not agree. The key lives
// exactly as long as it carries debt.
const TAKE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nextTat = tat + interval
local over = nextTat - now - tolerance
if over > 0 then return math.ceil(over) end
redis.call('SET', KEYS[1], string.format('%.3f', nextTat), 'PX', math.max(1, math.ceil(nextTat - now)))
return 0
`
const TAKE = redisScript(TAKE_LUA)

export interface RedisRateLimiterOptions extends RateLimiterOptions {
  redis: Redis
  /** Key prefix, e.g. `sb:publish-rate:`. */
  prefix: string
  log: FallbackLog
  /** Names the limiter in the fallback warning. */
  what: string
}

export function createRedisRateLimiter (options: RedisRateLimiterOptions): RateLimiter {
  const { redis, prefix } = options
  const interval = 1000 / options.ratePerSecond
  const tolerance = interval * options.burst
  const clustered: RateLimiter = {
    async take (key) {
      const retryAfterMs = Number(await runScript(redis, TAKE, [`${prefix}{${hashTag(key)}}`], [interval, tolerance]))
      return retryAfterMs > 0 ? { allowed: false, retryAfterMs } : ALLOWED
    }
  }
  return withLocalFallback(clustered, createMemoryRateLimiter(options), options.log, options.what)
}

/** In Redis (every node shares the budget) when the cluster has one, else in this process. */
export function createRateLimiter (options: RateLimiterOptions & Omit<RedisRateLimiterOptions, 'redis'> & { redis: Redis | null }): RateLimiter {
  const { redis, ...rest } = options
  return redis === null ? createMemoryRateLimiter(rest) : createRedisRateLimiter({ ...rest, redis })
}
