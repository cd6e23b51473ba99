import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, loadConfig } from '../../src/config.js'
import { tempDir } from '../helper.js'

const GOOD_SECRET = 'a-production-secret-that-is-long-enough-0123456789'

/** loadConfig must throw a ConfigError whose message names `variable`; returns the message. */
function failsNaming (env: Record<string, string>, variable: string): string {
  let message = ''
  assert.throws(() => loadConfig(env), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    message = err.message
    assert.match(err.message, new RegExp(`\\b${variable}\\b`), `message should name ${variable}: ${err.message}`)
    return true
  })
  return message
}

describe('config', () => {
  it('names the variable when a value is bad', (t) => {
    const dir = tempDir(t)
    const base = { DATA_DIR: dir, JWT_SECRET: GOOD_SECRET }
    const cases: Array<[Record<string, string>, string]> = [
      [{ PORT: 'abc' }, 'PORT'],
      [{ PORT: '70000' }, 'PORT'],
      [{ PORT: '-1' }, 'PORT'],
      [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
      [{ NODE_ENV: 'staging' }, 'NODE_ENV'],
      [{ DATABASE_URL: 'mysql://db.example/switchboard' }, 'DATABASE_URL'],
      [{ DATABASE_URL: './data/switchboard.db' }, 'DATABASE_URL'],
      [{ ACCESS_TOKEN_TTL: '15 minutes' }, 'ACCESS_TOKEN_TTL'],
      [{ REFRESH_TOKEN_TTL: '30w' }, 'REFRESH_TOKEN_TTL'],
      [{ JWT_CLOCK_TOLERANCE: '-5s' }, 'JWT_CLOCK_TOLERANCE'],
      [{ TRUST_PROXY: 'proxy.example.com' }, 'TRUST_PROXY'],
      [{ TRUST_PROXY: '10.0.0.1, not-an-ip' }, 'TRUST_PROXY'],
      [{ ADMIN_USERNAME: 'admin' }, 'ADMIN_PASSWORD'],
      [{ ADMIN_PASSWORD: 'long enough password' }, 'ADMIN_USERNAME'],
      [{ ADMIN_USERNAME: 'Admin!', ADMIN_PASSWORD: 'long enough password' }, 'ADMIN_USERNAME'],
      [{ TLS_CERT_FILE: join(dir, 'cert.pem') }, 'TLS_KEY_FILE'],
      [{ TLS_KEY_FILE: join(dir, 'key.pem') }, 'TLS_CERT_FILE'],
      [{ TLS_CERT_FILE: join(dir, 'missing-cert.pem'), TLS_KEY_FILE: join(dir, 'missing-key.pem') }, 'TLS_CERT_FILE'],
      [{ ACCESS_TOKEN_TTL: '5s' }, 'ACCESS_TOKEN_TTL'],
      [{ ACCESS_TOKEN_TTL: '2h', REFRESH_TOKEN_TTL: '1h' }, 'REFRESH_TOKEN_TTL'],
      [{ PASSWORD_HASH_COST: '8' }, 'PASSWORD_HASH_COST'],
      [{ SHUTDOWN_GRACE_MS: '10' }, 'SHUTDOWN_GRACE_MS'],
      [{ ALLOW_REGISTRATION: 'yes' }, 'ALLOW_REGISTRATION'],
      [{ LOGIN_FAILURES_PER_ADDRESS: '0' }, 'LOGIN_FAILURES_PER_ADDRESS'],
      [{ LOGIN_FAILURES_BEFORE_DELAY: '0' }, 'LOGIN_FAILURES_BEFORE_DELAY'],
      [{ LOGIN_MAX_DELAY: '500ms' }, 'LOGIN_MAX_DELAY'],
      [{ LOGIN_MAX_DELAY: '2h' }, 'LOGIN_MAX_DELAY'],
      [{ LOGIN_FAILURE_WINDOW: '0' }, 'LOGIN_FAILURE_WINDOW'],
      [{ HTTP_REQUEST_TIMEOUT_MS: '0' }, 'HTTP_REQUEST_TIMEOUT_MS'],
      [{ HTTP_HEADERS_TIMEOUT_MS: '20000', HTTP_REQUEST_TIMEOUT_MS: '15000' }, 'HTTP_HEADERS_TIMEOUT_MS'],
      [{ HTTP_MAX_CONNECTIONS_PER_IP: '-1' }, 'HTTP_MAX_CONNECTIONS_PER_IP']
    ]
    for (const [env, variable] of cases) failsNaming({ ...base, ...env }, variable)
  })

  it('refuses LOGIN_USER_FAILURE_LIMIT, naming what replaced the per-username lockout', (t) => {
    const message = failsNaming({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET, LOGIN_USER_FAILURE_LIMIT: '10' }, 'LOGIN_USER_FAILURE_LIMIT')
    for (const replacement of ['LOGIN_FAILURES_BEFORE_DELAY', 'LOGIN_FAILURES_PER_ADDRESS']) assert.match(message, new RegExp(replacement))
    // Left empty (an old .env.example line), it is unset like any other variable.
    assert.equal(loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET, LOGIN_USER_FAILURE_LIMIT: '' }).loginThrottle.failuresPerAddress, 20)
  })

  it('keeps history durable on embedded defaults, Redis\'s with Redis, and refuses sqlite where it cannot be', (t) => {
    const base = { DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET }
    const pg = 'postgres://postgres@127.0.0.1:5432/test'
    assert.equal(loadConfig(base).history.store, 'sqlite')
    assert.equal(loadConfig({ ...base, HISTORY_STORE: 'memory' }).history.store, 'memory')
    assert.equal(loadConfig({ ...base, DATABASE_URL: pg }).history.store, 'memory')
    assert.equal(loadConfig({ ...base, DATABASE_URL: 'sqlite::memory:' }).history.store, 'memory', 'nothing to survive a restart in')
    assert.equal(loadConfig({ ...base, DATABASE_URL: 'sqlite::memory:', HISTORY_STORE: 'sqlite' }).history.store, 'sqlite')
    assert.equal(loadConfig({ ...base, REDIS_URL: 'redis://127.0.0.1:6379' }).history.store, 'redis')
    failsNaming({ ...base, HISTORY_STORE: 'sqlite', DATABASE_URL: pg }, 'HISTORY_STORE')
    failsNaming({ ...base, HISTORY_STORE: 'sqlite', REDIS_URL: 'redis://127.0.0.1:6379' }, 'HISTORY_STORE')
    failsNaming({ ...base, HISTORY_STORE: 'memory', REDIS_URL: 'redis://127.0.0.1:6379' }, 'HISTORY_STORE')
    failsNaming({ ...base, HISTORY_STORE: 'disk' }, 'HISTORY_STORE')
  })

  it('reads HOOKS_*, asking for a secret and the list of hooks with HOOKS_URL, and nothing without it', (t) => {
    const base = { DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET }
    const hooks = { HOOKS_URL: 'http://127.0.0.1:4000/hooks', HOOKS_SECRET: 'h'.repeat(32), HOOKS_EVENTS: 'connect,publish,published' }
    assert.equal(loadConfig(base).hooks, null)
    const config = loadConfig({ ...base, ...hooks, HOOKS_ROOMS: 'game:*,lobby' })
    assert.deepEqual(config.hooks, {
      url: hooks.HOOKS_URL,
      secret: hooks.HOOKS_SECRET,
      events: new Set(['connect', 'publish', 'published']),
      rooms: ['game:*', 'lobby'],
      timeoutMs: 1000,
      concurrency: 64,
      retries: 3,
      queueBytes: 8_388_608
    })
    failsNaming({ ...base, ...hooks, HOOKS_SECRET: '' }, 'HOOKS_SECRET')
    failsNaming({ ...base, ...hooks, HOOKS_SECRET: 'short' }, 'HOOKS_SECRET')
    failsNaming({ ...base, ...hooks, HOOKS_SECRET: GOOD_SECRET }, 'HOOKS_SECRET')
    failsNaming({ ...base, ...hooks, HOOKS_EVENTS: '' }, 'HOOKS_EVENTS')
    failsNaming({ ...base, ...hooks, HOOKS_EVENTS: 'connect,everything' }, 'HOOKS_EVENTS')
    failsNaming({ ...base, ...hooks, HOOKS_ROOMS: 'Game!' }, 'HOOKS_ROOMS')
    failsNaming({ ...base, ...hooks, HOOKS_URL: 'ftp://backend' }, 'HOOKS_URL')
    failsNaming({ ...base, ...hooks, HOOKS_TIMEOUT_MS: '0' }, 'HOOKS_TIMEOUT_MS')
    failsNaming({ ...base, HOOKS_EVENTS: 'connect' }, 'HOOKS_EVENTS')
    // The URL may carry the backend's basic-auth password: never echoed.
    const message = failsNaming({ ...base, ...hooks, HOOKS_URL: 'https://app:pw-4711@' }, 'HOOKS_URL')
    assert.ok(!message.includes('pw-4711'), message)
  })

  it('reads the sign-in throttle', (t) => {
    const config = loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET, LOGIN_FAILURES_BEFORE_DELAY: '4', LOGIN_MAX_DELAY: '10m', LOGIN_FAILURES_PER_ADDRESS: '30', LOGIN_FAILURE_WINDOW: '1h' })
    assert.deepEqual(config.loginThrottle, { failuresBeforeDelay: 4, maxDelayMs: 600_000, failuresPerAddress: 30, addressWindowMs: 3_600_000 })
    assert.deepEqual(loadConfig({ DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET }).loginThrottle, { failuresBeforeDelay: 5, maxDelayMs: 900_000, failuresPerAddress: 20, addressWindowMs: 900_000 })
  })

  it('refuses integers that are not plain digits instead of truncating them', (t) => {
    const base = { DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET }
    // A lenient parse would read "1e3" as port 1 and "3000.5" as 3000: silently wrong, not an error.
    for (const value of ['3.5', '1e3', '3000.5', '0x50', 'true', '80abc']) {
      failsNaming({ ...base, PORT: value }, 'PORT')
    }
    failsNaming({ ...base, PASSWORD_HASH_COST: '12.9' }, 'PASSWORD_HASH_COST')
    failsNaming({ ...base, SHUTDOWN_GRACE_MS: '1e4' }, 'SHUTDOWN_GRACE_MS')
  })

  it('reports an unreadable TLS key file by name', (t) => {
    const dir = tempDir(t)
    const cert = join(dir, 'cert.pem')
    writeFileSync(cert, 'not really a certificate')
    failsNaming({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, TLS_CERT_FILE: cert, TLS_KEY_FILE: join(dir, 'nope.pem') }, 'TLS_KEY_FILE')
    // A directory exists but cannot be read as a file.
    failsNaming({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, TLS_CERT_FILE: dir, TLS_KEY_FILE: cert }, 'TLS_CERT_FILE')
    if (process.getuid?.() !== 0) {
      const key = join(dir, 'key.pem')
      writeFileSync(key, 'secret key', { mode: 0o000 })
      chmodSync(key, 0o000)
      failsNaming({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, TLS_CERT_FILE: cert, TLS_KEY_FILE: key }, 'TLS_KEY_FILE')
    }
  })

  it('requires a strong JWT_SECRET in production', (t) => {
    const dir = tempDir(t)
    failsNaming({ NODE_ENV: 'production', DATA_DIR: dir }, 'JWT_SECRET')
    const short = 's'.repeat(31)
    const message = failsNaming({ NODE_ENV: 'production', DATA_DIR: dir, JWT_SECRET: short }, 'JWT_SECRET')
    assert.ok(!message.includes(short), message)
    // Bytes, not characters: 16 two-byte characters are 32 bytes.
    assert.equal(loadConfig({ NODE_ENV: 'production', DATA_DIR: dir, JWT_SECRET: 'é'.repeat(16) }).jwt.secret, 'é'.repeat(16))
    const config = loadConfig({ NODE_ENV: 'production', DATA_DIR: dir, JWT_SECRET: GOOD_SECRET })
    assert.equal(config.env, 'production')
    assert.equal(config.jwt.secret, GOOD_SECRET)
    assert.equal(config.jwt.generated, false)
    // Production never falls back to a generated secret.
    assert.equal(existsSync(join(dir, 'jwt-secret')), false)
  })

  it('never puts a secret value into an error message', (t) => {
    const dir = tempDir(t)
    const checks: Array<[Record<string, string>, string, string]> = [
      [{ JWT_SECRET: GOOD_SECRET, ADMIN_USERNAME: 'admin', ADMIN_PASSWORD: 'hunter2' }, 'ADMIN_PASSWORD', 'hunter2'],
      [{ JWT_SECRET: GOOD_SECRET, ADMIN_USERNAME: 'admin', ADMIN_PASSWORD: 'p'.repeat(129) }, 'ADMIN_PASSWORD', 'p'.repeat(129)],
      [{ JWT_SECRET: GOOD_SECRET, ADMIN_PASSWORD: 'lonely-password' }, 'ADMIN_USERNAME', 'lonely-password'],
      [{ NODE_ENV: 'production', JWT_SECRET: 'too-short-prod-secret' }, 'JWT_SECRET', 'too-short-prod-secret'],
      // A connection string carries the database password.
      [{ JWT_SECRET: GOOD_SECRET, DATABASE_URL: 'mysql://app:db-pass-4711@db.example/app' }, 'DATABASE_URL', 'db-pass-4711'],
      // Another variable's error must not drag the secret along either.
      [{ JWT_SECRET: GOOD_SECRET, PORT: 'abc' }, 'PORT', GOOD_SECRET]
    ]
    for (const [env, variable, secret] of checks) {
      const message = failsNaming({ DATA_DIR: dir, ...env }, variable)
      assert.ok(!message.includes(secret), `${variable} error leaks the secret: ${message}`)
    }
  })

  it('has sensible defaults', (t) => {
    const dir = tempDir(t)
    const config = loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET })
    assert.equal(config.env, 'development')
    assert.equal(config.host, '0.0.0.0')
    assert.equal(config.port, 3000)
    assert.equal(config.logLevel, 'info')
    assert.equal(config.dataDir, dir)
    assert.equal(config.databaseUrl, 'sqlite:./data/switchboard.db')
    assert.equal(config.databaseSchema, null)
    assert.deepEqual(config.databasePool, { max: 10, idleMs: 60_000 })
    assert.equal(config.jwt.accessTokenTtlSeconds, 15 * 60)
    assert.equal(config.refreshTokenTtlSeconds, 30 * 24 * 3600)
    assert.equal(config.jwt.issuer, 'switchboard')
    assert.equal(config.jwt.clockToleranceSeconds, 5)
    assert.equal(config.admin, null)
    assert.equal(config.allowRegistration, true)
    assert.deepEqual(config.corsOrigins, [])
    assert.equal(config.trustProxy, false)
    assert.equal(config.tls, null)
    assert.equal(config.passwordHashCost, 15)
    assert.equal(config.shutdownGraceMs, 10_000)
    assert.deepEqual(config.history, { store: 'sqlite', memoryBytes: 256 * 1024 * 1024, roomBytes: 8 * 1024 * 1024, pageBytes: 1024 * 1024 })
    assert.equal(config.maxRoomsPerUser, 50)
    assert.deepEqual(config.http, { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, connectionTimeoutMs: 60_000, keepAliveTimeoutMs: 72_000, maxConnectionsPerIp: 256 })
    assert.equal(loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, HTTP_MAX_CONNECTIONS_PER_IP: '0' }).http.maxConnectionsPerIp, null)
    // An empty variable counts as unset, as with `PORT=` in a .env file.
    assert.equal(loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, PORT: '', HOST: '' }).port, 3000)
  })

  it('parses values', (t) => {
    const dir = tempDir(t)
    const config = loadConfig({
      DATA_DIR: dir,
      JWT_SECRET: GOOD_SECRET,
      PORT: '0',
      HOST: '127.0.0.1',
      ACCESS_TOKEN_TTL: '90s',
      REFRESH_TOKEN_TTL: '12h',
      JWT_CLOCK_TOLERANCE: '1500ms',
      ALLOW_REGISTRATION: '0',
      CORS_ORIGINS: 'https://a.example, https://b.example',
      ADMIN_USERNAME: 'root',
      ADMIN_PASSWORD: 'long enough password',
      DATABASE_URL: 'postgresql://db.example/app',
      DATABASE_SCHEMA: 'tenant_1',
      DATABASE_POOL_MAX: '25',
      DATABASE_POOL_IDLE_MS: '5000'
    })
    assert.equal(config.port, 0)
    assert.equal(config.host, '127.0.0.1')
    assert.equal(config.jwt.accessTokenTtlSeconds, 90)
    assert.equal(config.refreshTokenTtlSeconds, 12 * 3600)
    assert.equal(config.jwt.clockToleranceSeconds, 1.5)
    assert.equal(config.allowRegistration, false)
    assert.deepEqual(config.corsOrigins, ['https://a.example', 'https://b.example'])
    assert.deepEqual(config.admin, { username: 'root', password: 'long enough password' })
    assert.equal(config.databaseUrl, 'postgresql://db.example/app')
    assert.equal(config.databaseSchema, 'tenant_1')
    assert.deepEqual(config.databasePool, { max: 25, idleMs: 5000 })
    // A bare number is seconds.
    assert.equal(loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, ACCESS_TOKEN_TTL: '600' }).jwt.accessTokenTtlSeconds, 600)
    const bounded = loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, HISTORY_MEMORY_BYTES: '8388608', HISTORY_ROOM_BYTES: '65536', HISTORY_PAGE_BYTES: '131072', MAX_ROOMS_PER_USER: '3' })
    assert.deepEqual([bounded.history, bounded.maxRoomsPerUser], [{ store: 'sqlite', memoryBytes: 8_388_608, roomBytes: 65_536, pageBytes: 131_072 }, 3])
    assert.throws(() => loadConfig({ DATA_DIR: dir, JWT_SECRET: GOOD_SECRET, HISTORY_MEMORY_BYTES: '1000' }), /HISTORY_MEMORY_BYTES/)
  })

  it('generates a development secret once, private to the owner, and reuses it', (t) => {
    const dataDir = join(tempDir(t), 'nested', 'data')
    const first = loadConfig({ DATA_DIR: dataDir })
    assert.equal(first.jwt.generated, true)
    assert.ok(Buffer.byteLength(first.jwt.secret) >= 32)
    const file = join(dataDir, 'jwt-secret')
    assert.equal(statSync(file).mode & 0o777, 0o600)
    assert.equal(readFileSync(file, 'utf8').trim(), first.jwt.secret)

    const second = loadConfig({ DATA_DIR: dataDir, NODE_ENV: 'test' })
    assert.equal(second.jwt.secret, first.jwt.secret)
    assert.equal(second.jwt.generated, true)

    // A configured secret wins and is not written anywhere.
    const otherDir = tempDir(t)
    const configured = loadConfig({ DATA_DIR: otherDir, JWT_SECRET: GOOD_SECRET })
    assert.equal(configured.jwt.secret, GOOD_SECRET)
    assert.equal(configured.jwt.generated, false)
    assert.equal(existsSync(join(otherDir, 'jwt-secret')), false)
  })

  it('parses TRUST_PROXY forms', (t) => {
    const base = { DATA_DIR: tempDir(t), JWT_SECRET: GOOD_SECRET }
    const cases: Array<[string, unknown]> = [
      ['false', false],
      ['0', false],
      ['true', true],
      ['1', 1],
      ['2', 2],
      ['127.0.0.1', ['127.0.0.1']],
      ['10.0.0.0/8, 192.168.1.1', ['10.0.0.0/8', '192.168.1.1']],
      ['::1,fd00::/8', ['::1', 'fd00::/8']],
      ['loopback, uniquelocal', ['loopback', 'uniquelocal']]
    ]
    for (const [value, expected] of cases) {
      assert.deepEqual(loadConfig({ ...base, TRUST_PROXY: value }).trustProxy, expected, `TRUST_PROXY=${value}`)
    }
    assert.equal(loadConfig(base).trustProxy, false)
  })
})
