import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'

const CheckSchema = Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.String()) })
const ReadySchema = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not_ready')]),
  checks: Type.Record(Type.String(), CheckSchema)
})

/** Store and engine pings slower than this count as failed: a probe must answer fast to mean anything. */
const PING_TIMEOUT_MS = 2000

/**
 * Kubernetes probes. Liveness only says the event loop turns; readiness says this node
 * should get traffic: not shutting down, the store answering, and the real-time engine
 * reachable when it is an external service (Redis). The in-memory engine lives in this
 * process and cannot be unreachable, so it gets no check of its own.
 */
const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/live', {
    schema: { tags: ['health'], summary: 'Liveness probe', response: { 200: Type.Object({ status: Type.Literal('ok') }) } }
  }, async () => ({ status: 'ok' as const }))

  // GET /health too: the path load balancers and uptime checks try first, for the question
  // they mean (is this node fit for traffic), not liveness.
  const readinessRoutes = [
    { path: '/ready', summary: 'Readiness probe' },
    { path: '/', summary: 'Readiness, as /health/ready', prefixTrailingSlash: 'no-slash' as const }
  ]
  for (const { path, summary, ...options } of readinessRoutes) {
    app.get(path, {
      ...options,
      schema: { tags: ['health'], summary, response: { 200: ReadySchema, 503: ReadySchema } }
    }, async (_request, reply) => {
      const checks: Record<string, { ok: boolean, detail?: string }> = {
        shutdown: app.lifecycle.shuttingDown ? { ok: false, detail: 'shutting down' } : { ok: true }
      }
      const engine = app.realtimeEngine
      const enginePing = engine.ping?.bind(engine)
      const [store, engineCheck] = await Promise.all([
        pingWithTimeout(() => app.store.ping(), PING_TIMEOUT_MS, 'store'),
        enginePing === undefined ? undefined : pingWithTimeout(enginePing, PING_TIMEOUT_MS, 'engine')
      ])
      checks.store = store
      if (!store.ok) app.log.warn({ detail: store.detail }, 'readiness: store check failed')
      if (engineCheck !== undefined) {
        checks.engine = engineCheck
        if (!engineCheck.ok) app.log.warn({ detail: engineCheck.detail, engine: engine.kind }, 'readiness: engine check failed')
      }
      const ready = Object.values(checks).every(check => check.ok)
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks })
    })
  }
}

async function pingWithTimeout (ping: () => Promise<void>, timeoutMs: number, what: string): Promise<{ ok: boolean, detail?: string }> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      ping(),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs) })
    ])
    return { ok: true }
  } catch (err) {
    // The probe body stays generic (it is unauthenticated); the log has the cause.
    return { ok: false, detail: (err as Error).message.startsWith('no answer') ? (err as Error).message : `${what} error` }
  } finally {
    clearTimeout(timer)
  }
}

export default healthRoutes
