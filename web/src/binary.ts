/*
 * Raw-byte messages in the web app (docs/web.md, "Images"): which bytes are an image the page
 * shows, and the words it uses for sizes. No DOM here: test/unit/web-binary.test.ts runs it.
 *
 * An image travels as the bytes of its file and nothing else (a binary publication). The page
 * tells what they are from their first bytes, not from a file name or a type the sender
 * declared: the same rule for what is sent (a file whose bytes are not one of these is refused)
 * and for what is received (any other bytes show as a download), so a sender cannot make the
 * page render something else as an image, and a service publishing plain bytes needs no
 * envelope.
 */

/** The image types the page sends and shows inline. SVG is not one: it is a document, not pixels. */
export type ImageType = 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp'

export const IMAGE_TYPES: readonly ImageType[] = ['image/png', 'image/jpeg', 'image/gif', 'image/webp']

/** What the file picker offers (the bytes are checked anyway). */
export const IMAGE_ACCEPT = IMAGE_TYPES.join(',')

/** How many leading bytes sniffImage looks at. */
export const SNIFF_BYTES = 12

const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]
const JPEG = [0xff, 0xd8, 0xff]
const GIF87A = [0x47, 0x49, 0x46, 0x38, 0x37, 0x61]
const GIF89A = [0x47, 0x49, 0x46, 0x38, 0x39, 0x61]
const RIFF = [0x52, 0x49, 0x46, 0x46]
const WEBP = [0x57, 0x45, 0x42, 0x50]

function startsWith (bytes: Uint8Array, signature: number[], at = 0): boolean {
  if (bytes.length < at + signature.length) return false
  return signature.every((byte, i) => bytes[at + i] === byte)
}

/**
 * The image type of `bytes` by their signature (the WHATWG MIME sniffing patterns: PNG, JPEG,
 * GIF87a/89a, RIFF….WEBP), or null. Only the first SNIFF_BYTES are read.
 */
export function sniffImage (bytes: Uint8Array): ImageType | null {
  if (startsWith(bytes, PNG)) return 'image/png'
  if (startsWith(bytes, JPEG)) return 'image/jpeg'
  if (startsWith(bytes, GIF87A) || startsWith(bytes, GIF89A)) return 'image/gif'
  if (startsWith(bytes, RIFF) && startsWith(bytes, WEBP, 8)) return 'image/webp'
  return null
}

/** The short name of an image type, for the page: PNG, JPEG, GIF, WebP. */
export function imageName (type: ImageType): string {
  return type === 'image/webp' ? 'WebP' : type.slice('image/'.length).toUpperCase()
}

/** A size in words: `1 byte`, `900 bytes`, `1.5 KB`, `64 KB`, `2.3 MB` (1 KB = 1024 bytes). */
export function formatBytes (n: number): string {
  if (n < 1024) return n === 1 ? '1 byte' : `${n} bytes`
  const [value, unit] = n < 1024 * 1024 ? [n / 1024, 'KB'] : [n / (1024 * 1024), 'MB']
  // One decimal below 10 units, none above; none either when it is a round number.
  const rounded = value < 10 ? Math.round(value * 10) / 10 : Math.round(value)
  return `${rounded} ${unit}`
}

/**
 * Why a file cannot be sent as an image, or null when it can: `head` is its first bytes (at
 * least SNIFF_BYTES when the file has them), `size` its length, `maxBytes` the server's
 * `limits.maxMessageBytes`. The type is checked first: "only images" says more about a
 * large PDF than its size does.
 */
export function imageRefusal (head: Uint8Array, size: number, maxBytes: number): string | null {
  if (sniffImage(head) === null) {
    return 'Only PNG, JPEG, GIF and WebP images can be sent; this file is not one of them.'
  }
  if (size > maxBytes) {
    return `This image is too large to send: ${formatBytes(size)} (${size} bytes); the server accepts at most ${formatBytes(maxBytes)} (${maxBytes} bytes) per message.`
  }
  return null
}

/**
 * Bytes from standard base64 (RFC 4648 §4), as REST history carries them (`encoding:
 * "base64"`); the WebSocket delivers bytes as a Uint8Array already. Throws on invalid input.
 */
export function fromBase64 (text: string): Uint8Array {
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}
