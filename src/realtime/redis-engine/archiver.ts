import { runScript, runScriptBuffer } from '../../redis.js'
import type { ArchivedPublication, Store } from '../../store/types.js'
import type { PartContext } from './context.js'
import { engineScript, toNumber } from './scripts.js'

const INDEX = engineScript(new URL('./lua/archive-index.lua', import.meta.url))
const CLAIM = engineScript(new URL('./lua/archive-claim.lua', import.meta.url))
const TRIM = engineScript(new URL('./lua/archive-trim.lua', import.meta.url))
const RELEASE = engineScript(new URL('./lua/archive-release.lua', import.meta.url))
const UNINDEX = engineScript(new URL('./lua/archive-unindex.lua', import.meta.url))

/** What the cluster archive needs of the database: the store's archive methods (PostgreSQL). */
export type ArchiveStore = Pick<Store, 'archivePublications' | 'archivePage' | 'archiveEpochBeside' | 'purgeArchive'>

export interface ArchiverOptions extends PartContext {
  store: ArchiveStore
  /** This node's id in leases (random per start: a restarted node is another holder). */
  nodeId: string
  /** A room's lease lapses this long after its holder's last batch: how soon another node takes over a dead one's queue. */
  leaseMs: number
  /** How often every room of the index is visited (rooms whose holder died, or whose wake-up was missed). */
  scanMs: number
  /** Receives the lag of each archived publication (ms from its publish to PostgreSQL's confirmation). */
  onArchived?: (lagMs: number) => void
}

/** What the claim and trim scripts answer: the entries waiting, and the next batch of them (id, fields). */
type BatchReply = [number, Array<[Buffer, Buffer[]]>]

/** Entries read and inserted per batch (one INSERT). */
const BATCH = 500
/** Rooms drained at once: each holds a database connection while its batch is written. */
const CONCURRENCY = 8
/** Rooms visited per scan, so that a huge index is walked over several scans. */
const SCAN_ROOMS = 1000
/**
 * A room leaves the index only when no publish named it for this long. A publish names its room
 * (archive-index.lua) right before its script runs, so only a publish whose script reaches
 * Redis more than this long after its index call could queue an entry that no scan visits; the
 * next publish to that room would name it again.
 */
const UNINDEX_GRACE_MS = 60_000
const FAILURE_LOG_MS = 30_000

export interface Archiver {
  /** Call before an archived room's publish script: names the room in the index. */
  beforePublish(room: string): Promise<void>
  /** Call after it: this node drains the room's queue soon. */
  published(room: string): void
  /** Entries this node saw waiting in the queues it looked at last (the lag's other face). */
  pending(): number
  close(): Promise<void>
}

/**
 * Drains the archive queues (one Redis stream per archived room, filled by publish.lua) into
 * PostgreSQL, exactly once per (room, epoch, offset):
 *
 * - an entry leaves its queue only after the database confirmed its row (archive-trim.lua),
 *   and the insert is keyed by the position (ON CONFLICT DO NOTHING), so a node that dies
 *   between the two leaves an entry whose second insert changes nothing;
 * - one node drains a room at a time, under a lease that lapses `leaseMs` after its last batch:
 *   when a node dies another (or the restarted one) takes the room over at its next visit. Two
 *   holders at once (a holder slower than its lease) only insert the same rows twice, which
 *   the key absorbs;
 * - the node that published drains at once; every node also walks the index of rooms with
 *   queued entries every `scanMs`, which is how a dead node's rooms are found.
 *
 * The index is one sorted set outside every room's hash slot, written by its own command
 * before the publish script, so every script still touches one slot (Redis Cluster).
 */
export function createArchiver (options: ArchiverOptions): Archiver {
  const { cmd, keys, log, store, nodeId, leaseMs, scanMs, onArchived } = options
  const wanted = new Set<string>()
  /** Rooms being drained here, and those wanted again meanwhile: one drain per room at a time. */
  const draining = new Set<string>()
  const again = new Set<string>()
  const waiting = new Map<string, number>()
  let active = 0
  const drains = new Set<Promise<void>>()
  let closed = false
  let scanAt = 0
  let lastFailureLog = 0

  function schedule (): void {
    while (!closed && active < CONCURRENCY && wanted.size > 0) {
      const room = wanted.values().next().value as string
      wanted.delete(room)
      active++
      draining.add(room)
      const running = drain(room).finally(() => {
        active--
        draining.delete(room)
        drains.delete(running)
        if (again.delete(room)) want(room)
        schedule()
      })
      drains.add(running)
    }
  }

  function want (room: string): void {
    if (closed) return
    if (draining.has(room)) again.add(room)
    else wanted.add(room)
  }

  function noteWaiting (room: string, count: number): void {
    if (count > 0) waiting.set(room, count)
    else waiting.delete(room)
  }

  async function drain (room: string): Promise<void> {
    const k = keys.room(room)
    try {
      // Each script answers the next batch with its work: one Redis round trip and one INSERT per batch.
      const [claimed, first] = await runScriptBuffer(cmd, CLAIM, [k.archiveQueue, k.archiveLease], [nodeId, leaseMs, BATCH]) as BatchReply
      if (toNumber(claimed) <= 0) {
        if (toNumber(claimed) === 0) {
          noteWaiting(room, 0)
          await runScript(cmd, UNINDEX, [keys.archiveIndex], [room, UNINDEX_GRACE_MS])
        }
        return
      }
      noteWaiting(room, toNumber(claimed))
      let entries = first
      // Published to meanwhile: the loop goes on under the lease the trim renewed, no new claim.
      while (entries.length > 0 && !closed) {
        const rows = entries.map(([, fields]) => toArchived(room, fields))
        await store.archivePublications(rows)
        const confirmedAt = Date.now()
        if (onArchived !== undefined) for (const row of rows) onArchived(Math.max(0, confirmedAt - row.storedAt))
        const trimArgs: Array<string | number> = [nodeId, leaseMs, BATCH]
        entries.forEach(([id], i) => { trimArgs.push(id.toString(), rows[i]?.bytes ?? 0) })
        const [left, next] = await runScriptBuffer(cmd, TRIM, [k.archiveQueue, k.archiveQueueBytes, k.archiveLease], trimArgs) as BatchReply
        noteWaiting(room, toNumber(left))
        entries = next
      }
      const left = toNumber(await runScript(cmd, RELEASE, [k.archiveQueue, k.archiveLease], [nodeId]))
      noteWaiting(room, left)
      // Published to while this batch was written: carry on (the lease is given back, so
      // another node may take it first; either way the entries go).
      if (left > 0) again.add(room)
    } catch (err) {
      // The database or Redis is away: the entries stay queued (publishes to the room are
      // refused once its queue is full) and the next scan tries again. Logged at most every
      // FAILURE_LOG_MS: an outage retried every scan must not flood the log.
      if (closed) return
      if (Date.now() - lastFailureLog >= FAILURE_LOG_MS) {
        lastFailureLog = Date.now()
        log.warn({ err, room }, 'archiving failed; publications stay queued and are retried')
      }
    }
  }

  async function scan (): Promise<void> {
    if (closed || cmd.status !== 'ready') return
    try {
      const rooms = await cmd.zrange(keys.archiveIndex, scanAt, scanAt + SCAN_ROOMS - 1)
      scanAt = rooms.length < SCAN_ROOMS ? 0 : scanAt + SCAN_ROOMS
      for (const room of rooms) want(room)
      schedule()
    } catch (err) {
      log.debug({ err }, 'archive index scan failed')
    }
  }

  const scanTimer = setInterval(() => { void scan() }, scanMs)
  scanTimer.unref()

  return {
    async beforePublish (room) {
      await runScript(cmd, INDEX, [keys.archiveIndex], [room])
    },
    published (room) {
      want(room)
      schedule()
    },
    pending () {
      let total = 0
      for (const count of waiting.values()) total += count
      return total
    },
    async close () {
      closed = true
      clearInterval(scanTimer)
      wanted.clear()
      again.clear()
      // A batch being written finishes (or fails) before the connections close; what it has
      // not trimmed stays queued for the next node.
      await Promise.allSettled([...drains])
    }
  }
}

/** A queue entry (fields as publish.lua writes them) as the row the archive keeps. */
function toArchived (room: string, fields: Buffer[]): ArchivedPublication {
  const value = new Map<string, Buffer>()
  for (let i = 0; i + 1 < fields.length; i += 2) value.set((fields[i] as Buffer).toString(), fields[i + 1] as Buffer)
  const text = (name: string): string => value.get(name)?.toString() ?? ''
  const data = value.get('d') ?? Buffer.alloc(0)
  const kind = text('k') === 'binary' ? 'binary' : 'json'
  return {
    room,
    epoch: text('e'),
    offset: Number(text('o')),
    publisher: text('f'),
    ts: Number(text('s')),
    storedAt: Number(text('t')),
    bytes: Number(text('b')),
    kind,
    payload: kind === 'binary' ? Buffer.from(data) : data.toString()
  }
}
