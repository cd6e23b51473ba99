import { Type, type Static } from '@sinclair/typebox'

/**
 * Protocol v1: one envelope per frame, in either of two codecs chosen per connection by the
 * WebSocket subprotocol: `switchboard.v1`, JSON text frames (raw bytes travel as base64 with
 * `"encoding": "base64"` beside them), and `switchboard.v1.msgpack`, binary frames each holding
 * one MessagePack map (bytes are MessagePack `bin`). Both carry the same envelopes, described
 * once here. The server checks every client
 * command against these schemas before anything else looks at it (src/realtime/command-parser.ts);
 * the SDK takes its wire types from them; the same schemas generate the AsyncAPI document
 * (GET /docs/asyncapi.json) and docs/protocol.md describes them.
 *
 * Part of the wire contract (packages/protocol/): imports nothing but TypeBox (and msgpackr, in
 * msgpack.ts), so a separately packaged SDK can depend on it without pulling server code.
 */
export const PROTOCOL_VERSION = 'switchboard.v1'
/** The same protocol in MessagePack: every frame a binary WebSocket frame holding one map. */
export const MSGPACK_PROTOCOL_VERSION = 'switchboard.v1.msgpack'
/** The subprotocols a server selects from, the one it prefers first. */
export const PROTOCOL_VERSIONS = [MSGPACK_PROTOCOL_VERSION, PROTOCOL_VERSION] as const
export type ProtocolVersion = typeof PROTOCOL_VERSIONS[number]

// ---------------------------------------------------------------------------------------
// Shared pieces

export const CommandIdSchema = Type.Union([
  Type.String({ minLength: 1, maxLength: 64 }),
  Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
], { description: 'Chosen by the client; echoed in the reply or error' })

/** Room names on the wire: stored rooms (slugs, `ns:name`) and personal rooms `user:<id>`. */
export const RoomNameSchema = Type.String({ pattern: '^[a-z0-9][a-z0-9_.:-]{0,63}$', description: 'Room id, or `user:<id>` for a personal room' })

export const StreamPositionSchema = Type.Object({
  epoch: Type.String({ minLength: 1, maxLength: 64 }),
  offset: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
}, { additionalProperties: false, description: 'A position in a room\'s stream: resume after it' })

export const IdempotencyKeySchema = Type.String({ minLength: 1, maxLength: 128 })

/** Room tokens longer than this are refused unparsed, on every path (the schema here, X-Room-Token, the verifier). */
export const MAX_ROOM_TOKEN_LENGTH = 4096

export const RoomTokenSchema = Type.String({
  minLength: 1,
  maxLength: MAX_ROOM_TOKEN_LENGTH,
  description: 'A room token from the application\'s backend (a JWT with `typ: "room"`): grants this operation in this room without a membership (docs/integration.md)'
})

/**
 * A publication's payload: any JSON value, or raw bytes as a whole: MessagePack `bin` on
 * `switchboard.v1.msgpack`, a base64 string with `encoding` beside it on JSON frames. Declared
 * as Unknown rather than a union with Type.Uint8Array: the same schemas are served as JSON
 * Schema (REST responses, the AsyncAPI document), which has no byte type; the server's reader
 * (src/realtime/command-parser.ts) accepts bytes only there.
 */
export const DataSchema = Type.Unknown({ description: 'Any JSON value; or raw bytes: MessagePack `bin` (switchboard.v1.msgpack), or a base64 string with `encoding: "base64"` (JSON frames, REST)' })

/** Beside `data` when it is bytes carried as text: standard base64 (RFC 4648 §4, padded). */
export const EncodingSchema = Type.Literal('base64', { description: '`data` is raw bytes, as a standard base64 string (JSON frames and REST)' })

// ---------------------------------------------------------------------------------------
// Client → server commands

export const SubscribeCommandSchema = Type.Object({
  type: Type.Literal('subscribe'),
  id: CommandIdSchema,
  room: RoomNameSchema,
  since: Type.Optional(StreamPositionSchema),
  token: Type.Optional(RoomTokenSchema)
}, { additionalProperties: false, title: 'subscribe' })

export const UnsubscribeCommandSchema = Type.Object({
  type: Type.Literal('unsubscribe'),
  id: CommandIdSchema,
  room: RoomNameSchema
}, { additionalProperties: false, title: 'unsubscribe' })

export const PublishCommandSchema = Type.Object({
  type: Type.Literal('publish'),
  id: CommandIdSchema,
  room: RoomNameSchema,
  data: DataSchema,
  encoding: Type.Optional(EncodingSchema),
  idempotencyKey: Type.Optional(IdempotencyKeySchema),
  token: Type.Optional(RoomTokenSchema)
}, { additionalProperties: false, title: 'publish' })

export const PAGE_LIMIT_MAX = 1000
const pageOffset = (description: string) => Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description })

export const HistoryCommandSchema = Type.Object({
  type: Type.Literal('history'),
  id: CommandIdSchema,
  room: RoomNameSchema,
  since: Type.Optional(StreamPositionSchema),
  before: Type.Optional(pageOffset('Read back: publications below this offset, newest first (the result is a HistoryPage)')),
  after: Type.Optional(pageOffset('Read forward: publications above this offset, oldest first (the result is a HistoryPage)')),
  epoch: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'The epoch `before`/`after` count in (default: the room\'s current one)' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_LIMIT_MAX })),
  token: Type.Optional(RoomTokenSchema)
}, { additionalProperties: false, title: 'history' })

export const PresenceCommandSchema = Type.Object({
  type: Type.Literal('presence'),
  id: CommandIdSchema,
  room: RoomNameSchema,
  token: Type.Optional(RoomTokenSchema)
}, { additionalProperties: false, title: 'presence' })

export const PingCommandSchema = Type.Object({
  type: Type.Literal('ping'),
  id: CommandIdSchema
}, { additionalProperties: false, title: 'ping' })

export const RefreshCommandSchema = Type.Object({
  type: Type.Literal('refresh'),
  id: CommandIdSchema,
  token: Type.String({ minLength: 1, maxLength: 8192 })
}, { additionalProperties: false, title: 'refresh' })

export const RoomTokenCommandSchema = Type.Object({
  type: Type.Literal('room_token'),
  id: CommandIdSchema,
  room: RoomNameSchema,
  token: RoomTokenSchema
}, { additionalProperties: false, title: 'room_token', description: 'A fresh room token for a live subscription made with one: it then ends at the new token\'s expiry' })

export const COMMAND_SCHEMAS = {
  subscribe: SubscribeCommandSchema,
  unsubscribe: UnsubscribeCommandSchema,
  publish: PublishCommandSchema,
  history: HistoryCommandSchema,
  presence: PresenceCommandSchema,
  ping: PingCommandSchema,
  refresh: RefreshCommandSchema,
  room_token: RoomTokenCommandSchema
} as const

export type CommandType = keyof typeof COMMAND_SCHEMAS
export const ClientCommandSchema = Type.Union(Object.values(COMMAND_SCHEMAS), { title: 'ClientCommand' })
export type SubscribeCommand = Static<typeof SubscribeCommandSchema>
export type UnsubscribeCommand = Static<typeof UnsubscribeCommandSchema>
export type PublishCommand = Static<typeof PublishCommandSchema>
export type HistoryCommand = Static<typeof HistoryCommandSchema>
export type PresenceCommand = Static<typeof PresenceCommandSchema>
export type PingCommand = Static<typeof PingCommandSchema>
export type RefreshCommand = Static<typeof RefreshCommandSchema>
export type RoomTokenCommand = Static<typeof RoomTokenCommandSchema>
export type ClientCommand = Static<typeof ClientCommandSchema>
export type CommandId = Static<typeof CommandIdSchema>

// ---------------------------------------------------------------------------------------
// Server → client frames

export const ERROR_CODES = {
  bad_request: 'The frame does not decode (JSON, or MessagePack on switchboard.v1.msgpack), is of the other codec, fails the schema (the message names the path), or its payload is over maxMessageBytes',
  unauthorized: 'The token is invalid or expired (refresh)',
  forbidden: 'Not allowed (authorization, a room token that is invalid, expired or does not grant this, or a per-connection limit such as max subscriptions)',
  not_found: 'No such room (or a private room you may not see)',
  rate_limited: 'Over a rate: the per-connection message rate, or the per-user publish rate (cluster-wide); retry after retryAfterMs when given',
  conflict: 'The command conflicts with the connection state (already subscribed, …)',
  unavailable: 'Temporary: a dependency is down or the node is draining; retry',
  internal: 'A server bug; details are in the server log'
} as const
export type ErrorCode = keyof typeof ERROR_CODES

export const ProtocolErrorSchema = Type.Object({
  code: Type.Union(Object.keys(ERROR_CODES).map(code => Type.Literal(code))),
  message: Type.String(),
  temporary: Type.Boolean({ description: 'True when the same command may succeed if retried later' }),
  retryAfterMs: Type.Optional(Type.Integer({ minimum: 0, description: 'With rate_limited: when the command would be accepted' }))
})

export const LimitsSchema = Type.Object({
  maxMessageBytes: Type.Integer(),
  messagesPerSecond: Type.Number(),
  messagesBurst: Type.Integer(),
  maxSubscriptions: Type.Integer(),
  maxBufferedBytes: Type.Integer(),
  idleTimeoutMs: Type.Integer()
})

export const WelcomeFrameSchema = Type.Object({
  type: Type.Literal('welcome'),
  protocol: Type.Union(PROTOCOL_VERSIONS.map(version => Type.Literal(version)), { description: 'The subprotocol, and so the codec, of this connection' }),
  connectionId: Type.String(),
  user: Type.Object({
    id: Type.String(),
    role: Type.Union([Type.Literal('admin'), Type.Literal('user'), Type.Literal('apiKey')]),
    info: Type.Optional(Type.Unknown({ description: 'What the application backend\'s connect hook attached to this connection (docs/integration.md#hooks)' }))
  }),
  heartbeatMs: Type.Integer(),
  limits: LimitsSchema,
  tokenExpiresAt: Type.Union([Type.Integer({ description: 'Epoch milliseconds' }), Type.Null()])
}, { title: 'welcome' })

export const ReplyFrameSchema = Type.Object({
  type: Type.Literal('reply'),
  id: CommandIdSchema,
  result: Type.Unknown()
}, { title: 'reply' })

export const ErrorFrameSchema = Type.Object({
  type: Type.Literal('error'),
  id: Type.Optional(CommandIdSchema),
  error: ProtocolErrorSchema
}, { title: 'error' })

export const PublicationSchema = Type.Object({
  offset: Type.Integer(),
  data: DataSchema,
  encoding: Type.Optional(EncodingSchema),
  from: Type.Object({ id: Type.String() }),
  ts: Type.Integer()
})

export const SubscribeResultSchema = Type.Object({
  room: Type.String(),
  epoch: Type.String(),
  offset: Type.Integer({ description: 'Offset of the last publication delivered by this reply' }),
  recovered: Type.Boolean({ description: 'With `since`: true when nothing was missed' }),
  publications: Type.Array(PublicationSchema)
})

export const PublishResultSchema = Type.Object({ epoch: Type.String(), offset: Type.Integer() })
export const HistoryResultSchema = Type.Object({
  epoch: Type.String(),
  offset: Type.Integer({ description: 'Current top of the stream' }),
  complete: Type.Boolean({ description: 'False when the page was cut by `limit` or the byte cap (ask again with `since` at its last offset), or history no longer holds what was asked' }),
  publications: Type.Array(PublicationSchema, { description: 'Oldest first; at most HISTORY_PAGE_BYTES (over WebSocket at most half of maxBufferedBytes), at least one' })
})
export const PageCursorSchema = Type.Object({
  epoch: Type.String(),
  before: Type.Optional(Type.Integer({ description: 'The next page backward: ask with this `before` in this `epoch`' })),
  after: Type.Optional(Type.Integer({ description: 'The next page forward: ask with this `after` in this `epoch`' }))
}, { description: 'Where the next page starts, in the same direction; it may name another epoch (offsets restart with each)' })

/** A page read back or forward (history with `before` or `after`; docs/protocol.md#reading-back). */
export const HistoryPageSchema = Type.Object({
  epoch: Type.String({ description: 'The epoch the publications\' offsets count in' }),
  publications: Type.Array(PublicationSchema, { description: 'Newest first with `before`, oldest first with `after`; at most `limit` and HISTORY_PAGE_BYTES (at least one)' }),
  next: Type.Union([PageCursorSchema, Type.Null()], { description: 'null: nothing more that way (the oldest kept publication was reached, or with `after` the newest)' }),
  top: Type.Object({ epoch: Type.String(), offset: Type.Integer() }, { description: 'The room\'s current position' })
}, { title: 'HistoryPage' })
export const PresenceResultSchema = Type.Object({ users: Type.Array(Type.String()), connections: Type.Integer() })
export const RefreshResultSchema = Type.Object({ tokenExpiresAt: Type.Integer() })
export const RoomTokenResultSchema = Type.Object({ tokenExpiresAt: Type.Integer({ description: 'Epoch ms (clock tolerance included): the subscription ends with `token_expired` then unless renewed again' }) })

export const MessageFrameSchema = Type.Object({
  type: Type.Literal('message'),
  room: Type.String(),
  epoch: Type.String(),
  offset: Type.Integer(),
  data: DataSchema,
  encoding: Type.Optional(EncodingSchema),
  from: Type.Object({ id: Type.String() }),
  ts: Type.Integer()
}, { title: 'message' })

export const PresenceEventFrameSchema = Type.Object({
  type: Type.Union([Type.Literal('join'), Type.Literal('leave')]),
  room: Type.String(),
  user: Type.Object({
    id: Type.String(),
    info: Type.Optional(Type.Unknown({ description: 'On a join: what the application backend\'s connect hook attached to the connection that joined (docs/integration.md#hooks)' }))
  })
}, { title: 'join / leave' })

export const UNSUBSCRIBE_REASONS = {
  removed: 'You were removed from the room',
  banned: 'You were banned from the room',
  room_deleted: 'The room was deleted',
  forbidden: 'You may no longer read this room (e.g. it became private)',
  resubscribe: 'The server lost continuity for this subscription: subscribe again with `since` to recover',
  server: 'The application\'s backend or an administrator ended the subscription (server API)',
  token_expired: 'The room token the subscription was made with expired before a `room_token` command renewed it: subscribe again with a fresh one (and `since`)'
} as const
export type UnsubscribeReason = keyof typeof UNSUBSCRIBE_REASONS

export const UnsubscribedFrameSchema = Type.Object({
  type: Type.Literal('unsubscribed'),
  room: Type.String(),
  reason: Type.Union(Object.keys(UNSUBSCRIBE_REASONS).map(r => Type.Literal(r)))
}, { title: 'unsubscribed' })

export const ReconnectFrameSchema = Type.Object({
  type: Type.Literal('reconnect'),
  reason: Type.Literal('shutdown'),
  retryAfterMs: Type.Integer()
}, { title: 'reconnect' })

export const SERVER_FRAME_SCHEMAS = [
  WelcomeFrameSchema, ReplyFrameSchema, ErrorFrameSchema, MessageFrameSchema,
  PresenceEventFrameSchema, UnsubscribedFrameSchema, ReconnectFrameSchema
]
