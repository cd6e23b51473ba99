import fp from 'fastify-plugin'
import { createRoomService, type RoomService } from '../src/rooms/service.js'

declare module 'fastify' {
  interface FastifyInstance {
    rooms: RoomService
  }
}

/** Room, membership and ban rules, shared by the REST routes and the real-time core. */
export default fp(async (app) => {
  const { idp, accounts } = app.config
  app.decorate('rooms', createRoomService({
    store: app.store,
    limits: { maxRoomsPerUser: app.config.maxRoomsPerUser, archiveByDefault: app.config.archive.byDefault, archiveMaxDays: app.config.archive.maxDays },
    // Members may be added before they ever connect, so the prefix counts whenever external users are let in.
    externalUserPrefix: idp !== null && accounts !== 'builtin' ? idp.userPrefix : null
  }))
}, { name: 'rooms', dependencies: ['config', 'store', 'auth'] })
