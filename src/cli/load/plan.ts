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

/** Wall-clock microseconds on the monotonic clock of this process. */
export function nowMicros (): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000)
}
