import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { generateKeyPairSync } from 'node:crypto'
import { ConfigError, loadConfig } from '../../src/config.js'
import { tempDir } from '../helper.js'

const GOOD_SECRET = 'a-production-secret-that-is-long-enough-0123456789'
const HMAC = 'the-backend-shares-this-hmac-secret-0123456789'
const JWKS = { IDP_JWKS_URL: 'https://idp.example.com/.well-known/jwks.json', IDP_ISSUER: 'https://idp.example.com/', IDP_AUDIENCE: 'switchboard' }

function failsNaming (env: Record<string, string>, variable: string): void {
  assert.throws(() => loadConfig(env), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    assert.match(err.message, new RegExp(`\\b${variable}\\b`), `message should name ${variable}: ${err.message}`)
    return true
  }, JSON.stringify(env))
}

describe('config: the identity provider', () => {
  it('is off, and accounts built-in, without a key source', (t) => {
    const config = loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET })
    assert.equal(config.idp, null)
    assert.equal(config.accounts, 'builtin')
  })

  it('reads a JWKS source with its defaults: both kinds of accounts, the public-key algorithms', (t) => {
    const config = loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET, ...JWKS, IDP_AUDIENCE: 'switchboard, api' })
    assert.equal(config.accounts, 'both')
    assert.deepEqual(config.idp, {
      publicKeys: { jwksUrl: JWKS.IDP_JWKS_URL },
      hmacSecret: null,
      algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
      issuer: JWKS.IDP_ISSUER,
      audience: ['switchboard', 'api'],
      clockToleranceSeconds: 5,
      userClaim: 'sub',
      userPrefix: 'ext:',
      admin: null,
      nameClaim: null,
      jwks: { maxAgeMs: 600_000, cooldownMs: 30_000, maxStaleMs: 3_600_000 }
    })
  })

  it('reads a PEM file and an HMAC secret, with the HMAC algorithms only when the secret is set', (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'idp.pem')
    writeFileSync(file, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }))
    const pem = loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, IDP_PUBLIC_KEY_FILE: file, IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb', IDP_ALGORITHMS: 'ES256' })
    assert.ok(pem.idp?.publicKeys !== null && pem.idp?.publicKeys !== undefined && 'pem' in pem.idp.publicKeys)
    assert.deepEqual(pem.idp.algorithms, ['ES256'])
    const hmac = loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, IDP_HMAC_SECRET: HMAC, IDP_ISSUER: 'backend', IDP_AUDIENCE: 'sb', AUTH_ACCOUNTS: 'external' })
    assert.deepEqual(hmac.idp?.algorithms, ['HS256', 'HS384', 'HS512'])
    assert.equal(hmac.accounts, 'external')
  })

  it('refuses what would open a confusion or leave a token unchecked, naming the variable', (t) => {
    const dir = tempDir(t)
    const base = { DATA_DIR: dir, JWT_SECRET: GOOD_SECRET }
    const cases: Array<[Record<string, string>, string]> = [
      [{ IDP_JWKS_URL: JWKS.IDP_JWKS_URL, IDP_AUDIENCE: 'sb' }, 'IDP_ISSUER'],
      [{ IDP_HMAC_SECRET: HMAC, IDP_AUDIENCE: 'sb' }, 'IDP_ISSUER'],
      [{ IDP_PUBLIC_KEY_FILE: join(dir, 'missing.pem'), IDP_AUDIENCE: 'sb' }, 'IDP_ISSUER'],
      [{ IDP_JWKS_URL: JWKS.IDP_JWKS_URL, IDP_ISSUER: 'idp' }, 'IDP_AUDIENCE'],
      [{ ...JWKS, IDP_ALGORITHMS: 'none' }, 'IDP_ALGORITHMS'],
      [{ ...JWKS, IDP_ALGORITHMS: 'RS256,none' }, 'IDP_ALGORITHMS'],
      [{ ...JWKS, IDP_ALGORITHMS: 'RS256,HS256' }, 'IDP_ALGORITHMS'],
      [{ IDP_HMAC_SECRET: HMAC, IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb', IDP_ALGORITHMS: 'RS256' }, 'IDP_ALGORITHMS'],
      [{ IDP_HMAC_SECRET: 'short', IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb' }, 'IDP_HMAC_SECRET'],
      [{ IDP_HMAC_SECRET: GOOD_SECRET, IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb' }, 'IDP_HMAC_SECRET'],
      [{ ...JWKS, IDP_ISSUER: 'switchboard' }, 'IDP_ISSUER'],
      [{ ...JWKS, IDP_PUBLIC_KEY_FILE: join(dir, 'x.pem') }, 'IDP_PUBLIC_KEY_FILE'],
      [{ ...JWKS, IDP_JWKS_URL: 'ftp://idp.example.com/jwks' }, 'IDP_JWKS_URL'],
      [{ ...JWKS, NODE_ENV: 'production', IDP_JWKS_URL: 'http://idp.example.com/jwks' }, 'IDP_JWKS_URL'],
      [{ IDP_PUBLIC_KEY_FILE: join(dir, 'missing.pem'), IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb' }, 'IDP_PUBLIC_KEY_FILE'],
      [{ ...JWKS, IDP_USER_PREFIX: 'ext' }, 'IDP_USER_PREFIX'],
      [{ ...JWKS, IDP_USER_PREFIX: 'Ext:' }, 'IDP_USER_PREFIX'],
      [{ ...JWKS, IDP_ADMIN_CLAIM: 'roles' }, 'IDP_ADMIN_VALUE'],
      [{ ...JWKS, IDP_JWKS_COOLDOWN: '0' }, 'IDP_JWKS_COOLDOWN'],
      [{ ...JWKS, IDP_JWKS_MAX_STALE: '1m' }, 'IDP_JWKS_MAX_STALE'],
      [{ ...JWKS, IDP_CLOCK_TOLERANCE: '1h' }, 'IDP_CLOCK_TOLERANCE'],
      [{ IDP_ISSUER: 'idp' }, 'IDP_ISSUER'],
      [{ AUTH_ACCOUNTS: 'external' }, 'AUTH_ACCOUNTS'],
      [{ AUTH_ACCOUNTS: 'everyone' }, 'AUTH_ACCOUNTS'],
      [{ ...JWKS, AUTH_ACCOUNTS: 'external', ADMIN_USERNAME: 'admin', ADMIN_PASSWORD: 'long enough password' }, 'ADMIN_USERNAME']
    ]
    for (const [env, variable] of cases) failsNaming({ ...base, ...env }, variable)
    // The secret is never echoed.
    assert.throws(() => loadConfig({ ...base, IDP_HMAC_SECRET: GOOD_SECRET, IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb' }), (err: Error) => !err.message.includes(GOOD_SECRET))
  })

  it('takes plain http for a JWKS on loopback in production', (t) => {
    const config = loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET, NODE_ENV: 'production', ...JWKS, IDP_JWKS_URL: 'http://127.0.0.1:8080/jwks' })
    assert.deepEqual(config.idp?.publicKeys, { jwksUrl: 'http://127.0.0.1:8080/jwks' })
  })
})

describe('config: room tokens', () => {
  it('are off by default (no secret), with a one-hour cap', (t) => {
    const config = loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET })
    assert.deepEqual(config.roomTokens, { secret: null, maxTtlSeconds: 3600 })
    const set = loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET, ROOM_TOKEN_SECRET: HMAC, ROOM_TOKEN_MAX_TTL: '10m' })
    assert.deepEqual(set.roomTokens, { secret: HMAC, maxTtlSeconds: 600 })
  })

  it('refuse a short secret, a secret shared with another purpose, and a cap outside 1s..24h, naming the variable', (t) => {
    const base = { DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET }
    const cases: Array<[Record<string, string>, string]> = [
      [{ ROOM_TOKEN_SECRET: 'short' }, 'ROOM_TOKEN_SECRET'],
      [{ ROOM_TOKEN_SECRET: GOOD_SECRET }, 'ROOM_TOKEN_SECRET'],
      [{ ROOM_TOKEN_SECRET: HMAC, IDP_HMAC_SECRET: HMAC, IDP_ISSUER: 'idp', IDP_AUDIENCE: 'sb' }, 'ROOM_TOKEN_SECRET'],
      [{ ROOM_TOKEN_MAX_TTL: '0' }, 'ROOM_TOKEN_MAX_TTL'],
      [{ ROOM_TOKEN_MAX_TTL: '2d' }, 'ROOM_TOKEN_MAX_TTL']
    ]
    for (const [env, variable] of cases) failsNaming({ ...base, ...env }, variable)
    assert.throws(() => loadConfig({ ...base, ROOM_TOKEN_SECRET: GOOD_SECRET }), (err: Error) => !err.message.includes(GOOD_SECRET))
  })
})
