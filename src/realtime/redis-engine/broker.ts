import { runScript, waitForReplicas, type RedisClient } from '../../redis.js'
import type { Broker, BrokerHandler, PublishRequest, PublishResult, RoomEvent, StreamOptions } from '../engine.js'
import { newEpoch, publicationBytes } from '../engine.js'
import { decodeChannelMessage, encodeEvent, messageHead } from './codec.js'
import { UnavailableError } from '../errors.js'
import type { Archiver } from './archiver.js'
import type { PartContext } from './context.js'
import { MIN_META_TTL_MS } from './keys.js'
import { engineScript, toNumber } from './scripts.js'
import type { ShardContinuity } from './shard-continuity.js'

const PUBLISH_FILE = new URL('./lua/publish.lua', import.meta.url)
const PUBLISH = engineScript(new URL('./lua/deliver-pubsub.lua', import.meta.url), PUBLISH_FILE)
const PUBLISH_SHARDED = engineScript(new URL('./lua/deliver-sharded.lua', import.meta.url), PUBLISH_FILE)

export interface RedisBrokerOptions extends PartContext {
  /**
   * The pub/sub connection of one Redis; the broker restores the room channels itself after a
   * drop.
   */
  sub: RedisClient
  /**
   * On Redis Cluster: room channels are shard channels (SSUBSCRIBE, SPUBLISH), subscribed
   * through this, which tells restoreRooms which rooms had a gap. Null: one Redis.
   */
  shards: ShardContinuity | null
  idempotencyWindowMs: number
  roomHistoryBytes: number
  waitReplicas: number
  waitTimeoutMs: number
  /** The cluster archive's queueing (null: no archive, archiveDays is ignored). */
  archiver: Archiver | null
  /** Bytes one room's archive queue may hold (ARCHIVE_QUEUE_ROOM_BYTES); past it publishes to the room are refused, temporarily. */
  archiveQueueRoomBytes: number
  onHandlerError(err: unknown, room: string): void
}

export interface RedisBroker extends Broker {
  /** A message that arrived on a room's channel, as bytes (the engine routes every other channel elsewhere). */
  deliver(channel: string, message: Buffer): void
  /** Live delivery had a gap in `rooms` (every room when absent) and is active again: the handler's onReset. */
  reset(rooms?: string[]): void
}

/**
 * The broker over Redis: publish is one script (number, store in the room's stream, publish on
 * the room's channel), so order is identical on every node and an acknowledged publication is
 * stored. When the pub/sub connection comes back after a drop, it restores its channels and
 * calls the handler's onReset: live delivery may have skipped publications, and subscribers
 * recover them from history.
 */
export function createRedisBroker (options: RedisBrokerOptions): RedisBroker {
  const { cmd, sub, keys, log, isClosed, assertOpen, idempotencyWindowMs, roomHistoryBytes, waitReplicas, waitTimeoutMs, archiver, archiveQueueRoomBytes, onHandlerError, shards } = options
  const cluster = shards !== null
  let handler: BrokerHandler | null = null
  /** Channel → room for every room this node subscribed to. */
  const channels = new Map<string, string>()

  function call (room: string, fn: (h: BrokerHandler) => void): void {
    if (handler === null) return
    try {
      fn(handler)
    } catch (err) {
      onHandlerError(err, room)
    }
  }

  function deliver (channel: string, message: Buffer): void {
    const room = channels.get(channel)
    if (room === undefined || isClosed()) return
    try {
      const decoded = decodeChannelMessage(message)
      if (decoded?.type === 'publication') call(room, (h) => { h.onPublication(room, decoded.epoch, decoded.publication) })
      else if (decoded?.type === 'event') call(room, (h) => { h.onEvent(room, decoded.event) })
    } catch (err) {
      log.warn({ err, room }, 'unreadable message on a room channel')
    }
  }

  function reset (rooms?: string[]): void {
    if (handler === null) return
    try {
      handler.onReset(rooms)
    } catch (err) {
      log.error({ err }, 'broker reset handler failed')
    }
  }

  // One Redis: one pub/sub connection for every room, restored here. A cluster: one per
  // primary, followed by shard-continuity.ts, which resets only the rooms of a shard that was
  // lost or moved.
  let subscriberLost = false
  // Publications sent while the connection was down reached nobody here; nothing was lost
  // for a node with no room subscribed.
  if (!cluster) sub.on('close', () => { if (channels.size > 0) subscriberLost = true })
  sub.on('ready', () => {
    if (!subscriberLost || isClosed()) return
    void (async () => {
      const wanted = [...channels.keys()]
      try {
        if (wanted.length > 0) await sub.subscribe(...wanted)
      } catch (err) {
        // Dropped again: the next 'ready' tries again, and only then is continuity restored.
        log.warn({ err }, 'restoring room subscriptions failed')
        return
      }
      subscriberLost = false
      log.info({ rooms: wanted.length }, 'room subscriptions restored; subscribers recover from history')
      reset()
    })()
  })

  async function publish (room: string, request: PublishRequest, streamOptions: StreamOptions): Promise<PublishResult> {
    assertOpen()
    const k = keys.room(room)
    const historyTtlMs = Math.max(0, Math.floor(streamOptions.historyTtlSeconds * 1000))
    const queueKeys = [k.meta, k.stream, k.archiveQueue, k.archiveQueueBytes]
    const scriptKeys = request.idempotencyKey === undefined ? queueKeys : [...queueKeys, k.idem(request.idempotencyKey)]
    const archived = archiver !== null && (streamOptions.archiveDays ?? 0) > 0
    // Named in the index before the entry can exist (archiver.ts: why nothing is left unvisited).
    if (archived) await archiver.beforePublish(room)
    let result: [string, number, number]
    try {
      result = await runScript(cmd, cluster ? PUBLISH_SHARDED : PUBLISH, scriptKeys, [
        newEpoch(), Math.max(0, Math.floor(streamOptions.historySize)), historyTtlMs,
        Math.max(historyTtlMs, MIN_META_TTL_MS), request.payload, k.channel, idempotencyWindowMs,
        request.from.id, request.ts, request.kind, publicationBytes(request.payload, request.from.id), roomHistoryBytes, messageHead(request),
        archived ? '1' : '0', archiveQueueRoomBytes
      ]) as [string, number, number]
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('ARCHIVE_BACKLOG')) {
        throw new UnavailableError('The room\'s archive is behind (its database does not confirm); retry shortly')
      }
      throw err
    }
    if (archived) archiver.published(room)
    // Also for a duplicate: its first attempt may have failed exactly here.
    if (waitReplicas > 0) {
      const confirmed = await waitForReplicas(cmd, k.meta, waitReplicas, waitTimeoutMs)
      if (confirmed < waitReplicas) {
        // Stored and delivered on the primary, but not known to survive a failover: not
        // acknowledged. The client retries with its idempotency key and gets this same position.
        throw new Error(`publish confirmed by ${confirmed} of ${waitReplicas} replicas within ${waitTimeoutMs} ms`)
      }
    }
    return { epoch: result[0], offset: toNumber(result[1]), duplicate: toNumber(result[2]) === 1 }
  }

  async function subscribe (room: string): Promise<void> {
    assertOpen()
    const { channel } = keys.room(room)
    channels.set(channel, room)
    try {
      if (shards !== null) await shards.subscribe(channel, room)
      else await sub.subscribe(channel)
    } catch (err) {
      channels.delete(channel)
      throw err
    }
  }

  async function unsubscribe (room: string): Promise<void> {
    assertOpen()
    const { channel } = keys.room(room)
    if (!channels.delete(channel)) return
    // Without a connection there is no subscription to end: it is not restored on reconnect.
    if (shards !== null) await shards.unsubscribe(channel)
    else if (sub.status === 'ready') await sub.unsubscribe(channel)
  }

  async function publishEvent (room: string, event: RoomEvent): Promise<void> {
    assertOpen()
    const { channel } = keys.room(room)
    if (cluster) await cmd.spublish(channel, encodeEvent(event))
    else await cmd.publish(channel, encodeEvent(event))
  }

  return {
    setHandler (h: BrokerHandler) { handler = h },
    publish,
    subscribe,
    unsubscribe,
    publishEvent,
    deliver,
    reset,
    async close () {
      handler = null
      channels.clear()
    }
  }
}
