import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { formatBytes, fromBase64, imageName, imageRefusal, sniffImage, SNIFF_BYTES } from '../../web/src/binary.js'

/* The web app's reading of raw-byte messages (web/src/binary.ts): which bytes it shows as an image. */

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)
const ascii = (text: string): number[] => [...Buffer.from(text, 'latin1')]

const SIGNATURES: Array<[string, number[]]> = [
  ['image/png', [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]],
  ['image/jpeg', [0xff, 0xd8, 0xff]],
  ['image/gif', ascii('GIF87a')],
  ['image/gif', ascii('GIF89a')],
  ['image/webp', [...ascii('RIFF'), 0x24, 0x00, 0x00, 0x00, ...ascii('WEBP')]]
]

describe('web app: raw-byte messages', () => {
  it('sniffs PNG, JPEG, GIF and WebP by their first bytes, whatever follows', () => {
    for (const [type, signature] of SIGNATURES) {
      assert.equal(sniffImage(bytes(...signature)), type)
      fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (rest) => sniffImage(bytes(...signature, ...rest)) === type))
    }
    assert.ok(Math.max(...SIGNATURES.map(([, s]) => s.length)) <= SNIFF_BYTES)
  })

  it('anything else is not an image: SVG, text, truncated or near-miss signatures, nothing at all', () => {
    const others = [
      bytes(),
      bytes(0x89, 0x50, 0x4e, 0x47), // a PNG cut short
      bytes(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0b),
      bytes(0xff, 0xd8),
      bytes(...ascii('GIF88a')),
      bytes(...ascii('RIFF'), 0, 0, 0, 0, ...ascii('WAVE')), // a WAV file is RIFF too
      bytes(...ascii('RIFF'), 0, 0, 0, 0, ...ascii('WEB')),
      bytes(...ascii('<svg xmlns="http://www.w3.org/2000/svg"/>')),
      bytes(...ascii('{"text":"hello"}')),
      bytes(0x00, 0xff, 0x00, 0xff)
    ]
    for (const other of others) assert.equal(sniffImage(other), null, Buffer.from(other).toString('hex'))
    // Random bytes are an image only when they happen to start with a signature.
    fc.assert(fc.property(fc.uint8Array({ maxLength: 32 }), (random) => {
      const type = sniffImage(random)
      return type === null || SIGNATURES.some(([t, s]) => t === type && s.every((b, i) => random[i] === b))
    }))
  })

  it('refuses other types first, then sizes over the limit, naming both sizes', () => {
    const png = bytes(...SIGNATURES[0]![1], 0, 0, 0, 13)
    assert.equal(imageRefusal(png, 65_536, 65_536), null, 'at the limit is allowed')
    assert.equal(imageRefusal(png, 100, 65_536), null)
    assert.equal(imageRefusal(png, 65_537, 65_536), 'This image is too large to send: 64 KB (65537 bytes); the server accepts at most 64 KB (65536 bytes) per message.')
    assert.equal(imageRefusal(png, 200_000, 65_536), 'This image is too large to send: 195 KB (200000 bytes); the server accepts at most 64 KB (65536 bytes) per message.')
    const svg = bytes(...ascii('<svg xmlns="http://www.w3.org/2000/svg"/>'))
    assert.equal(imageRefusal(svg, 40, 65_536), 'Only PNG, JPEG, GIF and WebP images can be sent; this file is not one of them.')
    assert.equal(imageRefusal(svg, 10_000_000, 65_536), imageRefusal(svg, 40, 65_536), 'the type is what a large non-image is refused for')
  })

  it('names types and sizes in words', () => {
    assert.deepEqual(['image/png', 'image/jpeg', 'image/gif', 'image/webp'].map(t => imageName(t as 'image/png')), ['PNG', 'JPEG', 'GIF', 'WebP'])
    assert.deepEqual([0, 1, 2, 1023, 1024, 1536, 10 * 1024, 65_536, 1024 * 1024, 2.5 * 1024 * 1024].map(formatBytes),
      ['0 bytes', '1 byte', '2 bytes', '1023 bytes', '1 KB', '1.5 KB', '10 KB', '64 KB', '1 MB', '2.5 MB'])
  })

  it('decodes the base64 of REST history back to the same bytes, including 0x00 and 0xFF', () => {
    assert.deepEqual(fromBase64(''), bytes())
    assert.deepEqual(fromBase64('AP8A/w=='), bytes(0x00, 0xff, 0x00, 0xff))
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (random) => {
      assert.deepEqual(fromBase64(Buffer.from(random).toString('base64')), random)
    }))
    assert.throws(() => fromBase64('not base64!'))
  })
})
