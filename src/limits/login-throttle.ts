import { createHash } from 'node:crypto'
import type { Config } from '../config.js'
import { addressBlock } from '../client-address.js'
import { loadRedisScript, runScript, type RedisClient } from '../redis.js'
import { withLocalFallback, type FallbackLog } from './fallback.js'

/**
 * Sign-in throttling that only the guesser feels. Failures count per (address, username) —
 * the first few answered at once, then a doubling wait before each further attempt — and per
 * address over all usernames, in a fixed window. Nothing counts per username alone: a count
 * anyone can raise for someone else's account is a lockout anyone can cause, so a correct
 * password from an address with no recent failures for that username is always checked.
 *
 * Two implementations of one policy: in process memory (one node), and in Redis (every node
 * counts into the same numbers, one atomic script per call; the node's own count while Redis
 * is unreachable). One contract test holds both to it.
 */
export interface LoginThrottle {
  /**
   * Asks to check one password of `username` from `address`: the seconds to wait (refused,
   * nothing counted), or 0. An allowed attempt counts as a failure at once, in the same step
   * as the check: guesses sent together must not all pass on the count before any of them
   * was answered.
   */
  attempt(address: string, username: string): Promise<number>
  /**
   * The password was right: forgets the pair's failures and takes this attempt back from the
   * address's count. The address's other failures stay: a guesser holding one account of its
   * own must not buy its spray a fresh budget by signing in to it.
   */
  succeeded(address: string, username: string): Promise<void>
}

/** LOGIN_FAILURES_BEFORE_DELAY, LOGIN_MAX_DELAY, LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURE_WINDOW. */
export type LoginThrottlePolicy = Config['loginThrottle']

/** The wait after the last free failure of a pair; each later failure doubles it. */
const FIRST_DELAY_MS = 1000
/**
 * A pair's failures are forgotten this long after its latest: far past the longest wait
 * LOGIN_MAX_DELAY allows (1 h), so a guesser pacing itself at that wait never gets its free
 * attempts back.
 */
export const PAIR_MEMORY_MS = 24 * 60 * 60 * 1000

/** Where one attempt is counted: both keys hashed, so a username never shapes a key. */
interface LoginKey {
  address: string
  pair: string
}

function loginKey (address: string, username: string): LoginKey {
  const block = addressBlock(address)
  // Length-prefixed, so no (address, username) split of the same text maps to another pair.
  return { address: digest(`a${block}`), pair: digest(`p${block.length}:${block}${username}`) }
}

function digest (text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22)
}

/** The wait the pair's `failures` impose after its latest one, in ms (0 while still free). */
function pairDelayMs (failures: number, policy: LoginThrottlePolicy): number {
  if (failures < policy.failuresBeforeDelay) return 0
  return Math.min(policy.maxDelayMs, FIRST_DELAY_MS * 2 ** (failures - policy.failuresBeforeDelay))
}

const toSeconds = (ms: number): number => Math.ceil(ms / 1000)

export interface LoginThrottleOptions extends LoginThrottlePolicy {
  /** Memory bound of the in-process implementation, per map: past it, expired entries go, then the oldest tenth. */
  maxKeys?: number
  now?: () => number
}

export function createMemoryLoginThrottle (options: LoginThrottleOptions): LoginThrottle {
  const { maxKeys = 100_000, now = Date.now } = options
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
    async attempt (address, username) {
      const at = now()
      const key = loginKey(address, username)
      let byAddress = addresses.get(key.address)
      if (byAddress !== undefined && !addressLive(byAddress, at)) byAddress = undefined
      let pair = pairs.get(key.pair)
      if (pair !== undefined && !pairLive(pair, at)) pair = undefined

      let waitMs = 0
      if (byAddress !== undefined && byAddress.failures >= options.failuresPerAddress) waitMs = byAddress.windowEndsAt - at
      if (pair !== undefined) waitMs = Math.max(waitMs, pair.lastFailureAt + pairDelayMs(pair.failures, options) - at)
      if (waitMs > 0) return toSeconds(waitMs)

      if (byAddress !== undefined) {
        byAddress.failures++
      } else {
        addresses.delete(key.address)
        makeRoom(addresses, addressLive, at)
        addresses.set(key.address, { failures: 1, windowEndsAt: at + options.addressWindowMs })
      }
      // Re-inserted at the end: the map's order stays the order of latest failures, oldest first.
      pairs.delete(key.pair)
      makeRoom(pairs, pairLive, at)
      pairs.set(key.pair, { failures: (pair?.failures ?? 0) + 1, lastFailureAt: at })
      return 0
    },
    async succeeded (address, username) {
      const key = loginKey(address, username)
      pairs.delete(key.pair)
      const byAddress = addresses.get(key.address)
      if (byAddress !== undefined && addressLive(byAddress, now()) && byAddress.failures > 0) byAddress.failures--
    }
  }
}

// The scripts (lua/login-*.lua) take the caller's clock, not Redis's TIME: the waits are
// seconds to minutes, the nodes' clocks agree to milliseconds, and the policy can then be tested
// on a fake clock. Both keys of an attempt carry the address's hash tag (one Cluster slot).
const ATTEMPT = loadRedisScript(new URL('./lua/login-attempt.lua', import.meta.url))
const SUCCEEDED = loadRedisScript(new URL('./lua/login-succeeded.lua', import.meta.url))

export interface RedisLoginThrottleOptions extends LoginThrottleOptions {
  redis: RedisClient
  /** Key prefix, e.g. `sb:login-failures:`. */
  prefix: string
  log: FallbackLog
}

export function createRedisLoginThrottle (options: RedisLoginThrottleOptions): LoginThrottle {
  const { redis, prefix, now = Date.now } = options
  // The digests are base64url: no braces, so the tag ends where it is written.
  const keysOf = (address: string, username: string): [string, string] => {
    const key = loginKey(address, username)
    return [`${prefix}{${key.address}}`, `${prefix}{${key.address}}:${key.pair}`]
  }
  const policy = [options.addressWindowMs, options.failuresPerAddress, options.failuresBeforeDelay, FIRST_DELAY_MS, options.maxDelayMs, PAIR_MEMORY_MS]
  const clustered: LoginThrottle = {
    async attempt (address, username) {
      return toSeconds(Number(await runScript(redis, ATTEMPT, keysOf(address, username), [now(), ...policy])))
    },
    async succeeded (address, username) {
      await runScript(redis, SUCCEEDED, keysOf(address, username), [now()])
    }
  }
  return withLocalFallback(clustered, createMemoryLoginThrottle(options), options.log, 'login throttle')
}

/** In Redis (every node shares the counts) when the cluster has one, else in this process. */
export function createLoginThrottle (options: LoginThrottleOptions & Omit<RedisLoginThrottleOptions, 'redis'> & { redis: RedisClient | null }): LoginThrottle {
  const { redis, ...rest } = options
  return redis === null ? createMemoryLoginThrottle(rest) : createRedisLoginThrottle({ ...rest, redis })
}
