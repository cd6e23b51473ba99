import { Type } from '@sinclair/typebox'
import { EncodingSchema, IdempotencyKeySchema } from '@switchboard/protocol/messages'
import { RoomIdSchema, TimestampSchema } from './common.js'

/*
 * The server API for backends (docs/api.md, "Server API for backends"): POST /broadcast and
 * the /admin routes, for an admin or an API key with the `admin` scope.
 */

/** POST /broadcast: one payload, many rooms; `maxRooms` is BROADCAST_MAX_ROOMS. */
export function broadcastBodySchema (maxRooms: number) {
  return Type.Object({
    rooms: Type.Array(RoomIdSchema, {
      minItems: 1,
      maxItems: maxRooms,
      uniqueItems: true,
      description: `The rooms to publish to, each at most once (at most BROADCAST_MAX_ROOMS, here ${maxRooms}); personal rooms (\`user:<id>\`) included`
    }),
    data: Type.Unknown({ description: 'Any JSON value (at most WS_MAX_MESSAGE_BYTES serialised), or raw bytes as a standard base64 string with `encoding` (at most WS_MAX_MESSAGE_BYTES decoded)' }),
    encoding: Type.Optional(EncodingSchema),
    idempotencyKey: Type.Optional(IdempotencyKeySchema)
  }, { additionalProperties: false, required: ['rooms', 'data'] })
}

/** Why one room of a broadcast got nothing: an error of the table (docs/errors.md), as a response body would carry it. */
export const RoomErrorSchema = Type.Object({
  statusCode: Type.Integer({ description: 'The HTTP status a publish to this room alone would have had' }),
  code: Type.String({ description: 'e.g. SB_ERR_ROOM_NOT_FOUND, or SB_ERR_UNAVAILABLE (temporary: retry that room)' }),
  message: Type.String(),
  temporary: Type.Boolean({ description: 'True when the same publish may succeed later' })
})

export const BroadcastResultSchema = Type.Object({
  room: Type.String(),
  epoch: Type.Optional(Type.String({ description: 'Set when published: the stream the position belongs to' })),
  offset: Type.Optional(Type.Integer({ description: 'Set when published: the publication\'s offset in the room' })),
  error: Type.Optional(RoomErrorSchema)
}, { description: 'One room: `epoch` and `offset` when published, else `error`' })

export const BroadcastResponseSchema = Type.Object({
  published: Type.Integer({ description: 'Rooms published to' }),
  failed: Type.Integer({ description: 'Rooms with an error' }),
  results: Type.Array(BroadcastResultSchema, { description: 'One entry per room, in the order of `rooms`' })
})

export const RoomStatsSchema = Type.Object({
  room: Type.String(),
  connections: Type.Integer({ description: 'Connections subscribed to the room, on every node' }),
  users: Type.Integer({ description: 'Distinct users among them (an API key counts as one)' })
})

export const UnsubscribedSchema = Type.Object({
  unsubscribed: Type.Integer({ description: 'Subscriptions ended on the node that answered; the other nodes end theirs through the control channel' })
})

export const ActiveRoomsQuerySchema = Type.Object({
  prefix: Type.String({ default: '', maxLength: 64, pattern: '^[a-z0-9_.:-]*$', description: 'Only rooms whose id starts with this (a search box, a namespace such as `game:`)' }),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100, description: 'At most this many rooms, the busiest first' })
}, { additionalProperties: false })

export const ActiveRoomsSchema = Type.Object({
  items: Type.Array(Type.Object({
    room: Type.String(),
    subscribers: Type.Integer({ description: 'Subscriptions to the room over the nodes that answered' })
  })),
  total: Type.Integer({ description: 'Rooms matched before `limit`' }),
  nodesAnswered: Type.Integer({ description: 'Nodes counted (this one included)' }),
  nodesKnown: Type.Integer({ description: 'Nodes alive according to their reports (this one included)' }),
  partial: Type.Boolean({ description: 'True when a known node did not answer within 1 s, or a node had more than 10,000 matching rooms and sent its busiest only' })
})

export const NodeSchema = Type.Object({
  id: Type.String({ description: 'The node\'s id on the control channel (new at every start)' }),
  self: Type.Boolean({ description: 'True for the node that answered this request' }),
  address: Type.String({ description: 'HOST:PORT as the node is configured' }),
  hostname: Type.String(),
  version: Type.String(),
  startedAt: TimestampSchema,
  reportedAt: Type.Integer({ description: 'When the node made this report, by its clock (epoch ms)' }),
  lastSeenAt: Type.Integer({ description: 'When the answering node last heard from it, by its own clock (epoch ms)' }),
  connections: Type.Integer(),
  rooms: Type.Integer({ description: 'Rooms with at least one subscriber on the node' }),
  messagesInPerSecond: Type.Number(),
  messagesOutPerSecond: Type.Number(),
  rssBytes: Type.Integer(),
  heapUsedBytes: Type.Integer(),
  eventLoopDelayMs: Type.Number({ description: 'How late the node\'s report timer fired (ms): the event loop\'s delay when it reported' })
})

export const NodesSchema = Type.Object({
  intervalMs: Type.Integer({ description: 'NODE_REPORT_INTERVAL_MS: a node silent for three intervals is dropped' }),
  items: Type.Array(NodeSchema, { description: 'This node first' })
})

export const ClusterHistorySchema = Type.Object({
  intervalMs: Type.Integer({ description: 'NODE_REPORT_INTERVAL_MS: one sample per interval' }),
  capacity: Type.Integer({ description: 'Samples kept at most (a ring): capacity × intervalMs is the span the charts can show' }),
  samples: Type.Array(Type.Object({
    at: Type.Integer({ description: 'When the answering node took the sample (epoch ms, its clock)' }),
    nodes: Type.Integer({ description: 'Nodes alive then' }),
    connections: Type.Integer({ description: 'Sum of the nodes\' switchboard_connections' }),
    messagesInPerSecond: Type.Number({ description: 'Sum of the nodes\' rate of switchboard_messages_in_total' }),
    messagesOutPerSecond: Type.Number({ description: 'Sum of the nodes\' rate of switchboard_messages_out_total' })
  }), { description: 'The oldest first' })
})

export const ConnectionRoomParamsSchema = Type.Object({
  id: Type.String({ maxLength: 64 }),
  room: RoomIdSchema
})
