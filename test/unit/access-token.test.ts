import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { createSigner, createVerifier } from 'fast-jwt'
import { createAccessTokenVerifier } from '../../src/auth/access-token.js'

/**
 * src/auth/access-token.ts replaces fast-jwt (behind @fastify/jwt) for verification. Two
 * properties matter: every token @fastify/jwt signs is accepted, and nothing fast-jwt with
 * Switchboard's options refuses is accepted. The second is checked token by token over a
 * corpus of hand-made malformations and seeded random mutations, with both verifiers on the
 * same fixed clock. Where this verifier is deliberately stricter, the case says so.
 */

const SECRET = 'a-test-secret-a-test-secret-a-test-secret-0123456789'
const ISSUER = 'switchboard'
const TOLERANCE_MS = 5000
const NOW_MS = 1_800_000_000_000
const NOW = NOW_MS / 1000

const ours = createAccessTokenVerifier({ secret: SECRET, issuer: ISSUER, clockToleranceMs: TOLERANCE_MS, now: () => NOW_MS })
const reference = createVerifier({
  key: SECRET,
  algorithms: ['HS256'],
  allowedIss: ISSUER,
  requiredClaims: ['exp', 'iat', 'iss', 'sub', 'jti'],
  clockTolerance: TOLERANCE_MS,
  clockTimestamp: NOW_MS
})
/** What @fastify/jwt's `app.jwt.sign` does with plugins/auth.ts's options. */
const sign = createSigner({ key: SECRET, algorithm: 'HS256', iss: ISSUER, expiresIn: 900_000, clockTimestamp: NOW_MS })

const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
const mac = (input: string, secret = SECRET): string => createHmac('sha256', secret).update(input).digest('base64url')
/** A token with exactly this header and payload (objects are JSON-encoded), correctly signed. */
function make (header: unknown, payload: unknown, secret = SECRET): string {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${mac(input, secret)}`
}
const HEADER = { alg: 'HS256', typ: 'JWT' }
const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ sub: 'alice', role: 'user', jti: 'j1', iss: ISSUER, iat: NOW, exp: NOW + 600, ...extra })

function referenceAccepts (token: string): boolean {
  try {
    reference(token)
    return true
  } catch {
    return false
  }
}

describe('access token verifier', () => {
  it('accepts what @fastify/jwt signs, through the unparsed standard-header path', () => {
    const token = sign({ sub: 'alice', role: 'user', jti: 'j1' }) as string
    assert.ok(token.startsWith(`${b64(HEADER)}.`), 'the signer writes the header the fast path recognises')
    const checked = ours(token)
    assert.ok(checked.ok, JSON.stringify(checked))
    assert.equal(checked.claims.sub, 'alice')
    assert.equal(checked.claims.role, 'user')
    assert.equal(checked.claims.exp, NOW + 900)
  })

  it('accepts the same claims under another acceptable header (parsed path)', () => {
    const checked = ours(make({ typ: 'JWT', alg: 'HS256', kid: 'k1' }, claims()))
    assert.ok(checked.ok)
  })

  it('says expired only for a correctly signed token past exp + tolerance', () => {
    assert.deepEqual(ours(make(HEADER, claims({ exp: NOW - 6 }))), { ok: false, reason: 'expired' })
    assert.ok(ours(make(HEADER, claims({ exp: NOW - 4 }))).ok, 'within the clock tolerance')
    const forged = make(HEADER, claims({ exp: NOW - 3600 }), 'another-secret-another-secret-another-secret')
    assert.deepEqual(ours(forged), { ok: false, reason: 'invalid' })
  })

  const payload = b64(claims())
  const goodInput = `${b64(HEADER)}.${payload}`
  const good = `${goodInput}.${mac(goodInput)}`
  const signature = mac(goodInput)
  // The last base64url character of 32 bytes carries 4 bits and 2 padding bits: flipping a
  // padding bit gives another string for the same bytes.
  const lastIndex = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.indexOf(signature.at(-1)!)
  const nonCanonical = signature.slice(0, -1) + 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'[lastIndex ^ 1]!

  /** [name, token, our verdict where it deliberately differs from fast-jwt's] */
  const corpus: Array<[string, string, boolean?]> = [
    ['a good token', good],
    ['alg none, no signature', `${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`],
    ['alg none with the HS256 signature', (() => { const i = `${b64({ alg: 'none' })}.${payload}`; return `${i}.${mac(i)}` })()],
    ['alg HS512', (() => { const i = `${b64({ alg: 'HS512', typ: 'JWT' })}.${payload}`; return `${i}.${createHmac('sha512', SECRET).update(i).digest('base64url')}` })()],
    ['alg hs256 (case)', make({ alg: 'hs256' }, claims())],
    ['alg RS256 header, HS256 MAC', make({ alg: 'RS256' }, claims())],
    ['no alg', make({ typ: 'JWT' }, claims())],
    ['header an array', make(['HS256'], claims())],
    ['header not JSON', (() => { const i = `${b64('{alg')}.${payload}`; return `${i}.${mac(i)}` })()],
    ['crit with an unknown extension', make({ ...HEADER, crit: ['exp'], exp: 1 }, claims())],
    ['typ at+jwt (stricter: only JWT)', make({ alg: 'HS256', typ: 'at+jwt' }, claims()), false],
    ['wrong secret', make(HEADER, claims(), 'another-secret-another-secret-another-secret')],
    ['signature cut short', good.slice(0, -1)],
    ['signature one character long', `${goodInput}.${signature}A`],
    ['signature with padding', `${good}=`],
    ['signature in standard base64', `${goodInput}.${Buffer.from(signature, 'base64url').toString('base64')}`],
    ['signature, non-canonical last character (stricter: one encoding per MAC)', `${goodInput}.${nonCanonical}`, false],
    ['payload re-encoded with padding', (() => { const i = `${b64(HEADER)}.${Buffer.from(JSON.stringify(claims())).toString('base64')}`; return `${i}.${mac(i)}` })()],
    ['four segments', `${good}.${signature}`],
    ['two segments', goodInput],
    ['empty header', `.${payload}.${mac(`.${payload}`)}`],
    ['empty payload', (() => { const i = `${b64(HEADER)}.`; return `${i}.${mac(i)}` })()],
    ['whitespace around', ` ${good} `],
    ['a tampered payload', `${b64(HEADER)}.${b64(claims({ role: 'admin' }))}.${signature}`],
    ['payload an array', make(HEADER, [1, 2, 3])],
    ['payload a number', make(HEADER, 42)],
    ['payload null', make(HEADER, null)],
    ['payload not JSON', (() => { const i = `${b64(HEADER)}.${b64('{"sub":')}`; return `${i}.${mac(i)}` })()],
    ['wrong issuer', make(HEADER, claims({ iss: 'evil' }))],
    ['issuer with a prefix', make(HEADER, claims({ iss: `${ISSUER}x` }))],
    ['issuer as an array', make(HEADER, claims({ iss: [ISSUER] }))],
    ['no issuer', make(HEADER, claims({ iss: undefined }))],
    ['no sub', make(HEADER, claims({ sub: undefined }))],
    ['sub a number (stricter: must be a string)', make(HEADER, claims({ sub: 7 })), false],
    ['no jti', make(HEADER, claims({ jti: undefined }))],
    ['no iat', make(HEADER, claims({ iat: undefined }))],
    ['iat a string (stricter: must be a number)', make(HEADER, claims({ iat: 'yesterday' })), false],
    ['no exp', make(HEADER, claims({ exp: undefined }))],
    ['exp a string', make(HEADER, claims({ exp: String(NOW + 600) }))],
    ['exp null', make(HEADER, claims({ exp: null }))],
    ['expired long ago', make(HEADER, claims({ exp: NOW - 3600 }))],
    ['expired within tolerance', make(HEADER, claims({ exp: NOW - 4 }))],
    ['expired just beyond tolerance', make(HEADER, claims({ exp: NOW - 6 }))],
    ['nbf in the future', make(HEADER, claims({ nbf: NOW + 3600 }))],
    ['nbf within tolerance', make(HEADER, claims({ nbf: NOW + 4 }))],
    ['nbf in the past', make(HEADER, claims({ nbf: NOW - 60 }))],
    ['nbf a string', make(HEADER, claims({ nbf: 'soon' }))],
    ['__proto__ in the payload', (() => { const i = `${b64(HEADER)}.${b64(`{"__proto__":{"iss":"${ISSUER}"},"sub":"alice","jti":"j","iat":${NOW},"exp":${NOW + 60}}`)}`; return `${i}.${mac(i)}` })()],
    ['empty string', ''],
    ['garbage', '!!!.###.$$$']
  ]

  for (const [name, token, deliberately] of corpus) {
    it(`${name}: ${deliberately === undefined ? 'agrees with fast-jwt' : 'differs from fast-jwt on purpose'}`, () => {
      const accepted = ours(token).ok
      const expected = deliberately ?? referenceAccepts(token)
      assert.equal(accepted, expected, `ours ${accepted ? 'accepts' : 'refuses'}, ${deliberately === undefined ? 'fast-jwt' : 'the case'} ${expected ? 'accepts' : 'refuses'}`)
      if (deliberately !== undefined) assert.equal(referenceAccepts(token), true, 'the case is stricter than fast-jwt, which accepts it')
    })
  }

  it('never accepts a random mutation fast-jwt refuses (2,000 seeded mutations of a good token)', () => {
    let seed = 0x5eed
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed % n
    }
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ '
    let accepted = 0
    for (let i = 0; i < 2000; i++) {
      const chars = [...good]
      const edits = 1 + random(3)
      for (let e = 0; e < edits; e++) {
        const at = random(chars.length)
        const kind = random(3)
        if (kind === 0) chars[at] = alphabet[random(alphabet.length)]!
        else if (kind === 1) chars.splice(at, 1)
        else chars.splice(at, 0, alphabet[random(alphabet.length)]!)
      }
      const token = chars.join('')
      const ok = ours(token).ok
      if (ok) accepted++
      if (ok) assert.equal(referenceAccepts(token), true, `accepted a token fast-jwt refuses: ${token}`)
    }
    // A mutation that leaves the token intact (e.g. a character replaced by itself) is accepted by both.
    assert.ok(accepted < 100, `${accepted} of 2,000 mutations accepted`)
  })
})
