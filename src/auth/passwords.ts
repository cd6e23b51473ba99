import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/**
 * Password hashing with scrypt from node:crypto (no native addon to build). The default cost
 * is one of OWASP's scrypt settings (N=2^15, r=8, p=3: 32 MiB, ~0.3 s on one core); the
 * parameters are stored with each hash, so the cost can be raised later
 * (PASSWORD_HASH_COST) without invalidating existing passwords.
 */
export const DEFAULT_HASH_COST = 15
const KEY_LENGTH = 32
// scrypt needs 128 * N * r bytes; leave headroom over Node's 32 MiB default.
const MAX_MEM = 256 * 1024 * 1024

function derive (password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, KEY_LENGTH, { ...options, maxmem: MAX_MEM }, (err, key) => {
      if (err !== null) reject(err)
      else resolve(key)
    })
  })
}

/** Hashes a password; `cost` is log2 of scrypt's N. */
export async function hashPassword (password: string, cost = DEFAULT_HASH_COST): Promise<string> {
  const params = { N: 2 ** cost, r: 8, p: 3 }
  const salt = randomBytes(16)
  const key = await derive(password, salt, params)
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64url')}$${key.toString('base64url')}`
}

export async function verifyPassword (password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [, n, r, p, salt, expected] = parts as [string, string, string, string, string, string]
  // Refuse parameters no hash of ours has: a tampered row must not make login allocate gigabytes.
  if (!(Number(n) <= 2 ** 20 && Number(r) <= 16 && Number(p) <= 16)) return false
  const expectedKey = Buffer.from(expected, 'base64url')
  const key = await derive(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) })
  return key.length === expectedKey.length && timingSafeEqual(key, expectedKey)
}

/**
 * The password hash of an account that has none (a user of the identity provider, recorded
 * when it joined a room): not of the `scrypt$` form, so verifyPassword refuses every password.
 */
export const NO_PASSWORD = '!'

let dummyHash: Promise<string> | undefined
/**
 * A hash to verify against when the user does not exist, so a login for an unknown name
 * costs the same time as a wrong password and does not reveal which names exist.
 */
export function dummyPasswordHash (cost = DEFAULT_HASH_COST): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'), cost)
  return dummyHash
}
