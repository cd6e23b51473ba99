import { createRequire } from 'node:module'
import fp from 'fastify-plugin'
import rateLimit, { type FastifyRateLimitStore, type FastifyRateLimitStoreCtor, type RateLimitPluginOptions } from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'
import type { FallbackLog } from '../src/limits/fallback.js'
import { outageLogThrottle, type RedisClient } from '../src/redis.js'
import { Errors } from '../src/errors.js'

/**
 * A per-client request budget on every route (RATE_LIMIT_MAX per minute), keyed by the
 * client address as Fastify resolves it: X-Forwarded-For counts only from TRUST_PROXY hops,
 * so a spoofed header cannot buy a fresh budget. Routes tighten it (login) through their
 * `config.rateLimit`. WebSocket upgrades never enter Fastify's lifecycle: routes/ws counts
 * them against a handshake budget of their own.
 *
 * With REDIS_URL the counts live in Redis, so the budget is the cluster's, not each node's
 * (a client spread over N nodes by the load balancer does not get N budgets). While Redis is
 * unreachable each node counts on its own: the limit weakens, it never lifts, and requests
 * never wait on Redis or fail because of it.
 */
export default fp(async (app) => {
  const redis = app.redis
  await app.register(rateLimit, {
    // Not the plugin's per-route hook: it runs after a route's own onRequest hooks, so a
    // request refused by authentication (401) would never be counted and token guessing
    // would go unthrottled. One root hook below counts every request first instead.
    global: false,
    max: app.config.rateLimitMax,
    timeWindow: '1 minute',
    ...(redis === null ? {} : { store: clusterStore(redis, `${app.config.redis?.keyPrefix ?? 'sb:'}http-rate:`, app.log) }),
    // Thrown by the plugin, rendered by the error handler; the plugin sets Retry-After itself.
    errorResponseBuilder: (_request, context) => new Errors.RateLimited(`Rate limit exceeded, retry in ${context.after}`)
  })
  // Root-level onRequest hooks run before every route's own, and for unknown routes too (so
  // scanning for paths costs the scanner).
  const globalLimit = app.rateLimit()
  app.addHook('onRequest', async (request, reply) => {
    // Routes with a budget of their own (login) are counted by their route hook instead (the plugin runs one limit per request: the first to run wins).
    if (isProbe(request) || request.routeOptions.config.rateLimit !== undefined) return
    await globalLimit.call(app, request, reply)
  })
}, { name: 'rate-limit', dependencies: ['config', 'redis'] })

/**
 * The orchestrator's probes come at a fixed cadence and must see the truth, so they are never
 * throttled. Only their plain GETs, matched by route rather than by URL prefix: a prefix also
 * exempted every unknown path under /health/ and every other method, a free side door for
 * scanning and floods.
 */
const PROBE_ROUTES = new Set(['/health', '/health/live', '/health/ready'])

function isProbe (request: FastifyRequest): boolean {
  return request.method === 'GET' && PROBE_ROUTES.has(request.routeOptions.url ?? '')
}

type StoreCtor = new (continueExceeding: boolean, exponentialBackoff: boolean, ...rest: unknown[]) => FastifyRateLimitStore

// The plugin's own stores (not exported from its entry point, hence the file paths): the
// Redis one is the cluster's count, the local one the fallback, with the same semantics.
const require = createRequire(import.meta.url)
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as StoreCtor
const LocalStore = require('@fastify/rate-limit/store/LocalStore.js') as StoreCtor

/** Counts in Redis; each count Redis fails to answer is taken from this node's own store. */
class FallbackStore implements FastifyRateLimitStore {
  constructor (private readonly cluster: FastifyRateLimitStore, private readonly local: FastifyRateLimitStore, private readonly onError: (err: Error) => void) {}

  incr (key: string, callback: (error: Error | null, result?: { current: number, ttl: number }) => void, timeWindow: number, max: number): void {
    this.cluster.incr(key, (err, result) => {
      if (err === null && result !== undefined) {
        callback(null, result)
        return
      }
      this.onError(err ?? new Error('no result from redis'))
      this.local.incr(key, callback, timeWindow, max)
    }, timeWindow, max)
  }

  child (routeOptions: Parameters<FastifyRateLimitStore['child']>[0]): FastifyRateLimitStore {
    return new FallbackStore(this.cluster.child(routeOptions), this.local.child(routeOptions), this.onError)
  }
}

function clusterStore (redis: RedisClient, nameSpace: string, log: FallbackLog): FastifyRateLimitStoreCtor {
  const throttle = outageLogThrottle()
  const onError = (err: Error): void => {
    const due = throttle()
    if (due !== null) log.warn({ err, suppressed: due.suppressed }, 'HTTP rate limit: Redis unavailable, counting on this node only')
  }
  return class extends FallbackStore {
    constructor (params: RateLimitPluginOptions) {
      const continueExceeding = params.continueExceeding ?? false
      const exponentialBackoff = params.exponentialBackoff ?? false
      super(new RedisStore(continueExceeding, exponentialBackoff, redis, nameSpace), new LocalStore(continueExceeding, exponentialBackoff), onError)
    }
  }
}
