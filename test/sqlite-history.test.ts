import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { setImmediate as nextTick } from 'node:timers/promises'
import type { Engine, HistoryPage, Publication, PublishRequest, StreamOptions } from '../src/realtime/engine.js'
import { createMemoryEngine, type MemoryEngineOptions } from '../src/realtime/memory-engine.js'
import { createSqliteHistory, type SqliteHistory } from '../src/realtime/sqlite-history.js'
import { createStore, type Store } from '../src/store/index.js'
import { tempDir } from './helper.js'

/*
 * The durable history under the embedded engine (sqlite-history.ts), on real SQLite files.
 * The engine contract (test/engine.contract.test.ts) runs against it too; these are what only
 * a durable store has: a restart, the commit before acknowledgement and delivery, the store's
 * transactions on the shared connection, retention in the table. A "restart" here opens a
 * second store on the same file without closing the first, as a killed process would leave it
 * (test/durable-history.test.ts kills a real one).
 */

const KEEP: StreamOptions = { historySize: 100, historyTtlSeconds: 3600 }

interface Node {
  store: Store
  history: SqliteHistory
  engine: Engine
  /** Rows of history_publications for a room, by SQL. */
  rows: (room: string) => number
  /** The room's history_streams row, if any. */
  stream: (room: string) => { held_bytes: number } | undefined
}

async function open (t: TestContext, file: string, options: MemoryEngineOptions & { now?: () => number, archiveRoomBytes?: number } = {}): Promise<Node> {
  const store = await createStore(`sqlite:${file}`)
  const connection = store.sqlite
  assert.ok(connection !== undefined)
  const history = createSqliteHistory(connection, { ...options, onSweepError: (err) => { throw err } })
  const engine = createMemoryEngine({ ...options, store: history })
  t.after(async () => {
    await engine.close()
    await store.close()
  })
  const count = connection.prepare<[string], { n: number }>('SELECT count(*) AS n FROM history_publications WHERE room = ?')
  const streamRow = connection.prepare<[string], { held_bytes: number }>('SELECT held_bytes FROM history_streams WHERE room = ?')
  return { store, history, engine, rows: (room) => count.get(room)?.n ?? 0, stream: (room) => streamRow.get(room) }
}

/** Waits, a tick at a time with a generous bound, for `condition` (deliveries follow the replies by a tick). */
async function until (condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await nextTick()
  }
}

function json (data: unknown, from = 'alice'): PublishRequest {
  return { kind: 'json', payload: JSON.stringify(data), from: { id: from }, ts: Date.now() }
}

function bytes (payload: Buffer, from = 'alice'): PublishRequest {
  return { kind: 'binary', payload, from: { id: from }, ts: Date.now() }
}

/** The publication a request becomes at `offset`. */
function published (request: PublishRequest, offset: number): Publication {
  return request.kind === 'json'
    ? { kind: 'json', payload: request.payload, offset, from: request.from, ts: request.ts }
    : { kind: 'binary', payload: request.payload, offset, from: request.from, ts: request.ts }
}

describe('Durable history (SQLite under the memory engine)', () => {
  it('keeps every acknowledged publication across a restart: same epoch and offsets, exact recovery, bytes as sent', async (t) => {
    const file = join(tempDir(t), 'history.db')
    const first = await open(t, file)
    const requests = [
      json({ n: 1 }), json('two'), json([3, { three: true }]),
      bytes(Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3, 0x00, 0xe2, 0x82])),
      bytes(Buffer.from(Array.from({ length: 256 }, (_, i) => i))),
      bytes(Buffer.alloc(0)),
      json({ n: 7 }, 'key:deploy')
    ]
    const results = await Promise.all(requests.map((r) => first.engine.broker.publish('chat', r, KEEP)))
    const epoch = results[0]!.epoch
    assert.deepEqual(results, requests.map((_, i) => ({ epoch, offset: i + 1, duplicate: false })))

    const second = await open(t, file)
    assert.deepEqual(await second.engine.history.position('chat'), { epoch, offset: requests.length })
    const recovered = await second.engine.history.history('chat', { since: { epoch, offset: 2 }, limit: 100 }, KEEP)
    assert.deepEqual(recovered, { epoch, offset: requests.length, complete: true, publications: requests.slice(2).map((r, i) => published(r, i + 3)) })
    const latest = await second.engine.history.history('chat', { limit: 100 }, KEEP)
    assert.deepEqual(latest.publications, requests.map((r, i) => published(r, i + 1)))
    assert.deepEqual(await second.engine.broker.publish('chat', json('after'), KEEP), { epoch, offset: requests.length + 1, duplicate: false })
  })

  it('a room that keeps no history keeps its position: offsets advance across a restart, no rows stored', async (t) => {
    const file = join(tempDir(t), 'history.db')
    const none: StreamOptions = { historySize: 0, historyTtlSeconds: 3600 }
    const first = await open(t, file)
    let last = { epoch: '', offset: 0 }
    for (let i = 0; i < 3; i++) last = await first.engine.broker.publish('quiet', json(i), none)
    assert.equal(last.offset, 3)
    assert.equal(first.rows('quiet'), 0)

    const second = await open(t, file)
    assert.deepEqual(await second.engine.history.position('quiet'), { epoch: last.epoch, offset: 3 })
    assert.deepEqual(await second.engine.history.history('quiet', { since: { epoch: last.epoch, offset: 3 }, limit: 10 }, none), { epoch: last.epoch, offset: 3, publications: [], complete: true })
    assert.deepEqual(await second.engine.broker.publish('quiet', json('next'), none), { epoch: last.epoch, offset: 4, duplicate: false })
  })

  it('an epoch announced before the first publish survives a restart too', async (t) => {
    const file = join(tempDir(t), 'history.db')
    const first = await open(t, file)
    const announced = await first.engine.history.position('empty')
    // The stream row is written with the next commit, one tick later.
    await nextTick()
    const second = await open(t, file)
    assert.deepEqual(await second.engine.history.position('empty'), announced)
  })

  it('acknowledges and delivers a publication only once its row is committed', async (t) => {
    const node = await open(t, join(tempDir(t), 'history.db'))
    const connection = node.store.sqlite!
    const stored = connection.prepare<[string, number], { n: number }>('SELECT count(*) AS n FROM history_publications WHERE room = ? AND stream_offset = ?')
    const seenCommitted: boolean[] = []
    node.engine.broker.setHandler({
      onPublication (room, _epoch, publication) {
        // Read back outside any transaction: only what was committed is there.
        seenCommitted.push(!connection.inTransaction && stored.get(room, publication.offset)?.n === 1)
      },
      onEvent () {},
      onReset () {}
    })
    await node.engine.broker.subscribe('live')
    await Promise.all(Array.from({ length: 50 }, (_, i) => node.engine.broker.publish('live', json(i), KEEP)))
    await until(() => seenCommitted.length === 50, 'every delivery')
    assert.deepEqual(seenCommitted, Array.from({ length: 50 }, () => true))
  })

  it('waits for a store transaction held across awaits, and is not rolled back with it', async (t) => {
    const node = await open(t, join(tempDir(t), 'history.db'))
    const connection = node.store.sqlite!
    const delivered: number[] = []
    node.engine.broker.setHandler({ onPublication (_room, _epoch, p) { delivered.push(p.offset) }, onEvent () {}, onReset () {} })
    await node.engine.broker.subscribe('r')

    // What a kysely transaction does on the shared connection: BEGIN, a write, then awaits.
    connection.exec('BEGIN IMMEDIATE')
    connection.exec("INSERT INTO history_streams (room, epoch, top_offset, history_size, history_ttl_seconds) VALUES ('rolled-back', 'x', 0, 0, 0)")
    let settled = false
    const publish = node.engine.broker.publish('r', json('during'), KEEP).finally(() => { settled = true })
    for (let i = 0; i < 20; i++) await nextTick()
    assert.equal(settled, false, 'not acknowledged while the transaction is open')
    assert.deepEqual(delivered, [], 'not delivered while the transaction is open')
    connection.exec('ROLLBACK')

    assert.equal((await publish).offset, 1)
    await until(() => delivered.length === 1, 'the delivery')
    assert.deepEqual(delivered, [1])
    assert.equal(node.rows('r'), 1, 'the publication was committed on its own')
    assert.equal(connection.prepare("SELECT count(*) AS n FROM history_streams WHERE room = 'rolled-back'").pluck().get(), 0)
  })

  it('publishes while the store runs its own transactions (rooms, memberships) all complete and are stored', async (t) => {
    const node = await open(t, join(tempDir(t), 'history.db'))
    const owner = await node.store.createUser({ id: 'owner', passwordHash: 'x', role: 'user' })
    assert.ok(owner !== null)
    const storeWork = Array.from({ length: 20 }, async (_, i) => {
      await node.store.createUser({ id: `member-${i}`, passwordHash: 'x', role: 'user' })
      const room = await node.store.createRoom({ id: `room-${i}`, name: null, visibility: 'private', publish: 'members', historySize: 10, historyTtlSeconds: 60, maxMembers: null, presenceEvents: true, archive: false, archiveDays: 30, createdBy: 'owner' }, { maxCreatedBy: 100 })
      assert.ok(room !== null && room !== 'room_limit')
      const added = await node.store.setMember(`room-${i}`, `member-${i}`, 'member')
      assert.equal(added.ok, true)
      return await node.store.removeMember(`room-${i}`, `member-${i}`)
    })
    const publishes = Array.from({ length: 300 }, (_, i) => node.engine.broker.publish('busy', json(i), { historySize: 1000, historyTtlSeconds: 3600 }))
    const [memberships, results] = await Promise.all([Promise.all(storeWork), Promise.all(publishes)])
    assert.equal(memberships.length, 20)
    assert.deepEqual(results.map((r) => r.offset), Array.from({ length: 300 }, (_, i) => i + 1))
    assert.equal(node.rows('busy'), 300)
  })

  it('a failed commit refuses the publishes of its tick, and their offsets are handed out again', async (t) => {
    const node = await open(t, join(tempDir(t), 'history.db'))
    const connection = node.store.sqlite!
    const delivered: number[] = []
    node.engine.broker.setHandler({ onPublication (_room, _epoch, p) { delivered.push(p.offset) }, onEvent () {}, onReset () {} })
    await node.engine.broker.subscribe('r')
    const { epoch } = await node.engine.broker.publish('r', json('kept'), KEEP)

    connection.exec("CREATE TRIGGER refuse BEFORE INSERT ON history_publications BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END")
    const failed = await Promise.allSettled([node.engine.broker.publish('r', json('lost 1'), KEEP), node.engine.broker.publish('r', json('lost 2'), KEEP)])
    assert.deepEqual(failed.map((f) => f.status), ['rejected', 'rejected'])
    assert.deepEqual(await node.engine.history.position('r'), { epoch, offset: 1 })
    connection.exec('DROP TRIGGER refuse')

    assert.deepEqual(await node.engine.broker.publish('r', json('again'), KEEP), { epoch, offset: 2, duplicate: false })
    // Delivery is in offset order: once 2 is in, anything refused before it would be too.
    await until(() => delivered.includes(2), 'the delivery of offset 2')
    assert.deepEqual(delivered, [1, 2], 'nobody saw the refused ones')
    const history = await node.engine.history.history('r', { since: { epoch, offset: 0 }, limit: 10 }, KEEP)
    assert.deepEqual(history.publications.map((p) => p.payload), ['"kept"', '"again"'])
  })

  it('a retry with the idempotency key of a pending publish answers once that one is committed', async (t) => {
    const node = await open(t, join(tempDir(t), 'history.db'))
    const first = node.engine.broker.publish('r', { ...json('once'), idempotencyKey: 'k' }, KEEP)
    const retry = node.engine.broker.publish('r', { ...json('once'), idempotencyKey: 'k' }, KEEP)
    assert.deepEqual(await retry, { ...(await first), duplicate: true })
    assert.equal(node.rows('r'), 1)
  })

  it('reads past what the node budget left in memory come from SQLite, complete', async (t) => {
    const node = await open(t, join(tempDir(t), 'history.db'), { maxHistoryBytes: 2000 })
    const requests = Array.from({ length: 60 }, (_, i) => json({ i }))
    let epoch = ''
    for (const r of requests) epoch = (await node.engine.broker.publish('big', r, KEEP)).epoch
    assert.ok((node.engine.history.bytesHeld?.() ?? Infinity) <= 2000, 'memory holds no more than the budget')

    const all = await node.engine.history.history('big', { since: { epoch, offset: 0 }, limit: 100 }, KEEP)
    assert.equal(all.complete, true)
    assert.deepEqual(all.publications, requests.map((r, i) => published(r, i + 1)))
    const latest = await node.engine.history.history('big', { limit: 40 }, KEEP)
    assert.deepEqual(latest.publications.map((p) => p.offset), Array.from({ length: 40 }, (_, i) => i + 21))
    assert.equal(latest.complete, true)
    const capped = await node.engine.history.history('big', { since: { epoch, offset: 0 }, limit: 100, maxBytes: 500 }, KEEP)
    assert.equal(capped.complete, false)
    assert.deepEqual(capped.publications.map((p) => p.offset), [1, 2, 3])
  })

  describe('retention in the table', () => {
    it('each commit trims the room to its history size', async (t) => {
      const node = await open(t, join(tempDir(t), 'history.db'))
      const ten: StreamOptions = { historySize: 10, historyTtlSeconds: 3600 }
      for (let i = 0; i < 25; i++) await node.engine.broker.publish('r', json(i), ten)
      await Promise.all(Array.from({ length: 25 }, (_, i) => node.engine.broker.publish('r', json(i), ten)))
      assert.equal(node.rows('r'), 10)
    })

    it('the sweep deletes expired rows and what is over the room byte cap, keeping the newest', async (t) => {
      let clock = 1_700_000_000_000
      const node = await open(t, join(tempDir(t), 'history.db'), { now: () => clock, roomHistoryBytes: 1000 })
      const minute: StreamOptions = { historySize: 100, historyTtlSeconds: 60 }
      for (let i = 0; i < 5; i++) await node.engine.broker.publish('ttl', json(i), minute)
      clock += 61_000
      const { epoch } = await node.engine.broker.publish('ttl', json('fresh'), minute)
      // 20 publications of about 230 bytes each: the 1000-byte cap keeps the newest 4.
      for (let i = 0; i < 20; i++) await node.engine.broker.publish('bytes', json('x'.repeat(100)), KEEP)
      assert.equal(node.rows('ttl'), 6)
      assert.equal(node.rows('bytes'), 20)

      await node.history.sweep()
      assert.equal(node.rows('ttl'), 1)
      assert.equal(node.rows('bytes'), 4)
      const second = await open(t, node.store.sqlite!.name, { now: () => clock, roomHistoryBytes: 1000 })
      assert.deepEqual((await second.engine.history.history('ttl', { since: { epoch, offset: 5 }, limit: 10 }, minute)).publications.map((p) => p.offset), [6])
    })

    it('removeHistory() starts a new epoch; the old rows go with the sweep, in slices', async (t) => {
      const node = await open(t, join(tempDir(t), 'history.db'))
      const many: StreamOptions = { historySize: 5000, historyTtlSeconds: 3600 }
      await Promise.all(Array.from({ length: 2500 }, (_, i) => node.engine.broker.publish('gone', json(i), many)))
      await node.engine.broker.publish('kept', json('stays'), KEEP)
      await node.engine.history.removeHistory('gone')
      const fresh = await node.engine.history.position('gone')
      assert.equal(fresh.offset, 0)
      await nextTick()

      await node.history.sweep()
      assert.equal(node.rows('gone'), 0)
      assert.equal(node.rows('kept'), 1)
      const second = await open(t, node.store.sqlite!.name)
      assert.deepEqual(await second.engine.history.position('gone'), fresh, 'the new epoch survives a restart')
    })
  })

  describe('the archive (rooms with archiveDays)', () => {
    const DAY = 86_400_000

    it('keeps what leaves the window; the window still bounds recovery; archiveDays expires rows in the sweep', async (t) => {
      let clock = 1_700_000_000_000
      const node = await open(t, join(tempDir(t), 'history.db'), { now: () => clock })
      const archived: StreamOptions = { historySize: 5, historyTtlSeconds: 60, archiveDays: 2 }
      let epoch = ''
      for (let i = 0; i < 10; i++) epoch = (await node.engine.broker.publish('kept', json(i), archived)).epoch
      clock += DAY
      for (let i = 10; i < 30; i++) await node.engine.broker.publish('kept', json(i), archived)
      await node.history.sweep()
      assert.equal(node.rows('kept'), 30, 'beyond the window of 5 and its TTL of a minute')

      const recovery = await node.engine.history.history('kept', { since: { epoch, offset: 0 }, limit: 100 }, archived)
      assert.deepEqual([recovery.complete, recovery.publications.map((p) => p.offset)], [false, [26, 27, 28, 29, 30]])
      const restarted = await open(t, node.store.sqlite!.name, { now: () => clock })
      const latest = await restarted.engine.history.history('kept', { limit: 100 }, archived)
      assert.deepEqual(latest.publications.map((p) => p.offset), [26, 27, 28, 29, 30], 'a restart loads the window only')
      // Paging reads the archive: back to the first, across the restart, in bounded pages.
      const back: number[] = []
      let cursor: { epoch: string, before?: number } | null = { epoch }
      while (cursor !== null) {
        const page: HistoryPage = await restarted.engine.history.page('kept', { ...cursor, limit: 7 }, archived)
        back.push(...page.publications.map((p) => p.offset))
        cursor = page.next
      }
      assert.deepEqual(back, Array.from({ length: 30 }, (_, i) => 30 - i))
      const forward = await restarted.engine.history.page('kept', { after: 3, limit: 4 }, archived)
      assert.deepEqual([forward.publications.map((p) => p.offset), forward.next], [[4, 5, 6, 7], { epoch, after: 7 }])
      const windowOnly = await restarted.engine.history.page('kept', { after: 0, limit: 100 }, { ...archived, archiveDays: 0 })
      assert.deepEqual(windowOnly.publications.map((p) => p.offset), [26, 27, 28, 29, 30], 'without the archive, the window')

      // The first ten are two days old a day later: they go, the rest stay.
      clock += DAY + 1
      await node.history.sweep()
      assert.equal(node.rows('kept'), 20)
    })

    it('turned off, a room shrinks back to its window with the sweep', async (t) => {
      const node = await open(t, join(tempDir(t), 'history.db'))
      for (let i = 0; i < 20; i++) await node.engine.broker.publish('r', json(i), { historySize: 5, historyTtlSeconds: 3600, archiveDays: 30 })
      assert.equal(node.rows('r'), 20)
      await node.engine.broker.publish('r', json('off'), { historySize: 5, historyTtlSeconds: 3600, archiveDays: 0 })
      await node.history.sweep()
      assert.equal(node.rows('r'), 5)
    })

    it('the sweep keeps an archive within ARCHIVE_ROOM_BYTES, the newest first, with a running byte count', async (t) => {
      const node = await open(t, join(tempDir(t), 'history.db'), { archiveRoomBytes: 2500 })
      const archived: StreamOptions = { historySize: 2, historyTtlSeconds: 3600, archiveDays: 30 }
      // About 233 bytes each (payload, publisher id and the 128 counted per publication).
      for (let i = 0; i < 40; i++) await node.engine.broker.publish('big', json('x'.repeat(98)), archived)
      const each = (node.stream('big')?.held_bytes ?? 0) / 40
      assert.ok(each > 200 && each < 260, `bytes per row ${each}`)
      await node.history.sweep()
      const kept = node.rows('big')
      assert.equal(kept, Math.floor(2500 / each))
      assert.equal(node.stream('big')?.held_bytes, kept * each, 'the count follows the deletions')
    })

    it('deleting the room deletes its archive and its stream row, and a new room of that name starts afresh', async (t) => {
      const node = await open(t, join(tempDir(t), 'history.db'))
      const archived: StreamOptions = { historySize: 10, historyTtlSeconds: 3600, archiveDays: 30 }
      await Promise.all(Array.from({ length: 2500 }, (_, i) => node.engine.broker.publish('gone', json(i), archived)))
      const old = await node.engine.history.position('gone')
      await node.engine.broker.publish('kept', json('stays'), archived)
      await node.engine.history.removeHistory('gone')
      await nextTick()
      assert.equal(node.stream('gone'), undefined, 'no stream row is left behind')
      await until(() => node.rows('gone') === 0, 'the purge after the commit')
      assert.equal(node.rows('kept'), 1)

      const again = await node.engine.broker.publish('gone', json('new'), archived)
      assert.notEqual(again.epoch, old.epoch)
      assert.equal(again.offset, 1)
      const restarted = await open(t, node.store.sqlite!.name)
      assert.deepEqual(await restarted.engine.history.position('gone'), { epoch: again.epoch, offset: 1 })
    })
  })
})
