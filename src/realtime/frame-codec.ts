import {
  errorFrame, presenceFrame, reconnectFrame, replyFrame, replyFrameWithJson, unsubscribedFrame, welcomeFrame, welcomeLimits, welcomeSettings,
  type Limits, type ProtocolError, type WelcomeSettings, type WelcomeUser
} from '@switchboard/protocol/frames'
import { MSGPACK_PROTOCOL_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSIONS, type CommandId, type ProtocolVersion, type UnsubscribeReason } from '@switchboard/protocol/messages'
import { encodeMsgpack } from '@switchboard/protocol/msgpack'
import { historyJson, historyPageJson, messageText, subscribedJson } from './publication-frames.js'
import { parseCommand, parseMsgpackCommand, type ParseResult } from './command-parser.js'
import type { HistoryPage, HistoryResult, Publication, StreamPosition } from './engine.js'

/**
 * A frame's payload as a codec writes it: text for a text frame (`switchboard.v1`), bytes for
 * a binary frame (`switchboard.v1.msgpack`). The transport frames it (src/realtime/transport.ts).
 */
export type WireMessage = string | Uint8Array

/** The welcome's node-wide part: the same for every connection of a node. */
export interface WelcomeLimits extends Limits {
  heartbeatMs: number
}

/**
 * One wire codec: how a connection's frames are written and its commands read. A connection
 * has one, chosen by its subprotocol; both carry the same envelopes (packages/protocol/src/messages.ts).
 * Publications are the room's, not the codec's: each codec renders the stored payload its own
 * way, and the hub builds a publication's frame at most once per codec in use (`slot`).
 */
export interface FrameCodec {
  readonly protocol: ProtocolVersion
  /** Index of this codec's frame in per-publication frame caches (0 or 1). */
  readonly slot: 0 | 1
  /** True when frames are binary (and inbound text frames are refused), false for text. */
  readonly binary: boolean
  welcome(connectionId: string, user: WelcomeUser, limits: WelcomeLimits, tokenExpiresAt: number | null): WireMessage
  reply(id: CommandId, result: unknown): WireMessage
  /** A reply carrying a history page. */
  history(id: CommandId, result: HistoryResult): WireMessage
  /** A reply carrying a page read back or forward. */
  historyPage(id: CommandId, page: HistoryPage): WireMessage
  /** A subscribe's reply, with what it recovered. */
  subscribed(id: CommandId, room: string, position: StreamPosition, recovered: boolean, publications: Publication[]): WireMessage
  error(id: CommandId | undefined, error: ProtocolError): WireMessage
  message(room: string, epoch: string, publication: Publication): WireMessage
  presence(type: 'join' | 'leave', room: string, user: { id: string, info?: unknown }): WireMessage
  unsubscribed(room: string, reason: UnsubscribeReason): WireMessage
  reconnect(retryAfterMs: number): WireMessage
  /** Reads one inbound frame of this codec's kind (text for JSON, bytes for MessagePack). */
  parse(frame: WireMessage): ParseResult
}

/** The welcome's node-wide part, serialised once per limits object instead of per connection. */
const welcomeSettingsCache = new WeakMap<WelcomeLimits, WelcomeSettings>()
function cachedWelcomeSettings (limits: WelcomeLimits): WelcomeSettings {
  let settings = welcomeSettingsCache.get(limits)
  if (settings === undefined) {
    settings = welcomeSettings(limits.heartbeatMs, limits)
    welcomeSettingsCache.set(limits, settings)
  }
  return settings
}

/**
 * `switchboard.v1`: JSON text, built by the string builders of packages/protocol/src/frames.ts and
 * src/realtime/publication-frames.ts (stored JSON payloads are inlined, bytes as base64).
 */
export const jsonCodec: FrameCodec = {
  protocol: PROTOCOL_VERSION,
  slot: 0,
  binary: false,
  welcome: (connectionId, user, limits, tokenExpiresAt) => welcomeFrame(connectionId, user, cachedWelcomeSettings(limits), tokenExpiresAt),
  reply: replyFrame,
  history: (id, result) => replyFrameWithJson(id, historyJson(result)),
  historyPage: (id, page) => replyFrameWithJson(id, historyPageJson(page)),
  subscribed: (id, room, position, recovered, publications) => replyFrameWithJson(id, subscribedJson(room, position, recovered, publications)),
  error: errorFrame,
  message: messageText,
  presence: presenceFrame,
  unsubscribed: unsubscribedFrame,
  reconnect: reconnectFrame,
  parse: (frame) => typeof frame === 'string' ? parseCommand(frame) : { ok: false, message: 'Binary frames are not part of switchboard.v1: send JSON text frames (or connect with switchboard.v1.msgpack)' }
}

/** A stored payload as a MessagePack value: the JSON value it holds, or its bytes as `bin`. */
function dataOf (publication: Publication): unknown {
  return publication.kind === 'json' ? JSON.parse(publication.payload) : publication.payload
}

function publicationMap (publication: Publication): unknown {
  return { offset: publication.offset, data: dataOf(publication), from: { id: publication.from.id }, ts: publication.ts }
}

/**
 * `switchboard.v1.msgpack`: each frame one MessagePack map with the keys of its JSON
 * counterpart, in the same order; bytes are `bin` and `encoding` never appears.
 */
export const msgpackCodec: FrameCodec = {
  protocol: MSGPACK_PROTOCOL_VERSION,
  slot: 1,
  binary: true,
  welcome: (connectionId, user, limits, tokenExpiresAt) => encodeMsgpack({
    type: 'welcome',
    protocol: MSGPACK_PROTOCOL_VERSION,
    connectionId,
    user,
    heartbeatMs: limits.heartbeatMs,
    limits: welcomeLimits(limits),
    tokenExpiresAt
  }),
  reply: (id, result) => encodeMsgpack({ type: 'reply', id, result }),
  history: (id, result) => encodeMsgpack({
    type: 'reply',
    id,
    result: { epoch: result.epoch, offset: result.offset, complete: result.complete, publications: result.publications.map(publicationMap) }
  }),
  historyPage: (id, page) => encodeMsgpack({
    type: 'reply',
    id,
    result: { epoch: page.epoch, publications: page.publications.map(publicationMap), next: page.next, top: page.top }
  }),
  subscribed: (id, room, position, recovered, publications) => encodeMsgpack({
    type: 'reply',
    id,
    result: { room, epoch: position.epoch, offset: position.offset, recovered, publications: publications.map(publicationMap) }
  }),
  error: (id, { code, message, temporary, retryAfterMs }) => {
    const error = retryAfterMs === undefined ? { code, message, temporary } : { code, message, temporary, retryAfterMs }
    return encodeMsgpack(id === undefined ? { type: 'error', error } : { type: 'error', id, error })
  },
  message: (room, epoch, publication) => encodeMsgpack({
    type: 'message',
    room,
    epoch,
    offset: publication.offset,
    data: dataOf(publication),
    from: { id: publication.from.id },
    ts: publication.ts
  }),
  presence: (type, room, user) => encodeMsgpack({ type, room, user: user.info === undefined ? { id: user.id } : { id: user.id, info: user.info } }),
  unsubscribed: (room, reason) => encodeMsgpack({ type: 'unsubscribed', room, reason }),
  reconnect: (retryAfterMs) => encodeMsgpack({ type: 'reconnect', reason: 'shutdown', retryAfterMs }),
  parse: (frame) => typeof frame === 'string'
    ? { ok: false, message: 'Text frames are not part of switchboard.v1.msgpack: send each command as one MessagePack map in a binary frame' }
    : parseMsgpackCommand(frame)
}

export const CODECS: readonly FrameCodec[] = [jsonCodec, msgpackCodec]

/**
 * The subprotocol of ours a handshake selects among those it offers, MessagePack first; false
 * when it offers none of ours (the connection then speaks JSON). ws selects with it
 * (plugins/websocket.ts); the connect hook is told it before the upgrade (routes/ws).
 */
export function selectProtocol (offered: ReadonlySet<string>): typeof PROTOCOL_VERSIONS[number] | false {
  return PROTOCOL_VERSIONS.find(version => offered.has(version)) ?? false
}

/** The codec of a selected subprotocol; JSON when none was selected (a client that offered none). */
export function codecOf (protocol: string | undefined): FrameCodec {
  return protocol === MSGPACK_PROTOCOL_VERSION ? msgpackCodec : jsonCodec
}
