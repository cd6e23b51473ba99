import { createSecretKey, type KeyObject } from 'node:crypto'
import { errors, jwtVerify } from 'jose'
import type { ExternalTokenVerifier } from './external-token.js'
import { isExternalUserId } from './external-claims.js'
import { MAX_ROOM_TOKEN_LENGTH, readRoomClaims, type RoomTokenGrant } from './room-token-claims.js'
import { unverifiedIssuer } from './token-routing.js'

/**
 * Verification of room tokens, with jose (no crypto of our own), by one of two keys:
 *
 * - ROOM_TOKEN_SECRET: HS256 only, pinned (no other algorithm, no `none`); `exp` required.
 *   The application's backend mints these for any user, built-in or external.
 * - the identity provider's keys, for a token whose `iss` is IDP_ISSUER: checked exactly as
 *   its access tokens are (external-token.ts: pinned algorithms, the key chosen by the
 *   algorithm family, issuer, audience, `exp`). The provider is trusted with its own users
 *   only, so such a token's `sub` must be an id under IDP_USER_PREFIX.
 *
 * Either way the payload must say `typ: "room"` and carry usable `sub`, `rooms` and `ops`
 * (room-token-claims.ts), and `exp` may be at most ROOM_TOKEN_MAX_TTL (plus the clock
 * tolerance) away: a leaked token is worth little for long.
 */
export interface RoomTokenVerifier {
  verify(token: string): Promise<RoomTokenCheck>
}

export type RoomTokenCheck =
  | { ok: true, grant: RoomTokenGrant, /** The tolerance the expiry was checked with (s): a live subscription ends at exp plus it. */ toleranceSeconds: number }
  | { ok: false, reason: 'invalid' | 'expired', detail: string }

export interface RoomTokenVerifierOptions {
  /** ROOM_TOKEN_SECRET; null: only the identity provider signs room tokens. */
  secret: string | null
  maxTtlSeconds: number
  /** The tolerance for tokens signed with the secret (JWT_CLOCK_TOLERANCE). */
  clockToleranceSeconds: number
  /** The identity provider's verifier, when one is configured. */
  external: ExternalTokenVerifier | null
  /** IDP_USER_PREFIX: the provider names its own users only. */
  externalUserPrefix: string
  externalClockToleranceSeconds: number
  /** The clock, in ms (tests). */
  now?: () => number
}

export function createRoomTokenVerifier (options: RoomTokenVerifierOptions): RoomTokenVerifier {
  const { external, maxTtlSeconds, clockToleranceSeconds } = options
  const now = options.now ?? Date.now
  const key: KeyObject | null = options.secret === null ? null : createSecretKey(Buffer.from(options.secret))

  async function withSecret (secret: KeyObject, token: string): Promise<RoomTokenCheck> {
    let payload
    try {
      ({ payload } = await jwtVerify(token, secret, {
        algorithms: ['HS256'],
        clockTolerance: clockToleranceSeconds,
        requiredClaims: ['exp'],
        currentDate: new Date(now())
      }))
    } catch (err) {
      if (err instanceof errors.JWTExpired) return { ok: false, reason: 'expired', detail: err.code }
      if (err instanceof errors.JOSEError) return { ok: false, reason: 'invalid', detail: err.code }
      throw err
    }
    return claims(payload, clockToleranceSeconds)
  }

  async function withProvider (verifier: ExternalTokenVerifier, token: string): Promise<RoomTokenCheck> {
    const checked = await verifier.verifySigned(token)
    if (!checked.ok) return checked
    const result = claims(checked.payload, options.externalClockToleranceSeconds)
    if (result.ok && !isExternalUserId(result.grant.userId, options.externalUserPrefix)) return { ok: false, reason: 'invalid', detail: 'sub_not_external' }
    return result
  }

  function claims (payload: Record<string, unknown>, toleranceSeconds: number): RoomTokenCheck {
    const grant = readRoomClaims(payload, now() / 1000 + maxTtlSeconds + toleranceSeconds)
    return typeof grant === 'string' ? { ok: false, reason: 'invalid', detail: grant } : { ok: true, grant, toleranceSeconds }
  }

  return {
    async verify (token) {
      // Before anything reads it: no payload of a 200 KB token is decoded to find its issuer.
      if (token.length === 0 || token.length > MAX_ROOM_TOKEN_LENGTH) return { ok: false, reason: 'invalid', detail: 'length' }
      // As for access tokens (token-routing.ts), the unverified issuer only picks the one
      // verifier whose verdict is final; each checks what it trusts again.
      if (external !== null && unverifiedIssuer(token) === external.issuer) return await withProvider(external, token)
      if (key !== null) return await withSecret(key, token)
      return { ok: false, reason: 'invalid', detail: 'no_key' }
    }
  }
}
