import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it, type TestContext } from 'node:test'
import { deleteRedisKeys } from '../../support/redis.js'
import { join } from 'node:path'
import { build, skipUnlessRedis, tempDir, TEST_REDIS_URL, wsConnect, type TestApp, type WsClient } from '../helper.js'
import { assertRssBack, settledRss } from './support.js'

/*
 * Finding 1 and 2 of issue 19: an ordinary user made a node keep ~23× the bytes it was sent
 * (history held parsed object graphs, bounded only per room by counts an owner chose), and a
 * history read of such a room answered everything at once, blocking the loop and closing the
 * asker with 4008. History now keeps payload bytes under a per-node budget, ordinary users get
 * smaller caps, and every history answer is a page capped by bytes.
 */

const MiB = 1024 * 1024
/** What a page may carry beyond its cap: the reply's own envelope. */
const ENVELOPE_SLACK = 4096
/** 21,000 empty objects: 63 KB of JSON that parses into a large object graph. */
const AMPLIFYING = Array.from({ length: 21_000 }, () => ({}))

async function createRoom (api: TestApp, token: string, id: string, settings: Record<string, unknown> = {}): Promise<void> {
  const res = await api.request('POST', '/rooms', { token, body: { id, ...settings } })
  assert.equal(res.status, 201, res.text)
}

async function publish (api: TestApp, token: string, room: string, data: unknown): Promise<void> {
  const res = await api.request('POST', `/rooms/${room}/messages`, { token, body: { data } })
  assert.equal(res.status, 201, res.text)
}

/** The env of an app on the Redis engine, under a key prefix of its own, removed after the test. */
function redisEnv (t: TestContext): Record<string, string> {
  const prefix = `sbtest:${randomBytes(6).toString('hex')}:`
  t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
  return { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix }
}

const redisSkip = await skipUnlessRedis()

describe('hostile: history memory', () => {
  it('refuses an ordinary user history settings beyond the caps, and allows an admin', async (t) => {
    const api = await build(t)
    const token = await api.userToken('mallory')
    const big = await api.request('POST', '/rooms', { token, body: { id: 'hoard', historySize: 10_000, historyTtlSeconds: 30 * 86400 } })
    assert.equal(big.status, 403, big.text)
    assert.equal(big.body.code, 'SB_ERR_HISTORY_LIMIT')
    assert.match(big.body.message, /historySize/)

    const longTtl = await api.request('POST', '/rooms', { token, body: { id: 'hoard', historyTtlSeconds: 30 * 86400 } })
    assert.equal(longTtl.status, 403, longTtl.text)
    assert.equal(longTtl.body.code, 'SB_ERR_HISTORY_LIMIT')

    await createRoom(api, token, 'small', { historySize: 1000, historyTtlSeconds: 7 * 86400 })
    const grow = await api.request('PATCH', '/rooms/small', { token, body: { historySize: 5000 } })
    assert.equal(grow.status, 403, grow.text)
    assert.equal(grow.body.code, 'SB_ERR_HISTORY_LIMIT')

    const admin = await api.userToken('root', 'admin')
    await createRoom(api, admin, 'archive', { historySize: 10_000, historyTtlSeconds: 30 * 86400 })
    // An owner of a room an admin configured may keep or lower its values, never raise them.
    assert.equal((await api.request('PUT', '/rooms/archive/members/mallory', { token: admin, body: { role: 'owner' } })).status, 201)
    const rename = await api.request('PATCH', '/rooms/archive', { token, body: { name: 'Archive', historySize: 10_000, historyTtlSeconds: 30 * 86400 } })
    assert.equal(rename.status, 200, rename.text)
    assert.equal((await api.request('PATCH', '/rooms/archive', { token, body: { historySize: 5000 } })).status, 200)
    const raise = await api.request('PATCH', '/rooms/archive', { token, body: { historySize: 6000 } })
    assert.equal(raise.status, 403)
    assert.equal(raise.body.code, 'SB_ERR_HISTORY_LIMIT')
  })

  it('caps archiveDays for ordinary users at ARCHIVE_MAX_DAYS (admins may set more); new rooms follow ARCHIVE_BY_DEFAULT', async (t) => {
    const api = await build(t, { env: { ARCHIVE_MAX_DAYS: '10', ARCHIVE_BY_DEFAULT: 'true' } })
    const token = await api.userToken('mallory')
    const long = await api.request('POST', '/rooms', { token, body: { id: 'hoard', archiveDays: 11 } })
    assert.equal(long.status, 403, long.text)
    assert.equal(long.body.code, 'SB_ERR_HISTORY_LIMIT')
    assert.match(long.body.message, /archiveDays above 10/)
    const bad = await api.request('POST', '/rooms', { token, body: { id: 'hoard', archive: 'yes', archiveDays: 0 } })
    assert.equal(bad.status, 400, bad.text)

    const created = await api.request('POST', '/rooms', { token, body: { id: 'plain' } })
    assert.equal(created.status, 201, created.text)
    assert.deepEqual([created.body.archive, created.body.archiveDays], [true, 10], 'on by default, the default days within the cap')
    const off = await api.request('PATCH', '/rooms/plain', { token, body: { archive: false, archiveDays: 3 } })
    assert.deepEqual([off.status, off.body.archive, off.body.archiveDays], [200, false, 3])
    const grow = await api.request('PATCH', '/rooms/plain', { token, body: { archiveDays: 365 } })
    assert.equal(grow.status, 403, grow.text)

    const admin = await api.userToken('root', 'admin')
    await createRoom(api, admin, 'records', { archive: true, archiveDays: 3650 })
    const tooLong = await api.request('POST', '/rooms', { token: admin, body: { id: 'forever', archiveDays: 3651 } })
    assert.equal(tooLong.status, 400, tooLong.text)
  })

  it('keeps the history of amplifying payloads within HISTORY_MEMORY_BYTES, and RSS comes back', async (t) => {
    const budget = 8 * MiB
    const api = await build(t, { env: { HISTORY_MEMORY_BYTES: String(budget) } })
    const token = await api.userToken('mallory')
    const rooms = ['flood-1', 'flood-2', 'flood-3', 'flood-4']
    for (const room of rooms) await createRoom(api, token, room, { historySize: 1000, historyTtlSeconds: 7 * 86400 })
    const baseline = await settledRss()

    // Three times the budget, every frame the amplifying shape of the finding.
    const frames = Math.ceil(3 * budget / JSON.stringify(AMPLIFYING).length)
    for (let i = 0; i < frames; i++) await publish(api, token, rooms[i % rooms.length]!, AMPLIFYING)

    const held = api.app.realtimeEngine.history.bytesHeld?.()
    assert.equal(typeof held, 'number', 'the memory engine reports the bytes its history holds')
    assert.ok(held! <= budget, `history holds ${held} bytes, over the ${budget} budget`)
    assert.ok(held! > budget / 2, `history holds ${held} bytes: eviction went far below the budget`)
    // Operators see the same count (a loopback scrape needs no credentials).
    const scrape = await api.request('GET', '/metrics')
    assert.equal(Number(/^switchboard_history_bytes (\d+)$/m.exec(scrape.text)?.[1]), held)
    // What was kept is still served, newest last.
    const latest = await api.request('GET', `/rooms/${rooms[0]!}/messages?limit=1`, { token })
    assert.equal(latest.status, 200)
    assert.deepEqual(latest.body.publications[0].data, AMPLIFYING)
    await assertRssBack(baseline, 'publishing 3× the history budget of empty-object arrays')
  })

  for (const engine of ['memory', 'sqlite archive', 'redis'] as const) {
    it(`answers a large history in pages capped by bytes, over REST and WebSocket, each publication once (${engine} engine)`, { skip: engine === 'redis' ? redisSkip : false }, async (t) => {
      const env = engine === 'redis' ? redisEnv(t) : engine === 'sqlite archive' ? { DATABASE_URL: `sqlite:${join(tempDir(t), 'archive.db')}` } : {}
      await readsInPages(t, env)
    })
  }

  async function readsInPages (t: TestContext, env: Record<string, string>): Promise<void> {
    const api = await build(t, { env })
    const token = await api.userToken('alice')
    await createRoom(api, token, 'big', { historySize: 1000 })
    const published = 40
    // 40 × 60 KB: 2.4 MB of history, more than two pages.
    for (let i = 1; i <= published; i++) await publish(api, token, 'big', { n: i, pad: 'x'.repeat(60_000) })

    // REST: the newest 1000 asked for, served oldest first in pages; `since` continues.
    const seenRest: number[] = []
    let res = await api.request('GET', '/rooms/big/messages?limit=1000', { token })
    for (let pages = 0; ; pages++) {
      assert.equal(res.status, 200, res.text)
      assert.ok(Buffer.byteLength(res.text) <= MiB + ENVELOPE_SLACK, `a REST page of ${Buffer.byteLength(res.text)} bytes`)
      assert.ok(res.body.publications.length > 0)
      seenRest.push(...res.body.publications.map((p: { offset: number, data: { n: number } }) => {
        assert.equal(p.data.n, p.offset)
        return p.offset
      }))
      if (res.body.complete === true) break
      assert.ok(pages < published, 'paging ends')
      const last = seenRest[seenRest.length - 1]!
      res = await api.request('GET', `/rooms/big/messages?limit=1000&epoch=${res.body.epoch as string}&since=${last}`, { token })
    }
    assert.ok(seenRest.length > 0 && res.body.offset === published)
    assert.deepEqual(seenRest, Array.from({ length: published }, (_, i) => i + 1), 'every publication exactly once, in order')

    // Reading back with `before` (the archive's paging): the same byte cap, every publication once.
    const back: number[] = []
    let cursor = `before=${Number.MAX_SAFE_INTEGER}`
    for (let pages = 0; ; pages++) {
      const page = await api.request('GET', `/rooms/big/messages?limit=1000&${cursor}`, { token })
      assert.equal(page.status, 200, page.text.slice(0, 200))
      assert.ok(Buffer.byteLength(page.text) <= MiB + ENVELOPE_SLACK, `a page of ${Buffer.byteLength(page.text)} bytes`)
      back.push(...page.body.publications.map((p: { offset: number }) => p.offset))
      if (page.body.next === null) break
      assert.ok(pages < published, 'paging ends')
      cursor = `before=${page.body.next.before as number}&epoch=${page.body.next.epoch as string}`
    }
    assert.deepEqual(back, [...seenRest].reverse())
    const overlong = await api.request('GET', `/rooms/big/messages?before=5&epoch=${'e'.repeat(65)}`, { token })
    assert.equal(overlong.status, 400)
    const huge = await api.request('GET', `/rooms/big/messages?after=${'9'.repeat(30)}`, { token })
    assert.equal(huge.status, 400)

    // WebSocket: the same over `history`; the asker stays connected.
    const ws: WsClient = await wsConnect(t, api, { token })
    const seenWs: number[] = []
    let reply = await ws.command({ type: 'history', room: 'big', limit: 1000 })
    for (let pages = 0; ; pages++) {
      assert.equal(reply.type, 'reply', JSON.stringify(reply).slice(0, 200))
      assert.ok(Buffer.byteLength(JSON.stringify(reply)) <= MiB + ENVELOPE_SLACK)
      assert.ok(reply.result.publications.length > 0)
      seenWs.push(...reply.result.publications.map((p: { offset: number }) => p.offset))
      if (reply.result.complete === true) break
      assert.ok(pages < published, 'paging ends')
      reply = await ws.command({ type: 'history', room: 'big', limit: 1000, since: { epoch: reply.result.epoch, offset: seenWs[seenWs.length - 1] } })
    }
    assert.deepEqual(seenWs, seenRest)

    // Recovery of more than a page is refused as a gap (recovered: false), never sent whole.
    const subscribed = await ws.command({ type: 'subscribe', room: 'big', since: { epoch: reply.result.epoch, offset: 0 } })
    assert.equal(subscribed.type, 'reply')
    assert.equal(subscribed.result.recovered, false)
    assert.deepEqual(subscribed.result.publications, [])
    const pong = await ws.command({ type: 'ping' })
    assert.equal(pong.type, 'reply', 'the asker is still connected')
    assert.equal(ws.socket.readyState, ws.socket.OPEN)
  }

  it('refuses an ordinary user a room beyond MAX_ROOMS_PER_USER', async (t) => {
    const api = await build(t)
    const token = await api.userToken('mallory')
    for (let i = 1; i <= 50; i++) await createRoom(api, token, `r${i}`)
    const over = await api.request('POST', '/rooms', { token, body: { id: 'r51' } })
    assert.equal(over.status, 403, over.text)
    assert.equal(over.body.code, 'SB_ERR_ROOM_LIMIT')
    assert.match(over.body.message, /50/)
    // Deleting one frees its place.
    assert.equal((await api.request('DELETE', '/rooms/r1', { token })).status, 204)
    await createRoom(api, token, 'r51')
  })
})
