import type { PreparedFrame } from './transport.js'

/**
 * A frame, header and payload in one buffer, shared by every socket it is written to; with
 * permessage-deflate on (src/realtime/ws-deflate.ts) it also keeps its compressed variant,
 * built at most once, on the first write to a socket that negotiated compression.
 */
export class WsFrame implements PreparedFrame {
  /**
   * The compressed variant: undefined until a compressing socket first asks for it, null when
   * the frame goes uncompressed (below the threshold, too large to deflate inline, or no
   * smaller deflated), else the RSV1 frame every compressing socket is handed.
   */
  deflated: Buffer | null | undefined = undefined

  constructor (readonly bytes: Buffer) {}

  /** Bytes this frame adds to a socket's buffer, uncompressed: the outbound budget counts these (an upper bound). */
  get byteLength (): number { return this.bytes.length }

  /** The payload after the header (a view, no copy). */
  get payload (): Buffer { return this.bytes.subarray(headerLength(this.bytes[1]!)) }
}

/**
 * Frames a server message once: text as a text frame, bytes (MessagePack) as a binary frame.
 * The result is written as-is to every subscriber's TCP socket, so a fan-out to N sockets
 * costs one encode, one frame and N writes (ws's own `send` would re-frame for each socket).
 */
export function prepareWsFrame (message: string | Uint8Array): PreparedFrame {
  return new WsFrame(typeof message === 'string' ? textFrame(message) : binaryFrame(message))
}

/**
 * One unfragmented, unmasked text frame (RFC 6455 §5.2: FIN + opcode 1, then the payload
 * length in 7, 7+16 or 7+64 bits; servers never mask) in a single allocation: ws's
 * `Sender.frame` returns header and payload apart, and joining them cost a second copy and two
 * more buffers on every welcome, reply and publication.
 */
export function textFrame (text: string): Buffer {
  const length = Buffer.byteLength(text)
  const frame = frameWithHeader(0x81, length)
  frame.write(text, frame.length - length, 'utf8')
  return frame
}

/** The same for bytes: FIN + opcode 2, the payload copied in after the header. */
export function binaryFrame (bytes: Uint8Array): Buffer {
  const frame = frameWithHeader(0x82, bytes.byteLength)
  frame.set(bytes, frame.length - bytes.byteLength)
  return frame
}

/**
 * A buffer for one frame: its first byte (FIN, RSV bits, opcode) and length written, its
 * `length` payload bytes left to fill.
 */
export function frameWithHeader (first: number, length: number): Buffer {
  const frame = Buffer.allocUnsafe(headerBytes(length) + length)
  frame[0] = first
  if (length < 126) {
    frame[1] = length
  } else if (length < 65536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  return frame
}

/** Header bytes of an unmasked frame carrying `length` payload bytes. */
export function headerBytes (length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10
}

/** Header bytes of an unmasked frame whose second byte (mask bit clear, the 7-bit length) is `lengthByte`. */
function headerLength (lengthByte: number): number {
  return lengthByte < 126 ? 2 : lengthByte === 126 ? 4 : 10
}
