/*
 * What an application hands to `publish`: a JSON value, or bytes (a Uint8Array or another
 * ArrayBuffer view, an ArrayBuffer, a Blob). Bytes are copied into a Uint8Array of their own
 * when `publish` is called, so that changing the caller's buffer afterwards (or before a
 * resend after a reconnect) cannot change what is sent.
 */

/** A Blob (browsers; Node 20 has one too): read asynchronously before it can be sent. */
export function isBlob (data: unknown): data is Blob {
  const BlobCtor = (globalThis as { Blob?: typeof Blob }).Blob
  return BlobCtor !== undefined && data instanceof BlobCtor
}

/** The bytes of an ArrayBuffer or ArrayBuffer view, as a fresh Uint8Array; undefined for anything else. */
export function copyBytes (data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0))
  if (ArrayBuffer.isView(data)) {
    const copy = new Uint8Array(data.byteLength)
    copy.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    return copy
  }
  return undefined
}

/**
 * The payload size the server counts against `maxMessageBytes`: the bytes themselves, or the
 * UTF-8 length of the JSON text of a value.
 */
export function payloadBytes (data: unknown): number {
  if (data instanceof Uint8Array) return data.byteLength
  return utf8Length(JSON.stringify(data) ?? '')
}

/** UTF-8 length of a string without encoding it (a lone surrogate counts as U+FFFD, 3 bytes). */
export function utf8Length (text: string): number {
  const length = text.length
  let bytes = length
  for (let i = 0; i < length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x80) continue
    if (code < 0x800) {
      bytes += 1
    } else if (code >= 0xd800 && code <= 0xdbff && i + 1 < length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 2 // a surrogate pair: 4 bytes for 2 code units
      i++
    } else {
      bytes += 2
    }
  }
  return bytes
}
