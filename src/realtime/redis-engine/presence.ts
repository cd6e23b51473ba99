import { runScript, type RedisClient } from '../../redis.js'
import type { Presence, PresenceInfo, RoomEvent } from '../engine.js'
import type { PartContext } from './context.js'
import { engineScript, REFRESH_BATCH, toNumber } from './scripts.js'

const presenceScript = (file: URL) => engineScript(new URL('./lua/presence-common.lua', import.meta.url), file)
const ADD = presenceScript(new URL('./lua/presence-add.lua', import.meta.url))
const REMOVE = presenceScript(new URL('./lua/presence-remove.lua', import.meta.url))
const REFRESH = presenceScript(new URL('./lua/presence-refresh.lua', import.meta.url))
const SWEEP = presenceScript(new URL('./lua/presence-sweep.lua', import.meta.url))
const GET = presenceScript(new URL('./lua/presence-get.lua', import.meta.url))
const DUE_ROOMS = engineScript(new URL('./lua/due-rooms.lua', import.meta.url))

/** Rooms one sweep looks at, per round; the rest wait for the next round. */
const SWEEP_BATCH = 100

export interface RedisPresenceOptions extends PartContext {
  /** Refreshes and sweeps, so a publish never queues behind their batches. */
  housekeeping: RedisClient
  /** The broker's: joins and leaves go out as room events. */
  publishEvent(room: string, event: RoomEvent): Promise<void>
  /** How long an entry lives unless refreshed. */
  lifetimeMs: number
  /** How long a room's presence keys outlive their last write. */
  keysTtlMs: number
}

export interface RedisPresence extends Presence {
  /** Extends this node's entries (and brings back any purged while this node was late). Never rejects. */
  refresh(): Promise<void>
  /** Purges expired entries of the rooms that are due, announcing their leaves. Never rejects. */
  sweep(): Promise<void>
  /** Forgets this node's entries; they are left to expire in Redis. */
  clear(): void
}

/**
 * Presence over Redis: entries carry an expiry this node refreshes for its own connections; a
 * node that dies stops refreshing, and a sweeper on every other node removes its connections
 * and publishes the `leave` events, within the presence TTL.
 */
export function createRedisPresence (options: RedisPresenceOptions): RedisPresence {
  const { cmd, housekeeping, keys, log, assertOpen, publishEvent, lifetimeMs, keysTtlMs } = options
  /** This node's presence entries, room → connId → userId: what the refresh keeps alive. */
  const local = new Map<string, Map<string, string>>()

  function announceLeaves (room: string, users: unknown): void {
    for (const user of users as string[]) {
      publishEvent(room, { type: 'leave', user: { id: user } })
        .catch((err: unknown) => log.warn({ err, room }, 'presence leave event failed'))
    }
  }

  function indexRoom (room: string, earliest: unknown): void {
    if (earliest === '' || earliest === null) return
    // LT: only ever lowers a room's score, so a sweeper never comes later than an expiry.
    cmd.zadd(keys.presenceIndex, 'LT', String(earliest), room)
      .catch((err: unknown) => log.warn({ err, room }, 'presence index update failed'))
  }

  async function addEntry (room: string, connectionId: string, userId: string): Promise<boolean> {
    const result = await runScript(cmd, ADD, keys.room(room).presence, [connectionId, userId, lifetimeMs, keysTtlMs]) as [number, string, string[]]
    indexRoom(room, result[1])
    announceLeaves(room, result[2])
    return toNumber(result[0]) === 1
  }

  async function add (room: string, connectionId: string, userId: string): Promise<boolean> {
    assertOpen()
    // Registered before Redis answers: if the add fails, the next refresh adds it (and joins).
    let mine = local.get(room)
    if (mine === undefined) local.set(room, mine = new Map())
    mine.set(connectionId, userId)
    return await addEntry(room, connectionId, userId)
  }

  async function remove (room: string, connectionId: string, userId: string): Promise<boolean> {
    assertOpen()
    const mine = local.get(room)
    if (mine?.get(connectionId) === userId) {
      mine.delete(connectionId)
      if (mine.size === 0) local.delete(room)
    }
    const result = await runScript(cmd, REMOVE, keys.room(room).presence, [connectionId, userId]) as [number, string[]]
    announceLeaves(room, result[1])
    return toNumber(result[0]) === 1
  }

  async function get (room: string): Promise<PresenceInfo> {
    assertOpen()
    const result = await runScript(cmd, GET, keys.room(room).presence, []) as [number, string[]]
    return { users: [...result[1]].sort(), connections: toNumber(result[0]) }
  }

  async function refreshRoom (room: string, mine: Map<string, string>): Promise<void> {
    const ids = [...mine.keys()]
    const missing: string[] = []
    for (let from = 0; from < ids.length; from += REFRESH_BATCH) {
      const last = from + REFRESH_BATCH >= ids.length
      const result = await runScript(housekeeping, REFRESH, keys.room(room).presence, [lifetimeMs, keysTtlMs, last ? 1 : 0, ...ids.slice(from, from + REFRESH_BATCH)]) as [string, string[], string[]]
      missing.push(...result[2])
      if (last) {
        indexRoom(room, result[0])
        announceLeaves(room, result[1])
      }
    }
    for (const connectionId of missing) {
      // Purged by another node while this one was late (or never added: Redis was away):
      // still connected here, so it comes back, with a join if it is the user's first.
      const userId = local.get(room)?.get(connectionId)
      if (userId === undefined) continue
      const first = await addEntry(room, connectionId, userId)
      if (first) await publishEvent(room, { type: 'join', user: { id: userId } })
    }
  }

  async function refresh (): Promise<void> {
    await Promise.all([...local].map(([room, mine]) => refreshRoom(room, new Map(mine))
      .catch((err: unknown) => log.warn({ err, room }, 'presence refresh failed'))))
  }

  async function sweep (): Promise<void> {
    try {
      const due = await runScript(housekeeping, DUE_ROOMS, [keys.presenceIndex], [SWEEP_BATCH]) as string[]
      for (const room of due) {
        const roomKeys = keys.room(room).presence
        let [earliest, vanished] = await runScript(housekeeping, SWEEP, roomKeys, []) as [string, string[]]
        announceLeaves(room, vanished)
        if (earliest === '') {
          await housekeeping.zrem(keys.presenceIndex, room)
          // An add may have landed between the sweep and the removal from the index: look again.
          ;[earliest, vanished] = await runScript(housekeeping, SWEEP, roomKeys, []) as [string, string[]]
          announceLeaves(room, vanished)
        }
        if (earliest !== '') await housekeeping.zadd(keys.presenceIndex, earliest, room)
      }
    } catch (err) {
      log.warn({ err }, 'presence sweep failed')
    }
  }

  return { add, remove, get, refresh, sweep, clear () { local.clear() } }
}
