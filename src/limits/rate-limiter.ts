import { hashTag, loadRedisScript, runScript, type RedisClient } from '../redis.js'
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

// One atomic take on Redis's clock (TIME), so the nodes' clocks need not agree; it takes up to
// a lease of units at once (see createRedisRateLimiter).
const TAKE = loadRedisScript(new URL('./lua/rate-take.lua', import.meta.url))

/** How far ahead a busy key's lease reaches, by default: a tenth of a second of its rate. */
export const DEFAULT_LEASE_MS = 100
/** After a lease request failed in the background, the next waits this long (Redis is away). */
const PREFETCH_PAUSE_MS = 1000
/** Keys unused this long are forgotten (with any units they hold), looked for at most this often. */
const IDLE_KEY_MS = 10_000

export interface RedisRateLimiterOptions extends RateLimiterOptions {
  redis: RedisClient
  /** Key prefix, e.g. `sb:publish-rate:`. */
  prefix: string
  log: FallbackLog
  /** Names the limiter in the fallback warning. */
  what: string
  /**
   * A lease holds at most this long's worth of the rate (at least one unit, at most the
   * burst): 0 turns leasing off, one round trip per unit. Default 100 ms.
   */
  leaseMs?: number
}

/** This node's share of one key's budget, taken from Redis ahead of use. */
interface Lease {
  /** Units taken from Redis and not yet spent here. */
  units: number
  /** The size of the last lease asked for, and when its units were granted (local clock). */
  size: number
  grantedAt: number
  /** Units spent here since then: with the time elapsed, the key's demand. */
  spentSinceGrant: number
  /** The lease request in flight; resolves to the refusal when Redis had no unit left. */
  request: Promise<RateDecision | undefined> | null
  /** No background request before this (a refusal's retry time, or a failed request's pause). */
  quietUntil: number
  /** The key's last call here (local clock): keys idle for IDLE_KEY_MS are forgotten. */
  usedAt: number
}

/**
 * The cluster-wide budget, in Redis. A key that spends slowly takes one unit per call, one
 * round trip each, exactly as the budget says. A key that spends faster than a unit per
 * lease period takes leases: several units per round trip, sized to its demand over
 * `leaseMs` (at most that long's worth of the rate), the next asked for in the background
 * when half of one is spent, so its calls are answered without waiting for Redis.
 *
 * What that costs (docs/scale-out.md): units leased are spent in Redis when leased, so the
 * key's other nodes see them gone; and a node may spend units it leased earlier after the
 * budget has refilled, so in any window a key can exceed the budget's own bound (burst +
 * rate × window) by what its nodes held at the window's start — at most one and a half
 * leases per node (0.15 s of its rate, by default). Units a node still holds when it drops
 * a key are never given back: dropping is always on the safe side.
 */
export function createRedisRateLimiter (options: RedisRateLimiterOptions): RateLimiter {
  const { redis, prefix, maxKeys = 100_000, now = Date.now, leaseMs = DEFAULT_LEASE_MS } = options
  const interval = 1000 / options.ratePerSecond
  const tolerance = interval * options.burst
  const maxLease = Math.max(1, Math.min(options.burst, Math.floor(options.ratePerSecond * leaseMs / 1000)))
  const leases = new Map<string, Lease>()
  let sweptAt = now()

  async function request (key: string, lease: Lease, size: number): Promise<RateDecision | undefined> {
    const [granted, retryAfterMs] = await runScript(redis, TAKE, [`${prefix}{${hashTag(key)}}`], [interval, tolerance, size]) as [number, number]
    lease.size = size
    if (granted === 0) {
      lease.quietUntil = now() + retryAfterMs
      return { allowed: false, retryAfterMs }
    }
    lease.units += granted
    lease.grantedAt = now()
    lease.spentSinceGrant = 0
    return undefined
  }

  function ask (key: string, lease: Lease, size: number): Promise<RateDecision | undefined> {
    const pending = request(key, lease, size).finally(() => { lease.request = null })
    lease.request = pending
    return pending
  }

  /** Units the key would spend here in one lease period at its recent pace, within [1, maxLease]. */
  function nextSize (lease: Lease, at: number): number {
    if (maxLease === 1) return 1
    const elapsed = Math.max(1, at - lease.grantedAt)
    return Math.max(1, Math.min(maxLease, Math.ceil(lease.spentSinceGrant * leaseMs / elapsed)))
  }

  function leaseOf (key: string, at: number): Lease {
    if (at - sweptAt >= IDLE_KEY_MS) {
      sweptAt = at
      for (const [old, lease] of leases) if (at - lease.usedAt >= IDLE_KEY_MS && lease.request === null) leases.delete(old)
    }
    let lease = leases.get(key)
    if (lease === undefined) {
      for (const old of leases.keys()) {
        if (leases.size < maxKeys) break
        leases.delete(old)
      }
      lease = { units: 0, size: 1, grantedAt: at, spentSinceGrant: 0, request: null, quietUntil: 0, usedAt: at }
      leases.set(key, lease)
    }
    lease.usedAt = at
    return lease
  }

  const clustered: RateLimiter = {
    async take (key) {
      const lease = leaseOf(key, now())
      for (;;) {
        const at = now()
        if (lease.units > 0) {
          lease.units--
          lease.spentSinceGrant++
          if (lease.size > 1 && lease.units <= lease.size / 2 && lease.request === null && at >= lease.quietUntil) {
            // In the background: a failure only pauses these requests; the next call that
            // finds no unit left asks Redis itself, and falls back if Redis is still away.
            ask(key, lease, nextSize(lease, at)).catch(() => { lease.quietUntil = now() + PREFETCH_PAUSE_MS })
          }
          return ALLOWED
        }
        const refusal = await (lease.request ?? ask(key, lease, nextSize(lease, at)))
        if (refusal !== undefined) return refusal
      }
    }
  }
  return withLocalFallback(clustered, createMemoryRateLimiter(options), options.log, options.what)
}

/** In Redis (every node shares the budget) when the cluster has one, else in this process. */
export function createRateLimiter (options: RateLimiterOptions & Omit<RedisRateLimiterOptions, 'redis'> & { redis: RedisClient | null }): RateLimiter {
  const { redis, ...rest } = options
  return redis === null ? createMemoryRateLimiter(rest) : createRedisRateLimiter({ ...rest, redis })
}
