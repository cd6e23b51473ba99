import fp from 'fastify-plugin'
import { createStore, type Store } from '../src/store/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: Store
  }
}

/** Opens the database named by DATABASE_URL, migrates it, and closes it with the app. */
export default fp(async (app) => {
  const store = await createStore(app.config.databaseUrl, {
    log: app.log,
    pgPool: app.config.databasePool,
    ...(app.config.databaseSchema === null ? {} : { pgSchema: app.config.databaseSchema })
  })
  app.log.info({ store: store.kind }, 'store ready')
  app.decorate('store', store)
  app.addHook('onClose', async () => { await store.close() })
}, { name: 'store', dependencies: ['config'] })
