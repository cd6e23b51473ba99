import type { Database } from 'better-sqlite3'
import type { Publication, StreamOptions } from './engine.js'
import type { DurableStream, PageRange, StoredPublication, StreamStore } from './memory-engine.js'

export interface SqliteHistoryOptions {
  /** Bytes one room's history may hold (HISTORY_ROOM_BYTES): what a load brings back and the sweep keeps. */
  roomHistoryBytes?: number
  /** Bytes one room's archive may hold (ARCHIVE_ROOM_BYTES): the sweep deletes its oldest beyond. */
  archiveRoomBytes?: number
  /** Clock in epoch milliseconds for the sweep's TTL (tests inject one to move time). */
  now?: () => number
  /** Receives what a sweep slice threw; the next sweep tries again. */
  onSweepError?: (err: unknown) => void
}

const SWEEP_INTERVAL_MS = 60_000
/** Rows one sweep slice deletes at most before it yields the event loop. */
const SWEEP_ROWS_PER_SLICE = 1000
/** Streams one sweep slice visits at most before it yields the event loop. */
const SWEEP_STREAMS_PER_SLICE = 200
const DAY_MS = 86_400_000

interface PublicationRow {
  stream_offset: number
  publisher: string
  ts: number
  stored_at: number
  bytes: number
  kind: string
  payload_text: string | null
  payload_bytes: Buffer | null
}

interface StreamRow {
  room: string
  epoch: string
  top_offset: number
  history_size: number
  history_ttl_seconds: number
  archive_days: number
  held_bytes: number
}

interface PendingAppend {
  room: string
  epoch: string
  entry: StoredPublication
  options: StreamOptions
  done: (err: Error | null) => void
}

/** What a commit writes to a room's stream row: its latest state once every append of the batch is in. */
interface StreamWrite {
  epoch: string
  top: number
  options: StreamOptions | null
  /** The first offset appended in this tick (0: none), where the count trim of this tick starts. */
  firstAppended: number
}

const PUBLICATION_COLUMNS = 'stream_offset, publisher, ts, stored_at, bytes, kind, payload_text, payload_bytes'

function toPublication (row: PublicationRow): Publication {
  const meta = { offset: row.stream_offset, from: { id: row.publisher }, ts: row.ts }
  return row.kind === 'binary'
    ? { kind: 'binary', payload: row.payload_bytes ?? Buffer.alloc(0), ...meta }
    : { kind: 'json', payload: row.payload_text ?? 'null', ...meta }
}

function isExpired (storedAt: number, at: number, options: StreamOptions): boolean {
  return at - storedAt >= options.historyTtlSeconds * 1000
}

function archiveDaysOf (options: StreamOptions | null | undefined): number {
  return Math.max(0, Math.floor(options?.archiveDays ?? 0))
}

/** The store, and its sweep on demand (the timer runs it every minute). */
export interface SqliteHistory extends StreamStore {
  /** Runs a sweep now (or joins the one under way); resolves when its last slice is done. */
  sweep(): Promise<void>
}

/**
 * The durable store under the memory engine, in the SQLite database of the store (the same
 * file as users and rooms, through the same connection: Store.sqlite says why).
 *
 * Durability: appends wait for one commit per tick (group commit: every publish numbered
 * before the next microtask checkpoint in one transaction, see scheduleFlush), and the engine
 * acknowledges and delivers a publication only after it. better-sqlite3 commits
 * synchronously, so when `done` runs the rows are in the WAL.
 * The connection runs `synchronous = NORMAL` in WAL mode (src/store/index.ts): a commit
 * survives the process's death (kill -9, a crash); power loss may take the last commits
 * (docs/architecture.md, "Durable history").
 *
 * The store's own transactions span `await`s on this same connection: a commit issued while
 * one is open would become part of it (and roll back with it). A flush (and a sweep slice)
 * therefore runs only when the connection is outside a transaction, and otherwise tries again
 * on the next tick; the appends simply wait a little longer.
 *
 * Retention: each commit trims the rooms it wrote to by count (as many rows as it added, so
 * the work is bounded by the tick's publishes), except rooms with an archive (archiveDays),
 * which keep what leaves their window; a sweep every minute deletes what TTL and the room
 * byte cap drop (for an archive: archiveDays and ARCHIVE_ROOM_BYTES), and the rows of epochs
 * queued for purging (remove: a room deleted), in slices of bounded size that yield the event
 * loop in between.
 */
export function createSqliteHistory (database: Database, options: SqliteHistoryOptions = {}): SqliteHistory {
  const roomHistoryBytes = options.roomHistoryBytes ?? Infinity
  const archiveRoomBytes = options.archiveRoomBytes ?? Infinity
  const now = options.now ?? Date.now
  const onSweepError = options.onSweepError ?? ((err: unknown) => {
    process.emitWarning(err instanceof Error ? err : String(err), { code: 'SB_HISTORY_SWEEP' })
  })

  const STREAM_COLUMNS = 'room, epoch, top_offset, history_size, history_ttl_seconds, archive_days, held_bytes'
  const selectStream = database.prepare<[string], StreamRow>(
    `SELECT ${STREAM_COLUMNS} FROM history_streams WHERE room = ?`)
  const selectStreamsAfter = database.prepare<[string, number], StreamRow>(
    `SELECT ${STREAM_COLUMNS} FROM history_streams WHERE room > ? ORDER BY room LIMIT ?`)
  // held_bytes counts the rows of the current epoch: it restarts with a new one.
  const upsertStream = database.prepare(
    `INSERT INTO history_streams (room, epoch, top_offset, history_size, history_ttl_seconds, archive_days, held_bytes)
     VALUES (@room, @epoch, @top, coalesce(@size, 0), coalesce(@ttl, 0), coalesce(@archive, 0), @added)
     ON CONFLICT (room) DO UPDATE SET epoch = excluded.epoch, top_offset = excluded.top_offset,
       history_size = coalesce(@size, history_streams.history_size),
       history_ttl_seconds = coalesce(@ttl, history_streams.history_ttl_seconds),
       archive_days = coalesce(@archive, history_streams.archive_days),
       held_bytes = CASE WHEN history_streams.epoch = excluded.epoch THEN history_streams.held_bytes + @added ELSE @added END`)
  const subtractBytes = database.prepare<[number, string, string]>(
    'UPDATE history_streams SET held_bytes = max(0, held_bytes - ?) WHERE room = ? AND epoch = ?')
  const insertPublication = database.prepare(
    `INSERT INTO history_publications (room, epoch, ${PUBLICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
  const trimRange = database.prepare<[string, string, number, number], { bytes: number }>(
    'DELETE FROM history_publications WHERE room = ? AND epoch = ? AND stream_offset > ? AND stream_offset <= ? RETURNING bytes')
  const queuePurge = database.prepare<[string, string]>(
    'INSERT INTO history_purges (room, epoch) VALUES (?, ?) ON CONFLICT DO NOTHING')
  const queueStreamPurge = database.prepare<[string]>(
    'INSERT INTO history_purges (room, epoch) SELECT room, epoch FROM history_streams WHERE room = ? ON CONFLICT DO NOTHING')
  const deleteStream = database.prepare<[string]>('DELETE FROM history_streams WHERE room = ?')
  const selectPurges = database.prepare<[number], { room: string, epoch: string }>('SELECT room, epoch FROM history_purges LIMIT ?')
  const purgeRows = database.prepare<[string, string, number]>(
    `DELETE FROM history_publications WHERE rowid IN
       (SELECT rowid FROM history_publications WHERE room = ? AND epoch = ? LIMIT ?)`)
  const deletePurge = database.prepare<[string, string]>('DELETE FROM history_purges WHERE room = ? AND epoch = ?')
  const selectOldest = database.prepare<[string, string, number], { stream_offset: number, bytes: number }>(
    'SELECT stream_offset, bytes FROM history_publications WHERE room = ? AND epoch = ? ORDER BY stream_offset LIMIT ?')
  const selectNewest = database.prepare<[string, string, number, number], PublicationRow>(
    `SELECT ${PUBLICATION_COLUMNS} FROM history_publications
     WHERE room = ? AND epoch = ? AND stream_offset > ? ORDER BY stream_offset DESC LIMIT ?`)
  const selectFrom = database.prepare<[string, string, number, number, number], PublicationRow>(
    `SELECT ${PUBLICATION_COLUMNS} FROM history_publications
     WHERE room = ? AND epoch = ? AND stream_offset >= ? AND stream_offset <= ? ORDER BY stream_offset LIMIT ?`)
  const deleteOtherEpochs = database.prepare<[string, string, number]>(
    `DELETE FROM history_publications WHERE rowid IN
       (SELECT rowid FROM history_publications WHERE room = ? AND epoch <> ? LIMIT ?)`)
  const deleteThrough = database.prepare<[string, string, number, number], { bytes: number }>(
    `DELETE FROM history_publications WHERE rowid IN
       (SELECT rowid FROM history_publications WHERE room = ? AND epoch = ? AND stream_offset <= ? ORDER BY stream_offset LIMIT ?)
     RETURNING bytes`)
  const lastExpired = database.prepare<[string, string, number], { last: number | null }>(
    'SELECT max(stream_offset) AS last FROM history_publications WHERE room = ? AND epoch = ? AND stored_at <= ?')
  // The newest row past the byte cap, the room's newest excepted (a room keeps its last word).
  const lastOverBytes = database.prepare<[string, string, number, number], { stream_offset: number }>(
    `SELECT stream_offset FROM (
       SELECT stream_offset, sum(bytes) OVER (ORDER BY stream_offset DESC) AS newer
       FROM history_publications WHERE room = ? AND epoch = ?)
     WHERE newer > ? AND stream_offset < ? ORDER BY stream_offset DESC LIMIT 1`)

  const pageBackward = database.prepare<[string, string, number, number, number, number], PublicationRow>(
    `SELECT ${PUBLICATION_COLUMNS} FROM history_publications
     WHERE room = ? AND epoch = ? AND stream_offset < ? AND stream_offset >= ? AND stored_at > ? ORDER BY stream_offset DESC LIMIT ?`)
  const pageForward = database.prepare<[string, string, number, number, number, number, number], PublicationRow>(
    `SELECT ${PUBLICATION_COLUMNS} FROM history_publications
     WHERE room = ? AND epoch = ? AND stream_offset > ? AND stream_offset <= ? AND stream_offset >= ? AND stored_at > ?
     ORDER BY stream_offset LIMIT ?`)

  let pending: PendingAppend[] = []
  let writes = new Map<string, StreamWrite>()
  /** Rooms whose stream goes with the next commit (room deleted), with the epochs known in memory. */
  let removals = new Map<string, Set<string>>()
  let flushScheduled = false
  let closed = false
  let flushed: (() => void) | null = null

  const commitTick = database.transaction((appends: PendingAppend[], streamWrites: Map<string, StreamWrite>, removed: Map<string, Set<string>>) => {
    const added = new Map<string, number>()
    for (const { room, epoch, entry, options: o } of appends) {
      // A room that keeps neither history nor an archive keeps only its position (the stream row below).
      if (o.historySize <= 0 && archiveDaysOf(o) === 0) continue
      const p = entry.publication
      const binary = p.kind === 'binary'
      insertPublication.run(room, epoch, p.offset, p.from.id, p.ts, entry.storedAt, entry.bytes, p.kind,
        binary ? null : p.payload, binary ? p.payload : null)
      if (streamWrites.get(room)?.epoch === epoch) added.set(room, (added.get(room) ?? 0) + entry.bytes)
    }
    // Before the writes: a room deleted and used again in one tick starts its new stream after.
    for (const [room, epochs] of removed) {
      queueStreamPurge.run(room)
      for (const epoch of epochs) queuePurge.run(room, epoch)
      deleteStream.run(room)
    }
    for (const [room, write] of streamWrites) {
      const o = write.options
      upsertStream.run({
        room,
        epoch: write.epoch,
        top: write.top,
        size: o?.historySize ?? null,
        ttl: o?.historyTtlSeconds ?? null,
        archive: o === null ? null : archiveDaysOf(o),
        added: added.get(room) ?? 0
      })
      const size = o?.historySize ?? 0
      // An archived room keeps what leaves its window (the sweep applies archiveDays and the byte cap).
      if (write.firstAppended > 0 && size > 0 && archiveDaysOf(o) === 0) {
        let trimmed = 0
        for (const row of trimRange.iterate(room, write.epoch, write.firstAppended - 1 - size, write.top - size)) trimmed += row.bytes
        if (trimmed > 0) subtractBytes.run(trimmed, room, write.epoch)
      }
    }
  })

  /**
   * The commit runs at the next microtask checkpoint: every append numbered until then (all the
   * publishes of one socket read, of one timer, of one commit's replies) goes into one
   * transaction. Not later: a connection answers its commands in order, so a client's next
   * publish is read only once this one is answered, and a commit per loop turn would cost a
   * burst from one client a turn per publish, and with it the coalescing of the fan-out
   * (one write per subscriber per turn).
   */
  function scheduleFlush (): void {
    if (flushScheduled) return
    flushScheduled = true
    queueMicrotask(flush)
  }

  function flush (): void {
    flushScheduled = false
    if (pending.length === 0 && writes.size === 0 && removals.size === 0) {
      flushed?.()
      return
    }
    if (database.inTransaction) {
      // A store transaction is open on this connection (it spans awaits): commit after it, on
      // a later turn of the loop (retrying as a microtask could spin while it awaits I/O).
      flushScheduled = true
      setImmediate(flush)
      return
    }
    const appends = pending
    const streamWrites = writes
    const removed = removals
    pending = []
    writes = new Map()
    removals = new Map()
    let failure: Error | null = null
    try {
      commitTick(appends, streamWrites, removed)
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err))
    }
    for (const append of appends) append.done(failure)
    // A deleted room's rows go soon, in the sweep's bounded slices, rather than at the next minute.
    if (failure === null && removed.size > 0 && !closed) setImmediate(startSweep)
    if (pending.length > 0 || writes.size > 0 || removals.size > 0) scheduleFlush()
    else flushed?.()
  }

  function load (room: string, streamOptions: StreamOptions | null, at: number): DurableStream | null {
    // Removed with the next commit, and not begun again since: a new stream.
    if (removals.has(room) && !writes.has(room)) return null
    const row = selectStream.get(room)
    if (row === undefined) return null
    const stored: StreamOptions = { historySize: row.history_size, historyTtlSeconds: row.history_ttl_seconds, archiveDays: row.archive_days }
    const window = streamOptions ?? stored
    const recent: StoredPublication[] = []
    if (window.historySize > 0) {
      let bytes = 0
      for (const r of selectNewest.iterate(room, row.epoch, row.top_offset - window.historySize, window.historySize)) {
        if (isExpired(r.stored_at, at, window)) break
        if (recent.length > 0 && bytes + r.bytes > roomHistoryBytes) break
        bytes += r.bytes
        recent.push({ publication: toPublication(r), storedAt: r.stored_at, bytes: r.bytes })
      }
      recent.reverse()
    }
    return { epoch: row.epoch, offset: row.top_offset, recent, options: row.history_size > 0 || row.history_ttl_seconds > 0 ? stored : null }
  }

  function read (room: string, epoch: string, range: { from: number, top: number, limit: number, maxBytes: number }, streamOptions: StreamOptions, at: number): Publication[] {
    const from = Math.max(range.from, range.top - streamOptions.historySize + 1)
    const publications: Publication[] = []
    if (from > range.top || range.limit <= 0) return publications
    let bytes = 0
    for (const r of selectFrom.iterate(room, epoch, from, range.top, range.limit)) {
      // Expiry drops a stream's oldest first: only a leading run of expired rows is skipped,
      // so the page stays one contiguous run.
      if (publications.length === 0 && isExpired(r.stored_at, at, streamOptions)) continue
      if (publications.length > 0 && bytes + r.bytes > range.maxBytes) break
      bytes += r.bytes
      publications.push(toPublication(r))
    }
    return publications
  }

  /**
   * A page through what the room keeps: its archive (rows within archiveDays) or, without one,
   * its window (the newest historySize rows within the TTL). Rows the sweep has yet to delete
   * are never answered. One more row than the page is read: whether it exists is `more`.
   */
  function page (room: string, epoch: string, range: PageRange, streamOptions: StreamOptions, at: number): { publications: Publication[], more: boolean } {
    const archiveDays = archiveDaysOf(streamOptions)
    const floor = archiveDays > 0 ? 1 : range.top - Math.max(0, streamOptions.historySize) + 1
    const notBefore = at - (archiveDays > 0 ? archiveDays * DAY_MS : streamOptions.historyTtlSeconds * 1000)
    const rows = range.after === undefined
      ? pageBackward.iterate(room, epoch, range.before ?? range.top + 1, floor, notBefore, range.limit + 1)
      : pageForward.iterate(room, epoch, range.after, range.top, floor, notBefore, range.limit + 1)
    const publications: Publication[] = []
    let bytes = 0
    for (const r of rows) {
      if (publications.length >= range.limit || (publications.length > 0 && bytes + r.bytes > range.maxBytes)) {
        // Stopping early ends the statement (the iterator's return): the rest is never read.
        return { publications, more: true }
      }
      bytes += r.bytes
      publications.push(toPublication(r))
    }
    return { publications, more: false }
  }

  /**
   * Deletes up to `budget` rows the stream no longer keeps; returns how many went. A room with
   * an archive keeps its rows for archiveDays within the archive byte cap; one without keeps
   * its recovery window (count, TTL, room bytes).
   */
  function trimStream (stream: StreamRow, budget: number, at: number): number {
    let deleted = deleteOtherEpochs.run(stream.room, stream.epoch, budget).changes
    if (deleted >= budget) return deleted
    const through = stream.archive_days > 0 ? archiveThrough(stream, budget - deleted, at) : windowThrough(stream, at)
    if (through <= 0) return deleted
    let bytes = 0
    for (const row of deleteThrough.iterate(stream.room, stream.epoch, through, budget - deleted)) {
      bytes += row.bytes
      deleted++
    }
    if (bytes > 0) subtractBytes.run(bytes, stream.room, stream.epoch)
    return deleted
  }

  function windowThrough (stream: StreamRow, at: number): number {
    let through = stream.top_offset - Math.max(0, stream.history_size)
    const expired = lastExpired.get(stream.room, stream.epoch, at - stream.history_ttl_seconds * 1000)?.last ?? 0
    through = Math.max(through, expired)
    if (Number.isFinite(roomHistoryBytes)) {
      through = Math.max(through, lastOverBytes.get(stream.room, stream.epoch, roomHistoryBytes, stream.top_offset)?.stream_offset ?? 0)
    }
    return through
  }

  /**
   * The last offset an archive drops: what archiveDays expired, and the oldest rows past the
   * byte cap, found from the running count (held_bytes) by reading at most `budget` of the
   * oldest rows rather than summing the whole archive. The newest publication always stays.
   */
  function archiveThrough (stream: StreamRow, budget: number, at: number): number {
    let through = lastExpired.get(stream.room, stream.epoch, at - stream.archive_days * DAY_MS)?.last ?? 0
    let excess = stream.held_bytes - archiveRoomBytes
    if (excess > 0) {
      for (const row of selectOldest.iterate(stream.room, stream.epoch, budget)) {
        if (excess <= 0 || row.stream_offset >= stream.top_offset) break
        excess -= row.bytes
        through = Math.max(through, row.stream_offset)
      }
    }
    return through
  }

  /** Deletes up to `budget` rows of epochs queued for purging (rooms deleted); returns how many went. */
  function purgeSlice (budget: number): number {
    let deleted = 0
    for (const purge of selectPurges.all(SWEEP_STREAMS_PER_SLICE)) {
      const changes = purgeRows.run(purge.room, purge.epoch, budget - deleted).changes
      deleted += changes
      if (deleted >= budget) return deleted
      deletePurge.run(purge.room, purge.epoch)
    }
    return deleted
  }

  let sweepCursor: string | null = null
  let sweepDone: Array<() => void> = []

  function endSweep (): void {
    sweepCursor = null
    const waiting = sweepDone
    sweepDone = []
    for (const resolve of waiting) resolve()
  }

  /** One slice of the sweep: a bounded number of streams and rows, then the next slice on a later tick. */
  function sweepSlice (): void {
    if (sweepCursor === null) return
    if (closed) {
      endSweep()
      return
    }
    if (database.inTransaction) {
      setImmediate(sweepSlice)
      return
    }
    try {
      const at = now()
      let deleted = purgeSlice(SWEEP_ROWS_PER_SLICE)
      if (deleted >= SWEEP_ROWS_PER_SLICE) {
        setImmediate(sweepSlice)
        return
      }
      const streams = selectStreamsAfter.all(sweepCursor, SWEEP_STREAMS_PER_SLICE)
      for (const stream of streams) {
        deleted += trimStream(stream, SWEEP_ROWS_PER_SLICE - deleted, at)
        // Out of budget: this stream may have more to delete, the next slice starts with it again.
        if (deleted >= SWEEP_ROWS_PER_SLICE) {
          setImmediate(sweepSlice)
          return
        }
        sweepCursor = stream.room
      }
      if (streams.length < SWEEP_STREAMS_PER_SLICE) {
        endSweep()
        return
      }
    } catch (err) {
      endSweep()
      onSweepError(err)
      return
    }
    setImmediate(sweepSlice)
  }

  function startSweep (): void {
    if (sweepCursor !== null) return
    sweepCursor = ''
    sweepSlice()
  }

  const sweepTimer = setInterval(startSweep, SWEEP_INTERVAL_MS)
  // The sweep only bounds the table; it must never keep a process alive on its own.
  sweepTimer.unref()

  return {
    load,

    begin (room, epoch, streamOptions) {
      if (closed) throw new Error('sqlite history is closed')
      writes.set(room, { epoch, top: 0, options: streamOptions, firstAppended: 0 })
      scheduleFlush()
    },

    append (room, epoch, entry, streamOptions, done) {
      if (closed) throw new Error('sqlite history is closed')
      pending.push({ room, epoch, entry, options: streamOptions, done })
      const offset = entry.publication.offset
      const write = writes.get(room)
      if (write !== undefined && write.epoch === epoch) {
        write.top = offset
        write.options = streamOptions
        if (write.firstAppended === 0) write.firstAppended = offset
      } else {
        writes.set(room, { epoch, top: offset, options: streamOptions, firstAppended: offset })
      }
      scheduleFlush()
    },

    read,

    page,

    remove (room, epoch) {
      if (closed) throw new Error('sqlite history is closed')
      let epochs = removals.get(room)
      if (epochs === undefined) {
        epochs = new Set()
        removals.set(room, epochs)
      }
      if (epoch !== null) epochs.add(epoch)
      // A stream begun (or appended to) in this tick under a removed epoch is not written again.
      const write = writes.get(room)
      if (write !== undefined && (epoch === null || write.epoch === epoch)) writes.delete(room)
      scheduleFlush()
    },

    async close () {
      if (closed) return
      closed = true
      clearInterval(sweepTimer)
      endSweep()
      if (pending.length === 0 && writes.size === 0 && removals.size === 0) return
      await new Promise<void>((resolve) => {
        flushed = resolve
        scheduleFlush()
      })
    },

    sweep () {
      if (closed) return Promise.resolve()
      // Waiting first: a sweep with little to do ends within this call.
      const done = new Promise<void>((resolve) => { sweepDone.push(resolve) })
      startSweep()
      return done
    }
  }
}
