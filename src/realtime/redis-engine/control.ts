import type { Redis } from 'ioredis'
import type { Control, ControlMessage } from '../engine.js'
import type { PartContext } from './context.js'

export interface RedisControlOptions extends PartContext {
  /** The pub/sub connection the room channels share. */
  sub: Redis
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
 */
export function createRedisControl ({ cmd, sub, keys, log, isClosed, assertOpen }: RedisControlOptions): RedisControl {
  let handler: ((message: ControlMessage) => void) | null = null

  let subscription: Promise<void> = Promise.resolve()
  function subscribe (): void {
    subscription = sub.subscribe(keys.control).then(() => {}, (err: unknown) => {
      log.warn({ err }, 'subscribing to the control channel failed; retried on reconnect')
    })
  }
  sub.on('ready', () => { if (!isClosed()) subscribe() })

  return {
    async publishControl (message: ControlMessage) {
      assertOpen()
      await cmd.publish(keys.control, JSON.stringify(message))
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
