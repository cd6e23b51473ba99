/**
 * The message plan of a load run: which publisher sends message k, to which room, and what
 * the payload carries. Pure functions, shared by the engine and the tests.
 */

/**
 * Message k (0-based, global) is sent by publisher `k % P` to room `(floor(k / P) + k % P) % R`.
 * Every block of P × R consecutive messages hits each room exactly P times, and every
 * publisher sends to every room (a plain `k % R` would pin publisher p to the rooms ≡ p when P
 * and R share a factor).
 */
export function publisherOf (k: number, publishers: number): number {
  return k % publishers
}

export function roomOf (k: number, publishers: number, rooms: number): number {
  return (Math.floor(k / publishers) + (k % publishers)) % rooms
}

export interface Plan {
  /** Messages planned (the run may stop earlier). */
  messages: number
  /** Room of each message. */
  room: Uint32Array
  /** Index of each message among the messages of its room: a subscriber tracks only its room's. */
  indexInRoom: Uint32Array
  /** Messages planned per room. */
  perRoom: Uint32Array
  /** The messages of each room, in order: byRoom[r][indexInRoom[k]] === k. */
  byRoom: Uint32Array[]
}

export function makePlan (messages: number, publishers: number, rooms: number): Plan {
  const room = new Uint32Array(messages)
  const indexInRoom = new Uint32Array(messages)
  const perRoom = new Uint32Array(rooms)
  for (let k = 0; k < messages; k++) {
    const r = roomOf(k, publishers, rooms)
    room[k] = r
    indexInRoom[k] = perRoom[r]!
    perRoom[r] = perRoom[r]! + 1
  }
  const byRoom = Array.from(perRoom, count => new Uint32Array(count))
  for (let k = 0; k < messages; k++) byRoom[room[k]!]![indexInRoom[k]!] = k
  return { messages, room, indexInRoom, perRoom, byRoom }
}

/** The fields at the head of every payload; the rest is padding up to `--size`. */
export const MIN_PAYLOAD_BYTES = 40
const PADDING = '.'.repeat(1024)

/**
 * `k:publisher:intendedSendTimeMicros:` then dots up to `size` bytes (ASCII, so bytes = chars,
 * and nothing needs escaping in JSON). The time is performance.timeOrigin + performance.now()
 * in whole microseconds (below 2^53 until the year 2255): one clock, since publishers and
 * subscribers live in this process.
 */
export function encodePayload (k: number, publisher: number, intendedMicros: number, size: number): string {
  const head = `${k}:${publisher}:${intendedMicros}:`
  let pad = size - head.length
  if (pad <= 0) return head
  let out = head
  while (pad > PADDING.length) { out += PADDING; pad -= PADDING.length }
  return out + PADDING.slice(0, pad)
}

export interface DecodedPayload { k: number, publisher: number, intendedMicros: number }

/** The inverse of encodePayload; null when the text is not one of ours. */
export function decodePayload (payload: string): DecodedPayload | null {
  const a = payload.indexOf(':')
  const b = a < 0 ? -1 : payload.indexOf(':', a + 1)
  const c = b < 0 ? -1 : payload.indexOf(':', b + 1)
  if (c < 0) return null
  const k = Number(payload.slice(0, a))
  const publisher = Number(payload.slice(a + 1, b))
  const intendedMicros = Number(payload.slice(b + 1, c))
  if (!Number.isSafeInteger(k) || k < 0 || !Number.isSafeInteger(publisher) || !Number.isSafeInteger(intendedMicros)) return null
  return { k, publisher, intendedMicros }
}

/**
 * Binary payloads (`--binary`): a 16-byte head, then random bytes up to `size`. The head is
 * k and publisher (uint32) and the intended send time (float64, exact below 2^53), big-endian;
 * the rest is a slice of a pool of random bytes drawn once per run (`binaryPool`), starting at
 * an offset that depends on k. So every byte value turns up (0x00, 0xFF, sequences that are not
 * UTF-8: what a server must carry untouched), no two consecutive messages carry the same bytes,
 * and a delivery can be checked byte for byte against the pool at no more cost than a memcmp.
 */
export const BINARY_HEAD_BYTES = 16
/** Distinct tail offsets into the pool (a prime, so that k and k + 1 never share one). */
const POOL_SLACK = 4093

/** The random bytes binary payloads are cut from, for payloads of `size` bytes. */
export function binaryPool (size: number, random: (n: number) => Buffer): Buffer {
  return random(size + POOL_SLACK)
}

function tailOffset (k: number): number {
  return (k * 61) % POOL_SLACK
}

export function encodeBinaryPayload (k: number, publisher: number, intendedMicros: number, size: number, pool: Buffer): Buffer {
  if (size < BINARY_HEAD_BYTES) throw new RangeError(`a binary payload holds at least ${BINARY_HEAD_BYTES} bytes`)
  if (pool.length < size + POOL_SLACK) throw new RangeError('the pool is too small for this size')
  const out = Buffer.allocUnsafe(size)
  out.writeUInt32BE(k, 0)
  out.writeUInt32BE(publisher, 4)
  out.writeDoubleBE(intendedMicros, 8)
  const at = tailOffset(k)
  pool.copy(out, BINARY_HEAD_BYTES, at + BINARY_HEAD_BYTES, at + size)
  return out
}

/**
 * The inverse of encodeBinaryPayload; null when the bytes are not one of ours, intact: another
 * length, a head that does not parse, or any byte of the tail changed on the way.
 */
export function decodeBinaryPayload (bytes: Uint8Array, size: number, pool: Buffer): DecodedPayload | null {
  if (bytes.byteLength !== size || size < BINARY_HEAD_BYTES) return null
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const k = buf.readUInt32BE(0)
  const publisher = buf.readUInt32BE(4)
  const intendedMicros = buf.readDoubleBE(8)
  if (!Number.isSafeInteger(intendedMicros)) return null
  const at = tailOffset(k)
  if (pool.length < at + size || pool.compare(buf, BINARY_HEAD_BYTES, size, at + BINARY_HEAD_BYTES, at + size) !== 0) return null
  return { k, publisher, intendedMicros }
}

/** Wall-clock microseconds on the monotonic clock of this process. */
export function nowMicros (): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000)
}
