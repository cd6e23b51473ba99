import type { Publication, PublishRequest, RoomEvent } from '../engine.js'

/**
 * How a publication and a room event are written in Redis: a stream entry's fields (written by
 * publish.lua, read back by history.lua) and the messages on a room's channel. The field names
 * are in docs/scale-out.md#what-is-in-redis.
 */

/** A stream entry as XRANGE returns it: [id, [field, value, ...]]. */
export function entryToPublication (entry: unknown): Publication {
  const [id, list] = entry as [string, string[]]
  const fields: Record<string, string | undefined> = {}
  for (let i = 0; i + 1 < list.length; i += 2) fields[list[i]!] = list[i + 1]
  const offset = Number(id.slice(0, id.indexOf('-')))
  if (fields.k === undefined) return legacyPublication(offset, fields.d ?? '{}')
  return { offset, payload: fields.d ?? 'null', kind: 'json', from: { id: fields.f ?? '' }, ts: Number(fields.s) }
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
 * of the publisher id|` then the publisher id and the payload, unescaped. Built here, so the
 * length is in the units JS reads it back in; the payload runs to the end of the message and
 * may hold anything.
 */
export function messageHead (request: PublishRequest): string {
  return `${request.ts}|${request.kind}|${request.from.id.length}|${request.from.id}`
}

function decodeMessage (offset: number, rest: string): Publication {
  const tsEnd = rest.indexOf('|')
  const kindEnd = rest.indexOf('|', tsEnd + 1)
  const lengthEnd = rest.indexOf('|', kindEnd + 1)
  const fromEnd = lengthEnd + 1 + Number(rest.slice(kindEnd + 1, lengthEnd))
  return {
    offset,
    payload: rest.slice(fromEnd),
    kind: 'json',
    from: { id: rest.slice(lengthEnd + 1, fromEnd) },
    ts: Number(rest.slice(0, tsEnd))
  }
}

/** A room event on the room's channel. */
export function encodeEvent (event: RoomEvent): string {
  return `e|${JSON.stringify(event)}`
}

export type ChannelMessage =
  | { type: 'publication', epoch: string, publication: Publication }
  | { type: 'event', event: RoomEvent }

/** A message on a room's channel; null for a kind this version does not know. Throws on a malformed one. */
export function decodeChannelMessage (message: string): ChannelMessage | null {
  if (message.startsWith('m|') || message.startsWith('p|')) {
    const epochEnd = message.indexOf('|', 2)
    const offsetEnd = message.indexOf('|', epochEnd + 1)
    const epoch = message.slice(2, epochEnd)
    const offset = Number(message.slice(epochEnd + 1, offsetEnd))
    const rest = message.slice(offsetEnd + 1)
    const publication = message.startsWith('m|') ? decodeMessage(offset, rest) : legacyPublication(offset, rest)
    return { type: 'publication', epoch, publication }
  }
  if (message.startsWith('e|')) return { type: 'event', event: JSON.parse(message.slice(2)) as RoomEvent }
  return null
}
