import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it, type TestContext } from 'node:test'
import pg from 'pg'
import { pino } from 'pino'
import { dropSchema } from '../support/postgres.js'
import { createStore, type ArchivedPublication, type ArchiveSweepBatch, type Store } from '../src/store/index.js'
import { ARCHIVE_SWEEP_LOCK } from '../src/store/kysely-store.js'
import { createMetrics } from '../src/metrics.js'
import { createArchiveSweeper, type SweepStore } from '../src/realtime/redis-engine/archive-sweep.js'
import { createRedisEngine } from '../src/realtime/redis-engine/index.js'
import { skipUnlessRedis, skipUnlessStore, TEST_DATABASE_URL, TEST_REDIS_URL } from './helper.js'

/*
 * The cluster archive's retention sweep (issue #21) on a real PostgreSQL, each test in a
 * schema of its own: rows past their room's archiveDays and rows of deleted rooms go, in
 * bounded batches, one node at a time (the advisory lock, held here by another session).
 */

const DAY_MS = 86_400_000
const NOW = 1_800_000_000_000
const skip = await skipUnlessStore('postgres')
const skipEngine = skip === false ? await skipUnlessRedis() : skip

async function openStore (t: TestContext): Promise<{ store: Store, schema: string }> {
  const schema = `sweep_test_${randomBytes(6).toString('hex')}`
  const store = await createStore(TEST_DATABASE_URL, { pgSchema: schema, pgPool: { max: 3, idleMs: 1000 } })
  t.after(async () => {
    await store.close()
    await dropSchema(TEST_DATABASE_URL, schema)
  })
  await store.createUser({ id: 'alice', passwordHash: 'x', role: 'user' })
  return { store, schema }
}

async function archivedRoom (store: Store, id: string, archiveDays: number): Promise<void> {
  const created = await store.createRoom({
    id, name: null, visibility: 'public', publish: 'members', historySize: 100, historyTtlSeconds: 3600, maxMembers: null, presenceEvents: false, archive: true, archiveDays, createdBy: 'alice'
  })
  assert.ok(created)
}

/** Rows of `room`, offsets 1.., stored `ages` days before `now` (one per age). */
async function archive (store: Store, room: string, ages: number[], now = NOW): Promise<void> {
  const rows: ArchivedPublication[] = ages.map((days, i) => ({
    room, epoch: 'e1', offset: i + 1, publisher: 'alice', ts: now - days * DAY_MS, storedAt: now - days * DAY_MS, bytes: 100, kind: 'json', payload: `{"n":${i + 1}}`
  }))
  await store.archivePublications(rows)
}

async function offsets (store: Store, room: string): Promise<number[]> {
  return (await store.archivePage(room, 'e1', { after: 0, limit: 1000, notBefore: 0 })).map(row => row.offset)
}

/** Runs batches until one comes back short, as the sweeper does; returns each batch. */
async function sweepAll (store: Store, limit: number): Promise<ArchiveSweepBatch[]> {
  const batches: ArchiveSweepBatch[] = []
  let from = ''
  for (;;) {
    const batch = await store.sweepArchive(NOW, limit, from)
    assert.ok(batch, 'no other session holds the lock')
    batches.push(batch)
    if (batch.deleted < limit || batch.last === null) return batches
    from = batch.last
  }
}

describe('cluster archive retention sweep (PostgreSQL)', { skip }, () => {
  it('deletes rows older than their room\'s archiveDays and every row of a deleted room, and nothing else', async (t) => {
    const { store } = await openStore(t)
    await archivedRoom(store, 'month', 30)
    await archivedRoom(store, 'day', 1)
    await archivedRoom(store, 'fresh', 30)
    await archivedRoom(store, 'doomed', 30)
    // Ages in days: 31 and 30 are at or past 30 days; 29.5 is not.
    await archive(store, 'month', [40, 31, 30, 29.5, 1])
    await archive(store, 'day', [3, 2, 1.5, 0.5, 0])
    await archive(store, 'fresh', [10, 5, 0])
    await archive(store, 'doomed', [2, 1, 0])
    // A room deleted (its purge missed an insert under way, or ran before it): its rows go too.
    assert.equal(await store.deleteRoom('doomed'), true)
    await archive(store, 'never-a-room', [0])

    const batches = await sweepAll(store, 1000)
    assert.deepEqual(batches.map(b => b.deleted), [3 + 3 + 3 + 1])
    assert.deepEqual(await offsets(store, 'month'), [4, 5])
    assert.deepEqual(await offsets(store, 'day'), [4, 5])
    assert.deepEqual(await offsets(store, 'fresh'), [1, 2, 3])
    assert.deepEqual(await offsets(store, 'doomed'), [])
    assert.deepEqual(await offsets(store, 'never-a-room'), [])

    // Nothing left to do: a second sweep deletes nothing.
    assert.deepEqual((await sweepAll(store, 1000)).map(b => b.deleted), [0])
  })

  it('deletes at most `limit` rows per batch, resuming where the last one stopped, oldest first', async (t) => {
    const { store } = await openStore(t)
    await archivedRoom(store, 'a', 1)
    await archivedRoom(store, 'b', 1)
    await archive(store, 'a', [9, 8, 7, 6, 5, 0])
    await archive(store, 'b', [4, 3, 2, 0])

    const first = await store.sweepArchive(NOW, 3, '')
    assert.deepEqual(first, { deleted: 3, last: 'a' })
    assert.deepEqual(await offsets(store, 'a'), [4, 5, 6], 'a room\'s oldest rows go first')
    assert.deepEqual(await offsets(store, 'b'), [1, 2, 3, 4])

    const rest = await sweepAll(store, 3)
    assert.ok(rest.every(b => b.deleted <= 3))
    assert.equal(rest.reduce((sum, b) => sum + b.deleted, 0), 2 + 3)
    assert.ok((rest.at(-1)?.deleted ?? 3) < 3, 'the run ends on a short batch')
    assert.deepEqual(await offsets(store, 'a'), [6])
    assert.deepEqual(await offsets(store, 'b'), [4])
  })

  it('deletes nothing while another session holds the sweep\'s lock in its schema, and sweeps once it is released', async (t) => {
    const { store, schema } = await openStore(t)
    await archivedRoom(store, 'a', 1)
    await archive(store, 'a', [5, 0])

    const other = new pg.Client({ connectionString: TEST_DATABASE_URL })
    await other.connect()
    t.after(async () => { await other.end() })
    await other.query('select pg_advisory_lock($1, hashtext($2))', [ARCHIVE_SWEEP_LOCK, schema])

    const swept: number[] = []
    const sweeper = createArchiveSweeper({ store, log: pino({ level: 'silent' }), intervalMs: 3_600_000, batchSize: 10, now: () => NOW, onSwept: rows => { swept.push(rows) } })
    t.after(() => sweeper.close())
    assert.equal(await store.sweepArchive(NOW, 10, ''), null)
    assert.equal(await sweeper.sweep(), 0)
    assert.deepEqual(await offsets(store, 'a'), [1, 2])

    // Another deployment's lock (another schema) is not this one's.
    await other.query('select pg_advisory_unlock($1, hashtext($2))', [ARCHIVE_SWEEP_LOCK, schema])
    await other.query('select pg_advisory_lock($1, hashtext($2))', [ARCHIVE_SWEEP_LOCK, `${schema}_other`])
    assert.equal(await sweeper.sweep(), 1)
    assert.deepEqual(await offsets(store, 'a'), [2])
    assert.deepEqual(swept, [0, 1])
  })

  it('the sweeper runs batch after batch until one comes back short', async (t) => {
    const { store } = await openStore(t)
    await archivedRoom(store, 'a', 1)
    await archivedRoom(store, 'b', 2)
    await archive(store, 'a', [9, 8, 7, 6, 5, 0])
    await archive(store, 'b', [9, 8, 0])
    const batches: number[] = []
    // The store itself, each batch's count noted on the way.
    const counted: SweepStore = {
      async sweepArchive (now, limit, from) {
        const batch = await store.sweepArchive(now, limit, from)
        batches.push(batch?.deleted ?? -1)
        return batch
      }
    }
    const sweeper = createArchiveSweeper({ store: counted, log: pino({ level: 'silent' }), intervalMs: 3_600_000, batchSize: 2, now: () => NOW })
    t.after(() => sweeper.close())

    assert.equal(await sweeper.sweep(), 7)
    assert.deepEqual(batches, [2, 2, 2, 1])
    assert.deepEqual(await offsets(store, 'a'), [6])
    assert.deepEqual(await offsets(store, 'b'), [3])
  })
})

describe('cluster archive retention on a Redis engine node', { skip: skipEngine }, () => {
  it('runs on its interval where the archiver runs, and closes with the engine', async (t) => {
    const { store } = await openStore(t)
    await archivedRoom(store, 'a', 1)
    await archive(store, 'a', [5, 0], Date.now())
    let resolveSwept: () => void = () => {}
    const sweptOnce = new Promise<void>((resolve) => { resolveSwept = resolve })
    const engine = await createRedisEngine({
      url: TEST_REDIS_URL,
      keyPrefix: `sweep-test-${randomBytes(6).toString('hex')}:`,
      log: pino({ level: 'silent' }),
      archive: { store, queueRoomBytes: 1_048_576, sweepMs: 20, onSwept: (rows) => { if (rows > 0) resolveSwept() } }
    })
    let closed = false
    t.after(async () => { if (!closed) await engine.close() })
    await sweptOnce
    assert.deepEqual(await offsets(store, 'a'), [2])
    await engine.close()
    closed = true
  })
})

describe('cluster archive retention metric', () => {
  it('counts the rows each sweep deleted in switchboard_archive_swept_rows_total', async (t) => {
    const metrics = createMetrics()
    t.after(() => { metrics.close() })
    metrics.archiveSwept(3)
    metrics.archiveSwept(0)
    metrics.archiveSwept(4)
    assert.match(await metrics.scrape(), /^switchboard_archive_swept_rows_total 7$/m)
  })
})
