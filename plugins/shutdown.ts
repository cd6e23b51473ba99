import fp from 'fastify-plugin'

export interface Lifecycle {
  /** True from the moment shutdown begins: readiness fails and new work is refused. */
  readonly shuttingDown: boolean
  /** Marks the server as draining (readiness 503) without running the drain hooks. Idempotent. */
  beginShutdown(): void
  /** Registers work to finish before the server closes (the WebSocket drain). */
  onShutdown(hook: () => Promise<void>): void
  /** Begins shutdown and runs every drain hook once; later calls return the same promise. */
  shutdown(): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
}

export function createLifecycle (): Lifecycle {
  let shuttingDown = false
  let done: Promise<void> | undefined
  const hooks: Array<() => Promise<void>> = []
  return {
    get shuttingDown () { return shuttingDown },
    beginShutdown () { shuttingDown = true },
    onShutdown (hook) { hooks.push(hook) },
    shutdown () {
      shuttingDown = true
      done ??= Promise.allSettled(hooks.map(hook => hook())).then(() => undefined)
      return done
    }
  }
}

/**
 * Shutdown state and order. On SIGTERM (src/server.ts) readiness turns 503 at once, the drain
 * hooks run (WebSocket clients are told to reconnect, spread over WS_DRAIN_MS) while HTTP still
 * answers, and only then does app.close() stop the listener. A direct app.close() drains too.
 */
export default fp(async (app) => {
  const lifecycle = createLifecycle()
  app.decorate('lifecycle', lifecycle)
  app.addHook('preClose', async () => { await lifecycle.shutdown() })
}, { name: 'shutdown', dependencies: ['config'] })
