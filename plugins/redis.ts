import fp from 'fastify-plugin'
import { createRedisConnection, quitRedis, type RedisClient } from '../src/redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * The connection for cluster-wide limits (HTTP rate limits, login failures, publish
     * rate) when REDIS_URL is set; null on a single node. The real-time engine has its own.
     */
    redis: RedisClient | null
  }
}

/**
 * Opens the limits' Redis connection. An unreachable Redis is not fatal: the node starts,
 * every limit falls back to this node's own count, and ioredis keeps reconnecting.
 */
export default fp(async (app) => {
  const redis = app.config.redis
  if (redis === null) {
    app.decorate('redis', null)
    return
  }
  const conn = createRedisConnection(redis, { name: 'switchboard-limits', log: app.log.child({ component: 'redis-limits' }) })
  try {
    await conn.connect()
  } catch (err) {
    app.log.warn({ err }, 'redis (limits) not reachable yet; limits are per node until it is')
  }
  app.decorate<RedisClient | null>('redis', conn)
  app.addHook('onClose', async () => { await quitRedis(conn) })
}, { name: 'redis', dependencies: ['config'] })
