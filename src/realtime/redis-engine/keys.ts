import { hashTag } from '../../redis.js'

/**
 * The Redis engine's key layout: every key and channel name it uses, in one place (the table in
 * docs/scale-out.md#what-is-in-redis describes each). Every key of a room carries the room in a
 * hash tag, `<prefix>{<room>}:…`, so on Redis Cluster they share one slot and each script
 * touches one slot only; a connection count's key carries its user (or API key) the same way.
 */
export interface KeyLayout {
  room(room: string): RoomKeys
  /** Rooms with presence entries, scored by their earliest expiry (never later than it): what sweepers visit. */
  readonly presenceIndex: string
  /**
   * Sorted set: rooms that may have publications waiting for the cluster archive, scored by
   * when (Redis's clock) a publish last named them. Written outside the publish script, so
   * each script still touches one slot (archiver.ts says why nothing is lost).
   */
  readonly archiveIndex: string
  /** One channel for the whole cluster: every node subscribes to it for as long as it runs. */
  readonly control: string
  /** The sorted set counting one user's (or API key's) connections across the cluster. */
  connections(key: string): string
}

export interface RoomKeys {
  /** Hash: the epoch, the last offset handed out, the bytes published in the epoch. */
  meta: string
  /** Stream: one entry per stored publication, id `<offset>-0`. */
  stream: string
  /** Pub/sub channel: the room's publications and events. */
  channel: string
  /** String: the position an idempotency key's publish got. */
  idem(key: string): string
  /** Stream: the room's acknowledged publications waiting for the cluster archive (PostgreSQL). */
  archiveQueue: string
  /** String: the bytes (publicationBytes) waiting in archiveQueue, what ARCHIVE_QUEUE_ROOM_BYTES bounds. */
  archiveQueueBytes: string
  /** String: the node draining archiveQueue now, with an expiry (a dead node's lease lapses). */
  archiveLease: string
  /** The presence scripts' KEYS, in their order: connId → userId, connId → expiry, userId → count. */
  presence: [conns: string, expiries: string, users: string]
}

/** The epoch (meta key) outlives a quiet room's history, so a client resumes in the same epoch after a lull. */
export const MIN_META_TTL_MS = 24 * 3600_000

/** The layout under `prefix` (several deployments can share one Redis, each with its own). */
export function keyLayout (prefix: string): KeyLayout {
  if (/[{}]/.test(prefix)) throw new Error('redis engine: keyPrefix must not contain { or } (they delimit the hash tag)')
  return {
    room (room) {
      const base = `${prefix}{${hashTag(room)}}`
      return {
        meta: `${base}:meta`,
        stream: `${base}:stream`,
        channel: `${base}:ch`,
        idem: (key: string) => `${base}:idem:${key}`,
        archiveQueue: `${base}:aq`,
        archiveQueueBytes: `${base}:aq:bytes`,
        archiveLease: `${base}:aq:lease`,
        presence: [`${base}:pres:conns`, `${base}:pres:expiry`, `${base}:pres:users`]
      }
    },
    presenceIndex: `${prefix}presence:rooms`,
    archiveIndex: `${prefix}archive:rooms`,
    control: `${prefix}control`,
    connections: (key) => `${prefix}conns:{${hashTag(key)}}`
  }
}
