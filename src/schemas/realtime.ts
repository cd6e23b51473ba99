import { Type } from '@sinclair/typebox'
import { EncodingSchema, HistoryPageSchema, IdempotencyKeySchema, PAGE_LIMIT_MAX, PresenceResultSchema, PublicationSchema, RoomTokenSchema } from '@switchboard/protocol/messages'
import { UserIdSchema } from './common.js'
import { MAX_ANSWER_BYTES, MAX_CONNECTIONS_LISTED } from '../realtime/connection-search.js'

/*
 * REST speaks JSON only: raw bytes travel as standard base64 with `"encoding": "base64"`, as on
 * the JSON codec of the WebSocket, or (publishing) as an application/octet-stream body. The wire
 * contract's DataSchema also stands for MessagePack `bin`, which has no JSON Schema form and no
 * place in a JSON body; these schemas say what REST carries.
 */

export const PublishBodySchema = Type.Object({
  data: Type.Unknown({ description: 'Any JSON value (at most WS_MAX_MESSAGE_BYTES serialised), or raw bytes as a standard base64 string with `encoding` (at most WS_MAX_MESSAGE_BYTES decoded)' }),
  encoding: Type.Optional(EncodingSchema),
  idempotencyKey: Type.Optional(IdempotencyKeySchema)
}, { additionalProperties: false, required: ['data'] })

/** The bytes of an application/octet-stream publish: documented, read by the route's own parser (never validated as JSON). */
export const PublishBytesSchema = Type.String({ format: 'binary', description: 'The raw bytes of the publication (at most WS_MAX_MESSAGE_BYTES; empty is zero bytes)' })

/**
 * `X-Room-Token` on the room routes: a room token from the application's backend (a JWT with
 * `typ: "room"`) that grants the route's operation to the signed-in user without a membership.
 */
export const RoomTokenHeadersSchema = Type.Object({
  'x-room-token': Type.Optional(Type.String({ ...RoomTokenSchema, description: 'A room token granting this operation in this room to the signed-in user (docs/integration.md, "Room tokens")' }))
})

export const PublishHeadersSchema = Type.Object({
  ...RoomTokenHeadersSchema.properties,
  'idempotency-key': Type.Optional(Type.String({ ...IdempotencyKeySchema, description: 'Same key within the idempotency window (5 minutes) → the first result, published once. With a JSON body, the body\'s `idempotencyKey` may be used instead (both: they must agree)' }))
})

export const PublishedSchema = Type.Object({ epoch: Type.String(), offset: Type.Integer() })

export const HistoryQuerySchema = Type.Object({
  since: Type.Optional(Type.Integer({ minimum: 0, description: 'Return publications after this offset (needs `epoch`)' })),
  before: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Read back through the archive: publications below this offset, newest first (a HistoryPage; continue with its `next`)' })),
  after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Read forward: publications above this offset, oldest first (a HistoryPage)' })),
  epoch: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'The epoch of `since` (required with it), or of `before`/`after` (default: the current one)' })),
  limit: Type.Integer({ minimum: 1, maximum: PAGE_LIMIT_MAX, default: 50, description: 'At most this many publications; a page also stops at HISTORY_PAGE_BYTES (at least one publication)' })
}, { additionalProperties: false })

export const HistorySchema = Type.Object({
  epoch: Type.String(),
  offset: Type.Integer({ description: 'Current top of the stream' }),
  complete: Type.Boolean({ description: 'True when nothing asked for is missing from this page: with since, everything after `since`; without, the page reaches the newest. False with a page cut by `limit` or the byte cap: ask again with `since` at its last offset' }),
  publications: Type.Array(PublicationSchema)
})

/** With `before` or `after`: a page (docs/api.md#reading-back-through-the-archive). */
export const MessagesPageSchema = HistoryPageSchema

export const PresenceSchema = PresenceResultSchema

export const ConnectionSchema = Type.Object({
  id: Type.String(),
  principal: Type.String({ description: 'User id, or `key:<name>` for an API key' }),
  kind: Type.Union([Type.Literal('user'), Type.Literal('apiKey')]),
  ip: Type.String(),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  rooms: Type.Array(Type.String()),
  connectedAt: Type.Integer()
})

/** GET /admin/stats: the headline numbers of the admin page, for this node. */
export const StatsSchema = Type.Object({
  connections: Type.Integer({ description: 'WebSocket connections open now on this node' }),
  messagesInPerSecond: Type.Number({ description: 'Client commands received per second' }),
  messagesOutPerSecond: Type.Number({ description: 'Publication frames delivered to subscribers per second' }),
  windowSeconds: Type.Number({ description: 'The span the rates are averaged over: the last 10 s, or since the previous reading when that is longer ago' }),
  messagesInTotal: Type.Integer({ description: 'Client commands received since the node started' }),
  messagesOutTotal: Type.Integer({ description: 'Publication frames delivered since the node started' })
})

export const ConnectionsQuerySchema = Type.Object({
  user: Type.Optional(UserIdSchema),
  room: Type.Optional(Type.String({ maxLength: 64 })),
  limit: Type.Integer({ minimum: 1, maximum: MAX_CONNECTIONS_LISTED, default: 100, description: `At most this many connections, the oldest first (at most ${MAX_CONNECTIONS_LISTED})` })
}, { additionalProperties: false })

export const ConnectionListingSchema = Type.Object({
  items: Type.Array(Type.Composite([ConnectionSchema, Type.Object({ node: Type.String({ description: 'The id of the node the connection is on (GET /admin/nodes)' }) })])),
  nodesAnswered: Type.Array(Type.String(), { description: 'Nodes whose connections are listed, the answering node first' }),
  nodesMissing: Type.Array(Type.String(), { description: 'Nodes alive according to their reports that did not answer within 1 s: their connections are not listed' }),
  truncated: Type.Boolean({ description: `True when more connections matched than listed (\`limit\`, or a node's answer reached ${MAX_ANSWER_BYTES / 1024} KiB)` })
})
