import { createRedisConnection, DEFAULT_REDIS_TIMEOUT_MS, describeRedisEndpoint, quitRedis, type RedisEndpoint } from '../../redis.js'
import type { Cluster } from 'ioredis'
import type { Engine } from '../engine.js'
import type { Logger } from '../logger.js'
import { randomUUID } from 'node:crypto'
import { createArchiver, type ArchiveStore } from './archiver.js'
import { createArchiveSweeper, type SweepStore } from './archive-sweep.js'
import { createRedisBroker } from './broker.js'
import type { PartContext } from './context.js'
import { createRedisControl } from './control.js'
import { createRedisCounters } from './counters.js'
import { createRedisHistory } from './history.js'
import { keyLayout } from './keys.js'
import { createRedisPresence } from './presence.js'
import { watchShardContinuity } from './shard-continuity.js'

export { REFRESH_BATCH } from './scripts.js'

export interface RedisEngineOptions extends RedisEndpoint {
  /** Prepended to every key and channel, so several deployments can share one Redis. */
  keyPrefix?: string
  /** A dead node's connections leave presence within this many seconds; default 30. */
  presenceTtlSeconds?: number
  log: Logger
  /** How long a publish's idempotency key is remembered per room; default 5 minutes. */
  idempotencyWindowMs?: number
  /** Connect and command timeout: calls fail after this long instead of hanging; default 2000. */
  timeoutMs?: number
  /**
   * Replicas that must have a publication (Redis WAIT) before its publish is acknowledged; 0
   * (the default) acknowledges once the primary has it. See docs/scale-out.md#redis-sentinel.
   */
  waitReplicas?: number
  /** How long WAIT may take; a publish not confirmed by then fails with `unavailable`. Default 500. */
  waitTimeoutMs?: number
  /** Receives what a broker handler threw; the default logs it. */
  onHandlerError?: (err: unknown, room: string) => void
  /**
   * Bytes (publicationBytes) one room's stream may hold (HISTORY_ROOM_BYTES): each publish
   * trims the oldest past it, keeping the newest. Absent: only count and TTL bound a stream.
   */
  roomHistoryBytes?: number
  /**
   * The cluster archive: publications of rooms with archiveDays go through a queue per room
   * into this store (PostgreSQL), and history pages read it beyond the window. Absent:
   * archiveDays is ignored (only the window is kept).
   */
  archive?: {
    store: ArchiveStore & SweepStore
    /** Bytes one room's queue may hold (ARCHIVE_QUEUE_ROOM_BYTES); past it publishes to the room are refused (temporary). */
    queueRoomBytes: number
    /** How soon another node takes over a dead node's queues; default 5000. */
    leaseMs?: number
    /** How often each node visits the rooms with queued publications; default 500. */
    scanMs?: number
    /** Each archived publication's lag, ms from its publish to the database's confirmation. */
    onArchived?: (lagMs: number) => void
    /** How often this node runs the retention sweep (rows past archiveDays, deleted rooms'); default 5 minutes. */
    sweepMs?: number
    /** Rows each sweep deleted on this node. */
    onSwept?: (rows: number) => void
  }
}

export type RedisEngine = Engine & { ping(): Promise<void> }

const DEFAULT_ARCHIVE_LEASE_MS = 5000
const DEFAULT_ARCHIVE_SCAN_MS = 500
const DEFAULT_ARCHIVE_SWEEP_MS = 5 * 60_000
/** Rows one retention batch deletes: one short transaction, its row locks held briefly. */
const ARCHIVE_SWEEP_BATCH = 1000

const DEFAULT_IDEMPOTENCY_WINDOW_MS = 5 * 60_000

/**
 * The Redis engine: every node of a cluster shares numbering, history and presence through
 * one Redis, and publications reach every node subscribed to the room through pub/sub. This
 * module wires the parts, one per engine interface (broker.ts, history.ts, presence.ts,
 * counters.ts, control.ts, over the key layout of keys.ts and the scripts of lua/), to three
 * connections, and schedules the housekeeping:
 *
 * - commands: fail fast while Redis is away (no offline queue, short timeouts);
 * - pub/sub: room channels and the control channel;
 * - housekeeping: the presence and connection-count refreshes and the presence sweep, so a
 *   publish never queues behind their batches.
 *
 * Redis being away never throws out of an event: calls reject (the node answers `unavailable`)
 * and ioredis reconnects with backoff.
 */
export async function createRedisEngine (options: RedisEngineOptions): Promise<RedisEngine> {
  const keys = keyLayout(options.keyPrefix ?? 'sb:')
  const log = options.log
  const timeoutMs = options.timeoutMs ?? DEFAULT_REDIS_TIMEOUT_MS
  const waitReplicas = options.waitReplicas ?? 0
  const waitTimeoutMs = options.waitTimeoutMs ?? 500
  // WAIT runs on the command connection: its own timeout must end before the connection's.
  if (waitReplicas > 0 && waitTimeoutMs >= timeoutMs) throw new Error('redis engine: waitTimeoutMs must be shorter than timeoutMs')
  const presenceTtlMs = Math.max(1, options.presenceTtlSeconds ?? 30) * 1000
  // Refreshed every ttl/3 with a lifetime of 3/4 ttl: one missed refresh is tolerated, and
  // with a sweep every ttl/4 a dead node's connections leave within ttl of its last refresh.
  const refreshMs = Math.floor(presenceTtlMs / 3)
  const lifetimeMs = Math.floor(presenceTtlMs * 3 / 4)
  const sweepMs = Math.floor(presenceTtlMs / 4)
  // Whole presence keys outlive their entries, so a cluster that vanished leaves no garbage.
  const keysTtlMs = lifetimeMs + presenceTtlMs

  const cmd = createRedisConnection(options, { name: 'switchboard-cmd', log, timeoutMs })
  // Presence and connection-count refreshes and the sweep, on a connection of their own. A
  // refresh sends one script per room and per counted key, all at once (each up to
  // REFRESH_BATCH ids): on a node serving 10,000 rooms, 10,000 scripts. On the command
  // connection every publish, history read and subscribe behind them waited for the whole
  // queue; on its own connection Redis serves the two connections in turn, so a publish waits
  // for the script running, not for the rest of the refresh.
  const housekeeping = createRedisConnection(options, { name: 'switchboard-housekeeping', log, timeoutMs })
  // The pub/sub connection restores its channels itself (then tells the handler), so it knows
  // when they are active again.
  // On a cluster it keeps one subscriber per primary for the rooms' shard channels, beside the
  // one connection for the control channel (a plain channel: the cluster bus carries it to
  // every node, see docs/scale-out.md#redis-cluster).
  const cluster = options.clusterNodes !== undefined && options.clusterNodes !== null && options.clusterNodes.length > 0
  const sub = createRedisConnection(options, { name: 'switchboard-sub', log, timeoutMs, options: { autoResubscribe: false }, sharded: cluster })

  let closed = false
  const isClosed = (): boolean => closed
  const assertOpen = (): void => {
    if (closed) throw new Error('redis engine is closed')
  }

  const context: PartContext = { cmd, keys, log, isClosed, assertOpen }
  const shards = cluster
    ? watchShardContinuity({ sub: sub as Cluster, log, isClosed, onRestored: (rooms) => { broker.reset(rooms) } })
    : null
  const archiveOptions = options.archive
  const archiver = archiveOptions === undefined
    ? null
    : createArchiver({
      ...context,
      store: archiveOptions.store,
      nodeId: randomUUID(),
      leaseMs: archiveOptions.leaseMs ?? DEFAULT_ARCHIVE_LEASE_MS,
      scanMs: archiveOptions.scanMs ?? DEFAULT_ARCHIVE_SCAN_MS,
      ...(archiveOptions.onArchived === undefined ? {} : { onArchived: archiveOptions.onArchived })
    })
  const sweeper = archiveOptions === undefined
    ? null
    : createArchiveSweeper({
      store: archiveOptions.store,
      log,
      intervalMs: archiveOptions.sweepMs ?? DEFAULT_ARCHIVE_SWEEP_MS,
      batchSize: ARCHIVE_SWEEP_BATCH,
      ...(archiveOptions.onSwept === undefined ? {} : { onSwept: archiveOptions.onSwept })
    })
  // The control channel's 'ready' listener goes first: it is subscribed before the rooms are restored.
  const control = createRedisControl({ ...context, sub, shards })
  const broker = createRedisBroker({
    ...context,
    sub,
    shards,
    idempotencyWindowMs: options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS,
    roomHistoryBytes: Math.min(Number.MAX_SAFE_INTEGER, options.roomHistoryBytes ?? Number.MAX_SAFE_INTEGER),
    waitReplicas,
    waitTimeoutMs,
    archiver,
    archiveQueueRoomBytes: archiveOptions?.queueRoomBytes ?? Number.MAX_SAFE_INTEGER,
    onHandlerError: options.onHandlerError ?? ((err: unknown, room: string) => {
      log.error({ err, room }, 'broker handler failed')
    })
  })
  const history = createRedisHistory(context, archiveOptions?.store ?? null)
  const presence = createRedisPresence({ ...context, housekeeping, publishEvent: broker.publishEvent, lifetimeMs, keysTtlMs })
  const counters = createRedisCounters({ ...context, housekeeping, lifetimeMs, keysTtlMs })

  // Buffers, not strings: a binary publication's bytes must not go through UTF-8 decoding.
  // Only `messageBuffer` is listened to, so ioredis decodes nothing itself (with a 'message'
  // listener it would decode every message, bytes included).
  function route (channel: Buffer, message: Buffer): void {
    const name = channel.toString()
    if (name === keys.control) control.deliver(message.toString())
    else broker.deliver(name, message)
  }
  sub.on('messageBuffer', route)
  // Shard channels (Redis Cluster): the rooms', and the control channel.
  sub.on('smessageBuffer', route)

  // -------------------------------------------------------------------------------------
  // Housekeeping: one refresh for presence and connection counts, one sweep.

  let refreshing = false
  async function refresh (): Promise<void> {
    if (refreshing || closed || housekeeping.status !== 'ready') return
    refreshing = true
    try {
      await Promise.all([presence.refresh(), counters.refresh()])
    } finally {
      refreshing = false
    }
  }

  /** After a reconnect every node refreshes first: sweeping at once would evict live connections whose refresh failed during the outage. */
  let sweepPausedUntil = 0
  let sweeping = false
  async function sweep (): Promise<void> {
    if (sweeping || closed || housekeeping.status !== 'ready' || Date.now() < sweepPausedUntil) return
    sweeping = true
    try {
      await presence.sweep()
    } finally {
      sweeping = false
    }
  }

  let housekeepingReadyCount = 0
  housekeeping.on('ready', () => {
    if (++housekeepingReadyCount === 1 || closed) return
    sweepPausedUntil = Date.now() + refreshMs
    void refresh()
  })

  const refreshTimer = setInterval(() => { void refresh() }, refreshMs)
  const sweepTimer = setInterval(() => { void sweep() }, sweepMs)
  // Housekeeping must never keep a process alive on its own.
  refreshTimer.unref()
  sweepTimer.unref()

  // -------------------------------------------------------------------------------------
  // Start: connect all three; an unreachable Redis is not fatal (the node starts not ready, and
  // ioredis keeps trying).

  await Promise.all([cmd, sub, housekeeping].map(async (conn) => {
    try {
      await conn.connect()
    } catch (err) {
      log.warn({ err, ...describeRedisEndpoint(options) }, 'redis not reachable yet; retrying in the background')
    }
  }))

  await control.subscribed()

  return {
    kind: 'redis',
    broker,
    history,
    presence: { add: presence.add, remove: presence.remove, get: presence.get },
    control: { publishControl: control.publishControl, onControl: control.onControl },
    connections: { reserve: counters.reserve, release: counters.release },
    ...(archiver === null ? {} : { archivePending: archiver.pending }),
    async ping () {
      assertOpen()
      // All three: without the pub/sub connection this node would serve no live publications,
      // without housekeeping its connections would expire from presence and the counts.
      await Promise.all([cmd.ping(), sub.ping(), housekeeping.ping()])
    },
    async close () {
      if (closed) return
      closed = true
      clearInterval(refreshTimer)
      clearInterval(sweepTimer)
      await Promise.all([archiver?.close(), sweeper?.close()])
      await broker.close()
      shards?.close()
      control.clear()
      counters.clear()
      // Presence entries are left to expire: on a clean shutdown the node removed its
      // connections already, and after a crash nobody could.
      presence.clear()
      await Promise.all([quitRedis(cmd), quitRedis(sub), quitRedis(housekeeping)])
    }
  }
}
