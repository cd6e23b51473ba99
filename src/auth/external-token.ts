import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto'
import { errors, jwtVerify, type FlattenedJWSInput, type JWSHeaderParameters } from 'jose'
import type { IdpAlgorithm, IdpConfig } from '../config.js'
import { mapExternalClaims, type ExternalUser } from './external-claims.js'
import { createRemoteKeySet, type RemoteKeySet } from './remote-key-set.js'
import { ROOM_TOKEN_TYPE } from './room-token-claims.js'

/**
 * Verification of the access tokens of the application's identity provider, with jose (no
 * crypto of our own). Strict, whatever the token says about itself:
 *
 * - the algorithm is one of IDP_ALGORITHMS (never `none`: jose has no such verifier, and the
 *   config accepts no such name);
 * - the key is chosen by the algorithm family, never by the token: an HS* token is checked
 *   with IDP_HMAC_SECRET and nothing else (and only when it is set), every other algorithm
 *   with the public keys (the JWKS or the PEM file). So a public key can never serve as an HMAC
 *   secret (the RS256 → HS256 confusion attack), and jose refuses a key whose type does not
 *   fit the algorithm besides;
 * - `iss` equals IDP_ISSUER, `aud` holds one of IDP_AUDIENCE, `exp` is present and, like
 *   `nbf`, checked with IDP_CLOCK_TOLERANCE;
 * - the user claim maps to an id under IDP_USER_PREFIX (external-claims.ts).
 *
 * Which tokens come here at all is decided by their issuer (token-routing.ts).
 */
export interface ExternalTokenVerifier {
  /** IDP_ISSUER: what routes a token here. */
  readonly issuer: string
  /** The JWKS cache, when the keys come from IDP_JWKS_URL. */
  readonly keySet: RemoteKeySet | null
  /** An access token: never one whose payload says `typ: "room"` (a room token, room-token.ts). */
  verify(token: string): Promise<ExternalTokenCheck>
  /**
   * The payload of any token the provider signed, checked as strictly as `verify` checks
   * (algorithm, key, issuer, audience, `exp`) but not read: room tokens (room-token.ts) read it.
   */
  verifySigned(token: string): Promise<SignedPayloadCheck>
}

export type SignedPayloadCheck =
  | { ok: true, payload: Record<string, unknown> }
  | { ok: false, reason: 'invalid' | 'expired', detail: string }

export interface ExternalIdentity extends ExternalUser {
  tokenId: string | null
  /** Epoch seconds. */
  expiresAt: number
}

/** Why a token was refused: `expired`, or `invalid` with jose's code (or `claims`) for the debug log. */
export type ExternalTokenCheck =
  | { ok: true, identity: ExternalIdentity }
  | { ok: false, reason: 'invalid' | 'expired', detail: string }

export interface ExternalTokenVerifierOptions {
  idp: IdpConfig
  log: { warn(obj: object, msg: string): void }
  /** The clock, in ms (tests). */
  now?: () => number
}

const HMAC: ReadonlySet<IdpAlgorithm> = new Set(['HS256', 'HS384', 'HS512'])

export function createExternalTokenVerifier (options: ExternalTokenVerifierOptions): ExternalTokenVerifier {
  const { idp, log } = options
  const now = options.now ?? Date.now
  const hmacKey: KeyObject | null = idp.hmacSecret === null ? null : createSecretKey(Buffer.from(idp.hmacSecret))
  const publicKeys = idp.publicKeys
  const pemKey: KeyObject | null = publicKeys !== null && 'pem' in publicKeys ? createPublicKey(publicKeys.pem) : null
  const keySet: RemoteKeySet | null = publicKeys !== null && 'jwksUrl' in publicKeys
    ? createRemoteKeySet({ url: publicKeys.jwksUrl, ...idp.jwks, log, now })
    : null

  async function keyFor (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<KeyObject | CryptoKey> {
    // jose has already refused an algorithm outside `algorithms` before asking for a key.
    if (HMAC.has(header.alg as IdpAlgorithm)) {
      if (hmacKey === null) throw new errors.JOSEAlgNotAllowed('HMAC tokens need IDP_HMAC_SECRET')
      return hmacKey
    }
    if (pemKey !== null) return pemKey
    if (keySet !== null) return await keySet.key(header, token)
    throw new errors.JOSEAlgNotAllowed('no public key is configured')
  }

  async function verifySigned (token: string): Promise<SignedPayloadCheck> {
    try {
      const { payload } = await jwtVerify(token, keyFor, {
        algorithms: idp.algorithms,
        issuer: idp.issuer,
        audience: idp.audience,
        clockTolerance: idp.clockToleranceSeconds,
        requiredClaims: ['exp'],
        currentDate: new Date(now())
      })
      return { ok: true, payload }
    } catch (err) {
      if (err instanceof errors.JWTExpired) return { ok: false, reason: 'expired', detail: err.code }
      if (err instanceof errors.JOSEError) return { ok: false, reason: 'invalid', detail: err.code }
      // Anything else is no verdict on the token: the key set unavailable (a 503), or a bug.
      throw err
    }
  }

  return {
    issuer: idp.issuer,
    keySet,
    verifySigned,
    async verify (token) {
      const checked = await verifySigned(token)
      if (!checked.ok) return checked
      const { payload } = checked
      // The same keys sign room tokens: one must never pass for an access token.
      if (payload.typ === ROOM_TOKEN_TYPE) return { ok: false, reason: 'invalid', detail: 'room_token' }
      const user = mapExternalClaims(payload, idp)
      if (user === null) return { ok: false, reason: 'invalid', detail: 'user_claim' }
      return {
        ok: true,
        identity: { ...user, tokenId: typeof payload.jti === 'string' ? payload.jti : null, expiresAt: payload.exp as number }
      }
    }
  }
}
