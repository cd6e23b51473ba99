import { runScript, type RedisClient } from '../../redis.js'
import type { ConnectionCounter } from '../engine.js'
import type { PartContext } from './context.js'
import { engineScript, REFRESH_BATCH, toNumber } from './scripts.js'

const RESERVE = engineScript(new URL('./lua/connections-reserve.lua', import.meta.url))
const REFRESH = engineScript(new URL('./lua/connections-refresh.lua', import.meta.url))

export interface RedisCountersOptions extends PartContext {
  /** Refreshes, beside presence's. */
  housekeeping: RedisClient
  /** How long a counted connection lives unless refreshed (presence's lifetime). */
  lifetimeMs: number
  keysTtlMs: number
}

export interface RedisCounters extends ConnectionCounter {
  /** Extends this node's counted connections. Never rejects. */
  refresh(): Promise<void>
  /** Forgets this node's connections; they are left to expire in Redis. */
  clear(): void
}

/**
 * Cluster-wide connection counts: one sorted set per user (or API key), connection id → expiry
 * (server ms). The node holding a connection refreshes it with its presence refresh, so a dead
 * node's connections stop counting within the presence TTL.
 */
export function createRedisCounters (options: RedisCountersOptions): RedisCounters {
  const { cmd, housekeeping, keys, log, assertOpen, lifetimeMs, keysTtlMs } = options
  /** This node's counted connections, key → connIds: what the refresh keeps alive. */
  const local = new Map<string, Set<string>>()

  function forget (key: string, connectionId: string): void {
    const ids = local.get(key)
    if (ids?.delete(connectionId) === true && ids.size === 0) local.delete(key)
  }

  async function refreshKey (key: string, ids: string[]): Promise<void> {
    for (let from = 0; from < ids.length; from += REFRESH_BATCH) {
      await runScript(housekeeping, REFRESH, [keys.connections(key)], [lifetimeMs, keysTtlMs, ...ids.slice(from, from + REFRESH_BATCH)])
    }
  }

  return {
    async reserve (key: string, connectionId: string, limit: number): Promise<boolean> {
      assertOpen()
      // Counted here before Redis answers: if the call fails, the next refresh counts it.
      let ids = local.get(key)
      if (ids === undefined) local.set(key, ids = new Set())
      ids.add(connectionId)
      const reserved = toNumber(await runScript(cmd, RESERVE, [keys.connections(key)], [connectionId, Math.floor(limit), lifetimeMs, keysTtlMs])) === 1
      if (!reserved) forget(key, connectionId)
      return reserved
    },

    async release (key: string, connectionId: string): Promise<void> {
      assertOpen()
      forget(key, connectionId)
      await cmd.zrem(keys.connections(key), connectionId)
    },

    async refresh () {
      await Promise.all([...local].map(([key, ids]) => refreshKey(key, [...ids])
        .catch((err: unknown) => log.warn({ err }, 'connection count refresh failed'))))
    },

    clear () { local.clear() }
  }
}
