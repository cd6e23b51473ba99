import type { Readable } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Errors } from '../../src/errors.js'
import { MAX_DATA_DEPTH, base64DecodedLength, depthExceeds, isStandardBase64 } from '../../src/realtime/command-parser.js'
import type { Payload } from '../../src/realtime/engine.js'
import { maxFrameBytes } from '@switchboard/protocol/limits'
import { historyRequest } from '../../src/realtime/history-request.js'
import { historyJson, historyPageJson } from '../../src/realtime/publication-frames.js'
import { errorResponses, type Security } from '../../src/schemas/common.js'
import { RoomParamsSchema } from '../../src/schemas/rooms.js'
import {
  HistoryQuerySchema, HistorySchema, MessagesPageSchema, PresenceSchema, PublishBodySchema, PublishBytesSchema, PublishedSchema, PublishHeadersSchema,
  RoomTokenHeadersSchema
} from '../../src/schemas/realtime.js'

/** The HTTP face of the real-time core, for services, devices and curl: publish, history, presence. */
const messageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const security: Security = [{ bearerAuth: [] }, { apiKey: [] }]
  const { maxMessageBytes } = app.config.ws
  const { pageBytes } = app.config.history

  // Raw bytes are published as the body itself. Registered in this plugin only, so every other
  // route still answers 415 to anything but JSON. The body is read here, against the message
  // limit, rather than by Fastify's bodyLimit, whose refusal is not SB_ERR_PAYLOAD_TOO_LARGE.
  app.addContentTypeParser('application/octet-stream', async (request: FastifyRequest, body: Readable) =>
    await readBytes(body, request.headers['content-length'], maxMessageBytes))
  // Fastify reads text/plain too, by default: here a text body would be neither JSON nor bytes
  // (415, as on every other route of the API, rather than a guess at what it meant).
  app.removeContentTypeParser('text/plain')

  app.post('/:id/messages', {
    onRequest: app.authenticate,
    // A JSON body carrying a payload at the limit as base64 must fit (the same room as a frame),
    // even when that is more than every other body of the API may be (src/app.ts).
    bodyLimit: Math.max(app.initialConfig.bodyLimit ?? 0, maxFrameBytes(maxMessageBytes)),
    schema: {
      tags: ['messages'],
      summary: 'Publish to a room (delivered live to subscribers, kept in history)',
      description: 'A JSON body publishes `data`: a JSON value, or raw bytes as base64 with `"encoding": "base64"`. ' +
        'An `application/octet-stream` body publishes its bytes as they are (empty: zero bytes). ' +
        'Bytes reach WebSocket subscribers as MessagePack `bin` or, on the JSON codec, as base64 with `encoding`.',
      security,
      params: RoomParamsSchema,
      headers: PublishHeadersSchema,
      body: {
        content: {
          'application/json': { schema: PublishBodySchema },
          'application/octet-stream': { schema: PublishBytesSchema }
        }
      },
      response: { 201: PublishedSchema, ...errorResponses(400, 401, 403, 404, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    // The body's type follows its content type (the schema's `content` map is not inferred).
    const body = request.body as Static<typeof PublishBodySchema> | Buffer | undefined
    const header = request.headers['idempotency-key']
    let payload: Payload
    let idempotencyKey = header
    if (Buffer.isBuffer(body)) {
      payload = { kind: 'binary', payload: body }
    } else if (typeof body !== 'object' || body === null) {
      // No body (or one of a parser this route does not expect): neither JSON nor bytes.
      throw new Errors.Validation('body: expected a JSON object with `data`, or application/octet-stream bytes')
    } else {
      payload = jsonBodyPayload(body, maxMessageBytes)
      if (body.idempotencyKey !== undefined) {
        if (header !== undefined && header !== body.idempotencyKey) throw new Errors.Validation('headers/idempotency-key: differs from body/idempotencyKey')
        idempotencyKey = body.idempotencyKey
      }
    }
    // The core's errors are errors of the table (src/errors.ts): the error handler renders them.
    const result = await app.realtime.publish(request.principal!, request.params.id, payload, idempotencyKey, request.headers['x-room-token'])
    return reply.code(201).send({ epoch: result.epoch, offset: result.offset })
  })

  app.get('/:id/messages', {
    onRequest: app.authenticate,
    schema: {
      tags: ['messages'],
      summary: 'History: the latest publications, those after `since` in `epoch`, or a page read back (`before`) or forward (`after`) through the archive',
      description: 'Without `before`/`after`: the recovery window, newest or after `since` (a History). With `before` (newest first) or `after` ' +
        '(oldest first): a HistoryPage through the archive and the window, whose `next` cursor continues it, null at the end. ' +
        'Every answer is at most `limit` publications and HISTORY_PAGE_BYTES (at least one).',
      security,
      params: RoomParamsSchema,
      headers: RoomTokenHeadersSchema,
      querystring: HistoryQuerySchema,
      response: { 200: Type.Union([HistorySchema, MessagesPageSchema]), ...errorResponses(400, 401, 403, 404, 503) }
    }
  }, async (request, reply) => {
    const { since, epoch, before, after, limit } = request.query
    const paging = before !== undefined || after !== undefined
    if (!paging && (since === undefined) !== (epoch === undefined)) {
      throw new Errors.Validation('querystring: `since` and `epoch` go together')
    }
    const read = historyRequest({
      limit,
      maxBytes: pageBytes,
      before,
      after,
      ...(since === undefined ? {} : { since: { epoch: epoch ?? '', offset: since } }),
      ...(paging ? { epoch } : {})
    })
    // Publications are JSON text already (bytes as base64 with `encoding`): the page is their
    // concatenation (HistorySchema's shape), sent as it is rather than parsed and serialised
    // again. The typed reply only knows the object form of the schema, hence the plain FastifyReply.
    const untyped: FastifyReply = reply
    const principal = request.principal!
    const roomToken = request.headers['x-room-token']
    const text = read.page
      ? historyPageJson(await app.realtime.page(principal, request.params.id, read.query, roomToken))
      : historyJson(await app.realtime.history(principal, request.params.id, read.query, roomToken))
    return await untyped.type('application/json; charset=utf-8').send(text)
  })

  app.get('/:id/presence', {
    onRequest: app.authenticate,
    schema: {
      tags: ['messages'],
      summary: 'Who is subscribed to the room now (users deduplicated, plus the connection count)',
      security,
      params: RoomParamsSchema,
      headers: RoomTokenHeadersSchema,
      response: { 200: PresenceSchema, ...errorResponses(400, 401, 403, 404, 503) }
    }
  }, async (request) => await app.realtime.presence(request.principal!, request.params.id, request.headers['x-room-token']))
}

/**
 * The payload of a JSON publish body, under the same bounds as a WebSocket publish: bytes as
 * base64 count decoded, a JSON value counts as its text, serialised once here (history and
 * every frame use this same text).
 */
export function jsonBodyPayload (body: Static<typeof PublishBodySchema>, maxMessageBytes: number): Payload {
  const { data } = body
  if (body.encoding !== undefined) {
    if (typeof data !== 'string') throw new Errors.Validation('body/data: with encoding "base64", data must be a string')
    if (!isStandardBase64(data)) throw new Errors.Validation('body/data: not valid base64 (standard alphabet, padded)')
    // Counted before decoding: nothing over the limit is allocated.
    if (base64DecodedLength(data) > maxMessageBytes) throw new Errors.PayloadTooLarge(`data is larger than ${maxMessageBytes} bytes`)
    return { kind: 'binary', payload: Buffer.from(data, 'base64') }
  }
  if (depthExceeds(data, MAX_DATA_DEPTH)) throw new Errors.Validation(`body/data: nested deeper than ${MAX_DATA_DEPTH} levels`)
  const json = JSON.stringify(data)
  if (Buffer.byteLength(json) > maxMessageBytes) throw new Errors.PayloadTooLarge(`data is larger than ${maxMessageBytes} bytes`)
  return { kind: 'json', payload: json }
}

/**
 * An application/octet-stream body, whole, or PayloadTooLarge as soon as it is over `limit`
 * (by its Content-Length before a byte is read, else by what arrives). Fastify answers a
 * refused body with `Connection: close`, so what the client still sends is not read.
 */
async function readBytes (stream: Readable, contentLength: string | undefined, limit: number): Promise<Buffer> {
  const tooLarge = (): Error => new Errors.PayloadTooLarge(`the body is larger than ${limit} bytes`)
  if (contentLength !== undefined && Number(contentLength) > limit) throw tooLarge()
  return await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = []
    let length = 0
    const stop = (): void => {
      stream.removeListener('data', onData)
      stream.removeListener('end', onEnd)
      stream.removeListener('error', onError)
    }
    function onData (chunk: Buffer | string): void {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
      length += bytes.length
      if (length > limit) {
        stop()
        reject(tooLarge())
        return
      }
      chunks.push(bytes)
    }
    function onEnd (): void {
      stop()
      // A copy of the socket's chunks: the publication owns its bytes.
      resolve(Buffer.concat(chunks, length))
    }
    function onError (err: Error): void {
      stop()
      reject(new Errors.BadRequest('the body could not be read', { cause: err }))
    }
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', onError)
  })
}

export default messageRoutes
