import type { ArchivedPublication } from '../../store/types.js'
import type { HistoryPage, PageCursor, PageQuery, Publication, StreamPosition } from '../engine.js'
import { publicationBytes } from '../engine.js'
import type { ArchiveStore } from './archiver.js'

/** What the Redis stream answered for a page: the room's top and the window's part of the page. */
export interface WindowPage {
  top: StreamPosition
  publications: Publication[]
  more: boolean
}

const DAY_MS = 86_400_000

/**
 * A page of an archived room on the cluster: the Redis window (the newest, and what the
 * archiver has yet to confirm) joined to the PostgreSQL archive (what the window no longer
 * holds, and older epochs), with the same cursors as every engine (engine.ts, pageResult):
 *
 * - backward: the window first, then the archive below the window's oldest; when the epoch
 *   runs out, `next` names the archived epoch before it (its newest first);
 * - forward: the archive first, up to where the window starts, then the window; forward from
 *   an old epoch, `next` leads to the archived epoch after it, or the current one's start.
 *
 * `readWindow` reads the stream for a query (the top comes with it). `now` is the clock the
 * room's archiveDays counts from.
 */
export async function archivedPage (
  archive: ArchiveStore, room: string, query: PageQuery, archiveDays: number, now: number,
  readWindow: (query: PageQuery) => Promise<WindowPage>
): Promise<HistoryPage> {
  const limit = Math.max(0, Math.floor(query.limit))
  const maxBytes = query.maxBytes ?? Number.MAX_SAFE_INTEGER
  const notBefore = now - archiveDays * DAY_MS
  const page = new PageBuilder(limit, maxBytes)
  const first = await readWindow(query)
  const { top } = first
  const epoch = query.epoch ?? top.epoch
  const current = epoch === top.epoch
  if (limit === 0) return page.result(epoch, top, null)
  const archived = async (range: { before?: number, after?: number }): Promise<boolean> => {
    // One more than fits: whether it exists is `more`.
    const rows = await archive.archivePage(room, epoch, { ...range, limit: page.room() + 1, notBefore })
    return page.addAll(rows.map(toPublication))
  }

  if (query.after === undefined) {
    if (current) {
      if (page.addAll(first.publications) || first.more) return page.result(epoch, top, { epoch, before: page.lastOffset() })
    }
    const below = page.lastOffset() ?? query.before ?? (current ? top.offset + 1 : undefined)
    if (await archived(below === undefined ? {} : { before: below })) return page.result(epoch, top, { epoch, before: page.lastOffset() })
    const older = await archive.archiveEpochBeside(room, epoch, 'older')
    return page.result(epoch, top, older === null ? null : { epoch: older.epoch, before: older.last + 1 })
  }

  const after = Math.max(0, Math.floor(query.after))
  if (!current) {
    if (await archived({ after })) return page.result(epoch, top, { epoch, after: page.lastOffset() })
    const newer = await archive.archiveEpochBeside(room, epoch, 'newer')
    return page.result(epoch, top, { epoch: newer?.epoch ?? top.epoch, after: 0 })
  }
  const windowStart = first.publications[0]?.offset ?? top.offset + 1
  // The window starts right after `after` (or nothing is newer): it alone answers.
  if (windowStart === after + 1 || after >= top.offset) {
    if (page.addAll(first.publications) || first.more) return page.result(epoch, top, { epoch, after: page.lastOffset() })
    return page.result(epoch, top, null)
  }
  if (await archived({ after })) {
    // The archive's page may reach into what the window holds too: the same publications.
    return page.result(epoch, top, { epoch, after: page.lastOffset() })
  }
  const from = page.lastOffset() ?? after
  if (from + 1 < windowStart) return page.result(epoch, top, null)
  const rest = await readWindow({ ...query, after: from, limit: page.room() })
  if (page.addAll(rest.publications) || rest.more) return page.result(epoch, top, { epoch, after: page.lastOffset() })
  return page.result(epoch, top, null)
}

/** Collects a page within its count and byte caps (never fewer than one publication). */
class PageBuilder {
  readonly publications: Publication[] = []
  #bytes = 0
  constructor (readonly limit: number, readonly maxBytes: number) {}

  room (): number {
    return Math.max(0, this.limit - this.publications.length)
  }

  /** Adds in order until a cap is reached; true when one was (publications remain beyond the page). */
  addAll (publications: Publication[]): boolean {
    for (const p of publications) {
      if (this.publications.length >= this.limit) return true
      const bytes = publicationBytes(p.payload, p.from.id)
      if (this.publications.length > 0 && this.#bytes + bytes > this.maxBytes) return true
      this.#bytes += bytes
      this.publications.push(p)
    }
    return false
  }

  lastOffset (): number | undefined {
    return this.publications[this.publications.length - 1]?.offset
  }

  result (epoch: string, top: StreamPosition, next: PageCursor | null): HistoryPage {
    return { epoch, publications: this.publications, next, top }
  }
}

function toPublication (row: ArchivedPublication): Publication {
  const meta = { offset: row.offset, from: { id: row.publisher }, ts: row.ts }
  return row.kind === 'binary' || typeof row.payload !== 'string'
    ? { kind: 'binary', payload: typeof row.payload === 'string' ? Buffer.from(row.payload) : row.payload, ...meta }
    : { kind: 'json', payload: row.payload, ...meta }
}
