import fp from 'fastify-plugin'
import { createBackendHooks, type BackendHooks } from '../src/hooks/service.js'
import { NO_ROOM_HOOKS } from '../src/realtime/room-hooks.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The hooks to the application's backend (HOOKS_URL); every hook off without it. */
    backendHooks: BackendHooks
  }
}

/** Without HOOKS_URL: nothing is called, nothing is queued. */
const NO_HOOKS: BackendHooks = {
  ...NO_ROOM_HOOKS,
  connect: async () => ({}),
  queuedBytes: () => 0,
  close: () => {}
}

/**
 * The hooks to the application's backend (src/hooks, docs/integration.md#hooks): built from
 * HOOKS_*, decorated as `app.backendHooks` for the WebSocket handshake (connect) and the
 * real-time node (the room hooks), closed with the app (queued events are dropped).
 */
export default fp(async (app) => {
  const config = app.config.hooks
  if (config === null) {
    app.decorate('backendHooks', NO_HOOKS)
    return
  }
  const hooks = createBackendHooks({
    config,
    maxMessageBytes: app.config.ws.maxMessageBytes,
    metrics: app.metrics.hooks,
    log: app.log.child({ component: 'hooks' })
  })
  app.decorate('backendHooks', hooks)
  app.log.info({ hooks: [...config.events], rooms: config.rooms, timeoutMs: config.timeoutMs, concurrency: config.concurrency }, 'hooks to the application backend: on')
  app.addHook('onClose', async () => { hooks.close() })
}, { name: 'hooks', dependencies: ['config', 'metrics'] })
