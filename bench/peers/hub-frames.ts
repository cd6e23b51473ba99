/**
 * The binary frames of the `ws` hubs' protocol (hub-protocol.ts), shared by the hubs and their
 * adapter (hub-adapter.ts) and free of dependencies, so the generator loads nothing of the
 * hubs'. A publication of bytes travels in a binary WebSocket frame with the least envelope
 * that names its room: the hubs are the floor of what carrying bytes costs, so nothing is
 * encoded (no base64, no MessagePack) and the bytes are copied once per broadcast.
 *
 * Client → hub:  0x01, id (uint32 BE), room length (1 byte), room (UTF-8), data   reply {"t":"ok","id":…}
 * Hub → client:  0x02, room length (1 byte), room (UTF-8), data
 */

export const BINARY_PUB = 0x01
export const BINARY_MSG = 0x02
const MAX_ROOM_BYTES = 255

function roomBytes (room: string): Buffer {
  const bytes = Buffer.from(room)
  if (bytes.length > MAX_ROOM_BYTES) throw new RangeError(`a room name of at most ${MAX_ROOM_BYTES} bytes, got ${bytes.length}`)
  return bytes
}

function asBuffer (bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/** A binary `pub` of `data` to `room`, command `id`. */
export function binaryPubFrame (id: number, room: string, data: Uint8Array): Buffer {
  const name = roomBytes(room)
  const frame = Buffer.allocUnsafe(6 + name.length + data.byteLength)
  frame[0] = BINARY_PUB
  frame.writeUInt32BE(id, 1)
  frame[5] = name.length
  name.copy(frame, 6)
  asBuffer(data).copy(frame, 6 + name.length)
  return frame
}

/** A binary `msg` of `data` in `room`: built once per broadcast. */
export function binaryMsgFrame (room: string, data: Uint8Array): Buffer {
  const name = roomBytes(room)
  const frame = Buffer.allocUnsafe(2 + name.length + data.byteLength)
  frame[0] = BINARY_MSG
  frame[1] = name.length
  name.copy(frame, 2)
  asBuffer(data).copy(frame, 2 + name.length)
  return frame
}

/** The parts of a binary `pub` (data a view into `frame`); null when it is not one. */
export function parseBinaryPub (frame: Buffer): { id: number, room: string, data: Buffer } | null {
  if (frame.length < 6 || frame[0] !== BINARY_PUB) return null
  const end = 6 + frame[5]!
  if (frame.length < end) return null
  return { id: frame.readUInt32BE(1), room: frame.toString('utf8', 6, end), data: frame.subarray(end) }
}

/** The parts of a binary `msg` (data a view into `frame`); null when it is not one. */
export function parseBinaryMsg (frame: Buffer): { room: string, data: Buffer } | null {
  if (frame.length < 2 || frame[0] !== BINARY_MSG) return null
  const end = 2 + frame[1]!
  if (frame.length < end) return null
  return { room: frame.toString('utf8', 2, end), data: frame.subarray(end) }
}
