import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import type { PageQuery, Publication } from '../../src/realtime/engine.js'
import { archivedPage, type WindowPage } from '../../src/realtime/redis-engine/archive-pages.js'
import { createStore, type Store } from '../../src/store/index.js'

/*
 * How a cluster page joins the Redis window to the archive (archive-pages.ts), against the
 * store's real archive methods (on an in-memory SQLite database: the same code as on
 * PostgreSQL, whose contract test/store.contract.test.ts checks), with the window as the Redis
 * script would answer it: the newest `size` offsets of the current epoch.
 */

const NOW = 10_000_000
const DAYS = 30

function publication (offset: number): Publication {
  return { kind: 'json', payload: `{"n":${offset}}`, offset, from: { id: 'alice' }, ts: offset }
}

/** The Redis window over offsets (top - size, top] of `epoch`, answering page queries as page.lua does. */
function windowOf (epoch: string, top: number, size: number): (query: PageQuery) => Promise<WindowPage> {
  return async (query) => {
    const position = { epoch, offset: top }
    if (query.epoch !== undefined && query.epoch !== epoch) return { top: position, publications: [], more: false }
    const low = Math.max(1, top - size + 1)
    const held = Array.from({ length: Math.max(0, top - low + 1) }, (_, i) => publication(low + i))
    const selected = query.after === undefined
      ? held.filter(p => p.offset < (query.before ?? top + 1)).reverse()
      : held.filter(p => p.offset > (query.after ?? 0))
    return { top: position, publications: selected.slice(0, query.limit), more: selected.length > query.limit }
  }
}

async function archiveWith (t: TestContext, epochs: Array<[epoch: string, from: number, to: number, storedFrom: number]>): Promise<Store> {
  const store = await createStore('sqlite::memory:')
  t.after(async () => { await store.close() })
  for (const [epoch, from, to, storedFrom] of epochs) {
    const rows = []
    for (let o = from; o <= to; o++) {
      rows.push({ room: 'r', epoch, offset: o, publisher: 'alice', ts: o, storedAt: storedFrom + o, bytes: 140, kind: 'json' as const, payload: `{"n":${o}}` })
    }
    await store.archivePublications(rows)
  }
  return store
}

describe('cluster archive pages: the window joined to the archive', () => {
  it('backward: the window, then the archive below it, then the previous epoch; every offset once', async (t) => {
    // Epoch `old` 1..7 archived; the current `cur` 1..20 archived up to 18 (the archiver lags), window 16..20.
    const store = await archiveWith(t, [['old', 1, 7, 1000], ['cur', 1, 18, 5000]])
    const read = windowOf('cur', 20, 5)
    const seen: Array<[string, number]> = []
    let query: PageQuery = { before: Number.MAX_SAFE_INTEGER, limit: 6 }
    for (let pages = 0; pages < 20; pages++) {
      const page = await archivedPage(store, 'r', query, DAYS, NOW, read)
      for (const p of page.publications) seen.push([page.epoch, p.offset])
      if (page.next === null) break
      query = { epoch: page.next.epoch, ...(page.next.before === undefined ? {} : { before: page.next.before }), limit: 6 }
    }
    const expected: Array<[string, number]> = [
      ...Array.from({ length: 20 }, (_, i): [string, number] => ['cur', 20 - i]),
      ...Array.from({ length: 7 }, (_, i): [string, number] => ['old', 7 - i])
    ]
    assert.deepEqual(seen, expected)
  })

  it('forward: the archive, then the window from where it ends; from an old epoch on into the current one', async (t) => {
    const store = await archiveWith(t, [['old', 1, 3, 1000], ['cur', 1, 18, 5000]])
    const read = windowOf('cur', 20, 5)
    const seen: Array<[string, number]> = []
    let query: PageQuery = { epoch: 'old', after: 0, limit: 4 }
    for (let pages = 0; pages < 20; pages++) {
      const page = await archivedPage(store, 'r', query, DAYS, NOW, read)
      for (const p of page.publications) seen.push([page.epoch, p.offset])
      if (page.next === null) break
      query = { epoch: page.next.epoch, after: page.next.after ?? 0, limit: 4 }
    }
    assert.deepEqual(seen, [
      ['old', 1], ['old', 2], ['old', 3],
      ...Array.from({ length: 20 }, (_, i): [string, number] => ['cur', i + 1])
    ])
  })

  it('a page stops at its byte cap (never below one publication) and its cursor carries on', async (t) => {
    const store = await archiveWith(t, [['cur', 1, 10, 5000]])
    const page = await archivedPage(store, 'r', { after: 0, limit: 10, maxBytes: 300 }, DAYS, NOW, windowOf('cur', 10, 0))
    assert.deepEqual(page.publications.map(p => p.offset), [1, 2])
    assert.deepEqual(page.next, { epoch: 'cur', after: 2 })
    const tiny = await archivedPage(store, 'r', { after: 0, limit: 10, maxBytes: 1 }, DAYS, NOW, windowOf('cur', 10, 0))
    assert.deepEqual(tiny.publications.map(p => p.offset), [1])
  })

  it('rows older than archiveDays are not answered', async (t) => {
    const store = await archiveWith(t, [['cur', 1, 10, 0]])
    // Stored at 1..10 ms; with NOW at 30 days + 5 ms, rows 1..5 are past 30 days.
    const page = await archivedPage(store, 'r', { after: 0, limit: 10 }, DAYS, DAYS * 86_400_000 + 5, windowOf('cur', 10, 0))
    assert.deepEqual(page.publications.map(p => p.offset), [6, 7, 8, 9, 10])
  })
})
