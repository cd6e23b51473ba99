import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { errorResponses, UserIdSchema, type Security } from '../../src/schemas/common.js'
import { ConnectionSchema, ConnectionsQuerySchema } from '../../src/schemas/realtime.js'

/** Operator tools for open connections (admins only): list, and kick with close code 4503. */
const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)
  const security: Security = [{ bearerAuth: [] }]

  app.get('/connections', {
    schema: {
      tags: ['admin'], summary: 'Open WebSocket connections on this node, optionally by user or room', security,
      querystring: ConnectionsQuerySchema,
      response: { 200: Type.Object({ items: Type.Array(ConnectionSchema) }), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => ({ items: app.realtime.listConnections(request.query) }))

  app.delete('/connections/:id', {
    schema: {
      tags: ['admin'], summary: 'Disconnect one connection (4503, do not reconnect)', security,
      params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    if (!app.realtime.kick(request.params.id)) throw new Errors.ConnectionNotFound()
    request.log.info({ connId: request.params.id }, 'connection kicked')
    return reply.code(204).send(null)
  })

  app.delete('/users/:id/connections', {
    schema: {
      tags: ['admin'], summary: 'Disconnect every connection of a user (4503)', security,
      params: Type.Object({ id: UserIdSchema }),
      response: { 200: Type.Object({ closed: Type.Integer() }), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const closed = app.realtime.kickUser(request.params.id)
    request.log.info({ user: request.params.id, closed }, 'user kicked')
    return { closed }
  })
}

export default adminRoutes
