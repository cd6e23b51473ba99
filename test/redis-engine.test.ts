import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import { Redis } from 'ioredis'
import { ConfigError, loadConfig } from '../src/config.js'
import type { ControlMessage, Publication, PublishRequest, RoomEvent, StreamOptions } from '../src/realtime/engine.js'
import type { Logger } from '../src/realtime/logger.js'
import { createRedisEngine, REFRESH_BATCH, type RedisEngine, type RedisEngineOptions } from '../src/realtime/redis-engine/index.js'
import { deleteRedisKeys } from '../support/redis.js'
import { build, redisCall, skipUnlessRedis, tempDir, TEST_REDIS_URL, wsConnect, type WsClient, type WsFrame } from './helper.js'
import { privateRedis, privateSentinel, skipUnlessRedisServer } from './redis-server.js'

/*
 * What only the Redis engine does: several engines ("nodes") on one Redis, presence that
 * expires when a node stops refreshing, and faults. The contract every engine keeps is in
 * engine.contract.test.ts. Faults run against a private redis-server this file starts and
 * kills, never against the machine's shared Redis.
 */

const KEEP: StreamOptions = { historySize: 100, historyTtlSeconds: 3600 }
/** Waits are bounded generously and never asserted on: they only keep a broken run from hanging. */
const WAIT_MS = 10_000

const quietLog: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return quietLog } }

function request (data: unknown): PublishRequest {
  return { payload: JSON.stringify(data), kind: 'json', from: { id: 'alice' }, ts: Date.now() }
}

/** The data a publication carries (engines keep JSON as its text, bytes as they are). */
function dataOf (publication: Publication): unknown {
  return publication.kind === 'json' ? JSON.parse(publication.payload) : publication.payload
}

/** Polls `check` until it returns a value (not undefined), or fails after WAIT_MS naming `what`. */
async function eventually<T> (what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (err) {
      lastError = err
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? '' : `: ${String(lastError)}`}`)
}

/** Resolves with how the promise settled, or fails when it did not settle within `ms`. */
async function settlesWithin<T> (promise: Promise<T>, ms: number, what: string): Promise<{ ok: true, value: T } | { ok: false, err: unknown }> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise.then((value) => ({ ok: true as const, value }), (err: unknown) => ({ ok: false as const, err })),
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Records what one engine's broker delivers. */
function recorder (engine: RedisEngine) {
  const publications: Array<{ room: string, epoch: string, publication: Publication }> = []
  const events: Array<{ room: string, event: RoomEvent }> = []
  let resets = 0
  engine.broker.setHandler({
    onPublication (room, epoch, publication) { publications.push({ room, epoch, publication }) },
    onEvent (room, event) { events.push({ room, event }) },
    onReset () { resets++ }
  })
  return { publications, events, resets: () => resets }
}

/** Engines under one fresh key prefix (so they share rooms), closed and cleaned up after the test. */
function cluster (t: TestContext, url = TEST_REDIS_URL) {
  const keyPrefix = `sbtest:${randomBytes(6).toString('hex')}:`
  const engines: RedisEngine[] = []
  t.after(async () => {
    await Promise.all(engines.map((e) => e.close()))
    await deleteRedisKeys(url, keyPrefix).catch(() => {})
  })
  return async (options: Partial<RedisEngineOptions> = {}): Promise<RedisEngine> => {
    const engine = await createRedisEngine({ url, keyPrefix, log: quietLog, ...options })
    engines.push(engine)
    return engine
  }
}

describe('Redis engine: configuration', () => {
  const base = (t: TestContext) => ({ DATA_DIR: tempDir(t), JWT_SECRET: 'x'.repeat(40) })

  it('REDIS_URL selects the Redis engine; unset means the in-memory engine', (t) => {
    assert.equal(loadConfig(base(t)).redis, null)
    assert.deepEqual(loadConfig({ ...base(t), REDIS_URL: 'redis://:pw@redis.internal:6380/2' }).redis, {
      url: 'redis://:pw@redis.internal:6380/2', clusterNodes: null, sentinels: null, sentinelMaster: 'mymaster', waitReplicas: 0, waitTimeoutMs: 500, keyPrefix: 'sb:', presenceTtlSeconds: 30
    })
    assert.deepEqual(loadConfig({ ...base(t), REDIS_URL: 'rediss://redis.internal', REDIS_KEY_PREFIX: 'prod:', PRESENCE_TTL_SECONDS: '10' }).redis, {
      url: 'rediss://redis.internal', clusterNodes: null, sentinels: null, sentinelMaster: 'mymaster', waitReplicas: 0, waitTimeoutMs: 500, keyPrefix: 'prod:', presenceTtlSeconds: 10
    })
  })

  it('REDIS_SENTINELS finds the master through sentinels; the URL keeps the password and database', (t) => {
    assert.deepEqual(loadConfig({
      ...base(t),
      REDIS_URL: 'redis://:pw@ignored/3',
      REDIS_SENTINELS: 's1.internal:26379,10.0.0.2:26380',
      REDIS_SENTINEL_MASTER: 'switchboard',
      REDIS_SENTINEL_PASSWORD: 'sentinel-secret'
    }).redis, {
      url: 'redis://:pw@ignored/3',
      clusterNodes: null,
      sentinels: [{ host: 's1.internal', port: 26379 }, { host: '10.0.0.2', port: 26380 }],
      sentinelMaster: 'switchboard',
      sentinelPassword: 'sentinel-secret',
      waitReplicas: 0,
      waitTimeoutMs: 500,
      keyPrefix: 'sb:',
      presenceTtlSeconds: 30
    })
  })

  it('REDIS_CLUSTER_NODES runs the engine on a cluster; the seeds carry credentials and TLS', (t) => {
    assert.deepEqual(loadConfig({ ...base(t), REDIS_CLUSTER_NODES: '10.0.0.1:7000, 10.0.0.2:7001' }).redis, {
      url: 'redis://10.0.0.1:7000',
      clusterNodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }],
      sentinels: null,
      sentinelMaster: 'mymaster',
      waitReplicas: 0,
      waitTimeoutMs: 500,
      keyPrefix: 'sb:',
      presenceTtlSeconds: 30
    })
    const tls = loadConfig({ ...base(t), REDIS_CLUSTER_NODES: 'rediss://app:pw@a.internal:6379,rediss://app:pw@b.internal:6379', REDIS_WAIT_REPLICAS: '1' })
    assert.equal(tls.redis?.url, 'rediss://app:pw@a.internal:6379')
    assert.deepEqual(tls.redis?.clusterNodes, [{ host: 'a.internal', port: 6379 }, { host: 'b.internal', port: 6379 }])
    assert.equal(tls.redis?.waitReplicas, 1)
    assert.equal(tls.history.store, 'redis')
  })

  it('a bad value stops the start naming the variable, and never shows the Redis password', (t) => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ REDIS_URL: 'http://user:hunter2@redis.internal' }, 'REDIS_URL'],
      [{ REDIS_URL: 'redis://user:hunter2@[not-a-host' }, 'REDIS_URL'],
      [{ REDIS_KEY_PREFIX: 'a{b}' }, 'REDIS_KEY_PREFIX'],
      [{ PRESENCE_TTL_SECONDS: '1' }, 'PRESENCE_TTL_SECONDS'],
      [{ PRESENCE_TTL_SECONDS: '30s' }, 'PRESENCE_TTL_SECONDS'],
      [{ REDIS_SENTINELS: 'sentinel:26379' }, 'REDIS_SENTINELS'],
      [{ REDIS_URL: 'redis://:hunter2@x', REDIS_SENTINELS: 'sentinel' }, 'REDIS_SENTINELS'],
      [{ REDIS_URL: 'rediss://:hunter2@x', REDIS_SENTINELS: 'sentinel:26379' }, 'REDIS_SENTINELS'],
      [{ REDIS_URL: 'redis://:hunter2@x', REDIS_WAIT_TIMEOUT_MS: '5000' }, 'REDIS_WAIT_TIMEOUT_MS'],
      [{ REDIS_URL: 'redis://:hunter2@x', REDIS_CLUSTER_NODES: 'a:7000' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_URL: 'redis://:hunter2@x', REDIS_SENTINELS: 's:26379', REDIS_CLUSTER_NODES: 'a:7000' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'redis://:hunter2@a:7000,redis://:other@b:7000' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'redis://:hunter2@a:7000,rediss://:hunter2@b:7000' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'redis://:hunter2@a' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'redis://:hunter2@a:7000/2' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'http://:hunter2@a:7000' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'a:7000,,b:7000' }, 'REDIS_CLUSTER_NODES'],
      [{ REDIS_CLUSTER_NODES: 'a:7000', HISTORY_STORE: 'sqlite' }, 'HISTORY_STORE']
    ]
    for (const [env, variable] of cases) {
      assert.throws(() => loadConfig({ ...base(t), ...env }), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err))
        assert.match(err.message, new RegExp(`^${variable}\\b`))
        assert.doesNotMatch(err.message, /hunter2/)
        return true
      })
    }
  })
})

const skipShared = await skipUnlessRedis()

describe('Redis engine: several nodes on one Redis', { skip: skipShared }, () => {
  it('a publication on one node reaches the other node\'s subscribers in order, with the same numbering', async (t) => {
    const node = cluster(t)
    const a = await node()
    const b = await node()
    const seenA = recorder(a)
    const seenB = recorder(b)
    await b.broker.subscribe('lobby')
    const results = []
    for (let i = 1; i <= 50; i++) results.push(await a.broker.publish('lobby', request({ i }), KEEP))
    // Concurrent publishes from both nodes interleave, but every node sees one order.
    await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? a : b).broker.publish('lobby', request({ j: i }), KEEP)))
    await eventually('100 deliveries on b', () => seenB.publications.length >= 100 ? true : undefined)
    assert.deepEqual(seenB.publications.map((d) => d.publication.offset), Array.from({ length: 100 }, (_, k) => k + 1))
    const epoch = results[0]?.epoch
    assert.ok(seenB.publications.every((d) => d.epoch === epoch && d.room === 'lobby'))
    assert.deepEqual(seenB.publications.slice(0, 50).map((d) => dataOf(d.publication)), Array.from({ length: 50 }, (_, k) => ({ i: k + 1 })))
    assert.deepEqual(seenA.publications, [], 'a did not subscribe')
    assert.deepEqual(await a.history.position('lobby'), { epoch, offset: 100 })
    assert.deepEqual(await b.history.position('lobby'), { epoch, offset: 100 })

    const join: RoomEvent = { type: 'join', user: { id: 'carol' } }
    await a.broker.publishEvent('lobby', join)
    await eventually('the join on b', () => seenB.events.length === 1 ? true : undefined)
    assert.deepEqual(seenB.events, [{ room: 'lobby', event: join }])
  })

  it('recovers on another node: history written by one node is read by the other', async (t) => {
    const node = cluster(t)
    const a = await node()
    const b = await node()
    const first = await a.broker.publish('r', request('one'), KEEP)
    await a.broker.publish('r', request('two'), KEEP)
    const resumed = await b.history.history('r', { since: { epoch: first.epoch, offset: 1 }, limit: 10 }, KEEP)
    assert.equal(resumed.complete, true)
    assert.deepEqual(resumed.publications.map(dataOf), ['two'])
    // An idempotency key is cluster-wide.
    const once = await a.broker.publish('r', { ...request('k'), idempotencyKey: 'k1' }, KEEP)
    assert.deepEqual(await b.broker.publish('r', { ...request('k again'), idempotencyKey: 'k1' }, KEEP), { ...once, duplicate: true })
  })

  it('carries any publisher id and payload through pub/sub intact, and reads what older nodes wrote', async (t) => {
    const keyPrefix = `sbtest:${randomBytes(6).toString('hex')}:`
    t.after(() => deleteRedisKeys(TEST_REDIS_URL, keyPrefix))
    const engine = await createRedisEngine({ url: TEST_REDIS_URL, keyPrefix, log: quietLog })
    t.after(() => engine.close())
    const seen = recorder(engine)
    await engine.broker.subscribe('r')
    const odd = { payload: '{"text":"a|b|12|c\\n"}', kind: 'json' as const, from: { id: 'key:ops|é|7' }, ts: 42 }
    const { epoch } = await engine.broker.publish('r', odd, KEEP)
    await eventually('the live publication', () => seen.publications.length === 1 ? true : undefined)
    assert.deepEqual(seen.publications[0]?.publication, { offset: 1, ...odd })

    // What a node before payloads were kept as text wrote: one JSON envelope per entry and message.
    const base = `${keyPrefix}{r}`
    await redisCall(TEST_REDIS_URL, 'XADD', `${base}:stream`, '2-0', 't', String(Date.now()), 'd', '{"data":{"old":true},"from":{"id":"bob"},"ts":5}')
    await redisCall(TEST_REDIS_URL, 'HSET', `${base}:meta`, 'offset', '2')
    const read = await engine.history.history('r', { since: { epoch, offset: 0 }, limit: 10 }, KEEP)
    assert.equal(read.complete, true)
    assert.deepEqual(read.publications[1], { offset: 2, payload: '{"old":true}', kind: 'json', from: { id: 'bob' }, ts: 5 })
    await redisCall(TEST_REDIS_URL, 'PUBLISH', `${base}:ch`, `p|${epoch}|3|{"data":[1],"from":{"id":"carol"},"ts":6}`)
    await eventually('the old-format message', () => seen.publications.length === 2 ? true : undefined)
    assert.deepEqual(seen.publications[1]?.publication, { offset: 3, payload: '[1]', kind: 'json', from: { id: 'carol' }, ts: 6 })
  })

  it('binary publications are raw bytes in Redis: the stream entry and the channel message hold them unescaped, and every node reads them back intact', async (t) => {
    const keyPrefix = `sbtest:${randomBytes(6).toString('hex')}:`
    t.after(() => deleteRedisKeys(TEST_REDIS_URL, keyPrefix))
    const a = await createRedisEngine({ url: TEST_REDIS_URL, keyPrefix, log: quietLog })
    t.after(() => a.close())
    const b = await createRedisEngine({ url: TEST_REDIS_URL, keyPrefix, log: quietLog })
    t.after(() => b.close())
    const seenB = recorder(b)
    await b.broker.subscribe('r')
    const bytes = Buffer.concat([Buffer.from([0x00, 0xff, 0x7c, 0x80, 0xc3]), Buffer.from('|binary|3|é', 'utf8'), Buffer.from(Array.from({ length: 256 }, (_, i) => i))])
    const sent = { payload: bytes, kind: 'binary' as const, from: { id: 'key:ops|é|7' }, ts: 42 }
    const { epoch } = await a.broker.publish('r', sent, KEEP)
    await eventually('the live publication on b', () => seenB.publications.length === 1 ? true : undefined)
    assert.deepEqual(seenB.publications[0], { room: 'r', epoch, publication: { offset: 1, ...sent } })
    for (const node of [a, b]) {
      const read = await node.history.history('r', { limit: 10 }, KEEP)
      assert.deepEqual(read.publications, [{ offset: 1, ...sent }])
    }

    // What Redis holds: the bytes themselves, beside kind `binary` (no base64, no text).
    const raw = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0 })
    await raw.connect()
    t.after(() => raw.quit())
    const entries = await raw.xrangeBuffer(`${keyPrefix}{r}:stream`, '-', '+')
    assert.equal(entries.length, 1)
    const fields = entries[0]![1]
    const entry = new Map<string, Buffer>()
    for (let i = 0; i < fields.length; i += 2) entry.set(fields[i]!.toString(), fields[i + 1]!)
    assert.equal(entry.get('k')?.toString(), 'binary')
    assert.ok(entry.get('d')?.equals(bytes), 'the stream entry holds the raw bytes')
    assert.equal(entry.get('f')?.toString(), 'key:ops|é|7')

    // A channel message as publish.lua writes it, by hand: the publisher id's length in bytes.
    const id = Buffer.from('key:é|x')
    await raw.publish(`${keyPrefix}{r}:ch`, Buffer.concat([Buffer.from(`m|${epoch}|2|7|binary|${id.length}|`), id, Buffer.from([0xff, 0x00])]))
    await eventually('the hand-written message', () => seenB.publications.length === 2 ? true : undefined)
    assert.deepEqual(seenB.publications[1]?.publication, { offset: 2, payload: Buffer.from([0xff, 0x00]), kind: 'binary', from: { id: 'key:é|x' }, ts: 7 })
  })

  it('presence spans nodes: one join for a user\'s first connection anywhere, one leave for the last', async (t) => {
    const node = cluster(t)
    const a = await node()
    const b = await node()
    assert.equal(await a.presence.add('r', 'a1', 'alice'), true)
    assert.equal(await b.presence.add('r', 'b1', 'alice'), false)
    assert.equal(await b.presence.add('r', 'b2', 'bob'), true)
    assert.deepEqual(await a.presence.get('r'), { users: ['alice', 'bob'], connections: 3 })
    assert.deepEqual(await b.presence.get('r'), { users: ['alice', 'bob'], connections: 3 })
    assert.equal(await a.presence.remove('r', 'a1', 'alice'), false)
    assert.equal(await b.presence.remove('r', 'b1', 'alice'), true)
    assert.deepEqual(await a.presence.get('r'), { users: ['bob'], connections: 1 })
  })

  it('a node that stops refreshing leaves presence when its entries expire, with leave events on the others; a refreshing node stays past the TTL', async (t) => {
    const node = cluster(t)
    const a = await node({ presenceTtlSeconds: 2 })
    const b = await node({ presenceTtlSeconds: 2 })
    const seenB = recorder(b)
    await b.broker.subscribe('r')
    assert.equal(await a.presence.add('r', 'a1', 'alice'), true)
    assert.equal(await a.presence.add('r', 'a2', 'bob'), true)
    assert.equal(await b.presence.add('r', 'b1', 'bob'), false)
    // The barrier for "b1 outlived the TTL": carol's entry, added after b1 by a node with a
    // longer TTL (3 s, so a 2.25 s lifetime) that then dies. It expires after b1 would have
    // without refreshes, even past b1's 2 s TTL; purging an entry purges every expired one
    // of the room, so once carol's leave is seen an unrefreshed b1 would be gone too.
    const probe = await node({ presenceTtlSeconds: 3 })
    assert.equal(await probe.presence.add('r', 'p1', 'carol'), true)
    // a (and the probe) die without cleanup: nothing refreshes their entries any more.
    await a.close()
    await probe.close()

    const leave = await eventually('a leave for alice on b', () => seenB.events.find((d) => d.event.type === 'leave' && d.event.user.id === 'alice'))
    assert.deepEqual(leave, { room: 'r', event: { type: 'leave', user: { id: 'alice' } } })
    // Carol may or may not have left yet; alice is gone and bob (on b too) stays.
    const { users } = await b.presence.get('r')
    assert.ok(users.includes('bob') && !users.includes('alice'), JSON.stringify(users))
    await eventually('a leave for carol on b', () => seenB.events.find((d) => d.event.type === 'leave' && d.event.user.id === 'carol'))
    // b kept its own connection alive past the TTL, and bob never left.
    assert.deepEqual(await b.presence.get('r'), { users: ['bob'], connections: 1 })
    assert.deepEqual(seenB.events.map((d) => d.event).sort((x, y) => x.user.id.localeCompare(y.user.id)), [{ type: 'leave', user: { id: 'alice' } }, { type: 'leave', user: { id: 'carol' } }])
  })

  it('a control message reaches every node on the prefix (the sender too), in order; other prefixes hear nothing', async (t) => {
    const node = cluster(t)
    const a = await node()
    const b = await node()
    const stranger = await cluster(t)()
    const got = { a: [] as ControlMessage[], b: [] as ControlMessage[], stranger: [] as ControlMessage[] }
    a.control?.onControl((m) => { got.a.push(m) })
    b.control?.onControl((m) => { got.b.push(m) })
    stranger.control?.onControl((m) => { got.stranger.push(m) })
    const sent: ControlMessage[] = Array.from({ length: 20 }, (_, i) => ({ node: 'a', type: 'kick', connectionId: `c${i}` }))
    for (const message of sent) await a.control?.publishControl(message)
    await eventually('both nodes got all', () => (got.a.length === 20 && got.b.length === 20) || undefined)
    assert.deepEqual(got.a, sent)
    assert.deepEqual(got.b, sent)
    assert.deepEqual(got.stranger, [])
  })

  it('counts a user\'s connections across nodes; a node that stops refreshing stops counting when its entries expire', async (t) => {
    const node = cluster(t)
    const a = await node({ presenceTtlSeconds: 2 })
    const b = await node({ presenceTtlSeconds: 2 })
    assert.equal(await a.connections?.reserve('user:u', 'a1', 2), true)
    assert.equal(await b.connections?.reserve('user:u', 'b1', 2), true)
    assert.equal(await a.connections?.reserve('user:u', 'a2', 2), false, 'the cap holds across nodes')
    assert.equal(await b.connections?.reserve('user:u', 'b2', 2), false)
    // Past one lifetime, b's refresh keeps b1 counted while a (closed: a dead node) stops counting a1.
    await a.close()
    const admitted = await eventually('a1 expired', async () => (await b.connections?.reserve('user:u', 'b3', 2)) === true || undefined)
    assert.equal(admitted, true)
    assert.equal(await b.connections?.reserve('user:u', 'b4', 2), false, 'b1 and b3 are still counted')
  })
})

// ---------------------------------------------------------------------------------------
// Faults, against a private redis-server.

describe('Redis engine: faults', { skip: skipUnlessRedisServer() }, () => {
  it('Redis killed mid-stream: no crash, fast failures, then reconnect, restored subscriptions and onReset', async (t) => {
    const redis = await privateRedis(t)
    const node = cluster(t, redis.url)
    // A command timeout far beyond the waits below: a call that fails here was refused because
    // the connection is down, not given up on after waiting (which is what "fast" means).
    const engine = await node({ timeoutMs: 10 * WAIT_MS })
    const seen = recorder(engine)
    await engine.broker.subscribe('r')
    const before = await engine.broker.publish('r', request('before'), KEEP)
    await eventually('the first delivery', () => seen.publications.length === 1 ? true : undefined)

    await redis.kill()
    // Every call fails, and fails fast: nothing waits for Redis to come back.
    const refusedWhileDown = async (call: Promise<unknown>, what: string): Promise<void> => {
      const settled = await settlesWithin(call, WAIT_MS, what)
      assert.equal(settled.ok, false, `${what}: refused`)
      assert.doesNotMatch(String(settled.ok ? '' : settled.err), /timed out/i, `${what}: refused, not timed out`)
    }
    await refusedWhileDown(engine.broker.publish('r', request('during'), KEEP), 'a publish while Redis is down')
    await refusedWhileDown(engine.ping(), 'a ping while Redis is down')
    await refusedWhileDown(engine.history.position('r'), 'position() while Redis is down')
    await refusedWhileDown(engine.broker.subscribe('other'), 'subscribe while Redis is down')
    assert.equal(seen.resets(), 0)

    await redis.start()
    await eventually('onReset after the reconnect', () => seen.resets() === 1 ? true : undefined)
    await eventually('ping answering again', async () => { await engine.ping(); return true })
    // This server kept nothing (no persistence): the stream comes back under a new epoch, and
    // a client resuming from before is told it cannot recover, never silently given a gap.
    const after = await engine.broker.publish('r', request('after'), KEEP)
    assert.notEqual(after.epoch, before.epoch)
    await eventually('a delivery on the restored subscription', () => seen.publications.length === 2 ? true : undefined)
    assert.deepEqual(seen.publications.map((d) => dataOf(d.publication)), ['before', 'after'])
    const resume = await engine.history.history('r', { since: { epoch: before.epoch, offset: before.offset }, limit: 10 }, KEEP)
    assert.equal(resume.complete, false)
  })

  it('app: readiness and HTTP publish answer 503 while Redis is down; a WebSocket subscriber recovers every acknowledged message', async (t) => {
    const redis = await privateRedis(t, { persist: true })
    const keyPrefix = `sbtest:${randomBytes(6).toString('hex')}:`
    const srv = await build(t, { env: { REDIS_URL: redis.url, REDIS_KEY_PREFIX: keyPrefix, WS_MESSAGES_PER_SECOND: '1000', WS_MESSAGES_BURST: '1000' } })
    const ready = await srv.request('GET', '/health/ready')
    assert.equal(ready.status, 200, ready.text)
    assert.deepEqual(ready.body.checks.engine, { ok: true })

    const token = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    const client = await wsConnect(t, srv, { token })
    const received: Array<{ epoch: string, offset: number, data: unknown }> = []
    const collect = (frame: WsFrame): void => { if (frame.type === 'message' && frame.room === 'lobby') received.push({ epoch: frame.epoch, offset: frame.offset, data: frame.data }) }
    client.socket.on('message', (raw) => collect(JSON.parse(raw.toString()) as WsFrame))
    await subscribe(client, 'lobby')

    const publish = (n: number) => srv.request('POST', '/rooms/lobby/messages', { token, body: { data: { n } } })
    const acknowledged: number[] = []
    for (const n of [1, 2]) {
      const res = await publish(n)
      assert.equal(res.status, 201, res.text)
      acknowledged.push(n)
    }
    await eventually('the first two messages live', () => received.length === 2 ? true : undefined)

    await redis.kill()
    const notReady = await eventually('readiness 503', async () => {
      const res = await srv.request('GET', '/health/ready')
      return res.status === 503 ? res : undefined
    })
    assert.equal(notReady.body.checks.engine.ok, false)
    assert.equal(notReady.body.checks.store.ok, true)
    assert.equal((await srv.request('GET', '/health/live')).status, 200)
    const refused = await publish(99)
    assert.equal(refused.status, 503, refused.text)
    assert.equal(refused.body.code, 'SB_ERR_UNAVAILABLE')
    assert.equal(client.socket.readyState, client.socket.OPEN, 'local clients stay connected')

    await redis.start()
    await eventually('readiness 200 again', async () => (await srv.request('GET', '/health/ready')).status === 200 ? true : undefined)
    // Published as soon as Redis is back: live delivery may or may not carry it, recovery must.
    const third = await publish(3)
    assert.equal(third.status, 201, third.text)
    acknowledged.push(3)

    const unsubscribed = await client.next((f) => f.type === 'unsubscribed' && f.room === 'lobby')
    assert.equal(unsubscribed.reason, 'resubscribe')
    const last = received.at(-1)
    assert.ok(last !== undefined)
    const resumed = await subscribe(client, 'lobby', { epoch: last.epoch, offset: last.offset })
    assert.equal(resumed.result.recovered, true, JSON.stringify(resumed.result))
    for (const p of resumed.result.publications as Array<{ offset: number, data: unknown }>) received.push({ epoch: resumed.result.epoch, offset: p.offset, data: p.data })

    const fourth = await publish(4)
    assert.equal(fourth.status, 201, fourth.text)
    acknowledged.push(4)
    await eventually('the fourth message live', () => received.length >= 4 ? true : undefined)
    // Every acknowledged message exactly once, in order, in the epoch that survived the restart.
    assert.deepEqual(received.map((r) => r.data), acknowledged.map((n) => ({ n })))
    assert.deepEqual(received.map((r) => r.offset), [1, 2, 3, 4])
    assert.ok(received.every((r) => r.epoch === received[0]?.epoch))
  })
})

async function subscribe (client: WsClient, room: string, since?: { epoch: string, offset: number }): Promise<WsFrame> {
  const reply = await client.command({ type: 'subscribe', room, ...(since === undefined ? {} : { since }) })
  assert.equal(reply.type, 'reply', `subscribe ${room}: ${JSON.stringify(reply)}`)
  return reply
}


/**
 * The app through a private sentinel watching `sbmaster`. REDIS_URL points at port 1, where
 * nothing listens: only the sentinel can lead the app to the master.
 */
function sentinelEnv (sentinelPort: number): Record<string, string> {
  return {
    REDIS_URL: 'redis://127.0.0.1:1/0',
    REDIS_SENTINELS: `127.0.0.1:${sentinelPort}`,
    REDIS_SENTINEL_MASTER: 'sbmaster',
    REDIS_KEY_PREFIX: `sbtest:${randomBytes(6).toString('hex')}:`
  }
}

describe('Redis engine: refresh of a large room', { skip: skipUnlessRedisServer() }, () => {
  it('a node refreshes a room of 1,100 connections (and a user\'s 1,100) in batches: every script is bounded, and all stay present', async (t) => {
    const redis = await privateRedis(t)
    const engine = await cluster(t, redis.url)({ presenceTtlSeconds: 2 })
    const ids = Array.from({ length: 1100 }, (_, i) => `conn-${i}`)
    await Promise.all(ids.map(async (id, i) => await engine.presence.add('big', id, `user-${i}`)))
    await Promise.all(ids.map(async (id) => assert.equal(await engine.connections!.reserve('many', id, 5000), true)))
    // Every command goes to the slow log from here, with its arguments (the first 31 and a count of the rest).
    await redisCall(redis.url, 'CONFIG', 'SET', 'slowlog-log-slower-than', '0')
    await redisCall(redis.url, 'CONFIG', 'SET', 'slowlog-max-len', '100000')
    await redisCall(redis.url, 'SLOWLOG', 'RESET')
    // Past the entries' lifetime (1.5 s): only the refreshes (every 0.67 s) keep them. This
    // sleep stays: the refreshes running over real time on Redis's clock (TIME, which no test
    // can move) are what is measured, and the slow log must see several rounds of them.
    await new Promise((resolve) => setTimeout(resolve, 3000))
    assert.deepEqual((await engine.presence.get('big')).connections, 1100)

    const log = await redisCall(redis.url, 'SLOWLOG', 'GET', '100000') as Array<[number, number, number, string[], string, string]>
    const argumentCount = (args: string[]): number => {
      const more = /^\.\.\. \((\d+) more arguments\)$/.exec(args.at(-1) ?? '')
      return more === null ? args.length : args.length - 1 + Number(more[1])
    }
    const scripts = log.map(([, , , args]) => args).filter((args) => args[0]?.toLowerCase() === 'evalsha').map(argumentCount)
    // Presence: evalsha sha 3 keys×3 lifetime ttl last ids…; connection counts: evalsha sha 1 key lifetime ttl ids….
    const largest = Math.max(...scripts)
    assert.ok(largest <= 9 + REFRESH_BATCH, `a script carried ${largest} arguments`)
    const refreshBatches = scripts.filter((n) => n > 9 + 50).length
    assert.ok(refreshBatches >= 2 * Math.ceil(1100 / REFRESH_BATCH), `batches seen: ${refreshBatches}`)
    // On their own connection: publishes on the command connection never queue behind them.
    const senders = new Set(log.filter(([, , , args]) => args[0]?.toLowerCase() === 'evalsha' && argumentCount(args) > 9 + 50).map(([, , , , , name]) => name))
    assert.deepEqual([...senders], ['switchboard-housekeeping'])
  })
})

describe('Redis engine: through Redis Sentinel', { skip: skipUnlessRedisServer() }, () => {
  /** The names of the clients connected to a Redis, from CLIENT LIST. */
  async function clientNames (url: string): Promise<string[]> {
    const list = await redisCall(url, 'CLIENT', 'LIST') as string
    return list.split('\n').map(line => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '').filter(Boolean)
  }

  it('REDIS_SENTINELS: the app finds the master by name, serves real-time traffic, and every connection is on that master', async (t) => {
    const master = await privateRedis(t)
    const sentinel = await privateSentinel(t, master, 'sbmaster')
    const srv = await build(t, { env: sentinelEnv(sentinel.port) })
    const ready = await srv.request('GET', '/health/ready')
    assert.equal(ready.status, 200, ready.text)
    const token = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    const client = await wsConnect(t, srv, { token })
    await subscribe(client, 'lobby')
    assert.equal((await srv.request('POST', '/rooms/lobby/messages', { token, body: { data: 'via sentinel' } })).status, 201)
    const message = await client.next(f => f.type === 'message')
    assert.equal(message.data, 'via sentinel')
    const names = await clientNames(master.url)
    for (const name of ['switchboard-cmd', 'switchboard-sub', 'switchboard-housekeeping', 'switchboard-limits']) assert.ok(names.includes(name), `${name} in ${names.join(', ')}`)
  })
})

describe('Redis engine: Sentinel failover', { skip: skipUnlessRedisServer() }, () => {
  it('the master killed: the sentinel promotes the replica, and the app follows it — ready again, publishing again; a subscriber from before the failover is told to resubscribe, recovers in the same epoch on the same socket, and receives what is published after', async (t) => {
    const master = await privateRedis(t)
    const replica = await privateRedis(t, { replicaOf: master })
    const sentinel = await privateSentinel(t, master, 'sbmaster')
    const sentinelUrl = `redis://127.0.0.1:${sentinel.port}`
    const ask = async (...args: [string, ...string[]]): Promise<unknown> => await redisCall(sentinelUrl, ...args)
    // The sentinel must know the replica before the master goes, or it has nobody to promote.
    await eventually('the sentinel to know the replica', async () => ((await ask('SENTINEL', 'REPLICAS', 'sbmaster')) as unknown[]).length === 1 || undefined, 20_000)

    const srv = await build(t, { env: sentinelEnv(sentinel.port) })
    const token = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    const client = await wsConnect(t, srv, { token })
    const start = await subscribe(client, 'lobby')
    const before = await srv.request('POST', '/rooms/lobby/messages', { token, body: { data: 'before' } })
    assert.equal(before.status, 201, before.text)
    const received = await client.next(f => f.type === 'message' && f.data === 'before')
    // Replication is asynchronous: the master goes only once the replica has 'before', so what
    // the subscriber recovers on the promoted replica does not depend on a race.
    const masterOffset = replicationOffset(await redisCall(master.url, 'INFO', 'replication') as string, 'master_repl_offset')
    await eventually('the replica to have everything written so far', async () =>
      replicationOffset(await redisCall(replica.url, 'INFO', 'replication') as string, 'slave_repl_offset') >= masterOffset || undefined)

    await master.kill()
    await eventually('the replica promoted', async () => {
      const [, port] = await ask('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'sbmaster') as [string, string]
      return port === new URL(replica.url).port || undefined
    }, 30_000)
    await eventually('ready again on the new master', async () => (await srv.request('GET', '/health/ready')).status === 200 || undefined, 30_000)
    // The node's pub/sub connection came back on another server: live delivery may have
    // skipped something, so the subscriber is told to resubscribe (its socket stays open).
    const unsubscribed = await client.next(f => f.type === 'unsubscribed' && f.room === 'lobby', 30_000)
    assert.equal(unsubscribed.reason, 'resubscribe')
    const resumed = await subscribe(client, 'lobby', { epoch: received.epoch as string, offset: received.offset as number })
    assert.equal(resumed.result.recovered, true, JSON.stringify(resumed.result))
    assert.equal(resumed.result.epoch, start.result.epoch, 'the promoted replica kept the stream')
    assert.equal(resumed.result.offset, received.offset, 'nothing published in between')
    const published = await eventually('a publish accepted by the new master', async () => {
      const res = await srv.request('POST', '/rooms/lobby/messages', { token, body: { data: 'after' } })
      return res.status === 201 ? res : undefined
    })
    assert.equal(published.status, 201)
    const after = await client.next(f => f.type === 'message' && f.data === 'after')
    assert.equal(after.offset, published.body.offset)
    assert.equal(client.socket.readyState, client.socket.OPEN, 'the same socket throughout')
    assert.equal(srv.app.server.listening, true)
  })
})

/** A numeric field of INFO replication. */
function replicationOffset (info: string, field: 'master_repl_offset' | 'slave_repl_offset'): number {
  const value = new RegExp(`^${field}:(\\d+)`, 'm').exec(info)?.[1]
  assert.ok(value !== undefined, `${field} in INFO replication:\n${info}`)
  return Number(value)
}

describe('Redis engine: publishes confirmed by replicas (REDIS_WAIT_REPLICAS)', { skip: skipUnlessRedisServer() }, () => {
  it('acknowledged only once a replica has it: refused (and retried once with its key) while the replica is down, confirmed again after', async (t) => {
    const primary = await privateRedis(t)
    const replica = await privateRedis(t, { replicaOf: primary })
    await eventually('the replica in sync', async () => /master_link_status:up/.test(await redisCall(replica.url, 'INFO', 'replication') as string) || undefined)
    const node = cluster(t, primary.url)
    const engine = await node({ waitReplicas: 1, waitTimeoutMs: 300 })
    const first = await engine.broker.publish('r', request('confirmed'), KEEP)
    assert.equal(first.offset, 1)

    await replica.kill()
    const refused = await settlesWithin(engine.broker.publish('r', { ...request('unconfirmed'), idempotencyKey: 'k1' }, KEEP), WAIT_MS, 'a publish with no replica')
    assert.equal(refused.ok, false, 'not acknowledged without a replica')
    assert.match(String(refused.ok ? '' : refused.err), /0 of 1 replicas/)

    await replica.start()
    await eventually('the replica back in sync', async () => /master_link_status:up/.test(await redisCall(replica.url, 'INFO', 'replication') as string) || undefined, 20_000)
    // The retry with the same key: published once (the primary had it), acknowledged now.
    const retried = await engine.broker.publish('r', { ...request('unconfirmed'), idempotencyKey: 'k1' }, KEEP)
    assert.deepEqual([retried.offset, retried.duplicate], [2, true])
    const history = await engine.history.history('r', { limit: 10 }, KEEP)
    assert.deepEqual(history.publications.map(dataOf), ['confirmed', 'unconfirmed'])
  })
})
