import type { MSGPACK_PROTOCOL_VERSION, PROTOCOL_VERSION, ProtocolVersion } from '@switchboard/protocol/messages'
import { decodeMsgpack, encodeMsgpack } from '@switchboard/protocol/msgpack'
import { decodeBase64, encodeBase64 } from './base64.js'
import type { CodecName } from './types.js'

/*
 * The client's side of the two codecs (docs/protocol.md): how a command becomes a frame, and
 * how a server frame becomes the object the client works with. Whatever the codec, the
 * application sees raw bytes as a Uint8Array and never an `encoding` field.
 */

// Type-only imports of messages.ts (its values would pull TypeBox into a browser bundle):
// the literals are checked against the protocol module at compile time.
const JSON_PROTOCOL: typeof PROTOCOL_VERSION = 'switchboard.v1'
const MSGPACK_PROTOCOL: typeof MSGPACK_PROTOCOL_VERSION = 'switchboard.v1.msgpack'

/** One frame as written to the socket: text (`switchboard.v1`) or bytes (`switchboard.v1.msgpack`). */
export type WireFrame = string | Uint8Array

/** A command with its id, as the queue hands it to the codec. */
export type CommandFrame = { type: string } & Record<string, unknown>

/** A server frame, decoded, with bytes as Uint8Arrays. */
export type ServerFrame = { type: string } & Record<string, unknown>

export interface WireCodec {
  readonly name: CodecName
  /** The subprotocol the client offers, and the welcome's `protocol` it expects. */
  readonly protocol: ProtocolVersion
  /** True when frames are binary: the socket's `binaryType` is set to `arraybuffer`. */
  readonly binary: boolean
  encode (frame: CommandFrame): WireFrame
}

/** `switchboard.v1`: JSON text; bytes as a base64 string with `encoding: "base64"` right after `data`. */
export const jsonWireCodec: WireCodec = {
  name: 'json',
  protocol: JSON_PROTOCOL,
  binary: false,
  encode: (frame) => JSON.stringify(frame.data instanceof Uint8Array ? withBase64Data(frame, frame.data) : frame)
}

/** `switchboard.v1.msgpack`: one MessagePack map per binary frame; bytes are `bin`. */
export const msgpackWireCodec: WireCodec = {
  name: 'msgpack',
  protocol: MSGPACK_PROTOCOL,
  binary: true,
  encode: (frame) => encodeMsgpack(frame)
}

/** The codec of the `codec` option; a TypeError names the accepted values. */
export function wireCodec (name: unknown = 'json'): WireCodec {
  if (name === 'json') return jsonWireCodec
  if (name === 'msgpack') return msgpackWireCodec
  throw new TypeError(`switchboard client: codec must be 'json' or 'msgpack', got ${JSON.stringify(name) ?? String(name)}`)
}

function withBase64Data (frame: CommandFrame, bytes: Uint8Array): CommandFrame {
  const out: CommandFrame = { type: frame.type }
  for (const [key, value] of Object.entries(frame)) {
    if (key !== 'data') {
      out[key] = value
      continue
    }
    out.data = encodeBase64(bytes)
    out.encoding = 'base64'
  }
  return out
}

/**
 * One frame from the server, decoded by its kind (text is JSON, binary is MessagePack: the
 * welcome's `protocol` is what holds a connection to its codec, so a server that selected
 * another codec is still understood well enough to say so). Null when it is not an object
 * with a `type`; throws when it does not decode, or a base64 payload is malformed.
 *
 * Bytes come out as a Uint8Array of their own on either codec (a copy, not a view of the
 * frame: a kept image must not keep a whole history page alive) in `message` pushes and in
 * the publications of a reply (history, subscribe), `encoding` removed.
 */
export function decodeServerFrame (data: unknown): ServerFrame | null {
  let value: unknown
  if (typeof data === 'string') value = JSON.parse(data)
  else if (data instanceof ArrayBuffer) value = decodeMsgpack(new Uint8Array(data))
  else if (ArrayBuffer.isView(data)) value = decodeMsgpack(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  else return null
  if (typeof value !== 'object' || value === null || typeof (value as { type?: unknown }).type !== 'string') return null
  const frame = value as ServerFrame
  if (frame.type === 'message') {
    plainData(frame)
  } else if (frame.type === 'reply') {
    const publications = (frame.result as { publications?: unknown } | null | undefined)?.publications
    if (Array.isArray(publications)) {
      for (const publication of publications) {
        if (typeof publication === 'object' && publication !== null) plainData(publication as Record<string, unknown>)
      }
    }
  }
  return frame
}

/** `data` as the application sees it: base64 with `encoding` decoded, a MessagePack `bin` copied. */
function plainData (holder: Record<string, unknown>): void {
  const { data } = holder
  if (holder.encoding === 'base64' && typeof data === 'string') {
    holder.data = decodeBase64(data)
    delete holder.encoding
  } else if (data instanceof Uint8Array) {
    const copy = new Uint8Array(data.byteLength)
    copy.set(data)
    holder.data = copy
  }
}
