import { Redis } from 'ioredis'
import { portFromEnv, startHub, type Relay } from './hub-protocol.js'
import { frameOnceBroadcast, trackSocket } from './frame-once.js'

/**
 * The frame-once hub as one of several processes joined by Redis pub/sub, the least a
 * cluster's hop can cost: a publish is one `PUBLISH` (answered to the publisher once Redis
 * has taken it), and every process, subscribed to the hub's channel prefix, frames what it
 * receives once for its own sockets. No history, numbering or authorization on the way, which
 * Switchboard's hop carries (its publish script, docs/scale-out.md): scenario 6's reference
 * for what the machine's Redis round trip and a second process alone add.
 *
 * HUB_REDIS_URL and HUB_REDIS_PREFIX (unique per run: the Redis is shared with other work).
 */
const url = process.env.HUB_REDIS_URL ?? 'redis://127.0.0.1:6379'
const prefix = process.env.HUB_REDIS_PREFIX ?? 'sb-bench-hub:'

function redisRelay (): Relay {
  const publisher = new Redis(url, { lazyConnect: true })
  const subscriber = new Redis(url, { lazyConnect: true })
  return {
    publish: async (room, data) => { await publisher.publish(prefix + room, JSON.stringify(data)) },
    start: async (deliver) => {
      await Promise.all([publisher.connect(), subscriber.connect()])
      subscriber.on('pmessage', (_pattern: string, channel: string, message: string) => {
        deliver(channel.slice(prefix.length), JSON.parse(message) as unknown)
      })
      await subscriber.psubscribe(`${prefix}*`)
    }
  }
}

startHub('ws-framed-redis', portFromEnv(), frameOnceBroadcast, redisRelay()).on('connection', trackSocket)
