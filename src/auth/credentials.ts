import type { IncomingHttpHeaders } from 'node:http'
import { Errors } from '../errors.js'
import { ABSENT, REPEATED, queryParam } from '../url-query.js'

/**
 * The one reader of what a request presents as credentials: REST routes (plugins/auth.ts),
 * /metrics (its scrape token) and the WebSocket handshake (routes/ws). It only reads and
 * classifies; checking a token or a key is plugins/auth.ts's `identify`.
 *
 * Where a credential may come from:
 * - every request: `Authorization: Bearer <token>`, else `X-API-Key: <key>`;
 * - the WebSocket handshake also, for clients that cannot set headers (browsers): the
 *   `bearer.<token>` entry of `Sec-WebSocket-Protocol`, `?token=` and `?api_key=`.
 * The first source present wins, in this order: Authorization, the subprotocol, `?token=`,
 * X-API-Key, `?api_key=`. An Authorization header that is not a bearer token, a parameter given
 * twice (which one was meant is anyone's guess) or an oversized key is refused, never skipped.
 */

/** Where a credential was read. */
export type CredentialSource = 'authorization' | 'subprotocol' | 'query' | 'x-api-key'

export type Credentials =
  | { readonly kind: 'none' }
  | { readonly kind: 'token', readonly token: string, readonly from: 'authorization' | 'subprotocol' | 'query' }
  | { readonly kind: 'apiKey', readonly key: string, readonly from: 'x-api-key' | 'query' }
  /** Presented but unusable: a non-bearer Authorization, a repeated parameter, an oversized key. */
  | { readonly kind: 'malformed', readonly from: CredentialSource }

/** Plain requests read headers only; the handshake also the subprotocol and the query. */
export type CredentialChannel = 'http' | 'websocket'

/** What a request carries that `readCredentials` reads: an IncomingMessage or a FastifyRequest. */
export interface CredentialCarrier {
  readonly headers: IncomingHttpHeaders
  readonly url?: string | undefined
}

/** An API key longer than this is refused unhashed: the keys the server issues are far shorter. */
export const MAX_API_KEY_LENGTH = 256

/** `Sec-WebSocket-Protocol: switchboard.v1, bearer.<jwt>`: how browsers, which cannot set headers, send a token. */
export const BEARER_PROTOCOL_PREFIX = 'bearer.'

const BEARER = /^Bearer +(\S+) *$/i
const NONE: Credentials = { kind: 'none' }

/**
 * What `request` presents, read on `channel`'s terms (see above). Allocates nothing beyond the
 * credential's own text and the result: no URL or URLSearchParams is built for the query.
 */
export function readCredentials (request: CredentialCarrier, channel: CredentialChannel): Credentials {
  const { headers } = request
  const authorization = headers.authorization
  if (authorization !== undefined) {
    const token = BEARER.exec(authorization)?.[1]
    return token === undefined ? { kind: 'malformed', from: 'authorization' } : { kind: 'token', token, from: 'authorization' }
  }
  const websocket = channel === 'websocket'
  const url = websocket ? request.url : undefined
  if (websocket) {
    const token = subprotocolToken(headers['sec-websocket-protocol'])
    if (token !== undefined) return { kind: 'token', token, from: 'subprotocol' }
    if (url !== undefined) {
      const fromQuery = queryParam(url, 'token')
      if (fromQuery === REPEATED) return { kind: 'malformed', from: 'query' }
      if (fromQuery !== ABSENT) return { kind: 'token', token: fromQuery, from: 'query' }
    }
  }
  const headerKey = headers['x-api-key']
  if (typeof headerKey === 'string') return apiKey(headerKey, 'x-api-key')
  if (url !== undefined) {
    const fromQuery = queryParam(url, 'api_key')
    if (fromQuery === REPEATED) return { kind: 'malformed', from: 'query' }
    if (fromQuery !== ABSENT) return apiKey(fromQuery, 'query')
  }
  return NONE
}

function apiKey (key: string, from: 'x-api-key' | 'query'): Credentials {
  return key.length <= MAX_API_KEY_LENGTH ? { kind: 'apiKey', key, from } : { kind: 'malformed', from }
}

/** The token of the first `bearer.` entry of a comma-separated protocol list (maybe empty), or undefined. */
function subprotocolToken (protocols: string | undefined): string | undefined {
  if (protocols === undefined) return undefined
  let at = 0
  while (at <= protocols.length) {
    let end = protocols.indexOf(',', at)
    if (end === -1) end = protocols.length
    const entry = protocols.slice(at, end).trim()
    if (entry.startsWith(BEARER_PROTOCOL_PREFIX)) return entry.slice(BEARER_PROTOCOL_PREFIX.length)
    at = end + 1
  }
  return undefined
}

/** Why a token was refused, for metrics and logs only: a client is told "invalid or expired" either way. */
export type AccessTokenRefusal = 'invalid' | 'expired' | 'revoked' | 'account_closed'

/** Why presented credentials identify nobody: nothing presented, or why a token or key was refused. */
export type CredentialRefusal = 'missing' | AccessTokenRefusal

/** What a client is told: 401 either way, "unauthorized" when it sent nothing, else "invalid token" (never why). */
export function credentialError (refusal: CredentialRefusal): Error {
  return refusal === 'missing' ? new Errors.Unauthorized() : new Errors.InvalidToken()
}
