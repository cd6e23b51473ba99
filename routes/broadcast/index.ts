import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Errors } from '../../src/errors.js'
import { maxFrameBytes } from '@switchboard/protocol/limits'
import { errorResponses, type Security } from '../../src/schemas/common.js'
import { PublishHeadersSchema } from '../../src/schemas/realtime.js'
import { broadcastBodySchema, BroadcastResponseSchema } from '../../src/schemas/server-api.js'
import { jsonBodyPayload } from '../rooms/messages.js'

/** A room id in the body is at most 64 characters, quoted, with a comma: room enough per room. */
const BODY_BYTES_PER_ROOM = 80

/**
 * POST /broadcast, the server API's publish: one payload to many rooms in one call, for a
 * backend holding an API key with the `admin` scope (or an admin). Registered without a
 * prefix so that its path is exactly /broadcast.
 */
const broadcastRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const security: Security = [{ apiKey: [] }, { bearerAuth: [] }]
  const { maxMessageBytes } = app.config.ws
  const { broadcastMaxRooms } = app.config.serverApi

  app.post('/broadcast', {
    onRequest: app.requireServerApi,
    // Room for a payload at the limit as base64 (as on POST /rooms/{id}/messages) and the room list.
    bodyLimit: Math.max(app.initialConfig.bodyLimit ?? 0, maxFrameBytes(maxMessageBytes) + broadcastMaxRooms * BODY_BYTES_PER_ROOM),
    schema: {
      tags: ['server-api'],
      summary: 'Publish one payload to many rooms (admin scope)',
      description: 'Each room is published to on its own, as `POST /rooms/{id}/messages` would, with the caller as the publisher ' +
        '(`key:<name>` for an API key): no membership or room policy applies, the room must exist (personal rooms always do). ' +
        'The answer lists every room in the order given, with its position (`epoch`, `offset`) or its `error`; a room that failed ' +
        'does not undo the others. With an idempotency key, a retry publishes nothing twice in any room (each room remembers ' +
        'the key for 5 minutes) and answers the first positions. Not subject to the per-user publish rate.',
      security,
      headers: PublishHeadersSchema,
      body: broadcastBodySchema(broadcastMaxRooms),
      response: { 200: BroadcastResponseSchema, ...errorResponses(400, 401, 403, 413, 415) }
    }
  }, async (request) => {
    const { body } = request
    const header = request.headers['idempotency-key']
    if (header !== undefined && body.idempotencyKey !== undefined && header !== body.idempotencyKey) {
      throw new Errors.Validation('headers/idempotency-key: differs from body/idempotencyKey')
    }
    const idempotencyKey = body.idempotencyKey ?? header
    const payload = jsonBodyPayload(body, maxMessageBytes)
    const outcomes = await app.realtime.broadcast(request.principal!, body.rooms, payload, idempotencyKey)
    let failed = 0
    const results = outcomes.map((outcome) => {
      if ('position' in outcome) return { room: outcome.room, epoch: outcome.position.epoch, offset: outcome.position.offset }
      failed++
      const { statusCode, code, message, temporary } = outcome.error
      return { room: outcome.room, error: { statusCode, code, message, temporary } }
    })
    request.log.info({ rooms: body.rooms.length, failed }, 'broadcast')
    return { published: results.length - failed, failed, results }
  })
}

export default broadcastRoutes
