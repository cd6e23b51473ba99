import { createHash, randomBytes, randomUUID } from 'node:crypto'

/**
 * Opaque credentials (refresh tokens, API keys) are random, shown to their owner once, and
 * stored only as a SHA-256 digest: they carry 256 bits of entropy, so a fast hash is enough
 * and lookups stay a single indexed query.
 */
export function digest (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export function newRefreshToken (): string {
  return randomBytes(32).toString('base64url')
}

/** API keys look like `sbk_<43 chars>`: the prefix makes a leaked key easy to recognise in scanners. */
export const API_KEY_PREFIX = 'sbk_'

export function newApiKey (): string {
  return API_KEY_PREFIX + randomBytes(32).toString('base64url')
}

/** The part of a key shown in listings: enough to tell keys apart, useless for authentication. */
export function apiKeyDisplayPrefix (key: string): string {
  return key.slice(0, API_KEY_PREFIX.length + 6)
}

export function newId (): string {
  return randomUUID()
}
