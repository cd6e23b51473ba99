import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { errorResponses, UserIdSchema, type Security } from '../../src/schemas/common.js'
import { ConnectionSchema, ConnectionsQuerySchema, StatsSchema } from '../../src/schemas/realtime.js'
import { createRateMeter } from '../../src/realtime/metrics.js'

/** Operator tools (admins only): open connections (list, kick with close code 4503) and headline stats. */
const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireServerApi)
  const security: Security = [{ bearerAuth: [] }, { apiKey: [] }]
  // Rates from the same counters as /metrics, in JSON for the web app's admin page: parsing the
  // Prometheus text in a browser would be more code for the same numbers.
  const rates = createRateMeter(() => app.metrics.totals())

  app.get('/stats', {
    schema: {
      tags: ['admin'], summary: 'Headline numbers of this node: open connections and messages per second', security,
      response: { 200: StatsSchema, ...errorResponses(401, 403) }
    }
  }, async () => {
    const totals = app.metrics.totals()
    return { connections: totals.connections, ...rates(), messagesInTotal: totals.messagesIn, messagesOutTotal: totals.messagesOut }
  })

  app.get('/connections', {
    schema: {
      tags: ['admin'], summary: 'Open WebSocket connections on this node, optionally by user or room', security,
      querystring: ConnectionsQuerySchema,
      response: { 200: Type.Object({ items: Type.Array(ConnectionSchema) }), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => ({ items: app.realtime.listConnections(request.query) }))

  app.delete('/connections/:id', {
    schema: {
      tags: ['admin'],
      summary: 'Disconnect one connection (4503, do not reconnect)',
      description: 'With the Redis engine, an id that is not on this node is sent to every node through the control channel and ' +
        'the answer is 204 without knowing whether it existed (best-effort). With the in-memory engine an unknown id is 404.',
      security,
      params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const kicked = await app.realtime.kick(request.params.id)
    if (kicked === null) throw new Errors.ConnectionNotFound()
    request.log.info({ connId: request.params.id, where: kicked }, 'connection kicked')
    return reply.code(204).send(null)
  })

  app.delete('/users/:id/connections', {
    schema: {
      tags: ['admin'],
      summary: 'Disconnect every connection of a user (4503), on every node',
      description: '`closed` counts the connections on the node that answered; with the Redis engine the other nodes close theirs through the control channel.',
      security,
      params: Type.Object({ id: UserIdSchema }),
      response: { 200: Type.Object({ closed: Type.Integer() }), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const closed = await app.realtime.kickUser(request.params.id)
    request.log.info({ user: request.params.id, closed }, 'user kicked')
    return { closed }
  })
}

export default adminRoutes
