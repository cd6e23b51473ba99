import fp from 'fastify-plugin'

export interface Lifecycle {
  /** True from the moment shutdown begins: readiness fails and new work is refused. */
  readonly shuttingDown: boolean
  /** Marks the server as draining. Idempotent. */
  beginShutdown(): void
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
}

export function createLifecycle (): Lifecycle {
  let shuttingDown = false
  return {
    get shuttingDown () { return shuttingDown },
    beginShutdown () { shuttingDown = true }
  }
}

/**
 * Shutdown state. Readiness reads it so a load balancer stops sending traffic before
 * connections close; app.close() (on SIGTERM, via close-with-grace) flips it first.
 */
export default fp(async (app) => {
  const lifecycle = createLifecycle()
  app.decorate('lifecycle', lifecycle)
  app.addHook('preClose', async () => { lifecycle.beginShutdown() })
}, { name: 'shutdown', dependencies: ['config'] })
