/*
 * Standard base64 (RFC 4648 §4, padded), as `encoding: "base64"` carries bytes on JSON frames.
 * Written here because the SDK runs in browsers as well as Node: no Buffer, and no btoa/atob,
 * which take "binary strings" that would have to be built one character at a time. Both
 * directions are one pass over a table; the text is produced by a TextDecoder from its ASCII
 * bytes, linear in the length.
 */

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const PAD = 0x3d // '='

/** Byte value → the ASCII code of its base64 digit. */
const ENCODE = new Uint8Array(64)
/** ASCII code → digit value, -1 when not a digit of the standard alphabet. */
const DECODE = new Int8Array(128).fill(-1)
for (let i = 0; i < 64; i++) {
  ENCODE[i] = ALPHABET.charCodeAt(i)
  DECODE[ALPHABET.charCodeAt(i)] = i
}

const ascii = new TextDecoder()

/** The bytes as standard base64 with padding. */
export function encodeBase64 (bytes: Uint8Array): string {
  const length = bytes.length
  const out = new Uint8Array(4 * Math.ceil(length / 3))
  const whole = length - (length % 3)
  let o = 0
  for (let i = 0; i < whole; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!
    out[o++] = ENCODE[n >>> 18]!
    out[o++] = ENCODE[(n >>> 12) & 63]!
    out[o++] = ENCODE[(n >>> 6) & 63]!
    out[o++] = ENCODE[n & 63]!
  }
  if (length - whole === 1) {
    const n = bytes[whole]!
    out[o++] = ENCODE[n >>> 2]!
    out[o++] = ENCODE[(n & 3) << 4]!
    out[o++] = PAD
    out[o++] = PAD
  } else if (length - whole === 2) {
    const n = (bytes[whole]! << 8) | bytes[whole + 1]!
    out[o++] = ENCODE[n >>> 10]!
    out[o++] = ENCODE[(n >>> 4) & 63]!
    out[o++] = ENCODE[(n & 15) << 2]!
    out[o++] = PAD
  }
  return ascii.decode(out)
}

/**
 * The bytes of a standard, padded base64 string. Throws a TypeError on anything else (a length
 * that is not a multiple of 4, a character outside the alphabet, padding before the end): the
 * server only ever sends that form, so anything else is a fault, not data to guess at.
 */
export function decodeBase64 (text: string): Uint8Array {
  const length = text.length
  if (length % 4 !== 0) throw new TypeError(`base64: the length ${length} is not a multiple of 4`)
  const padding = length === 0 ? 0 : text.charCodeAt(length - 1) !== PAD ? 0 : text.charCodeAt(length - 2) !== PAD ? 1 : 2
  const out = new Uint8Array((length / 4) * 3 - padding)
  const digits = length - (padding === 0 ? 0 : 4)
  let o = 0
  for (let i = 0; i < digits; i += 4) {
    const n = (digit(text, i) << 18) | (digit(text, i + 1) << 12) | (digit(text, i + 2) << 6) | digit(text, i + 3)
    out[o++] = n >>> 16
    out[o++] = (n >>> 8) & 255
    out[o++] = n & 255
  }
  if (padding === 1) {
    const n = (digit(text, digits) << 18) | (digit(text, digits + 1) << 12) | (digit(text, digits + 2) << 6)
    out[o++] = n >>> 16
    out[o++] = (n >>> 8) & 255
  } else if (padding === 2) {
    const n = (digit(text, digits) << 18) | (digit(text, digits + 1) << 12)
    out[o++] = n >>> 16
  }
  return out
}

function digit (text: string, index: number): number {
  const code = text.charCodeAt(index)
  const value = code < 128 ? DECODE[code]! : -1
  if (value === -1) throw new TypeError(`base64: unexpected character at ${index}`)
  return value
}
