import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, afterEach, beforeEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import fc from 'fast-check'
import { newEpoch, publicationBytes, type ControlMessage, type Engine, type HistoryQuery, type Publication, type PublishRequest, type RoomEvent, type StreamOptions } from '../src/realtime/engine.js'
import { createMemoryEngine } from '../src/realtime/memory-engine.js'
import { createRedisEngine } from '../src/realtime/redis-engine/index.js'
import { createSqliteHistory } from '../src/realtime/sqlite-history.js'
import { createStore } from '../src/store/index.js'
import type { Logger } from '../src/realtime/logger.js'
import { deleteRedisKeys } from '../support/redis.js'
import { skipUnlessRedisCluster, startRedisCluster } from '../support/redis-cluster.js'
import { skipUnlessRedis, TEST_REDIS_URL } from './helper.js'

/*
 * One contract, run against every engine. Each test gets a fresh engine and rooms under a
 * random prefix, so engines that share a server (Redis) never see another run's rooms. The
 * suite only uses the public interfaces and real time (never an injected clock), so it runs
 * unchanged against an engine whose clock is a server's; memory-only checks that need time
 * travel live in their own describe below.
 */

const KEEP: StreamOptions = { historySize: 100, historyTtlSeconds: 3600 }
/** Delivery may be asynchronous (Redis): waits are bounded generously, never asserted on. */
const WAIT_MS = 5000

interface Delivered { room: string, epoch: string, publication: Publication }
interface DeliveredEvent { room: string, event: RoomEvent }

/** Records what the broker delivers and lets a test wait for a condition on it. */
function recordDeliveries (engine: Engine) {
  const publications: Delivered[] = []
  const events: DeliveredEvent[] = []
  let wake: () => void = () => {}
  engine.broker.setHandler({
    onPublication (room, epoch, publication) { publications.push({ room, epoch, publication }); wake() },
    onEvent (room, event) { events.push({ room, event }); wake() },
    onReset () {}
  })

  async function until (condition: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS
    while (!condition()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        wake = () => { clearTimeout(timer); resolve() }
      })
    }
  }

  const inRoom = (room: string) => publications.filter((d) => d.room === room)
  const eventsIn = (room: string) => events.filter((d) => d.room === room)
  return { publications, events, until, inRoom, eventsIn }
}

function request (data: unknown, extra: { idempotencyKey?: string, from?: { id: string }, ts?: number } = {}): PublishRequest {
  return { payload: JSON.stringify(data), kind: 'json', from: { id: 'alice' }, ts: Date.now(), ...extra }
}

/** The data a publication carries (engines keep JSON as its text, bytes as they are). */
function dataOf (publication: Publication): unknown {
  return publication.kind === 'json' ? JSON.parse(publication.payload) : publication.payload
}

function offsetsOf (publications: Publication[]): number[] {
  return publications.map((p) => p.offset)
}

function timeoutCount (): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
}

/** What the contract sets on an engine beyond its defaults. */
interface ContractEngineOptions { roomHistoryBytes?: number }

export function engineContract (name: string, makeEngine: (options?: ContractEngineOptions) => Promise<Engine>, options: { skip?: string | false } = {}): void {
  describe(`Engine contract: ${name}`, { skip: options.skip ?? false }, () => {
    let engine: Engine
    let seen: ReturnType<typeof recordDeliveries>
    let prefix: string
    const room = (id: string) => `${prefix}:${id}`

    beforeEach(async () => {
      engine = await makeEngine()
      seen = recordDeliveries(engine)
      prefix = `contract-${randomBytes(6).toString('hex')}`
    })
    afterEach(async () => { await engine.close() })

    /** Publishes to a subscribed room and waits for it: everything published before has been delivered or never will be. */
    async function barrier (): Promise<void> {
      const r = room('barrier')
      await engine.broker.subscribe(r)
      const { offset } = await engine.broker.publish(r, request('barrier'), KEEP)
      await seen.until(() => seen.inRoom(r).some((d) => d.publication.offset === offset), 'the barrier publication')
    }

    describe('numbering', () => {
      it('numbers 1, 2, 3 in the epoch position() announced', async () => {
        const r = room('a')
        const start = await engine.history.position(r)
        assert.equal(start.offset, 0)
        const results = []
        for (const data of ['x', 'y', 'z']) results.push(await engine.broker.publish(r, request(data), KEEP))
        assert.deepEqual(results, [1, 2, 3].map((offset) => ({ epoch: start.epoch, offset, duplicate: false })))
        assert.deepEqual(await engine.history.position(r), { epoch: start.epoch, offset: 3 })
      })

      it('steps by exactly 1 per publish, per room', async () => {
        const a = room('a')
        const b = room('b')
        for (let i = 1; i <= 30; i++) {
          assert.equal((await engine.broker.publish(a, request(i), KEEP)).offset, i)
          if (i % 3 === 0) assert.equal((await engine.broker.publish(b, request(i), KEEP)).offset, i / 3)
        }
      })

      it('numbers 200 concurrent publishes 1..200 and delivers them in offset order', async () => {
        const a = room('a')
        const b = room('b')
        await engine.broker.subscribe(a)
        await engine.broker.subscribe(b)
        const results = await Promise.all(Array.from({ length: 200 }, (_, i) =>
          engine.broker.publish(i % 2 === 0 ? a : b, request({ i }), KEEP).then((result) => ({ i, result }))))

        for (const r of [a, b]) {
          const mine = results.filter(({ i }) => (i % 2 === 0) === (r === a))
          assert.deepEqual(mine.map(({ result }) => result.offset).sort((x, y) => x - y), Array.from({ length: 100 }, (_, k) => k + 1))
          await seen.until(() => seen.inRoom(r).length === 100, `100 deliveries in ${r}`)
          const delivered = seen.inRoom(r)
          assert.deepEqual(delivered.map((d) => d.publication.offset), Array.from({ length: 100 }, (_, k) => k + 1))
          const epoch = mine[0]?.result.epoch
          assert.ok(delivered.every((d) => d.epoch === epoch))
          // Each delivery carries the data of the publish that was given its offset.
          const dataByOffset = new Map(mine.map(({ i, result }) => [result.offset, { i }]))
          for (const d of delivered) assert.deepEqual(dataOf(d.publication), dataByOffset.get(d.publication.offset))
        }
      })
    })

    describe('delivery', () => {
      it('delivers only rooms this node subscribed to, once each, until it unsubscribes', async () => {
        const a = room('a')
        const other = room('other')
        await engine.broker.subscribe(a)
        await engine.broker.subscribe(a)
        const ts = Date.now()
        const first = await engine.broker.publish(a, { payload: '{"n":1}', kind: 'json', from: { id: 'bob' }, ts }, KEEP)
        await engine.broker.publish(other, request('unseen'), KEEP)
        await barrier()
        assert.deepEqual(seen.inRoom(a), [{ room: a, epoch: first.epoch, publication: { offset: 1, payload: '{"n":1}', kind: 'json', from: { id: 'bob' }, ts } }])
        assert.deepEqual(seen.inRoom(other), [])

        await engine.broker.unsubscribe(a)
        await engine.broker.unsubscribe(a)
        await engine.broker.unsubscribe(room('never-subscribed'))
        await engine.broker.publish(a, request('after unsubscribe'), KEEP)
        await barrier()
        assert.equal(seen.inRoom(a).length, 1)

        await engine.broker.subscribe(a)
        await engine.broker.publish(a, request('again'), KEEP)
        await seen.until(() => seen.inRoom(a).length === 2, 'delivery after subscribing again')
        assert.equal(seen.inRoom(a)[1]?.publication.offset, 3)
      })

      it('delivers room events in order to subscribed rooms only', async () => {
        const a = room('a')
        const other = room('other')
        await engine.broker.subscribe(a)
        const join: RoomEvent = { type: 'join', user: { id: 'alice' } }
        const leave: RoomEvent = { type: 'leave', user: { id: 'alice' } }
        await engine.broker.publishEvent(a, join)
        await engine.broker.publishEvent(other, join)
        await engine.broker.publishEvent(a, leave)
        await seen.until(() => seen.eventsIn(a).length === 2, 'two events')
        await barrier()
        assert.deepEqual(seen.eventsIn(a).map((d) => d.event), [join, leave])
        assert.deepEqual(seen.eventsIn(other), [])
        // Events have no offset and no history.
        assert.equal((await engine.history.position(a)).offset, 0)
      })
    })

    describe('history', () => {
      async function publishMany (r: string, count: number, streamOptions = KEEP) {
        const results = []
        for (let i = 1; i <= count; i++) results.push(await engine.broker.publish(r, request({ i }, { from: { id: `u${i}` }, ts: 1_700_000_000_000 + i }), streamOptions))
        const epoch = results[0]?.epoch
        assert.ok(epoch !== undefined)
        return epoch
      }
      const pub = (i: number): Publication => ({ offset: i, payload: JSON.stringify({ i }), kind: 'json', from: { id: `u${i}` }, ts: 1_700_000_000_000 + i })
      const pubs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => pub(from + k))

      it('without since: the newest `limit`, oldest first, complete', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 5)
        assert.deepEqual(await engine.history.history(r, { limit: 3 }, KEEP), { epoch, offset: 5, publications: pubs(3, 5), complete: true })
        assert.deepEqual(await engine.history.history(r, { limit: 100 }, KEEP), { epoch, offset: 5, publications: pubs(1, 5), complete: true })
      })

      it('without since on a room never published to: nothing, complete, in the stable epoch', async () => {
        const r = room('empty')
        const { epoch } = await engine.history.position(r)
        assert.deepEqual(await engine.history.history(r, { limit: 10 }, KEEP), { epoch, offset: 0, publications: [], complete: true })
      })

      it('since a held offset: everything after it, complete', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 5)
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 2 }, limit: 10 }, KEEP), { epoch, offset: 5, publications: pubs(3, 5), complete: true })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 10 }, KEEP), { epoch, offset: 5, publications: pubs(1, 5), complete: true })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 4 }, limit: 1 }, KEEP), { epoch, offset: 5, publications: pubs(5, 5), complete: true })
      })

      it('since the current offset: nothing missed, complete', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 3)
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 3 }, limit: 10 }, KEEP), { epoch, offset: 3, publications: [], complete: true })
        const empty = await engine.history.position(room('empty'))
        assert.deepEqual(await engine.history.history(room('empty'), { since: empty, limit: 10 }, KEEP), { ...empty, publications: [], complete: true })
      })

      it('since another epoch: nothing, incomplete', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 3)
        assert.deepEqual(await engine.history.history(r, { since: { epoch: `${epoch}x`, offset: 1 }, limit: 10 }, KEEP), { epoch, offset: 3, publications: [], complete: false })
        assert.deepEqual(await engine.history.history(r, { since: { epoch: 'never-issued', offset: 3 }, limit: 10 }, KEEP), { epoch, offset: 3, publications: [], complete: false })
      })

      it('since a future offset: nothing, incomplete', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 3)
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 4 }, limit: 10 }, KEEP), { epoch, offset: 3, publications: [], complete: false })
      })

      it('a limit that cuts the answer: the oldest `limit` after since, incomplete', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 6)
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 1 }, limit: 2 }, KEEP), { epoch, offset: 6, publications: pubs(2, 3), complete: false })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 3 }, limit: 3 }, KEEP), { epoch, offset: 6, publications: pubs(4, 6), complete: true })
      })

      it('keeps only historySize: the oldest are dropped, and a resume from before them is incomplete', async () => {
        const r = room('a')
        const small = { historySize: 3, historyTtlSeconds: 3600 }
        const epoch = await publishMany(r, 6, small)
        assert.deepEqual(await engine.history.history(r, { limit: 10 }, small), { epoch, offset: 6, publications: pubs(4, 6), complete: true })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 1 }, limit: 10 }, small), { epoch, offset: 6, publications: pubs(4, 6), complete: false })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 3 }, limit: 10 }, small), { epoch, offset: 6, publications: pubs(4, 6), complete: true })
      })

      it('keeps exactly the newest historySize over a long run', async () => {
        const r = room('long')
        const seven = { historySize: 7, historyTtlSeconds: 3600 }
        for (let i = 1; i <= 150; i++) {
          const { epoch } = await engine.broker.publish(r, request({ i }, { from: { id: `u${i}` }, ts: 1_700_000_000_000 + i }), seven)
          const newest = await engine.history.history(r, { limit: 100 }, seven)
          assert.deepEqual(newest.publications, pubs(Math.max(1, i - 6), i))
          const resume = await engine.history.history(r, { since: { epoch, offset: Math.max(0, i - 3) }, limit: 100 }, seven)
          assert.deepEqual(resume.publications, pubs(Math.max(1, i - 2), i))
          assert.equal(resume.complete, true)
        }
      })

      it('applies a smaller historySize from the next call on', async () => {
        const r = room('a')
        const epoch = await publishMany(r, 5)
        const smaller = { historySize: 2, historyTtlSeconds: 3600 }
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 10 }, smaller), { epoch, offset: 5, publications: pubs(4, 5), complete: false })
        assert.deepEqual(await engine.history.history(r, { limit: 10 }, smaller), { epoch, offset: 5, publications: pubs(4, 5), complete: true })
      })

      it('historySize 0 keeps nothing but still advances offsets', async () => {
        const r = room('a')
        const none = { historySize: 0, historyTtlSeconds: 3600 }
        const epoch = await publishMany(r, 4, none)
        assert.equal((await engine.broker.publish(r, request('5'), none)).offset, 5)
        assert.deepEqual(await engine.history.history(r, { limit: 10 }, none), { epoch, offset: 5, publications: [], complete: true })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 3 }, limit: 10 }, none), { epoch, offset: 5, publications: [], complete: false })
        assert.deepEqual(await engine.history.history(r, { since: { epoch, offset: 5 }, limit: 10 }, none), { epoch, offset: 5, publications: [], complete: true })
      })

      it('forgets publications older than historyTtlSeconds', async () => {
        const r = room('a')
        const short = { historySize: 100, historyTtlSeconds: 1 }
        const { epoch } = await engine.broker.publish(r, request('old 1'), short)
        await engine.broker.publish(r, request('old 2'), short)
        // Until the engine itself reads them as gone, on its own clock (Redis's is the server's,
        // which no test can move): a poll with the suite's bound, not a sleep past the TTL. An
        // engine that never forgets fails here. The exact boundary is tested on an injected
        // clock (memory engine, below).
        const deadline = Date.now() + WAIT_MS
        while ((await engine.history.history(r, { limit: 10 }, short)).publications.length > 0) {
          assert.ok(Date.now() < deadline, `publications older than the TTL still read after ${WAIT_MS} ms`)
          await sleep(50)
        }
        await engine.broker.publish(r, request('fresh'), short)
        const fresh = (await engine.history.history(r, { limit: 10 }, short))
        assert.deepEqual({ ...fresh, publications: offsetsOf(fresh.publications) }, { epoch, offset: 3, publications: [3], complete: true })
        assert.equal(fresh.publications[0]?.payload, '"fresh"')
        const resume = await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 10 }, short)
        assert.deepEqual({ ...resume, publications: offsetsOf(resume.publications) }, { epoch, offset: 3, publications: [3], complete: false })
        const recent = await engine.history.history(r, { since: { epoch, offset: 2 }, limit: 10 }, short)
        assert.deepEqual({ ...recent, publications: offsetsOf(recent.publications) }, { epoch, offset: 3, publications: [3], complete: true })
      })

      describe('paging back and forth (page)', () => {
        it('before: newest first with a cursor to the oldest kept; after: oldest first up to the top', async () => {
          const r = room('paged')
          const epoch = await publishMany(r, 12)
          const top = { epoch, offset: 12 }
          const newest = await engine.history.page(r, { limit: 5 }, KEEP)
          assert.deepEqual({ ...newest, publications: offsetsOf(newest.publications) }, { epoch, publications: [12, 11, 10, 9, 8], next: { epoch, before: 8 }, top })
          assert.deepEqual(newest.publications[0], pub(12))
          const older = await engine.history.page(r, { before: 8, epoch, limit: 5 }, KEEP)
          assert.deepEqual([offsetsOf(older.publications), older.next], [[7, 6, 5, 4, 3], { epoch, before: 3 }])
          const first = await engine.history.page(r, { before: 3, epoch, limit: 5 }, KEEP)
          assert.deepEqual([offsetsOf(first.publications), first.next], [[2, 1], null])
          // Exactly the rest: no cursor to an empty page.
          const exact = await engine.history.page(r, { before: 3, limit: 2 }, KEEP)
          assert.deepEqual([offsetsOf(exact.publications), exact.next], [[2, 1], null])

          const forward = await engine.history.page(r, { after: 0, limit: 5 }, KEEP)
          assert.deepEqual([offsetsOf(forward.publications), forward.next], [[1, 2, 3, 4, 5], { epoch, after: 5 }])
          const toTop = await engine.history.page(r, { after: 9, epoch, limit: 5 }, KEEP)
          assert.deepEqual([offsetsOf(toTop.publications), toTop.next], [[10, 11, 12], null])
          const past = await engine.history.page(r, { after: 12, limit: 5 }, KEEP)
          assert.deepEqual([past.publications, past.next, past.top], [[], null, top])
          const beyond = await engine.history.page(r, { before: 1000, limit: 2 }, KEEP)
          assert.deepEqual(offsetsOf(beyond.publications), [12, 11])
        })

        it('stays within the window (size) and each page within maxBytes, at least one publication', async () => {
          const r = room('paged-window')
          const small: StreamOptions = { historySize: 4, historyTtlSeconds: 3600 }
          const epoch = await publishMany(r, 10, small)
          const all = await engine.history.page(r, { before: 11, limit: 100 }, small)
          assert.deepEqual([offsetsOf(all.publications), all.next], [[10, 9, 8, 7], null])
          const fromStart = await engine.history.page(r, { after: 0, limit: 100 }, small)
          assert.deepEqual([offsetsOf(fromStart.publications), fromStart.next], [[7, 8, 9, 10], null])
          const each = publicationBytes(JSON.stringify({ i: 10 }), 'u10')
          const capped = await engine.history.page(r, { limit: 100, maxBytes: 2 * each }, small)
          assert.deepEqual([offsetsOf(capped.publications), capped.next], [[10, 9], { epoch, before: 9 }])
          const one = await engine.history.page(r, { after: 6, limit: 100, maxBytes: 1 }, small)
          assert.deepEqual([offsetsOf(one.publications), one.next], [[7], { epoch, after: 7 }])
        })

        it('an epoch not kept: nothing backward; forward, the cursor leads to the current epoch', async () => {
          const r = room('paged-epochs')
          const epoch = await publishMany(r, 3)
          const gone = await engine.history.page(r, { before: 10, epoch: 'not-an-epoch', limit: 5 }, KEEP)
          assert.deepEqual(gone, { epoch: 'not-an-epoch', publications: [], next: null, top: { epoch, offset: 3 } })
          const ahead = await engine.history.page(r, { after: 10, epoch: 'not-an-epoch', limit: 5 }, KEEP)
          assert.deepEqual([ahead.publications, ahead.next], [[], { epoch, after: 0 }])
          const fresh = await engine.history.page(room('never'), { limit: 5 }, KEEP)
          assert.deepEqual([fresh.publications, fresh.next, fresh.top.offset], [[], null, 0])
        })
      })

      describe('pages capped by bytes', () => {
        /** Publications of about a kilobyte, each counted as `each` bytes. */
        const padded = (i: number) => request({ i, pad: 'x'.repeat(1000) }, { from: { id: 'u' } })
        const each = publicationBytes(JSON.stringify({ i: 10, pad: 'x'.repeat(1000) }), 'u')

        async function publishPadded (r: string, count: number, streamOptions = KEEP): Promise<string> {
          let epoch = ''
          for (let i = 10; i < 10 + count; i++) epoch = (await engine.broker.publish(r, padded(i), streamOptions)).epoch
          return epoch
        }

        /** Pages on with `since` at the last offset, as a client does, until a page is complete. */
        async function pageThrough (r: string, first: HistoryQuery): Promise<{ offsets: number[], pages: number[][] }> {
          const pages: number[][] = []
          let result = await engine.history.history(r, first, KEEP)
          for (;;) {
            const offsets = offsetsOf(result.publications)
            pages.push(offsets)
            if (result.complete) break
            assert.ok(offsets.length > 0, 'an incomplete page that cuts a read short still holds a publication')
            assert.ok(pages.length <= 100, 'paging ends')
            result = await engine.history.history(r, { ...first, since: { epoch: result.epoch, offset: offsets.at(-1)! } }, KEEP)
          }
          return { offsets: pages.flat(), pages }
        }

        it('a page holds what fits in maxBytes (at least one), oldest first; `complete` says when it reached the top', async () => {
          const r = room('bytes')
          const epoch = await publishPadded(r, 20)
          const three = 3 * each
          const newest = await engine.history.history(r, { limit: 10, maxBytes: three }, KEEP)
          assert.deepEqual({ ...newest, publications: offsetsOf(newest.publications) }, { epoch, offset: 20, publications: [11, 12, 13], complete: false })
          const since = await engine.history.history(r, { since: { epoch, offset: 4 }, limit: 100, maxBytes: three + each - 1 }, KEEP)
          assert.deepEqual({ ...since, publications: offsetsOf(since.publications) }, { epoch, offset: 20, publications: [5, 6, 7], complete: false })
          const tiny = await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 100, maxBytes: 1 }, KEEP)
          assert.deepEqual(offsetsOf(tiny.publications), [1], 'one publication even when it alone is over the cap')
          const byCount = await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 2, maxBytes: three }, KEEP)
          assert.deepEqual(offsetsOf(byCount.publications), [1, 2], 'the count caps too')
          const all = await engine.history.history(r, { since: { epoch, offset: 17 }, limit: 100, maxBytes: three }, KEEP)
          assert.deepEqual({ ...all, publications: offsetsOf(all.publications) }, { epoch, offset: 20, publications: [18, 19, 20], complete: true })
          const roomy = await engine.history.history(r, { limit: 5, maxBytes: 100 * each }, KEEP)
          assert.deepEqual({ ...roomy, publications: offsetsOf(roomy.publications) }, { epoch, offset: 20, publications: [16, 17, 18, 19, 20], complete: true })
        })

        it('paging on with `since` delivers every publication exactly once, in order', async () => {
          const r = room('paging')
          await publishPadded(r, 20)
          const everything = await pageThrough(r, { since: { epoch: (await engine.history.position(r)).epoch, offset: 0 }, limit: 100, maxBytes: 3 * each })
          assert.deepEqual(everything.offsets, Array.from({ length: 20 }, (_, k) => k + 1))
          assert.ok(everything.pages.every((page) => page.length <= 3))
          const newest = await pageThrough(r, { limit: 10, maxBytes: 4 * each })
          assert.deepEqual(newest.offsets, Array.from({ length: 10 }, (_, k) => k + 11))
          assert.deepEqual(newest.pages.map((page) => page.length), [4, 4, 2])
        })

        it('a room keeps at most roomHistoryBytes, its newest always; a read from before is incomplete', async () => {
          const capped = await makeEngine({ roomHistoryBytes: 5 * each })
          try {
            const r = room('capped')
            let epoch = ''
            for (let i = 10; i < 30; i++) epoch = (await capped.broker.publish(r, padded(i), KEEP)).epoch
            const held = await capped.history.history(r, { limit: 100 }, KEEP)
            assert.deepEqual({ ...held, publications: offsetsOf(held.publications) }, { epoch, offset: 20, publications: [16, 17, 18, 19, 20], complete: true })
            const resume = await capped.history.history(r, { since: { epoch, offset: 3 }, limit: 100 }, KEEP)
            assert.deepEqual({ ...resume, publications: offsetsOf(resume.publications) }, { epoch, offset: 20, publications: [16, 17, 18, 19, 20], complete: false })
            // One publication over the whole cap is still kept, alone.
            const huge = request({ pad: 'y'.repeat(6 * each) })
            await capped.broker.publish(r, huge, KEEP)
            const last = await capped.history.history(r, { limit: 100 }, KEEP)
            assert.deepEqual(last.publications.map((p) => p.payload), [huge.payload])
          } finally {
            await capped.close()
          }
        })
      })
    })

    describe('idempotency', () => {
      it('the same key publishes once and answers the first result', async () => {
        const r = room('a')
        await engine.broker.subscribe(r)
        const first = await engine.broker.publish(r, request('once', { idempotencyKey: 'k1' }), KEEP)
        const again = await engine.broker.publish(r, request('twice', { idempotencyKey: 'k1' }), KEEP)
        assert.deepEqual(first, { epoch: first.epoch, offset: 1, duplicate: false })
        assert.deepEqual(again, { epoch: first.epoch, offset: 1, duplicate: true })
        assert.equal((await engine.broker.publish(r, request('other key', { idempotencyKey: 'k2' }), KEEP)).offset, 2)
        assert.equal((await engine.broker.publish(r, request('no key'), KEEP)).offset, 3)
        await seen.until(() => seen.inRoom(r).length >= 3, 'three deliveries')
        await barrier()
        assert.deepEqual(seen.inRoom(r).map((d) => dataOf(d.publication)), ['once', 'other key', 'no key'])
        const stored = await engine.history.history(r, { limit: 10 }, KEEP)
        assert.deepEqual(stored.publications.map(dataOf), ['once', 'other key', 'no key'])
      })

      it('concurrent publishes with one key publish once', async () => {
        const r = room('a')
        const results = await Promise.all(Array.from({ length: 5 }, () => engine.broker.publish(r, request('x', { idempotencyKey: 'same' }), KEEP)))
        assert.deepEqual(new Set(results.map((x) => x.offset)), new Set([1]))
        assert.equal(results.filter((x) => !x.duplicate).length, 1)
        assert.equal((await engine.history.position(r)).offset, 1)
      })

      it('keys are per room', async () => {
        const a = await engine.broker.publish(room('a'), request('a', { idempotencyKey: 'k' }), KEEP)
        const b = await engine.broker.publish(room('b'), request('b', { idempotencyKey: 'k' }), KEEP)
        assert.deepEqual([a.offset, a.duplicate, b.offset, b.duplicate], [1, false, 1, false])
      })
    })

    describe('binary payloads', () => {
      /** Bytes no UTF-8 decoder leaves intact: NUL, 0xFF, a lone continuation byte, a truncated sequence. */
      const notUtf8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3, 0x00, 0xe2, 0x82])
      const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
      const bytesRequest = (payload: Buffer, extra: { idempotencyKey?: string, from?: { id: string }, ts?: number } = {}): PublishRequest =>
        ({ payload, kind: 'binary', from: { id: 'dev:7' }, ts: 1_700_000_000_000, ...extra })
      /** A publication as a comparable value: bytes as hex, so a mismatch shows where. */
      const shown = (p: Publication) => ({ offset: p.offset, kind: p.kind, payload: p.kind === 'binary' ? `hex:${p.payload.toString('hex')}` : p.payload, from: p.from.id, ts: p.ts })

      it('bytes that are not UTF-8 (0x00, 0xFF, all 256 values, none) are numbered, delivered live and read back as they were sent', async () => {
        const r = room('bin')
        await engine.broker.subscribe(r)
        const sent = [notUtf8, allBytes, Buffer.alloc(0)]
        const results = []
        for (const [i, bytes] of sent.entries()) results.push(await engine.broker.publish(r, bytesRequest(bytes, { ts: 1_700_000_000_000 + i }), KEEP))
        // A JSON publication between them keeps its kind and its text.
        results.push(await engine.broker.publish(r, request({ after: 'bytes' }, { ts: 1_700_000_000_003 }), KEEP))
        const epoch = results[0]!.epoch
        assert.deepEqual(results, [1, 2, 3, 4].map((offset) => ({ epoch, offset, duplicate: false })))
        const expected: Publication[] = [
          ...sent.map((bytes, i): Publication => ({ offset: i + 1, kind: 'binary', payload: bytes, from: { id: 'dev:7' }, ts: 1_700_000_000_000 + i })),
          { offset: 4, kind: 'json', payload: '{"after":"bytes"}', from: { id: 'alice' }, ts: 1_700_000_000_003 }
        ]

        await seen.until(() => seen.inRoom(r).length === 4, 'four deliveries')
        assert.deepEqual(seen.inRoom(r).map((d) => shown(d.publication)), expected.map(shown))
        assert.ok(seen.inRoom(r).every((d) => d.epoch === epoch))
        for (const d of seen.inRoom(r).slice(0, 3)) assert.ok(Buffer.isBuffer(d.publication.payload), 'bytes are delivered as a Buffer')

        const latest = await engine.history.history(r, { limit: 10 }, KEEP)
        assert.deepEqual({ ...latest, publications: latest.publications.map(shown) }, { epoch, offset: 4, publications: expected.map(shown), complete: true })
        const since = await engine.history.history(r, { since: { epoch, offset: 1 }, limit: 10 }, KEEP)
        assert.deepEqual({ ...since, publications: since.publications.map(shown) }, { epoch, offset: 4, publications: expected.slice(1).map(shown), complete: true })
        for (const p of latest.publications.slice(0, 3)) assert.ok(Buffer.isBuffer(p.payload))
      })

      it('recovery after a gap returns the missed bytes in order, complete', async () => {
        const r = room('bin-recover')
        const first = await engine.broker.publish(r, bytesRequest(allBytes), KEEP)
        const missed = Array.from({ length: 5 }, (_, i) => Buffer.concat([Buffer.from([0xff, i, 0x00]), allBytes.subarray(i * 40)]))
        for (const bytes of missed) await engine.broker.publish(r, bytesRequest(bytes), KEEP)
        const resumed = await engine.history.history(r, { since: { epoch: first.epoch, offset: 1 }, limit: 100 }, KEEP)
        assert.equal(resumed.complete, true)
        assert.deepEqual(resumed.publications.map((p) => [p.offset, p.kind, Buffer.from(p.payload).toString('hex')]), missed.map((bytes, i) => [i + 2, 'binary', bytes.toString('hex')]))
      })

      it('an idempotent retry of bytes answers the first result; history holds the first bytes, once', async () => {
        const r = room('bin-idem')
        await engine.broker.subscribe(r)
        const first = await engine.broker.publish(r, bytesRequest(notUtf8, { idempotencyKey: 'upload-1' }), KEEP)
        const again = await engine.broker.publish(r, bytesRequest(allBytes, { idempotencyKey: 'upload-1' }), KEEP)
        assert.deepEqual(first, { epoch: first.epoch, offset: 1, duplicate: false })
        assert.deepEqual(again, { ...first, duplicate: true })
        await barrier()
        assert.deepEqual(seen.inRoom(r).map((d) => shown(d.publication)), [shown({ offset: 1, kind: 'binary', payload: notUtf8, from: { id: 'dev:7' }, ts: 1_700_000_000_000 })])
        const stored = await engine.history.history(r, { limit: 10 }, KEEP)
        assert.deepEqual(stored.publications.map(shown), [shown({ offset: 1, kind: 'binary', payload: notUtf8, from: { id: 'dev:7' }, ts: 1_700_000_000_000 })])
      })

      it('byte budgets count the raw bytes: pages and a room\'s cap measure bytes, not their text', async () => {
        // 0xFF decoded as UTF-8 would be three bytes each, and base64 four per three: either
        // count would give other pages and a smaller room than the raw bytes do.
        const padded = Buffer.alloc(1000, 0xff)
        const each = publicationBytes(padded, 'u')
        assert.equal(each, 1000 + 1 + 128)
        const r = room('bin-pages')
        let epoch = ''
        for (let i = 0; i < 10; i++) epoch = (await engine.broker.publish(r, bytesRequest(padded, { from: { id: 'u' } }), KEEP)).epoch
        const page = await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 100, maxBytes: 3 * each }, KEEP)
        assert.deepEqual([offsetsOf(page.publications), page.complete], [[1, 2, 3], false])
        const justUnder = await engine.history.history(r, { since: { epoch, offset: 0 }, limit: 100, maxBytes: 3 * each - 1 }, KEEP)
        assert.deepEqual(offsetsOf(justUnder.publications), [1, 2])

        const capped = await makeEngine({ roomHistoryBytes: 4 * each })
        try {
          const c = room('bin-capped')
          for (let i = 0; i < 10; i++) await capped.broker.publish(c, bytesRequest(padded, { from: { id: 'u' } }), KEEP)
          const held = await capped.history.history(c, { limit: 100 }, KEEP)
          assert.deepEqual(offsetsOf(held.publications), [7, 8, 9, 10])
          assert.ok(held.publications.every((p) => p.kind === 'binary' && p.payload.equals(padded)))
        } finally {
          await capped.close()
        }
      })
    })

    describe('streams', () => {
      it('position() on a room never published to is stable, and the first publish keeps its epoch', async () => {
        const r = room('quiet')
        const first = await engine.history.position(r)
        assert.equal(first.offset, 0)
        assert.ok(first.epoch.length > 0)
        assert.deepEqual(await engine.history.position(r), first)
        assert.deepEqual(await engine.broker.publish(r, request('hi'), KEEP), { ...first, offset: 1, duplicate: false })
      })

      it('removeHistory() starts a new epoch at offset 0, and an old position cannot resume', async () => {
        const r = room('a')
        await engine.broker.publish(r, request(1), KEEP)
        const { epoch: old } = await engine.broker.publish(r, request(2), KEEP)
        await engine.history.removeHistory(r)
        const fresh = await engine.history.position(r)
        assert.notEqual(fresh.epoch, old)
        assert.equal(fresh.offset, 0)
        assert.deepEqual(await engine.history.history(r, { since: { epoch: old, offset: 2 }, limit: 10 }, KEEP), { ...fresh, publications: [], complete: false })
        assert.deepEqual(await engine.broker.publish(r, request(3), KEEP), { ...fresh, offset: 1, duplicate: false })

        // Straight from publish to publish, too.
        await engine.history.removeHistory(r)
        const next = await engine.broker.publish(r, request(4), KEEP)
        assert.notEqual(next.epoch, fresh.epoch)
        assert.notEqual(next.epoch, old)
        assert.equal(next.offset, 1)
      })

      it('removeHistory() of an unknown room is harmless', async () => {
        await engine.history.removeHistory(room('nothing'))
        assert.equal((await engine.history.position(room('nothing'))).offset, 0)
      })
    })

    describe('presence', () => {
      it('joins on a user\'s first connection, leaves on the last, counts connections', async () => {
        const r = room('a')
        assert.deepEqual(await engine.presence.get(r), { users: [], connections: 0 })
        assert.equal(await engine.presence.add(r, 'c1', 'bob'), true)
        assert.equal(await engine.presence.add(r, 'c2', 'bob'), false)
        assert.equal(await engine.presence.add(r, 'c3', 'alice'), true)
        assert.equal(await engine.presence.add(r, 'c2', 'bob'), false, 'adding a connection twice is no new join')
        assert.deepEqual(await engine.presence.get(r), { users: ['alice', 'bob'], connections: 3 })

        assert.equal(await engine.presence.remove(r, 'c1', 'bob'), false)
        assert.deepEqual(await engine.presence.get(r), { users: ['alice', 'bob'], connections: 2 })
        assert.equal(await engine.presence.remove(r, 'c2', 'bob'), true)
        assert.equal(await engine.presence.remove(r, 'c2', 'bob'), false, 'a second leave for the same connection is no leave')
        assert.deepEqual(await engine.presence.get(r), { users: ['alice'], connections: 1 })
        assert.equal(await engine.presence.remove(r, 'c3', 'alice'), true)
        assert.deepEqual(await engine.presence.get(r), { users: [], connections: 0 })
      })

      it('keeps rooms apart and shrugs off unknown connections', async () => {
        const a = room('a')
        const b = room('b')
        assert.equal(await engine.presence.add(a, 'c1', 'alice'), true)
        assert.equal(await engine.presence.add(b, 'c1', 'alice'), true)
        assert.equal(await engine.presence.remove(a, 'nope', 'alice'), false)
        assert.equal(await engine.presence.remove(a, 'c1', 'mallory'), false)
        assert.equal(await engine.presence.remove(room('never'), 'c1', 'alice'), false)
        assert.deepEqual(await engine.presence.get(a), { users: ['alice'], connections: 1 })
        assert.equal(await engine.presence.remove(a, 'c1', 'alice'), true)
        assert.deepEqual(await engine.presence.get(a), { users: [], connections: 0 })
        assert.deepEqual(await engine.presence.get(b), { users: ['alice'], connections: 1 })
      })
    })

    describe('control', () => {
      it('a control message reaches the handler of the engine that sent it, in order, and a throwing handler breaks nothing', async () => {
        assert.ok(engine.control !== undefined, 'every engine carries control messages')
        const control = engine.control
        const got: ControlMessage[] = []
        control.onControl((message) => {
          if (message.type === 'kick' && message.connectionId === 'boom') throw new Error('handler bug')
          got.push(message)
        })
        const sent: ControlMessage[] = [
          { node: prefix, type: 'kick', connectionId: 'c1' },
          { node: prefix, type: 'kick', connectionId: 'boom' },
          { node: prefix, type: 'kick_user', userId: 'u1' },
          { node: prefix, type: 'kick_api_key', keyId: 'k1' },
          { node: prefix, type: 'room_change', change: { type: 'member_removed', room: { id: room('r'), visibility: 'private' }, userId: 'u1' } }
        ]
        for (const message of sent) await control.publishControl(message)
        const expected = sent.filter((m) => !(m.type === 'kick' && m.connectionId === 'boom'))
        const deadline = Date.now() + WAIT_MS
        while (got.filter((m) => m.node === prefix).length < expected.length && Date.now() < deadline) await sleep(10)
        assert.deepEqual(got.filter((m) => m.node === prefix), expected)
        if (engine.kind === 'memory') {
          // In one process the only node gets it before publishControl resolves.
          got.length = 0
          await control.publishControl({ node: prefix, type: 'kick_user', userId: 'u2' })
          assert.equal(got.length, 1)
        }
        control.onControl(null)
        await control.publishControl({ node: prefix, type: 'kick', connectionId: 'late' })
        // Ordered after 'late': both go out in turn on one command connection and arrive in
        // turn on one subscriber connection (Redis), or synchronously (memory).
        await barrier()
        assert.equal(got.some((m) => m.type === 'kick' && m.connectionId === 'late'), false, 'no handler, no delivery')
      })

      it('a connection counter (shared engines only) admits up to the limit and counts releases', async () => {
        const counter = engine.connections
        if (counter === undefined) {
          // One process is the whole cluster: the node's local cap is the cluster-wide one.
          assert.equal(engine.kind, 'memory')
          return
        }
        const user = `user:${prefix}`
        assert.equal(await counter.reserve(user, 'c1', 2), true)
        assert.equal(await counter.reserve(user, 'c1', 2), true, 'reserving the same id again does not count twice')
        assert.equal(await counter.reserve(user, 'c2', 2), true)
        assert.equal(await counter.reserve(user, 'c3', 2), false)
        assert.equal(await counter.reserve(`user:${prefix}-other`, 'c4', 2), true, 'users are counted apart')
        await counter.release(user, 'c1')
        assert.equal(await counter.reserve(user, 'c3', 2), true)
        assert.equal(await counter.reserve(user, 'c5', 2), false)
      })
    })

    describe('lifecycle', () => {
      it('close() is idempotent, leaves no timer behind, and refuses work afterwards', async () => {
        // Unref'd timers are not counted here; those cannot hold the process open anyway.
        const before = timeoutCount()
        const other = await makeEngine()
        recordDeliveries(other)
        await other.broker.subscribe(room('a'))
        await other.broker.publish(room('a'), request('x', { idempotencyKey: 'k' }), { historySize: 10, historyTtlSeconds: 1 })
        await other.presence.add(room('a'), 'c1', 'alice')
        await other.close()
        await other.close()
        assert.ok(timeoutCount() <= before, 'close() cleared its timers')
        await assert.rejects(other.broker.publish(room('a'), request('late'), KEEP))
      })
    })

    describe('property: recovery agrees with a model of every publication', () => {
      type Op =
        | { kind: 'publish', room: number }
        | { kind: 'history', room: number, since: 'none' | 'current' | 'stale' | 'bogus', back: number, limit: number }
        | { kind: 'remove', room: number }

      const opArb: fc.Arbitrary<Op> = fc.oneof(
        { arbitrary: fc.record({ kind: fc.constant('publish' as const), room: fc.nat(1) }), weight: 6 },
        { arbitrary: fc.record({ kind: fc.constant('history' as const), room: fc.nat(1), since: fc.constantFrom('none' as const, 'current' as const, 'stale' as const, 'bogus' as const), back: fc.integer({ min: -2, max: 12 }), limit: fc.integer({ min: 1, max: 12 }) }), weight: 4 },
        { arbitrary: fc.record({ kind: fc.constant('remove' as const), room: fc.nat(1) }), weight: 1 }
      )

      it('never a gap, never a duplicate, incomplete exactly when something is missing', async () => {
        await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: 8 }), fc.array(opArb, { maxLength: 60 }), async (historySize, ops) => {
          const e = await makeEngine()
          const streamOptions = { historySize, historyTtlSeconds: 3600 }
          const runPrefix = `${prefix}:${randomBytes(4).toString('hex')}`
          // Per room: every publication of the current epoch, its epoch once learnt, and all epochs seen before.
          const model = [0, 1].map(() => ({ all: [] as Publication[], epoch: null as string | null, retired: [] as string[] }))
          let counter = 0
          try {
            for (const op of ops) {
              const r = `${runPrefix}:${op.room}`
              const m = model[op.room]
              assert.ok(m !== undefined)
              if (op.kind === 'publish') {
                counter += 1
                const ts = 1_700_000_000_000 + counter
                const result = await e.broker.publish(r, { payload: JSON.stringify({ counter }), kind: 'json', from: { id: 'p' }, ts }, streamOptions)
                if (m.epoch === null) {
                  assert.ok(!m.retired.includes(result.epoch), 'a new stream never reuses an epoch')
                  m.epoch = result.epoch
                }
                assert.deepEqual(result, { epoch: m.epoch, offset: m.all.length + 1, duplicate: false })
                m.all.push({ offset: result.offset, payload: JSON.stringify({ counter }), kind: 'json', from: { id: 'p' }, ts })
              } else if (op.kind === 'remove') {
                await e.history.removeHistory(r)
                if (m.epoch !== null) m.retired.push(m.epoch)
                m.epoch = null
                m.all = []
              } else {
                if (m.epoch === null) {
                  const position = await e.history.position(r)
                  assert.equal(position.offset, 0)
                  assert.ok(!m.retired.includes(position.epoch), 'a new stream never reuses an epoch')
                  m.epoch = position.epoch
                }
                const current = m.all.length
                const held = m.all.slice(Math.max(0, current - historySize))
                const sinceEpoch = op.since === 'current' ? m.epoch : op.since === 'stale' ? m.retired.at(-1) ?? 'stale' : 'bogus'
                const since = op.since === 'none' ? undefined : { epoch: sinceEpoch, offset: Math.max(0, current - op.back) }
                const result = await e.history.history(r, { since, limit: op.limit }, streamOptions)
                assert.equal(result.epoch, m.epoch)
                assert.equal(result.offset, current)

                if (since === undefined) {
                  assert.deepEqual(result.publications, held.slice(Math.max(0, held.length - op.limit)))
                  assert.equal(result.complete, true)
                } else if (since.epoch !== m.epoch || since.offset > current) {
                  assert.deepEqual(result.publications, [])
                  assert.equal(result.complete, false)
                } else {
                  const expected = held.filter((p) => p.offset > since.offset).slice(0, op.limit)
                  assert.deepEqual(result.publications, expected)
                  const missing = since.offset < current && (expected[0]?.offset !== since.offset + 1 || expected.at(-1)?.offset !== current)
                  assert.equal(result.complete, !missing)
                  // The promise a client relies on: a complete answer is exactly what it missed.
                  if (result.complete) assert.deepEqual(result.publications, m.all.slice(since.offset))
                }
              }
            }
          } finally {
            await e.close()
          }
        }), { numRuns: 150 })
      })
    })
  })
}

engineContract('memory', async (options = {}) => createMemoryEngine(options))

/** The embedded engine over durable history: a fresh in-memory SQLite store each, closed with the engine. */
async function makeSqliteEngine (options: ContractEngineOptions = {}): Promise<Engine> {
  const store = await createStore('sqlite::memory:')
  assert.ok(store.sqlite !== undefined)
  const engine = createMemoryEngine({ ...options, store: createSqliteHistory(store.sqlite, options) })
  let closing: Promise<void> | undefined
  return { ...engine, close: () => (closing ??= engine.close().then(() => store.close())) }
}

engineContract('memory + sqlite history', makeSqliteEngine)

const quietLog: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return quietLog } }

/** A Redis engine under a key prefix of its own; closing it also deletes its keys. */
async function makeRedisEngine (options: ContractEngineOptions = {}, cluster?: { seeds: string, deleteKeys: (prefix: string) => Promise<void> }): Promise<Engine> {
  const keyPrefix = `sbtest:${randomBytes(6).toString('hex')}:`
  const clusterNodes = cluster?.seeds.split(',').map((seed) => ({ host: '127.0.0.1', port: Number(seed.split(':')[1]) }))
  const engine = await createRedisEngine({ url: cluster === undefined ? TEST_REDIS_URL : `redis://${cluster.seeds.split(',')[0]}`, clusterNodes, keyPrefix, log: quietLog, ...options })
  const deleteKeys = cluster === undefined ? (prefix: string) => deleteRedisKeys(TEST_REDIS_URL, prefix) : cluster.deleteKeys
  return {
    kind: engine.kind,
    broker: engine.broker,
    history: engine.history,
    presence: engine.presence,
    ...(engine.control === undefined ? {} : { control: engine.control }),
    ...(engine.connections === undefined ? {} : { connections: engine.connections }),
    ping: engine.ping,
    close: (() => {
      let closing: Promise<void> | undefined
      return () => (closing ??= engine.close().then(() => deleteKeys(keyPrefix)))
    })()
  }
}

engineContract('redis', makeRedisEngine, { skip: await skipUnlessRedis() })

// The same contract on a private Redis Cluster (three primaries, three replicas), started once
// for this file: rooms spread over the shards, each room's keys and shard channel in one slot.
const clusterSkip = skipUnlessRedisCluster()
const redisCluster = clusterSkip === false ? await startRedisCluster() : null
after(async () => { await redisCluster?.stop() })
engineContract('redis cluster', async (options = {}) => await makeRedisEngine(options, redisCluster ?? undefined), { skip: clusterSkip })

describe('Memory engine: time-dependent bounds (injected clock)', () => {
  const KEEP_HOUR: StreamOptions = { historySize: 100, historyTtlSeconds: 3600 }
  let clock = 1_700_000_000_000
  let engine: Engine
  beforeEach(() => {
    clock = 1_700_000_000_000
    engine = createMemoryEngine({ now: () => clock, idempotencyWindowMs: 60_000 })
  })
  afterEach(async () => { await engine.close() })

  it('forgets an idempotency key after the window', async () => {
    const first = await engine.broker.publish('r', request('a', { idempotencyKey: 'k' }), KEEP_HOUR)
    clock += 59_999
    assert.deepEqual(await engine.broker.publish('r', request('a', { idempotencyKey: 'k' }), KEEP_HOUR), { ...first, duplicate: true })
    clock += 1
    assert.deepEqual(await engine.broker.publish('r', request('a', { idempotencyKey: 'k' }), KEEP_HOUR), { ...first, offset: 2, duplicate: false })
  })

  it('forgets publications once historyTtlSeconds has passed, not a millisecond before', async () => {
    const second = { historySize: 100, historyTtlSeconds: 1 }
    const { epoch } = await engine.broker.publish('r', request('old'), second)
    clock += 999
    assert.deepEqual(offsetsOf((await engine.history.history('r', { limit: 10 }, second)).publications), [1])
    clock += 1
    assert.deepEqual(await engine.history.history('r', { limit: 10 }, second), { epoch, offset: 1, publications: [], complete: true })
    assert.deepEqual(await engine.history.history('r', { since: { epoch, offset: 0 }, limit: 10 }, second), { epoch, offset: 1, publications: [], complete: false })
  })

  it('bounds the keys per room, evicting the oldest', async () => {
    for (let i = 0; i < 10_001; i++) await engine.broker.publish('r', request(i, { idempotencyKey: `k${i}` }), { historySize: 0, historyTtlSeconds: 1 })
    assert.equal((await engine.broker.publish('r', request('again', { idempotencyKey: 'k1' }), KEEP_HOUR)).duplicate, true)
    assert.equal((await engine.broker.publish('r', request('again', { idempotencyKey: 'k0' }), KEEP_HOUR)).duplicate, false)
  })

  it('drops an idle stream that holds nothing, so the next publish starts a new epoch', async () => {
    const none = { historySize: 0, historyTtlSeconds: 60 }
    const first = await engine.broker.publish('r', request(1), none)
    clock += 30 * 60_000
    assert.deepEqual(await engine.history.position('r'), { epoch: first.epoch, offset: 1 }, 'not idle long enough yet')
    clock += 30 * 60_000
    const next = await engine.broker.publish('r', request(2), none)
    assert.notEqual(next.epoch, first.epoch)
    assert.equal(next.offset, 1)
  })

  it('keeps a stream while it holds publications or this node is subscribed', async () => {
    const day = { historySize: 10, historyTtlSeconds: 86_400 }
    const held = await engine.broker.publish('held', request(1), day)
    const none = { historySize: 0, historyTtlSeconds: 60 }
    await engine.broker.subscribe('live')
    const live = await engine.broker.publish('live', request(1), none)
    clock += 2 * 3_600_000
    assert.deepEqual(await engine.history.position('held'), { epoch: held.epoch, offset: 1 })
    assert.deepEqual(await engine.history.position('live'), { epoch: live.epoch, offset: 1 })
    clock += 86_400_000
    const after = await engine.history.history('held', { since: { epoch: held.epoch, offset: 0 }, limit: 10 }, day)
    assert.equal(after.complete, false, 'the publication expired and the stream is gone')
    assert.notEqual(after.epoch, held.epoch)
  })

  it('keeps delivering in order when a handler publishes from inside onPublication, and survives a throwing handler', async () => {
    const errors: unknown[] = []
    const e = createMemoryEngine({ onHandlerError: (err) => { errors.push(err) } })
    try {
      const order: number[] = []
      e.broker.setHandler({
        onPublication (_room, _epoch, publication) {
          if (publication.offset === 1) void e.broker.publish('r', request('echo'), KEEP_HOUR)
          order.push(publication.offset)
          if (publication.offset === 2) throw new Error('handler bug')
        },
        onEvent () {},
        onReset () {}
      })
      await e.broker.subscribe('r')
      assert.deepEqual(await e.broker.publish('r', request('first'), KEEP_HOUR), { epoch: (await e.history.position('r')).epoch, offset: 1, duplicate: false })
      await e.broker.publish('r', request('third'), KEEP_HOUR)
      assert.deepEqual(order, [1, 2, 3])
      assert.equal(errors.length, 1)
    } finally {
      await e.close()
    }
  })
})

describe('Memory engine: the node\'s history budget (maxHistoryBytes)', () => {
  const KEEP_ALL: StreamOptions = { historySize: 1000, historyTtlSeconds: 3600 }
  /** A publication counted as exactly `bytes` (payload of `bytes - overhead`, publisher ''). */
  const sized = (bytes: number): PublishRequest => ({ payload: `"${'x'.repeat(bytes - publicationBytes('""', ''))}"`, kind: 'json', from: { id: '' }, ts: 1 })
  const KB = 1000

  async function fill (engine: Engine, room: string, count: number, bytes: number): Promise<string> {
    let epoch = ''
    for (let i = 0; i < count; i++) epoch = (await engine.broker.publish(room, sized(bytes), KEEP_ALL)).epoch
    return epoch
  }

  async function heldIn (engine: Engine, room: string): Promise<number[]> {
    return offsetsOf((await engine.history.history(room, { limit: 1000 }, KEEP_ALL)).publications)
  }

  it('counts the bytes held as publications come and go', async () => {
    const engine = createMemoryEngine()
    try {
      assert.equal(publicationBytes(sized(KB).payload, ''), KB)
      await fill(engine, 'a', 3, KB)
      await fill(engine, 'b', 2, 2 * KB)
      assert.equal(engine.history.bytesHeld?.(), 7 * KB)
      // historySize drops count, as do removals.
      await engine.broker.publish('a', sized(KB), { historySize: 1, historyTtlSeconds: 3600 })
      assert.equal(engine.history.bytesHeld?.(), 5 * KB)
      await engine.history.removeHistory('b')
      assert.equal(engine.history.bytesHeld?.(), KB)
    } finally {
      await engine.close()
    }
  })

  it('at the budget, the largest room loses its oldest first; quiet rooms and positions stay', async () => {
    const engine = createMemoryEngine({ maxHistoryBytes: 100 * KB })
    try {
      const quiet = await fill(engine, 'quiet', 5, KB)
      const flood = await fill(engine, 'flood', 150, KB)
      const held = engine.history.bytesHeld?.() ?? Infinity
      assert.ok(held <= 100 * KB, `${held} bytes held`)
      assert.deepEqual(await heldIn(engine, 'quiet'), [1, 2, 3, 4, 5])
      const kept = await heldIn(engine, 'flood')
      assert.equal(kept.at(-1), 150, 'the newest stay')
      assert.deepEqual(kept, Array.from({ length: kept.length }, (_, k) => 151 - kept.length + k), 'a contiguous run ending at the top')
      // Same epochs: a reader from before what is left is told it is incomplete, one after it is not.
      const gap = await engine.history.history('flood', { since: { epoch: flood, offset: 1 }, limit: 1000 }, KEEP_ALL)
      assert.equal(gap.epoch, flood)
      assert.equal(gap.complete, false)
      const recent = await engine.history.history('flood', { since: { epoch: flood, offset: 149 }, limit: 1000 }, KEEP_ALL)
      assert.equal(recent.complete, true)
      assert.equal((await engine.history.history('quiet', { since: { epoch: quiet, offset: 0 }, limit: 1000 }, KEEP_ALL)).complete, true)
    } finally {
      await engine.close()
    }
  })

  it('trims the largest rooms to one level, down to 90% of the budget, and leaves the smaller ones', async () => {
    const engine = createMemoryEngine({ maxHistoryBytes: 100 * KB })
    try {
      await fill(engine, 'small', 10, KB)
      await fill(engine, 'large', 40, KB)
      await fill(engine, 'larger', 50, KB)
      assert.equal(engine.history.bytesHeld?.(), 100 * KB, 'at the budget, nothing goes')
      await fill(engine, 'small', 1, KB)
      const held = engine.history.bytesHeld?.() ?? Infinity
      assert.ok(held <= 90 * KB && held > 88 * KB, `${held} bytes held`)
      assert.equal((await heldIn(engine, 'small')).length, 11)
      const large = (await heldIn(engine, 'large')).length
      const larger = (await heldIn(engine, 'larger')).length
      assert.ok(Math.abs(large - larger) <= 1, `trimmed to one level: ${large} and ${larger}`)
    } finally {
      await engine.close()
    }
  })
})

describe('newEpoch', () => {
  it('hands out 8 random bytes in base64url, never the same twice, across the batches it draws', () => {
    const epochs = Array.from({ length: 1000 }, () => newEpoch())
    for (const epoch of epochs) assert.match(epoch, /^[A-Za-z0-9_-]{11}$/)
    assert.equal(new Set(epochs).size, epochs.length)
    // Random, not counted: consecutive epochs share no common prefix beyond chance.
    const sharedPrefix = epochs.slice(1).filter((epoch, i) => epoch.slice(0, 4) === epochs[i]!.slice(0, 4)).length
    assert.ok(sharedPrefix < 5, `${sharedPrefix} consecutive epochs share their first 4 characters`)
  })
})
