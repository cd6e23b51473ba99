import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import pg from 'pg'
import { hashTag } from '../src/redis.js'
import { oneShotRequest, type Reply } from '../support/http.js'
import { redisCall, skipUnlessRedis, skipUnlessStore, TEST_DATABASE_URL, TEST_REDIS_URL, wsConnect, type WsFrame } from './helper.js'
import { ADMIN, type ServerProcess } from './process.js'
import { startProcessCluster } from './process-cluster.js'
import { waitFor as waitForCondition } from './ws-support.js'

/*
 * The cluster archive (issue #21): real server processes on Redis and PostgreSQL (a key prefix
 * and a schema of their own per test). Publications of an archived room reach PostgreSQL
 * exactly once, whatever node dies; the database refusing inserts holds them in Redis up to
 * ARCHIVE_QUEUE_ROOM_BYTES, then publishes are refused (503) until it confirms again.
 * Waits are bounded generously and never asserted on.
 */

const skipRedis = await skipUnlessRedis()
const skip = skipRedis !== false ? skipRedis : await skipUnlessStore('postgres')
const WAIT_MS = 30_000

interface Node { server: ServerProcess, request: (method: string, path: string, options?: { token?: string, body?: unknown }) => Promise<Reply> }

interface Cluster { nodes: Node[], keyPrefix: string, schema: string, token: string }

async function cluster (t: TestContext, count: number, env: Record<string, string> = {}): Promise<Cluster> {
  const { servers, keyPrefix, schema } = await startProcessCluster(t, count, { LOG_LEVEL: 'warn', ...env })
  const nodes = servers.map((server): Node => {
    const url = `http://127.0.0.1:${server.port}`
    return { server, request: async (method, path, options = {}) => await oneShotRequest(url, method, path, options) }
  })
  const first = nodes[0]
  assert.ok(first !== undefined)
  const login = await first.request('POST', '/auth/login', { body: { username: ADMIN.username, password: ADMIN.password } })
  assert.equal(login.status, 200, JSON.stringify(login.body))
  return { nodes, keyPrefix, schema, token: login.body.accessToken as string }
}

function node (c: Cluster, index: number): Node {
  const n = c.nodes[index]
  assert.ok(n !== undefined, `node ${index}`)
  return n
}

async function withDatabase<T> (fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** The archived rows of a room, offset → times stored, and their payloads by offset. */
async function archivedRows (c: Cluster, room: string, schema = c.schema): Promise<Map<number, { copies: number, payload: string }>> {
  return await withDatabase(async (client) => {
    const result = await client.query<{ stream_offset: string, copies: string, payload: string }>(
      `SELECT stream_offset, count(*) AS copies, min(payload_text) AS payload FROM "${schema}".history_publications WHERE room = $1 GROUP BY epoch, stream_offset`, [room])
    return new Map(result.rows.map(r => [Number(r.stream_offset), { copies: Number(r.copies), payload: r.payload }]))
  })
}

/** Polls `check` until it holds, within WAIT_MS (a node or the database answers in its own time). */
async function waitFor (check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await waitForCondition(check, what, WAIT_MS)
}

async function publish (n: Node, token: string, room: string, data: unknown): Promise<Reply> {
  return await n.request('POST', `/rooms/${room}/messages`, { token, body: { data } })
}

/** Every page backward from the newest, following `next`: the offsets read, in order. */
async function readBack (n: Node, token: string, room: string): Promise<number[]> {
  const offsets: number[] = []
  let query = 'before=9007199254740991'
  for (let pages = 0; pages < 1000; pages++) {
    const res = await n.request('GET', `/rooms/${room}/messages?${query}&limit=40`, { token })
    assert.equal(res.status, 200, JSON.stringify(res.body))
    for (const p of res.body.publications as Array<{ offset: number }>) offsets.push(p.offset)
    const next = res.body.next as { epoch: string, before?: number } | null
    if (next === null) return offsets
    query = `epoch=${encodeURIComponent(next.epoch)}&before=${next.before ?? ''}`
  }
  throw new Error('more than 1000 pages')
}

describe('cluster archive: Redis queue into PostgreSQL', { skip, concurrency: false }, () => {
  it('kill -9 of the node archiving mid-batch: archived rows equal the acknowledged publications, none missing, none twice; pages read them back', async (t) => {
    const c = await cluster(t, 2)
    const [a, b] = [node(c, 0), node(c, 1)]
    const room = `arc-${randomBytes(4).toString('hex')}`
    // A window of 5: what is read back beyond it comes from PostgreSQL.
    const created = await a.request('POST', '/rooms', { token: c.token, body: { id: room, visibility: 'public', archive: true, historySize: 5 } })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    const acknowledged = new Map<number, string>()
    const publishMany = async (n: Node, from: number, to: number): Promise<void> => {
      for (let i = from; i <= to; i++) {
        const res = await publish(n, c.token, room, { i })
        assert.equal(res.status, 201, JSON.stringify(res.body))
        acknowledged.set(res.body.offset as number, JSON.stringify({ i }))
      }
    }
    await publishMany(a, 1, 40)
    await waitFor(async () => (await archivedRows(c, room)).size === 40, 'the first 40 archived')

    // The test holds a lock that stops every insert into the archive: node A's archiver takes
    // its batch and waits inside PostgreSQL, its entries still queued, when it is killed.
    const locker = new pg.Client({ connectionString: TEST_DATABASE_URL })
    await locker.connect()
    t.after(async () => { await locker.end().catch(() => {}) })
    await locker.query('BEGIN')
    await locker.query(`LOCK TABLE "${c.schema}".history_publications IN SHARE MODE`)
    await publishMany(a, 41, 80)
    const lease = `${c.keyPrefix}{${hashTag(room)}}:aq:lease`
    await waitFor(async () => await withDatabase(async (client) => {
      const waiting = await client.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE 'insert into "history_publications"%'`)
      return (waiting.rowCount ?? 0) > 0
    }), 'node A blocked inside its insert')
    assert.ok(await redisCall(TEST_REDIS_URL, 'GET', lease) !== null, 'node A holds the room\'s lease')
    a.server.child.kill('SIGKILL')
    await a.server.exited

    // Publishing carries on through B; A's lease lapses and B takes its entries over.
    await publishMany(b, 81, 120)
    await locker.query('COMMIT')

    await waitFor(async () => (await archivedRows(c, room)).size >= acknowledged.size, 'every acknowledged publication archived')
    await waitFor(async () => Number(await redisCall(TEST_REDIS_URL, 'XLEN', `${c.keyPrefix}{${hashTag(room)}}:aq`)) === 0, 'the queue drained')
    const rows = await archivedRows(c, room)
    assert.deepEqual([...rows.keys()].sort((x, y) => x - y), [...acknowledged.keys()].sort((x, y) => x - y), 'the archive holds exactly the acknowledged offsets')
    for (const [offset, row] of rows) {
      assert.equal(row.copies, 1, `offset ${offset} stored once`)
      assert.equal(row.payload, acknowledged.get(offset), `offset ${offset} holds what was published`)
    }
    // Read back through B from the newest: the window (5), then PostgreSQL, down to 1.
    assert.deepEqual(await readBack(b, c.token, room), Array.from({ length: 120 }, (_, i) => 120 - i))
    const forward = await b.request('GET', `/rooms/${room}/messages?after=0&limit=50`, { token: c.token })
    assert.equal(forward.status, 200)
    assert.deepEqual((forward.body.publications as Array<{ offset: number }>).map(p => p.offset), Array.from({ length: 50 }, (_, i) => i + 1))
    assert.deepEqual(forward.body.next, { epoch: rows.size > 0 ? forward.body.epoch : '', after: 50 })

    // The archive lag is exported.
    const metrics = await b.request('GET', '/metrics', { token: c.token })
    assert.match(String(metrics.body), /switchboard_archive_lag_seconds_count [1-9]/)
    assert.match(String(metrics.body), /switchboard_archive_queue_length 0/)
  })

  it('PostgreSQL unavailable: publications wait in Redis up to ARCHIVE_QUEUE_ROOM_BYTES, then publishes are refused as unavailable; once it is back all are archived and publishing resumes', async (t) => {
    // A database role of the test's own, so that only this server loses its database.
    const role = `sbarc_${randomBytes(6).toString('hex')}`
    const schema = `t_${randomBytes(6).toString('hex')}`
    await withDatabase(async (client) => {
      await client.query(`CREATE ROLE ${role} LOGIN`)
      // `create schema if not exists` at start asks for it, though the schema is there.
      await client.query(`GRANT CREATE ON DATABASE ${JSON.stringify(new URL(TEST_DATABASE_URL).pathname.slice(1))} TO ${role}`)
      await client.query(`CREATE SCHEMA ${schema} AUTHORIZATION ${role}`)
    })
    t.after(async () => {
      await withDatabase(async (client) => {
        await client.query(`ALTER ROLE ${role} NOLOGIN`)
        await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role])
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
        await client.query(`DROP OWNED BY ${role}`)
        await client.query(`DROP ROLE ${role}`)
      })
    })
    const url = new URL(TEST_DATABASE_URL)
    url.username = role
    url.password = ''
    const c = await cluster(t, 1, {
      DATABASE_URL: url.toString(),
      DATABASE_SCHEMA: schema,
      ARCHIVE_QUEUE_ROOM_BYTES: '65536',
      // The publisher's grant outlives the outage: publishing needs no database while it lasts.
      AUTHORIZATION_CACHE_MS: '60000'
    })
    const n = node(c, 0)
    const room = `arc-${randomBytes(4).toString('hex')}`
    const created = await n.request('POST', '/rooms', { token: c.token, body: { id: room, visibility: 'public', archive: true, historySize: 0 } })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    const publisher = await wsConnect(t, { url: `http://127.0.0.1:${n.server.port}` }, { token: c.token })
    const text = 'x'.repeat(1000)
    const first = await publisher.command({ type: 'publish', room, data: { i: 0, text } })
    assert.equal(first.type, 'reply', JSON.stringify(first))
    const accepted: number[] = [(first.result as { offset: number }).offset]
    await waitFor(async () => (await archivedRows(c, room, schema)).size === 1, 'the first publication archived')

    // The database goes away for this server: no new sign-in, its sessions ended.
    await withDatabase(async (client) => {
      await client.query(`ALTER ROLE ${role} NOLOGIN`)
      await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role])
    })
    let refusal: WsFrame | undefined
    for (let i = 1; i < 500 && refusal === undefined; i++) {
      const reply = await publisher.command({ type: 'publish', room, data: { i, text } })
      if (reply.type === 'reply') accepted.push((reply.result as { offset: number }).offset)
      else refusal = reply
    }
    assert.ok(refusal !== undefined, 'a publish was refused once the queue was full')
    assert.equal((refusal.error as { code: string }).code, 'unavailable', JSON.stringify(refusal))
    // About 64 KiB of ~1.2 KB publications: the bound held.
    assert.ok(accepted.length > 10 && accepted.length < 70, `${accepted.length} accepted`)
    assert.equal((await archivedRows(c, room, schema)).size, 1)

    await withDatabase(async client => await client.query(`ALTER ROLE ${role} LOGIN`))
    await waitFor(async () => (await archivedRows(c, room, schema)).size === accepted.length, 'the queued publications archived')
    assert.deepEqual([...(await archivedRows(c, room, schema)).keys()].sort((x, y) => x - y), accepted)
    const again = await publisher.command({ type: 'publish', room, data: { again: true } })
    assert.equal(again.type, 'reply', JSON.stringify(again))
    // The refused publish took no offset.
    assert.equal((again.result as { offset: number }).offset, accepted.length + 1)
  })
})
