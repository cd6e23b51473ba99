import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'

/**
 * A per-client request budget on every route (RATE_LIMIT_MAX per minute), keyed by the
 * client address as Fastify resolves it: X-Forwarded-For counts only from TRUST_PROXY hops,
 * so a spoofed header cannot buy a fresh budget. Routes tighten it (login) through their
 * `config.rateLimit`.
 */
export default fp(async (app) => {
  await app.register(rateLimit, {
    global: true,
    max: app.config.rateLimitMax,
    timeWindow: '1 minute',
    // Health probes come from the orchestrator at a fixed cadence; never throttle them.
    allowList: (request) => request.url.startsWith('/health/'),
    errorResponseBuilder: (_request, context) => ({
      statusCode: 429,
      code: 'SB_ERR_RATE_LIMITED',
      error: 'Too Many Requests',
      message: `Rate limit exceeded, retry in ${context.after}`
    })
  })
}, { name: 'rate-limit', dependencies: ['config'] })
