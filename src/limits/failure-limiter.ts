import type { Redis } from 'ioredis'
import { hashTag, redisScript, runScript } from '../redis.js'
import { withLocalFallback, type FallbackLog } from './fallback.js'

/**
 * Counts failures per key (a username) in a fixed window and says how long to wait once the
 * limit is reached. Complements the per-IP request limit: a distributed guess at one account
 * from many addresses still stops here.
 *
 * Two implementations: in process memory (one node), and in Redis (every node of a cluster
 * counts into the same window). The Redis one falls back to a local count while Redis is
 * unreachable, so an outage weakens the limit to per-node instead of lifting it.
 */
export interface FailureLimiter {
  /** Seconds until `key` may try again, or 0 when it may try now. */
  retryAfter(key: string): Promise<number>
  recordFailure(key: string): Promise<void>
  reset(key: string): Promise<void>
}

export interface FailureLimiterOptions {
  limit: number
  windowMs: number
  /** Memory bound of the in-process implementation: past it the oldest entries go. */
  maxKeys?: number
  now?: () => number
}

export function createMemoryFailureLimiter (options: FailureLimiterOptions): FailureLimiter {
  const { limit, windowMs, maxKeys = 100_000, now = Date.now } = options
  const windows = new Map<string, { count: number, resetAt: number }>()

  function current (key: string): { count: number, resetAt: number } | undefined {
    const entry = windows.get(key)
    if (entry !== undefined && entry.resetAt <= now()) {
      windows.delete(key)
      return undefined
    }
    return entry
  }

  return {
    async retryAfter (key) {
      const entry = current(key)
      if (entry === undefined || entry.count < limit) return 0
      return Math.max(1, Math.ceil((entry.resetAt - now()) / 1000))
    },
    async recordFailure (key) {
      const entry = current(key)
      if (entry !== undefined) {
        entry.count++
        return
      }
      if (windows.size >= maxKeys) {
        const oldest = windows.keys().next()
        if (oldest.done !== true) windows.delete(oldest.value)
      }
      windows.set(key, { count: 1, resetAt: now() + windowMs })
    },
    async reset (key) {
      windows.delete(key)
    }
  }
}

// The window starts at the first failure and is not extended by later ones (fixed window).
const RECORD_LUA = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`
// Milliseconds left in the window once the count reached the limit, else 0.
const RETRY_AFTER_LUA = `
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n < tonumber(ARGV[1]) then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
return ttl
`
const RECORD = redisScript(RECORD_LUA)
const RETRY_AFTER = redisScript(RETRY_AFTER_LUA)

export interface RedisFailureLimiterOptions extends FailureLimiterOptions {
  redis: Redis
  /** Key prefix, e.g. `sb:login-failures:`. */
  prefix: string
  log: FallbackLog
}

export function createRedisFailureLimiter (options: RedisFailureLimiterOptions): FailureLimiter {
  const { redis, prefix, limit, windowMs } = options
  const keyOf = (key: string): string => `${prefix}{${hashTag(key)}}`
  const clustered: FailureLimiter = {
    async retryAfter (key) {
      const ms = Number(await runScript(redis, RETRY_AFTER, [keyOf(key)], [limit]))
      return ms > 0 ? Math.max(1, Math.ceil(ms / 1000)) : 0
    },
    async recordFailure (key) {
      await runScript(redis, RECORD, [keyOf(key)], [windowMs])
    },
    async reset (key) {
      await redis.del(keyOf(key))
    }
  }
  return withLocalFallback(clustered, createMemoryFailureLimiter(options), options.log, 'login failure limiter')
}
