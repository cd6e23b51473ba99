import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'

const CheckSchema = Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.String()) })
const ReadySchema = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not_ready')]),
  checks: Type.Record(Type.String(), CheckSchema)
})

/** Store pings slower than this count as failed: a probe must answer fast to mean anything. */
const STORE_PING_TIMEOUT_MS = 2000

/**
 * Kubernetes probes. Liveness only says the event loop turns; readiness says this node
 * should get traffic: not shutting down and the store answering.
 */
const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/live', {
    schema: { tags: ['health'], summary: 'Liveness probe', response: { 200: Type.Object({ status: Type.Literal('ok') }) } }
  }, async () => ({ status: 'ok' as const }))

  app.get('/ready', {
    schema: { tags: ['health'], summary: 'Readiness probe', response: { 200: ReadySchema, 503: ReadySchema } }
  }, async (_request, reply) => {
    const checks: Record<string, { ok: boolean, detail?: string }> = {
      shutdown: app.lifecycle.shuttingDown ? { ok: false, detail: 'shutting down' } : { ok: true }
    }
    checks.store = await pingWithTimeout(() => app.store.ping(), STORE_PING_TIMEOUT_MS)
    if (!checks.store.ok) app.log.warn({ detail: checks.store.detail }, 'readiness: store check failed')
    const ready = Object.values(checks).every(check => check.ok)
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks })
  })
}

async function pingWithTimeout (ping: () => Promise<void>, timeoutMs: number): Promise<{ ok: boolean, detail?: string }> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      ping(),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs) })
    ])
    return { ok: true }
  } catch (err) {
    // The probe body stays generic (it is unauthenticated); the log has the cause.
    return { ok: false, detail: (err as Error).message.startsWith('no answer') ? (err as Error).message : 'store error' }
  } finally {
    clearTimeout(timer)
  }
}

export default healthRoutes
