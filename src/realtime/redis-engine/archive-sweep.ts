import type { Store } from '../../store/types.js'
import type { Logger } from '../logger.js'

/** What the retention sweep needs of the database (PostgreSQL). */
export type SweepStore = Pick<Store, 'sweepArchive'>

export interface ArchiveSweeperOptions {
  store: SweepStore
  log: Logger
  /** How often a sweep starts on this node. */
  intervalMs: number
  /** Rows one batch (one DELETE, one transaction) deletes at most. */
  batchSize: number
  /** The retention's clock in epoch milliseconds (tests inject one to move time). */
  now?: () => number
  /** Rows each finished sweep deleted on this node. */
  onSwept?: (rows: number) => void
}

export interface ArchiveSweeper {
  /** Runs a sweep now (or joins the one under way); resolves with the rows it deleted. */
  sweep(): Promise<number>
  /** Stops the timer; a batch under way finishes (or fails) first. */
  close(): Promise<void>
}

/**
 * The cluster archive's retention (PostgreSQL's history_publications): every `intervalMs`,
 * batch after batch until one comes back short, it deletes the rows older than their room's
 * archiveDays and the rows of deleted rooms (Store.sweepArchive). Each batch is one
 * transaction on the database, awaited, so the event loop serves connections meanwhile. Every
 * node runs one; a batch holds the sweep's advisory lock, and a node that finds it taken
 * leaves this round to the node holding it.
 */
export function createArchiveSweeper (options: ArchiveSweeperOptions): ArchiveSweeper {
  const { store, log, intervalMs, batchSize, onSwept } = options
  const now = options.now ?? Date.now
  let closed = false
  let running: Promise<number> | null = null

  async function run (): Promise<number> {
    // One cut-off for the whole sweep: a batch that came back full resumes at the same rows.
    const at = now()
    let from = ''
    let total = 0
    while (!closed) {
      const batch = await store.sweepArchive(at, batchSize, from)
      if (batch === null) break
      total += batch.deleted
      if (batch.deleted < batchSize || batch.last === null) break
      from = batch.last
    }
    return total
  }

  function sweep (): Promise<number> {
    if (running !== null) return running
    const started = run().then((rows) => {
      onSwept?.(rows)
      if (rows > 0) log.info({ rows }, 'archive retention sweep deleted expired rows')
      return rows
    }, (err: unknown) => {
      // The database is away, or the sweep failed: the rows stay (never answered past
      // archiveDays anyway) and the next interval tries again.
      if (!closed) log.warn({ err }, 'archive retention sweep failed; retried at the next interval')
      return 0
    }).finally(() => { running = null })
    running = started
    return started
  }

  const timer = setInterval(() => { void sweep() }, intervalMs)
  // The sweep only bounds the table; it must never keep a process alive on its own.
  timer.unref()

  return {
    sweep,
    async close () {
      closed = true
      clearInterval(timer)
      await running
    }
  }
}
