import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { Errors } from '../../src/errors.js'
import { MAX_DATA_DEPTH, depthExceeds } from '../../src/realtime/command-parser.js'
import { historyJson } from '../../src/realtime/publication-frames.js'
import { errorResponses, type Security } from '../../src/schemas/common.js'
import { RoomParamsSchema } from '../../src/schemas/rooms.js'
import { HistoryQuerySchema, HistorySchema, PresenceSchema, PublishBodySchema, PublishedSchema } from '../../src/schemas/realtime.js'

/** The HTTP face of the real-time core, for services, devices and curl: publish, history, presence. */
const messageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const security: Security = [{ bearerAuth: [] }, { apiKey: [] }]
  const { maxMessageBytes } = app.config.ws
  const { pageBytes } = app.config.history

  app.post('/:id/messages', {
    onRequest: app.authenticate,
    schema: {
      tags: ['messages'],
      summary: 'Publish to a room (delivered live to subscribers, kept in history)',
      security,
      params: RoomParamsSchema,
      body: PublishBodySchema,
      response: { 201: PublishedSchema, ...errorResponses(400, 401, 403, 404, 413, 429, 503) }
    }
  }, async (request, reply) => {
    const { data, idempotencyKey } = request.body
    // The same bounds as a WebSocket publish: a message that could not be sent over /ws is refused here too.
    if (depthExceeds(data, MAX_DATA_DEPTH)) throw new Errors.Validation(`body/data: nested deeper than ${MAX_DATA_DEPTH} levels`)
    // Serialised once: the size check, history and every frame use this same text.
    const json = JSON.stringify(data)
    if (Buffer.byteLength(json) > maxMessageBytes) throw new Errors.PayloadTooLarge(`data is larger than ${maxMessageBytes} bytes`)
    // The core's errors are errors of the table (src/errors.ts): the error handler renders them.
    const result = await app.realtime.publish(request.principal!, request.params.id, { kind: 'json', payload: json }, idempotencyKey)
    return reply.code(201).send({ epoch: result.epoch, offset: result.offset })
  })

  app.get('/:id/messages', {
    onRequest: app.authenticate,
    schema: {
      tags: ['messages'],
      summary: 'History: the latest publications, or those after `since` in `epoch`, in pages of at most HISTORY_PAGE_BYTES',
      security,
      params: RoomParamsSchema,
      querystring: HistoryQuerySchema,
      response: { 200: HistorySchema, ...errorResponses(400, 401, 403, 404, 503) }
    }
  }, async (request, reply) => {
    const { since, epoch, limit } = request.query
    if ((since === undefined) !== (epoch === undefined)) {
      throw new Errors.Validation('querystring: `since` and `epoch` go together')
    }
    const result = await app.realtime.history(request.principal!, request.params.id, {
      limit,
      maxBytes: pageBytes,
      ...(since === undefined || epoch === undefined ? {} : { since: { epoch, offset: since } })
    })
    // Publications are JSON text already: the page is their concatenation (HistorySchema's
    // shape), sent as it is rather than parsed and serialised again. The typed reply only
    // knows the object form of the schema, hence the plain FastifyReply.
    const untyped: FastifyReply = reply
    return await untyped.type('application/json; charset=utf-8').send(historyJson(result))
  })

  app.get('/:id/presence', {
    onRequest: app.authenticate,
    schema: {
      tags: ['messages'],
      summary: 'Who is subscribed to the room now (users deduplicated, plus the connection count)',
      security,
      params: RoomParamsSchema,
      response: { 200: PresenceSchema, ...errorResponses(400, 401, 403, 404, 503) }
    }
  }, async (request) => await app.realtime.presence(request.principal!, request.params.id))
}

export default messageRoutes
