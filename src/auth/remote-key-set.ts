import { createLocalJWKSet, errors, type FlattenedJWSInput, type JSONWebKeySet, type JWSHeaderParameters } from 'jose'
import { Errors } from '../errors.js'

/**
 * The identity provider's public keys, fetched from its JWKS URL (IDP_JWKS_URL) and kept in
 * memory. jose picks the key of a token (by `kid`, `alg` and key type) from the cached set;
 * this module decides when to fetch it again:
 *
 * - **first use**: the set is fetched (once, whoever asks meanwhile waits for that fetch); the
 *   plugin starts it at boot so the first handshake does not wait;
 * - **age**: a set older than `maxAgeMs` is fetched again in the background while the cached
 *   one keeps answering;
 * - **unknown kid** (the provider rotated its keys): the set is fetched again, then the kid
 *   looked up once more, but at most once per `cooldownMs`. Made-up kids in a flood of tokens
 *   therefore cost the provider one request per cooldown, not one each;
 * - **provider unreachable**: the cached set keeps answering (stale) up to `maxStaleMs` after
 *   its last successful fetch; a failed fetch is not retried within `cooldownMs`. With no set
 *   at all, or one older than `maxStaleMs`, tokens cannot be checked: a temporary 503
 *   (SB_ERR_UNAVAILABLE), never a 401 that would send clients to sign in again.
 *
 * A response is bounded (`MAX_JWKS_BYTES`, `FETCH_TIMEOUT_MS`) and must be a JWKS document
 * that jose accepts; anything else counts as a failed fetch.
 */
export interface RemoteKeySet {
  /** jose's key resolver (`jwtVerify(token, keySet.key, ...)`). */
  key(header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey>
  /** Starts the first fetch now; a failure is logged, not thrown. */
  warm(): void
}

export interface RemoteKeySetOptions {
  url: string
  maxAgeMs: number
  cooldownMs: number
  maxStaleMs: number
  log: { warn(obj: object, msg: string): void }
  /** The clock, in ms (tests). */
  now?: () => number
}

export const FETCH_TIMEOUT_MS = 5000
/** Providers publish a handful of keys, a few KB; a larger answer is not a key set. */
export const MAX_JWKS_BYTES = 256 * 1024

type KeyResolver = ReturnType<typeof createLocalJWKSet>

export function createRemoteKeySet (options: RemoteKeySetOptions): RemoteKeySet {
  const { url, maxAgeMs, cooldownMs, maxStaleMs, log } = options
  const now = options.now ?? Date.now
  // For logs: a URL may carry credentials or a signed query; the origin and path say enough.
  const where = new URL(url).origin + new URL(url).pathname
  let keys: KeyResolver | null = null
  /** When the set in `keys` was fetched; when a fetch last started; when an unknown kid last caused one. */
  let fetchedAt = -Infinity
  let attemptedAt = -Infinity
  let unknownKidAt = -Infinity
  let inflight: Promise<void> | null = null

  function load (): Promise<void> {
    inflight ??= (async () => {
      attemptedAt = now()
      try {
        const resolver = createLocalJWKSet(await download(url))
        keys = resolver
        fetchedAt = now()
      } finally {
        inflight = null
      }
    })()
    return inflight
  }

  const unavailable = (): Error => new Errors.Unavailable('The identity provider\'s keys cannot be fetched; retry later')

  async function current (): Promise<KeyResolver> {
    if (keys === null) {
      // Nothing cached: wait for a fetch, but do not retry a failed one within the cooldown.
      if (inflight === null && now() - attemptedAt < cooldownMs) throw unavailable()
      await load().catch((err: unknown) => {
        log.warn({ err, url: where }, 'identity provider keys: fetch failed')
        throw unavailable()
      })
    } else if (now() - fetchedAt > maxAgeMs && inflight === null && now() - attemptedAt >= cooldownMs) {
      load().catch((err: unknown) => log.warn({ err, url: where }, 'identity provider keys: refresh failed; the cached keys keep answering'))
    }
    if (keys === null || now() - fetchedAt > maxStaleMs) throw unavailable()
    return keys
  }

  return {
    async key (header, token) {
      const resolver = await current()
      try {
        return await resolver(header, token)
      } catch (err) {
        if (!(err instanceof errors.JWKSNoMatchingKey)) throw err
        // A fetch under way may bring the key: wait for it rather than start another.
        if (inflight === null) {
          if (now() - unknownKidAt < cooldownMs) throw err
          unknownKidAt = now()
        }
        await load().catch((fetchErr: unknown) => log.warn({ err: fetchErr, url: where }, 'identity provider keys: fetch for an unknown key failed'))
        if (keys === null) throw err
        return await keys(header, token)
      }
    },
    warm () {
      if (keys === null && inflight === null) load().catch((err: unknown) => log.warn({ err, url: where }, 'identity provider keys: first fetch failed; retried when a token needs them'))
    }
  }
}

/** GETs the JWKS document, bounded in time and size, and checks its outline (jose checks the keys). */
async function download (url: string): Promise<JSONWebKeySet> {
  const response = await fetch(url, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) })
  if (!response.ok || response.body === null) {
    await response.body?.cancel()
    throw new Error(`the JWKS URL answered ${response.status}`)
  }
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of response.body) {
    size += chunk.byteLength
    if (size > MAX_JWKS_BYTES) throw new Error(`the JWKS document is larger than ${MAX_JWKS_BYTES} bytes`)
    chunks.push(chunk)
  }
  const document: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  if (typeof document !== 'object' || document === null || !Array.isArray((document as { keys?: unknown }).keys)) {
    throw new Error('the JWKS URL did not answer a JSON Web Key Set ({"keys": [...]})')
  }
  return document as JSONWebKeySet
}
