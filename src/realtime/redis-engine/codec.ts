import type { Publication, PublishRequest, RoomEvent } from '../engine.js'

/**
 * How a publication and a room event are written in Redis: a stream entry's fields (written by
 * publish.lua, read back by history.lua) and the messages on a room's channel. The field names
 * are in docs/scale-out.md#what-is-in-redis.
 *
 * A payload is stored as its bytes: the UTF-8 of a JSON payload's text, or the raw bytes of a
 * binary one (Redis strings are binary-safe). Both are read back as Buffers (the pub/sub
 * connection's `messageBuffer`, history through EVALSHA's Buffer variant), so bytes that are
 * not UTF-8 arrive as they were sent; a JSON payload becomes text once, here.
 */

const PIPE = 0x7c
/** Stream entry field names (one byte each). */
const FIELD_D = 0x64 // payload
const FIELD_F = 0x66 // publisher id
const FIELD_K = 0x6b // kind
const FIELD_S = 0x73 // publish time (the publisher's ts)

/**
 * A stream entry as XRANGE returns it through a Buffer reply: [id, [field, value, ...]]. The
 * kind field `k` says how to read `d`; an entry without it was written before payloads were
 * kept as text (legacyPublication).
 */
export function entryToPublication (entry: unknown): Publication {
  const [id, list] = entry as [Buffer, Buffer[]]
  let payload: Buffer | undefined
  let from: Buffer | undefined
  let kind: Buffer | undefined
  let ts: Buffer | undefined
  for (let i = 0; i + 1 < list.length; i += 2) {
    const name = list[i]!
    if (name.length !== 1) continue
    const value = list[i + 1]!
    switch (name[0]) {
      case FIELD_D: payload = value; break
      case FIELD_F: from = value; break
      case FIELD_K: kind = value; break
      case FIELD_S: ts = value; break
    }
  }
  const idText = id.toString('latin1')
  const offset = Number(idText.slice(0, idText.indexOf('-')))
  if (kind === undefined) return legacyPublication(offset, payload?.toString() ?? '{}')
  const publisher = { id: from?.toString() ?? '' }
  const time = Number(ts?.toString('latin1'))
  if (kind.toString('latin1') === 'binary') return { kind: 'binary', payload: ownBytes(payload ?? Buffer.alloc(0)), offset, from: publisher, ts: time }
  return { kind: 'json', payload: payload?.toString() ?? 'null', offset, from: publisher, ts: time }
}

/**
 * A copy of bytes the Redis reply parser handed out: its Buffers are views into the socket's
 * read chunk or the parser's pool, and a publication kept a while (a subscriber's buffer
 * during recovery) would otherwise hold all of that memory for a few bytes of its own.
 */
function ownBytes (view: Buffer): Buffer {
  return Buffer.from(view)
}

/**
 * Entries and channel messages written before payloads were kept as text carry one JSON
 * envelope `{data, from, ts}`; they stay readable while they live out their TTL.
 */
function legacyPublication (offset: number, envelope: string): Publication {
  const parsed = JSON.parse(envelope) as { data?: unknown, from?: { id?: string }, ts?: number }
  return { offset, payload: JSON.stringify(parsed.data ?? null), kind: 'json', from: { id: parsed.from?.id ?? '' }, ts: parsed.ts ?? 0 }
}

/**
 * The channel message after `m|epoch|offset|` (publish.lua writes that part): `ts|kind|length
 * of the publisher id|` then the publisher id and the payload, unescaped; the payload runs to
 * the end of the message and may hold anything. The length is in the units the rest of the
 * message is read back in: for `json`, UTF-16 code units of the text (the tail is decoded once,
 * and nodes of the previous version wrote and read it so), for `binary`, bytes (the payload
 * stays bytes, only the id is decoded).
 */
export function messageHead (request: PublishRequest): string {
  const length = request.kind === 'binary' ? Buffer.byteLength(request.from.id) : request.from.id.length
  return `${request.ts}|${request.kind}|${length}|${request.from.id}`
}

/** The part of a channel message after `m|epoch|offset|`, starting at `at`. */
function decodeMessage (offset: number, message: Buffer, at: number): Publication {
  const tsEnd = message.indexOf(PIPE, at)
  const kindEnd = message.indexOf(PIPE, tsEnd + 1)
  const lengthEnd = message.indexOf(PIPE, kindEnd + 1)
  if (tsEnd < 0 || kindEnd < 0 || lengthEnd < 0) throw new Error('malformed publication message')
  const ts = Number(message.toString('latin1', at, tsEnd))
  const length = Number(message.toString('latin1', kindEnd + 1, lengthEnd))
  if (message.toString('latin1', tsEnd + 1, kindEnd) === 'binary') {
    const fromEnd = lengthEnd + 1 + length
    return { kind: 'binary', payload: ownBytes(message.subarray(fromEnd)), offset, from: { id: message.toString('utf8', lengthEnd + 1, fromEnd) }, ts }
  }
  const rest = message.toString('utf8', lengthEnd + 1)
  return { kind: 'json', payload: rest.slice(length), offset, from: { id: rest.slice(0, length) }, ts }
}

/** A room event on the room's channel. */
export function encodeEvent (event: RoomEvent): string {
  return `e|${JSON.stringify(event)}`
}

export type ChannelMessage =
  | { type: 'publication', epoch: string, publication: Publication }
  | { type: 'event', event: RoomEvent }

/** A message on a room's channel, as bytes; null for a kind this version does not know. Throws on a malformed one. */
export function decodeChannelMessage (message: Buffer): ChannelMessage | null {
  if (message.length < 2 || message[1] !== PIPE) return null
  const type = message[0]
  if (type === 0x6d /* m */ || type === 0x70 /* p */) {
    const epochEnd = message.indexOf(PIPE, 2)
    const offsetEnd = message.indexOf(PIPE, epochEnd + 1)
    if (epochEnd < 0 || offsetEnd < 0) throw new Error('malformed publication message')
    const epoch = message.toString('latin1', 2, epochEnd)
    const offset = Number(message.toString('latin1', epochEnd + 1, offsetEnd))
    const publication = type === 0x6d
      ? decodeMessage(offset, message, offsetEnd + 1)
      : legacyPublication(offset, message.toString('utf8', offsetEnd + 1))
    return { type: 'publication', epoch, publication }
  }
  if (type === 0x65 /* e */) return { type: 'event', event: JSON.parse(message.toString('utf8', 2)) as RoomEvent }
  return null
}
