// A stand-in for an application's identity provider, shared by test/external-identity.test.ts and
// test/hostile/idp.test.ts: key pairs made with jose, a real JWKS server on node:http that
// counts its requests and can be taken down, and tokens signed with jose's SignJWT.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { TestContext } from 'node:test'
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose'

export const ISSUER = 'https://idp.test/'
export const AUDIENCE = 'switchboard'

export type SigningAlg = 'RS256' | 'PS256' | 'ES256' | 'EdDSA'

export interface IdpKey {
  alg: SigningAlg
  kid: string
  privateKey: CryptoKey
  publicJwk: JWK
  /** The public key as PEM (SPKI). */
  publicPem: string
}

export async function idpKey (alg: SigningAlg, kid: string): Promise<IdpKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  const publicJwk = { ...await exportJWK(publicKey), kid, alg, use: 'sig' }
  return { alg, kid, privateKey, publicJwk, publicPem: await exportSPKI(publicKey) }
}

export interface JwksServer {
  url: string
  /** The keys served: change it to rotate. */
  keys: JWK[]
  /** GET requests received so far. */
  requests: () => number
  /** Stops answering: the port closes, open connections end. */
  stop: () => Promise<void>
}

export async function jwksServer (t: TestContext, keys: JWK[]): Promise<JwksServer> {
  let requests = 0
  const state = { keys }
  const server = http.createServer((req, res) => {
    requests++
    if (req.url !== '/jwks') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  let stopped: Promise<void> | null = null
  const stop = (): Promise<void> => {
    stopped ??= new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
    return stopped
  }
  t.after(stop)
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    get keys () { return state.keys },
    set keys (next: JWK[]) { state.keys = next },
    requests: () => requests,
    stop
  }
}

/** The env of a server that trusts `jwks` (RS256, ES256 and EdDSA unless `algorithms` says otherwise). */
export function jwksEnv (jwks: JwksServer, extra: Record<string, string> = {}): Record<string, string> {
  return { IDP_JWKS_URL: jwks.url, IDP_ISSUER: ISSUER, IDP_AUDIENCE: AUDIENCE, IDP_ALGORITHMS: 'RS256,ES256,EdDSA', ...extra }
}

export interface TokenOptions {
  issuer?: string
  audience?: string | string[]
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number
  kid?: string
  claims?: JWTPayload
}

/** A token of the identity provider for `sub`, signed with `key`. */
export async function idpToken (key: IdpKey, sub: string, options: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ ...options.claims })
    .setProtectedHeader({ alg: key.alg, kid: options.kid ?? key.kid, typ: 'JWT' })
    .setIssuer(options.issuer ?? ISSUER)
    .setAudience(options.audience ?? AUDIENCE)
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresIn ?? 300))
    .sign(key.privateKey)
}

/** A token signed with an HMAC secret (a backend's own tokens, or an attacker's). */
export async function hmacToken (secret: string | Uint8Array, sub: string, options: TokenOptions & { alg?: 'HS256' | 'HS384' | 'HS512' } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const key = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret
  return await new SignJWT({ ...options.claims })
    .setProtectedHeader({ alg: options.alg ?? 'HS256', typ: 'JWT', ...(options.kid === undefined ? {} : { kid: options.kid }) })
    .setIssuer(options.issuer ?? ISSUER)
    .setAudience(options.audience ?? AUDIENCE)
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresIn ?? 300))
    .sign(key)
}

/** An unsecured JWT (`alg: none`, empty signature) with the identity provider's claims. */
export function unsecuredToken (sub: string): string {
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const now = Math.floor(Date.now() / 1000)
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: ISSUER, aud: AUDIENCE, sub, iat: now, exp: now + 300 })}.`
}

/** ROOM_TOKEN_SECRET of the room-token tests: what the application's backend signs room tokens with. */
export const ROOM_SECRET = 'the-backend-signs-room-tokens-with-this-0123456789'

export interface RoomTokenOptions {
  /** The claims besides `exp`; `typ: "room"` unless given (even as undefined, to leave it out). */
  claims: Record<string, unknown>
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number
  /** With a secret: the HMAC algorithm (HS256 unless given). */
  alg?: 'HS256' | 'HS384' | 'HS512'
}

/**
 * A room token as a backend mints one (docs/integration.md): HS256 with `secret`, or signed by
 * the identity provider's `key` with its issuer and audience.
 */
export async function roomToken (signer: string | IdpKey, options: RoomTokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT({ typ: 'room', ...options.claims }).setIssuedAt(now).setExpirationTime(now + (options.expiresIn ?? 300))
  if (typeof signer === 'string') {
    return await jwt.setProtectedHeader({ alg: options.alg ?? 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(signer))
  }
  return await jwt.setProtectedHeader({ alg: signer.alg, kid: signer.kid, typ: 'JWT' }).setIssuer(ISSUER).setAudience(AUDIENCE).sign(signer.privateKey)
}
