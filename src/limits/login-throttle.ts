import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { addressBlock } from '../client-address.js'
import { redisScript, runScript } from '../redis.js'
import { withLocalFallback, type FallbackLog } from './fallback.js'

/**
 * Sign-in throttling that only the guesser feels. Failures count per (address, username) —
 * the first few answered at once, then a doubling wait before each further attempt — and per
 * address over all usernames, in a fixed window. Nothing counts per username alone: a count
 * anyone can raise for someone else's account is a lockout anyone can cause, so a correct
 * password from an address with no recent failures for that username is always checked.
 *
 * The policy lives here once; where the counts live is a `LoginFailureStore`: process memory
 * (one node) or Redis (every node counts into the same numbers, with the node's own count
 * while Redis is unreachable).
 */
export interface LoginThrottle {
  /** Seconds `address` must wait before trying `username` again, or 0 to check the password now. */
  retryAfter(address: string, username: string): Promise<number>
  recordFailure(address: string, username: string): Promise<void>
  /**
   * Forgets the pair's failures. The address's count stays: a guesser holding one account of
   * its own must not buy a fresh budget for its spray by signing in to it.
   */
  recordSuccess(address: string, username: string): Promise<void>
}

export interface LoginThrottlePolicy {
  /** Failures of one (address, username) answered at once; each further one doubles a wait from 1 s. */
  failuresBeforeDelay: number
  /** The doubling wait stops growing here. */
  maxDelayMs: number
  /** Failures from one address, any usernames, per window; past them every attempt waits for the window's end. */
  failuresPerAddress: number
  /** The address's window, fixed from its first failure. */
  addressWindowMs: number
}

/** The wait after the pair's first failure past the free ones; each later failure doubles it. */
export const FIRST_DELAY_MS = 1000
/**
 * A pair's failures are forgotten this long after its latest: far past the longest wait
 * LOGIN_MAX_DELAY allows (1 h), so a guesser pacing itself at that wait never gets its free
 * attempts back.
 */
export const PAIR_MEMORY_MS = 24 * 60 * 60 * 1000

/** Where one attempt's counts are kept: both keys hashed, so a username never shapes a key. */
export interface LoginKey {
  address: string
  pair: string
}

export function loginKey (address: string, username: string): LoginKey {
  const block = addressBlock(address)
  // Length-prefixed, so no (address, username) split of the same text maps to another pair.
  return { address: digest(`a${block}`), pair: digest(`p${block.length}:${block}${username}`) }
}

function digest (text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22)
}

/** What is known about one attempt, entries past their window or memory already left out. */
export interface LoginFailureCounts {
  address: { failures: number, windowEndsAt: number } | null
  pair: { failures: number, lastFailureAt: number } | null
}

/**
 * Storage of the counts, clock-free: the throttle passes the time in, so one policy and one
 * clock govern both implementations (and tests drive both on an injected clock).
 */
export interface LoginFailureStore {
  read(key: LoginKey, now: number): Promise<LoginFailureCounts>
  addFailure(key: LoginKey, now: number): Promise<void>
  forgetPair(key: LoginKey): Promise<void>
}

export interface LoginThrottleOptions extends LoginThrottlePolicy {
  store: LoginFailureStore
  now?: () => number
}

/** The wait the pair's `failures` impose after its latest one, in ms (0 while still free). */
export function pairDelayMs (failures: number, policy: Pick<LoginThrottlePolicy, 'failuresBeforeDelay' | 'maxDelayMs'>): number {
  if (failures < policy.failuresBeforeDelay) return 0
  return Math.min(policy.maxDelayMs, FIRST_DELAY_MS * 2 ** (failures - policy.failuresBeforeDelay))
}

export function createLoginThrottle (options: LoginThrottleOptions): LoginThrottle {
  const { store, now = Date.now } = options
  return {
    async retryAfter (address, username) {
      const at = now()
      const { address: byAddress, pair } = await store.read(loginKey(address, username), at)
      let waitMs = 0
      if (byAddress !== null && byAddress.failures >= options.failuresPerAddress) waitMs = byAddress.windowEndsAt - at
      if (pair !== null) waitMs = Math.max(waitMs, pair.lastFailureAt + pairDelayMs(pair.failures, options) - at)
      return waitMs > 0 ? Math.ceil(waitMs / 1000) : 0
    },
    async recordFailure (address, username) {
      await store.addFailure(loginKey(address, username), now())
    },
    async recordSuccess (address, username) {
      await store.forgetPair(loginKey(address, username))
    }
  }
}

export interface LoginFailureStoreOptions {
  addressWindowMs: number
  /** Memory bound of the in-process store, per map: past it, expired entries go, then the oldest tenth. */
  maxKeys?: number
}

export function createMemoryLoginFailureStore (options: LoginFailureStoreOptions): LoginFailureStore {
  const { addressWindowMs, maxKeys = 100_000 } = options
  const addresses = new Map<string, { failures: number, windowEndsAt: number }>()
  const pairs = new Map<string, { failures: number, lastFailureAt: number }>()
  const addressLive = (entry: { windowEndsAt: number }, at: number): boolean => entry.windowEndsAt > at
  const pairLive = (entry: { lastFailureAt: number }, at: number): boolean => entry.lastFailureAt + PAIR_MEMORY_MS > at

  /**
   * Room for one more entry. Dropping a live entry hands its failures back to whoever made
   * them, so expired ones go first; only a map full of live entries (an attack from more
   * addresses than maxKeys / failures per address) loses its oldest tenth at once, so the
   * scan is not repeated on every insert.
   */
  function makeRoom<V> (map: Map<string, V>, live: (entry: V, at: number) => boolean, at: number): void {
    if (map.size < maxKeys) return
    for (const [key, entry] of map) if (!live(entry, at)) map.delete(key)
    for (const key of map.keys()) {
      if (map.size < maxKeys * 0.9) break
      map.delete(key)
    }
  }

  return {
    async read (key, at) {
      const byAddress = addresses.get(key.address)
      const pair = pairs.get(key.pair)
      return {
        address: byAddress !== undefined && addressLive(byAddress, at) ? { ...byAddress } : null,
        pair: pair !== undefined && pairLive(pair, at) ? { ...pair } : null
      }
    },
    async addFailure (key, at) {
      const byAddress = addresses.get(key.address)
      if (byAddress !== undefined && addressLive(byAddress, at)) {
        byAddress.failures++
      } else {
        addresses.delete(key.address)
        makeRoom(addresses, addressLive, at)
        addresses.set(key.address, { failures: 1, windowEndsAt: at + addressWindowMs })
      }
      const pair = pairs.get(key.pair)
      const failures = pair !== undefined && pairLive(pair, at) ? pair.failures + 1 : 1
      // Re-inserted at the end: the map's order stays the order of latest failures, oldest first.
      pairs.delete(key.pair)
      makeRoom(pairs, pairLive, at)
      pairs.set(key.pair, { failures, lastFailureAt: at })
    },
    async forgetPair (key) {
      pairs.delete(key.pair)
    }
  }
}

// Both keys of an attempt carry the address's hash tag, so one script reaches both in Redis
// Cluster. Times are the caller's clock, not Redis's TIME: the waits are seconds to minutes,
// the nodes' clocks agree to milliseconds, and the policy can then be tested on a fake clock.
// A key outlives its meaning by at most the clock skew; the expiry in the data decides.
// Times are written with '%.0f': a bare Lua number is written with 14 significant digits.
const READ_LUA = `
local now = tonumber(ARGV[1])
local a = redis.call('HMGET', KEYS[1], 'n', 'ends')
local p = redis.call('HMGET', KEYS[2], 'n', 'last')
local out = { 0, 0, 0, 0 }
if a[1] and tonumber(a[2]) > now then out[1] = tonumber(a[1]); out[2] = tonumber(a[2]) end
if p[1] and tonumber(p[2]) + tonumber(ARGV[2]) > now then out[3] = tonumber(p[1]); out[4] = tonumber(p[2]) end
return out
`
// The address's window is fixed from its first failure; the pair's memory runs from its latest.
const ADD_FAILURE_LUA = `
local now = tonumber(ARGV[1])
local windowMs = tonumber(ARGV[2])
local memoryMs = tonumber(ARGV[3])
local ends = tonumber(redis.call('HGET', KEYS[1], 'ends') or '0')
if ends > now then
  redis.call('HINCRBY', KEYS[1], 'n', 1)
else
  ends = now + windowMs
  redis.call('HSET', KEYS[1], 'n', 1, 'ends', string.format('%.0f', ends))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(ends - now))
local p = redis.call('HMGET', KEYS[2], 'n', 'last')
local n = 1
if p[1] and tonumber(p[2]) + memoryMs > now then n = tonumber(p[1]) + 1 end
redis.call('HSET', KEYS[2], 'n', n, 'last', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[2], memoryMs)
return n
`
const READ = redisScript(READ_LUA)
const ADD_FAILURE = redisScript(ADD_FAILURE_LUA)

export interface RedisLoginFailureStoreOptions extends LoginFailureStoreOptions {
  redis: Redis
  /** Key prefix, e.g. `sb:login-failures:`. */
  prefix: string
  log: FallbackLog
}

export function createRedisLoginFailureStore (options: RedisLoginFailureStoreOptions): LoginFailureStore {
  const { redis, prefix, addressWindowMs } = options
  // The digests are base64url: no braces, so the tag ends where it is written.
  const keysOf = (key: LoginKey): [string, string] => [`${prefix}{${key.address}}`, `${prefix}{${key.address}}:${key.pair}`]
  const clustered: LoginFailureStore = {
    async read (key, at) {
      const [failures, windowEndsAt, pairFailures, lastFailureAt] = await runScript(redis, READ, keysOf(key), [at, PAIR_MEMORY_MS]) as [number, number, number, number]
      return {
        address: failures > 0 ? { failures, windowEndsAt } : null,
        pair: pairFailures > 0 ? { failures: pairFailures, lastFailureAt } : null
      }
    },
    async addFailure (key, at) {
      await runScript(redis, ADD_FAILURE, keysOf(key), [at, addressWindowMs, PAIR_MEMORY_MS])
    },
    async forgetPair (key) {
      await redis.del(keysOf(key)[1])
    }
  }
  return withLocalFallback(clustered, createMemoryLoginFailureStore(options), options.log, 'login throttle')
}

/** In Redis (every node shares the counts) when the cluster has one, else in this process. */
export function createLoginFailureStore (options: LoginFailureStoreOptions & Omit<RedisLoginFailureStoreOptions, 'redis'> & { redis: Redis | null }): LoginFailureStore {
  const { redis, ...rest } = options
  return redis === null ? createMemoryLoginFailureStore(rest) : createRedisLoginFailureStore({ ...rest, redis })
}
