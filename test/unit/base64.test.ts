import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { base64DecodedLength, isStandardBase64 } from '../../src/realtime/command-parser.js'

/** The definition isStandardBase64 implements, as a regular expression (fine for short inputs). */
const DEFINITION = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

describe('isStandardBase64', () => {
  it('agrees with the RFC 4648 §4 definition on any string over the alphabet, padding and strangers', () => {
    const char = fc.constantFrom(...'ABYZabyz0189+/=-_ .\n\u00e9'.split(''))
    fc.assert(fc.property(fc.array(char, { maxLength: 14 }).map((chars) => chars.join('')), (text) => {
      assert.equal(isStandardBase64(text), DEFINITION.test(text), JSON.stringify(text))
    }), { numRuns: 5000 })
  })

  it('accepts what Buffer encodes, and counts its bytes without decoding', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const text = Buffer.from(bytes).toString('base64')
      assert.equal(isStandardBase64(text), true)
      assert.equal(base64DecodedLength(text), bytes.length)
    }))
  })

  it('refuses base64url, missing padding and padding in the middle', () => {
    for (const text of ['ab-_', 'YQ', 'YQ=', 'YQ==YQ==', '====', 'A===', 'YWJj\n']) assert.equal(isStandardBase64(text), false, text)
  })

  it('reads many megabytes without overflowing the stack (where the regular expression throws, on Node 20)', () => {
    const text = randomBytes(16 * 1024 * 1024).toString('base64')
    assert.equal(isStandardBase64(text), true)
    assert.equal(isStandardBase64(`${text.slice(0, -4)}!AAA`), false)
  })
})
