import fp from 'fastify-plugin'
import { createRoomService, type RoomService } from '../src/rooms/service.js'

declare module 'fastify' {
  interface FastifyInstance {
    rooms: RoomService
  }
}

/** Room, membership and ban rules, shared by the REST routes and the real-time core. */
export default fp(async (app) => {
  app.decorate('rooms', createRoomService({ store: app.store, limits: { maxRoomsPerUser: app.config.maxRoomsPerUser } }))
}, { name: 'rooms', dependencies: ['config', 'store', 'auth'] })
