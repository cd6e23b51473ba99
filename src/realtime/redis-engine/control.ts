import type { RedisClient } from '../../redis.js'
import type { Control, ControlMessage } from '../engine.js'
import type { PartContext } from './context.js'
import type { ShardContinuity } from './shard-continuity.js'

export interface RedisControlOptions extends PartContext {
  /** The pub/sub connection the room channels share. */
  sub: RedisClient
  /** On Redis Cluster: the control channel is a shard channel too (see createRedisControl). */
  shards: ShardContinuity | null
}

export interface RedisControl extends Control {
  /** A message that arrived on the control channel. */
  deliver(message: string): void
  /** Settles once the latest subscription to the control channel was answered (either way). */
  subscribed(): Promise<void>
  /** Drops the handler: nothing is delivered after the engine closed. */
  clear(): void
}

/**
 * The cluster's control channel. It is (re)subscribed on every 'ready' of the pub/sub
 * connection; control messages sent while this node was cut off are lost: the control channel
 * is best-effort (docs/scale-out.md).
 *
 * On Redis Cluster it is a shard channel (SPUBLISH) of the slot its name hashes to, not a plain
 * channel: a plain PUBLISH would reach every node too (the cluster bus broadcasts it), but
 * ioredis sends a keyless command to any primary, so two messages from one node could arrive
 * in another order; one shard keeps the order the control messages were sent in, and its gaps
 * are seen like a room's (shard-continuity.ts). Control is low-volume: one slot carries it.
 */
export function createRedisControl ({ cmd, sub, shards, keys, log, isClosed, assertOpen }: RedisControlOptions): RedisControl {
  let handler: ((message: ControlMessage) => void) | null = null

  let subscription: Promise<void> = Promise.resolve()
  function subscribe (): void {
    subscription = (shards === null ? sub.subscribe(keys.control) : shards.subscribe(keys.control, null)).then(() => {}, (err: unknown) => {
      log.warn({ err }, 'subscribing to the control channel failed; retried on reconnect')
    })
  }
  sub.on('ready', () => { if (!isClosed()) subscribe() })

  return {
    async publishControl (message: ControlMessage) {
      assertOpen()
      if (shards === null) await cmd.publish(keys.control, JSON.stringify(message))
      else await cmd.spublish(keys.control, JSON.stringify(message))
    },
    onControl (h) { handler = h },
    deliver (message: string) {
      if (isClosed() || handler === null) return
      let parsed: ControlMessage
      try {
        parsed = JSON.parse(message) as ControlMessage
      } catch (err) {
        log.warn({ err }, 'unreadable message on the control channel')
        return
      }
      try {
        handler(parsed)
      } catch (err) {
        log.error({ err, control: parsed.type }, 'control handler failed')
      }
    },
    subscribed: async () => { await subscription },
    clear () { handler = null }
  }
}
