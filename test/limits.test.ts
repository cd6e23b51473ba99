import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import type { Redis } from 'ioredis'
import { createRedisLoginThrottle } from '../src/limits/login-throttle.js'
import { createRedisRateLimiter } from '../src/limits/rate-limiter.js'
import { createRedisConnection, quitRedis } from '../src/redis.js'
import { deleteRedisKeys } from '../support/redis.js'
import { build, PASSWORD, skipUnlessRedis, TEST_REDIS_URL, wsConnect, type TestApp } from './helper.js'
import { freePort } from '../support/free-port.js'
import { privateRedis, skipUnlessRedisServer } from './redis-server.js'

/*
 * Limits a client could otherwise multiply by spreading over the nodes of a cluster: the
 * per-user publish rate, the HTTP rate limits, the sign-in throttle and the connection
 * caps. Each is shared through Redis when REDIS_URL is set, and falls back to the node's own
 * count (never to no limit, never to an error) while Redis is unreachable.
 */

interface Warnings { warn: (obj: object, msg: string) => void, lines: string[] }
function warnings (): Warnings {
  const lines: string[] = []
  return { lines, warn: (_obj, msg) => { lines.push(msg) } }
}

const skipRedis = await skipUnlessRedis()

/** A fresh key prefix on the shared Redis, deleted after the test. */
function prefixFor (t: TestContext): string {
  const prefix = `sbtest:${randomBytes(6).toString('hex')}:`
  t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
  return prefix
}

async function connection (t: TestContext, url = TEST_REDIS_URL): Promise<Redis> {
  const conn = createRedisConnection({ url }, { name: 'switchboard-test', log: { info () {}, warn () {} }, timeoutMs: 500 })
  t.after(() => quitRedis(conn))
  await conn.connect().catch(() => {})
  return conn
}

/**
 * Rates for tests on a real clock (Redis's TIME, or Date.now when falling back): one unit per
 * 100 s, so no unit comes back while a test runs, even on a machine that stalls for seconds,
 * and a refusal the test expects cannot turn into an allowance.
 */
const NO_REFILL_PER_SECOND = 0.01
const NO_REFILL_INTERVAL_MS = 1000 / NO_REFILL_PER_SECOND

describe('limits in Redis, shared by every node', { skip: skipRedis }, () => {
  it('rate limiter: two nodes draw from one budget', async (t) => {
    const prefix = prefixFor(t)
    const options = { ratePerSecond: NO_REFILL_PER_SECOND, burst: 4, prefix, log: warnings(), what: 'test rate' }
    const nodeA = createRedisRateLimiter({ ...options, redis: await connection(t) })
    const nodeB = createRedisRateLimiter({ ...options, redis: await connection(t) })
    const results = []
    for (let i = 0; i < 3; i++) {
      results.push((await nodeA.take('alice')).allowed, (await nodeB.take('alice')).allowed)
    }
    assert.equal(results.filter(Boolean).length, 4, `the burst of 4 is the cluster's, not each node's: ${results.join(',')}`)
    const refused = await nodeB.take('alice')
    assert.equal(refused.allowed, false)
    assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= NO_REFILL_INTERVAL_MS, `retry after ${refused.retryAfterMs} ms: at most one interval`)
    assert.equal((await nodeA.take('bob')).allowed, true, 'another user has their own budget')
  })

  it('rate limiter, leasing on: a slow spender takes one unit per call, so the key\'s other nodes keep the rest', async (t) => {
    const prefix = prefixFor(t)
    // A lease period of 10^6 s makes leases of up to 4 units possible with no refill; the
    // local clock (which only paces the leases) puts 1000 s between calls: a slow spender.
    let clock = 0
    const options = { ratePerSecond: NO_REFILL_PER_SECOND, burst: 4, leaseMs: 1e9, prefix, log: warnings(), what: 'test rate' }
    const nodeA = createRedisRateLimiter({ ...options, redis: await connection(t), now: () => (clock += 1_000_000) })
    const nodeB = createRedisRateLimiter({ ...options, redis: await connection(t), now: () => (clock += 1_000_000) })
    assert.equal((await nodeA.take('alice')).allowed, true)
    assert.equal((await nodeA.take('alice')).allowed, true)
    assert.equal((await nodeB.take('alice')).allowed, true, 'node A took no more than it spent')
    assert.equal((await nodeB.take('alice')).allowed, true)
    assert.equal((await nodeA.take('alice')).allowed, false, 'four units in all')
  })

  it('keys keep one hash tag whatever the key holds, and keys that differ never share a budget', async (t) => {
    const prefix = prefixFor(t)
    const redis = await connection(t)
    const limiter = createRedisRateLimiter({ ratePerSecond: NO_REFILL_PER_SECOND, burst: 1, prefix, log: warnings(), what: 'test rate', redis })
    // The second is the first's escaped form written out: it must not reach the first's key.
    for (const key of ['a}{b', 'a%7D%7Bb', '::1']) assert.equal((await limiter.take(key)).allowed, true, `${key}: its own budget`)
    assert.equal((await limiter.take('a}{b')).allowed, false)
    const keys = await redis.keys(`${prefix}*`)
    assert.equal(keys.length, 3)
    for (const key of keys) assert.match(key.slice(prefix.length), /^\{[^{}]*\}$/, `one hash tag: ${key}`)
  })

  it('login throttle: failures on two nodes add up; a success on either forgets the pair', async (t) => {
    const prefix = prefixFor(t)
    const policy = { failuresBeforeDelay: 3, maxDelayMs: 60_000, failuresPerAddress: 100, addressWindowMs: 60_000, prefix, log: warnings() }
    const nodeA = createRedisLoginThrottle({ ...policy, redis: await connection(t) })
    const nodeB = createRedisLoginThrottle({ ...policy, redis: await connection(t) })
    for (const node of [nodeA, nodeB, nodeA]) assert.equal(await node.attempt('203.0.113.1', 'alice'), 0)
    const wait = await nodeB.attempt('203.0.113.1', 'alice')
    assert.ok(wait > 0 && wait <= 1, `waiting on the other node too (retry after ${wait} s)`)
    assert.equal(await nodeB.attempt('198.51.100.7', 'alice'), 0, 'another address is not slowed')
    await nodeB.succeeded('203.0.113.1', 'alice')
    assert.equal(await nodeA.attempt('203.0.113.1', 'alice'), 0)
  })

  it('login throttle keys: one hash tag per address, hashed, whatever the username holds', async (t) => {
    const prefix = prefixFor(t)
    const redis = await connection(t)
    const throttle = createRedisLoginThrottle({ failuresBeforeDelay: 3, maxDelayMs: 60_000, failuresPerAddress: 100, addressWindowMs: 60_000, prefix, log: warnings(), redis })
    for (const username of ['a}{b', '*', 'x:y']) await throttle.attempt('203.0.113.1', username)
    await throttle.attempt('2001:db8::1', 'alice')
    const keys = (await redis.keys(`${prefix}*`)).map(key => key.slice(prefix.length)).sort()
    assert.equal(keys.length, 6, keys.join(' '))
    for (const key of keys) assert.match(key, /^\{[\w-]{22}\}(:[\w-]{22})?$/, `hashed, one hash tag: ${key}`)
  })

  it('Redis unreachable: the rate limiter and the login throttle fall back to the node\'s own count, with a warning', async (t) => {
    const deadUrl = `redis://127.0.0.1:${await freePort()}`
    const redis = await connection(t, deadUrl)
    const log = warnings()
    const rate = createRedisRateLimiter({ ratePerSecond: NO_REFILL_PER_SECOND, burst: 2, prefix: 'x:', redis, log, what: 'test rate' })
    assert.equal((await rate.take('u')).allowed, true)
    assert.equal((await rate.take('u')).allowed, true)
    assert.equal((await rate.take('u')).allowed, false, 'the limit still holds, per node')
    const throttle = createRedisLoginThrottle({ failuresBeforeDelay: 1, maxDelayMs: 60_000, failuresPerAddress: 100, addressWindowMs: 60_000, prefix: 'x:', redis, log })
    assert.equal(await throttle.attempt('203.0.113.1', 'alice'), 0)
    assert.ok(await throttle.attempt('203.0.113.1', 'alice') > 0)
    assert.ok(log.lines.some(l => l.includes('Redis unavailable')), log.lines.join('\n'))
  })
})

describe('rate limiter in Redis, leasing a busy key\'s units ahead of use', { skip: skipUnlessRedisServer() }, () => {
  /** EVALSHA calls the server has run: a lease request is one. */
  async function scriptCalls (redis: Redis): Promise<number> {
    const stats = await redis.info('commandstats')
    return Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0)
  }

  it('a busy key takes several units per round trip, and two nodes together spend exactly the budget', async (t) => {
    const server = await privateRedis(t)
    const redisA = await connection(t, server.url)
    const redisB = await connection(t, server.url)
    // No refill while the test runs (one unit per 100 s); leases of up to 10 units (the rate ×
    // a lease period of 1000 s); the local clock standing still makes the key look busy.
    const options = { ratePerSecond: NO_REFILL_PER_SECOND, burst: 40, leaseMs: 1e6, prefix: 'lease:', log: warnings(), what: 'test rate', now: () => 0 }
    const nodeA = createRedisRateLimiter({ ...options, redis: redisA })
    const nodeB = createRedisRateLimiter({ ...options, redis: redisB })
    await redisA.ping()
    const before = await scriptCalls(redisA)
    for (let i = 0; i < 20; i++) assert.equal((await nodeA.take('alice')).allowed, true, `take ${i + 1} on node A`)
    const calls = await scriptCalls(redisA) - before
    assert.ok(calls <= 6, `20 takes in ${calls} round trips`)
    // Each node spends what it holds before it is refused; then the other may still hold
    // some: alternate until neither allows one. Not one unit more than the burst, none lost.
    let allowed = 20
    for (let refusedInARow = 0; refusedInARow < 2;) {
      for (const node of [nodeB, nodeA]) {
        let spent = 0
        while ((await node.take('alice')).allowed) spent++
        allowed += spent
        refusedInARow = spent === 0 ? refusedInARow + 1 : 0
      }
    }
    assert.equal(allowed, 40)
    const refused = await nodeA.take('alice')
    assert.ok(!refused.allowed && refused.retryAfterMs > 0, JSON.stringify(refused))
  })

  it('a node forgets a key idle for 10 s with the units it held: never handed back, never spent later', async (t) => {
    const server = await privateRedis(t)
    let clock = 0
    const options = { ratePerSecond: NO_REFILL_PER_SECOND, burst: 40, leaseMs: 1e6, prefix: 'lease:', log: warnings(), what: 'test rate', now: () => clock }
    const redisA = await connection(t, server.url)
    const nodeA = createRedisRateLimiter({ ...options, redis: redisA })
    const nodeB = createRedisRateLimiter({ ...options, redis: await connection(t, server.url) })
    for (let i = 0; i < 12; i++) assert.equal((await nodeA.take('alice')).allowed, true)
    // A lease request the last take started in the background has been answered (replies come
    // in order on one connection) and settled (its callbacks ran before this macrotask).
    await redisA.ping()
    await new Promise(resolve => setImmediate(resolve))
    clock += 10_000
    await nodeA.take('bob') // any call looks for idle keys
    let allowed = 12
    for (const node of [nodeA, nodeB, nodeA]) while ((await node.take('alice')).allowed) allowed++
    assert.ok(allowed < 40 && allowed >= 40 - 15, `${allowed} of the 40 spent: what node A held went with the key`)
  })

  it('Redis gone while a node holds leased units: it spends them, then falls back to its own count, with a warning', async (t) => {
    const server = await privateRedis(t)
    const log = warnings()
    const limiter = createRedisRateLimiter({ ratePerSecond: NO_REFILL_PER_SECOND, burst: 40, leaseMs: 1e6, prefix: 'lease:', log, what: 'test rate', now: () => 0, redis: await connection(t, server.url) })
    for (let i = 0; i < 5; i++) assert.equal((await limiter.take('alice')).allowed, true)
    await server.kill()
    // Held units, then background lease requests that fail, then the node's own budget of 40.
    const answers = []
    for (let i = 0; i < 50; i++) answers.push((await limiter.take('alice')).allowed)
    assert.ok(answers.filter(Boolean).length >= 40, `allowed ${answers.filter(Boolean).length} of 50`)
    assert.equal(answers.at(-1), false, 'the limit still holds, per node')
    assert.ok(log.lines.some(l => l.includes('Redis unavailable')), log.lines.join('\n'))
  })
})

/** Two apps ("nodes") on one Redis prefix and one PostgreSQL schema would be the real cluster; SQLite per node is enough for limits, which live in Redis. */
async function twoNodes (t: TestContext, env: Record<string, string>): Promise<[TestApp, TestApp]> {
  const shared = { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefixFor(t), ...env }
  return [await build(t, { env: shared }), await build(t, { env: shared })]
}

describe('cluster-wide limits through the app', { skip: skipRedis }, () => {
  it('the per-user publish rate spans nodes and transports: 429 with Retry-After over REST, rate_limited with retryAfterMs over WebSocket', async (t) => {
    const [a, b] = await twoNodes(t, { PUBLISH_RATE_PER_USER: String(NO_REFILL_PER_SECOND), PUBLISH_BURST_PER_USER: '3' })
    for (const node of [a, b]) await node.createUser('alice')
    const tokenA = await a.login('alice')
    const tokenB = await b.login('alice')
    for (const node of [a, b]) {
      const created = await node.request('POST', '/rooms', { token: node === a ? tokenA : tokenB, body: { id: 'lobby' } })
      assert.equal(created.status, 201, created.text)
    }
    const statuses = []
    for (const [node, token] of [[a, tokenA], [b, tokenB], [a, tokenA]] as const) {
      statuses.push((await node.request('POST', '/rooms/lobby/messages', { token, body: { data: 'hi' } })).status)
    }
    assert.deepEqual(statuses, [201, 201, 201], 'within the burst')
    const over = await b.request('POST', '/rooms/lobby/messages', { token: tokenB, body: { data: 'one too many' } })
    assert.equal(over.status, 429, over.text)
    assert.equal(over.body.code, 'SB_ERR_RATE_LIMITED')
    assert.ok(Number(over.headers.get('retry-after')) >= 1, `Retry-After: ${over.headers.get('retry-after')}`)

    const client = await wsConnect(t, a, { token: tokenA })
    const reply = await client.command({ type: 'publish', room: 'lobby', data: 'over ws' })
    assert.equal(reply.type, 'error')
    assert.equal(reply.error.code, 'rate_limited')
    assert.equal(reply.error.temporary, true)
    assert.ok(reply.error.retryAfterMs > 0, JSON.stringify(reply))

    const metrics = await a.request('GET', '/metrics')
    assert.match(metrics.text, /switchboard_rate_limited_total\{scope="publishes_per_user"\} 1/)
  })

  it('HTTP rate limits count across nodes, refused (401) requests included', async (t) => {
    const [a, b] = await twoNodes(t, { RATE_LIMIT_MAX: '4' })
    const statuses = []
    for (let i = 0; i < 3; i++) {
      statuses.push((await a.request('GET', '/rooms')).status, (await b.request('GET', '/rooms')).status)
    }
    assert.equal(statuses.filter(s => s === 429).length, 2, `4 of 6 pass, whichever node: ${statuses.join(',')}`)
  })

  it('sign-in failures of one address count across nodes, and lock no one else out', async (t) => {
    const [a, b] = await twoNodes(t, { LOGIN_FAILURES_PER_ADDRESS: '2', TRUST_PROXY: 'loopback' })
    for (const node of [a, b]) await node.createUser('alice')
    const from = (address: string): Record<string, string> => ({ 'x-forwarded-for': address })
    const wrong = { username: 'alice', password: 'wrong password!' }
    assert.equal((await a.request('POST', '/auth/login', { body: wrong, headers: from('203.0.113.1') })).status, 401)
    assert.equal((await b.request('POST', '/auth/login', { body: { ...wrong, username: 'bob' }, headers: from('203.0.113.1') })).status, 401)
    const refused = await a.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD }, headers: from('203.0.113.1') })
    assert.equal(refused.status, 429, 'the guessing address waits, even with the right password')
    assert.ok(Number(refused.headers.get('retry-after')) > 0)
    const victim = await b.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD }, headers: from('198.51.100.7') })
    assert.equal(victim.status, 200, 'the user, from another address, on either node')
  })

  it('the per-address connection cap counts across nodes', async (t) => {
    const [a, b] = await twoNodes(t, { WS_MAX_CONNECTIONS_PER_IP: '2' })
    const tokens = []
    for (const [node, user] of [[a, 'alice'], [b, 'bob'], [a, 'carol']] as const) {
      await node.createUser(user)
      tokens.push(await node.login(user))
    }
    await wsConnect(t, a, { token: tokens[0]! })
    await wsConnect(t, b, { token: tokens[1]! })
    await assert.rejects(wsConnect(t, a, { token: tokens[2]! }), /429/, 'the third connection from this address, on either node, is refused')
  })

  it('the per-address handshake budget counts across nodes, refused handshakes included', async (t) => {
    const [a, b] = await twoNodes(t, { WS_HANDSHAKES_PER_IP_PER_MINUTE: '3' })
    // Each node has a database of its own here: both must know alice for her token to pass.
    for (const node of [a, b]) await node.createUser('alice')
    const token = await a.login('alice')
    await wsConnect(t, a, { token })
    await assert.rejects(wsConnect(t, b, { token: 'not-a-token' }), /401/)
    await wsConnect(t, b, { token })
    await assert.rejects(wsConnect(t, a, { token }), /429/, 'the fourth handshake from this address, on either node, is refused')
    const metrics = await a.request('GET', '/metrics')
    assert.match(metrics.text, /switchboard_rate_limited_total\{scope="handshakes"\} 1/)
  })

  it('Redis unreachable: login and requests are still served, the HTTP rate limit holds on the node alone, with a warning', async (t) => {
    const srv = await build(t, { env: { REDIS_URL: `redis://127.0.0.1:${await freePort()}`, RATE_LIMIT_MAX: '3' } })
    await srv.createUser('alice')
    const login = await srv.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })
    assert.equal(login.status, 200, 'login (and its failure count) works without Redis')
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await srv.request('GET', '/rooms', { token: login.body.accessToken })).status)
    assert.deepEqual(statuses, [200, 200, 200, 429], 'the HTTP limit holds on this node alone')
    assert.equal((await srv.request('GET', '/health/live')).status, 200)
    assert.ok(srv.logs().some(l => String(l.msg).includes('HTTP rate limit: Redis unavailable')))
  })
})
