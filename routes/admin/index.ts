import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { errorResponses, UserIdSchema, type Security } from '../../src/schemas/common.js'
import { ConnectionListingSchema, ConnectionsQuerySchema, StatsSchema } from '../../src/schemas/realtime.js'
import { RoomParamsSchema, RoomUserParamsSchema } from '../../src/schemas/rooms.js'
import {
  ActiveRoomsQuerySchema, ActiveRoomsSchema, ClusterHistorySchema, ConnectionRoomParamsSchema, NodesSchema, RoomStatsSchema, UnsubscribedSchema
} from '../../src/schemas/server-api.js'
import { CLUSTER_HISTORY_SAMPLES } from '../../src/realtime/node-reports.js'
import { createRateMeter } from '../../src/realtime/metrics.js'

/**
 * Operator tools and the server API for backends (admins, or API keys with the `admin` scope):
 * open connections across the cluster (list, kick with close code 4503, unsubscribe from a room), headline stats, a user's subscriptions
 * ended, presence counts, the cluster's active rooms and nodes.
 */
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
      tags: ['admin'],
      summary: 'Open WebSocket connections on every node, optionally by user or room, the oldest first',
      description: 'In-memory engine: this node\'s connections. Redis engine: every node is asked on the control channel and the answer ' +
        'waits for the nodes known from their reports (GET /admin/nodes), at most 1 s; `nodesMissing` names those that did not answer.',
      security,
      querystring: ConnectionsQuerySchema,
      response: { 200: ConnectionListingSchema, ...errorResponses(400, 401, 403, 429) }
    }
  }, async (request) => {
    const { limit, user, room } = request.query
    return await app.realtime.searchConnections({ ...(user === undefined ? {} : { user }), ...(room === undefined ? {} : { room }) }, limit)
  })

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

  app.delete('/connections/:id/rooms/:room', {
    schema: {
      tags: ['admin'],
      summary: 'End one connection\'s subscription to a room (`unsubscribed`, reason `server`); the connection stays open',
      description: 'With the Redis engine, an id that is not on this node is sent through the control channel and the node holding it ' +
        'applies it: the answer is 204 without knowing whether it existed (best-effort). With the in-memory engine an unknown id is 404. ' +
        'A connection on this node that is not in the room is 404 SB_ERR_SUBSCRIPTION_NOT_FOUND. It does not bar the user: a subscribe the room\'s rules allow succeeds again.',
      security,
      params: ConnectionRoomParamsSchema,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    const { id, room } = request.params
    const outcome = await app.realtime.unsubscribeConnection(id, room)
    if (outcome === null) throw new Errors.ConnectionNotFound()
    if (outcome === 'not_subscribed') throw new Errors.SubscriptionNotFound()
    request.log.info({ connId: id, room, where: outcome }, 'connection unsubscribed by an admin')
    return reply.code(204).send(null)
  })

  app.delete('/users/:id/connections', {
    schema: {
      tags: ['admin', 'server-api'],
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

  app.delete('/rooms/:id/subscriptions/:userId', {
    schema: {
      tags: ['server-api'],
      summary: 'End a user\'s subscriptions to a room, on every node (`unsubscribed`, reason `server`)',
      description: 'The user\'s connections stay open; each subscription to the room ends with an `unsubscribed` push (reason `server`). ' +
        'It does not bar the user: a subscribe the room\'s rules allow succeeds again (remove or ban the user for that). ' +
        'Idempotent: no subscription anywhere answers 0.',
      security,
      params: RoomUserParamsSchema,
      response: { 200: UnsubscribedSchema, ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const { id: room, userId } = request.params
    const unsubscribed = await app.realtime.unsubscribeUser(userId, room)
    request.log.info({ room, user: userId, unsubscribed }, 'user unsubscribed by the server API')
    return { unsubscribed }
  })

  app.get('/rooms/:id/stats', {
    schema: {
      tags: ['server-api'],
      summary: 'Presence counts of a room across the cluster: connections and distinct users (no lists)',
      security,
      params: RoomParamsSchema,
      response: { 200: RoomStatsSchema, ...errorResponses(400, 401, 403, 404, 503) }
    }
  }, async (request) => ({ room: request.params.id, ...await app.realtime.roomStats(request.params.id) }))

  app.get('/rooms', {
    schema: {
      tags: ['server-api'],
      summary: 'Active rooms (with at least one subscriber) across the cluster, the busiest first',
      description: 'In-memory engine: this node\'s rooms. Redis engine: every node is asked on the control channel and the answer ' +
        'waits for the nodes known from their reports (GET /admin/nodes), at most 1 s; `partial` says when one did not answer.',
      security,
      querystring: ActiveRoomsQuerySchema,
      response: { 200: ActiveRoomsSchema, ...errorResponses(400, 401, 403, 429) }
    }
  }, async (request) => {
    const census = await app.realtime.activeRooms(request.query.prefix)
    return {
      items: census.rooms.slice(0, request.query.limit),
      total: census.rooms.length,
      nodesAnswered: census.nodesAnswered,
      nodesKnown: census.nodesKnown,
      partial: census.partial
    }
  })

  app.get('/nodes', {
    schema: {
      tags: ['server-api'],
      summary: 'The cluster\'s nodes and their figures, from the reports each node publishes every NODE_REPORT_INTERVAL_MS',
      security,
      response: { 200: NodesSchema, ...errorResponses(401, 403) }
    }
  }, async () => ({ intervalMs: app.config.serverApi.nodeReportIntervalMs, items: app.realtime.nodes() }))

  app.get('/nodes/history', {
    schema: {
      tags: ['admin'],
      summary: 'The cluster\'s totals (nodes, connections, messages in/out per second) at each of the answering node\'s last report intervals',
      description: `A ring of ${CLUSTER_HISTORY_SAMPLES} samples, one per NODE_REPORT_INTERVAL_MS (with the default 5 s: the last ten minutes), ` +
        'kept in memory by every node from the node reports it hears: the admin console\'s charts. A node that just started has only its own samples.',
      security,
      response: { 200: ClusterHistorySchema, ...errorResponses(401, 403) }
    }
  }, async () => ({ intervalMs: app.config.serverApi.nodeReportIntervalMs, capacity: CLUSTER_HISTORY_SAMPLES, samples: app.realtime.clusterHistory() }))
}

export default adminRoutes
