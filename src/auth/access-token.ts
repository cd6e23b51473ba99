import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto'

/**
 * Verification of Switchboard's access tokens: JWS compact serialisation, HS256 only
 * (RFC 7515, 7518 §3.2, 7519). Tokens are signed by @fastify/jwt (plugins/auth.ts); they are
 * verified here because verification runs on every WebSocket handshake and every
 * authenticated request, and the general-purpose verifier (fast-jwt behind @fastify/jwt) cost
 * several times this one per handshake, a reconnect storm's largest single item after the
 * kernel's (docs/performance.md, "Handshakes"). This one does only what our tokens need,
 * strictly, in this order:
 *
 * 1. shape: three base64url segments (unpadded alphabet only) and a signature of exactly the
 *    43 characters of a SHA-256 MAC — so no other encoding of the same bytes is accepted;
 * 2. signature: HMAC-SHA-256 of `header.payload` with the secret, compared in constant time;
 * 3. header: a JSON object whose `alg` is `HS256` (no other algorithm, no `none`), `typ` JWT
 *    if present, no `crit` (we understand no extension);
 * 4. claims: a JSON object with `iss` equal to the issuer, no `typ` (room tokens carry one),
 *    `sub` and `jti` strings, `iat` and `exp` numbers; `exp` and `nbf` (if present) checked with the clock tolerance.
 *
 * test/access-token.test.ts checks it against fast-jwt with the same options, token by token.
 */

/** Every claim an access token must carry; `role` is checked by the caller (plugins/auth.ts). */
export interface VerifiedClaims {
  iss: string
  sub: string
  jti: string
  iat: number
  exp: number
  nbf?: number
  [claim: string]: unknown
}

export type TokenCheck = { ok: true, claims: VerifiedClaims } | { ok: false, reason: 'invalid' | 'expired' }

export interface AccessTokenVerifierOptions {
  secret: string
  issuer: string
  clockToleranceMs: number
  /** The clock, in ms (tests). */
  now?: () => number
}

/** `header.payload.signature`, unpadded base64url, the signature the 43 characters of 32 bytes. */
const COMPACT_HS256 = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/
/** The header @fastify/jwt writes, `{"alg":"HS256","typ":"JWT"}`: recognised without parsing. */
const STANDARD_HEADER = Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url')

const INVALID: TokenCheck = { ok: false, reason: 'invalid' }
const EXPIRED: TokenCheck = { ok: false, reason: 'expired' }

export function createAccessTokenVerifier (options: AccessTokenVerifierOptions): (token: string) => TokenCheck {
  const { issuer, clockToleranceMs } = options
  const now = options.now ?? Date.now
  const key: KeyObject = createSecretKey(Buffer.from(options.secret))

  return (token) => {
    if (!COMPACT_HS256.test(token)) return INVALID
    const signed = token.lastIndexOf('.')
    const mac = createHmac('sha256', key).update(token.slice(0, signed), 'latin1').digest('base64url')
    // Both 43 ASCII characters (the pattern above): equal lengths, as timingSafeEqual needs.
    if (!timingSafeEqual(Buffer.from(mac, 'latin1'), Buffer.from(token.slice(signed + 1), 'latin1'))) return INVALID

    const dot = token.indexOf('.')
    const header = token.slice(0, dot)
    if (header !== STANDARD_HEADER && !acceptableHeader(decodeJson(header))) return INVALID
    const claims = decodeJson(token.slice(dot + 1, signed))
    // Our access tokens carry no `typ` claim; a room token (`typ: "room"`) is never one.
    if (claims === null || claims.iss !== issuer || claims.typ !== undefined || typeof claims.sub !== 'string' || typeof claims.jti !== 'string' ||
        !isNumericDate(claims.iat) || !isNumericDate(claims.exp) || (claims.nbf !== undefined && !isNumericDate(claims.nbf))) {
      return INVALID
    }
    const at = now()
    if (typeof claims.nbf === 'number' && at < claims.nbf * 1000 - clockToleranceMs) return INVALID
    if (at > (claims.exp as number) * 1000 + clockToleranceMs) return EXPIRED
    return { ok: true, claims: claims as VerifiedClaims }
  }
}

/** A JSON object from a base64url segment, or null for anything else (array, number, bad JSON). */
function decodeJson (segment: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null
  } catch {
    return null
  }
}

function acceptableHeader (header: Record<string, unknown> | null): boolean {
  return header !== null && header.alg === 'HS256' && (header.typ === undefined || header.typ === 'JWT') && header.crit === undefined
}

function isNumericDate (value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value)
}
