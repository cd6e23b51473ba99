import type {
  BrokerHandler, ControlMessage, Engine, HistoryPage, HistoryQuery, HistoryResult, PageQuery, PresenceInfo, Publication,
  PublishRequest, PublishResult, RoomEvent, StreamOptions, StreamPosition
} from './engine.js'
import { latestResult, newEpoch, pageResult, payloadOf, publicationBytes, sinceResult } from './engine.js'

export interface MemoryEngineOptions {
  /** Clock in epoch milliseconds (tests inject one to move time). */
  now?: () => number
  /** How long a publish's idempotency key is remembered per room; default 5 minutes. */
  idempotencyWindowMs?: number
  /**
   * Receives what a broker handler threw. The publication is already numbered and stored by
   * then, so the publish still resolves; the default reports it as a process warning.
   */
  onHandlerError?: (err: unknown, room: string) => void
  /**
   * Bytes (publicationBytes) all rooms' history may hold together (HISTORY_MEMORY_BYTES).
   * Past it, the oldest publications of the largest rooms go first. Absent: no node budget.
   */
  maxHistoryBytes?: number
  /** Bytes one room's history may hold (HISTORY_ROOM_BYTES); its oldest go first. Absent: no cap. */
  roomHistoryBytes?: number
  /**
   * Where streams are kept durably (sqlite-history.ts): numbering and history survive a restart.
   * Absent, streams live and die with the process (a restart starts every room in a new epoch).
   */
  store?: StreamStore
}

/** A publication as history holds it: when it was stored (the TTL's clock) and what it counts for. */
export interface StoredPublication {
  publication: Publication
  storedAt: number
  /** publicationBytes of the publication, counted once at publish. */
  bytes: number
}

/** A room's stream as a StreamStore kept it. */
export interface DurableStream {
  epoch: string
  /** The last offset committed. */
  offset: number
  /** The newest publications the recovery window keeps (count, TTL, room bytes), oldest first. */
  recent: StoredPublication[]
  /** The settings it was last published with; null when it never was. */
  options: StreamOptions | null
}

/**
 * What the memory engine needs from a durable store: the narrow interface it owns, which
 * sqlite-history.ts implements. The engine stays the hot window and the fan-out; the store is
 * the truth under it. Reads are synchronous (the embedded store answers from the process);
 * writes are grouped and committed together once per tick, and a publication is numbered at
 * once but neither acknowledged, nor delivered, nor readable before its commit: a crash must
 * never let anyone have seen an offset that the restarted server hands out again.
 */
export interface StreamStore {
  /** The room's stream, or null when the store has none (never published to, or unknown). */
  load(room: string, options: StreamOptions | null, at: number): DurableStream | null
  /** A new stream (or a reset one, after removeHistory) at offset 0, written with the next commit. */
  begin(room: string, epoch: string, options: StreamOptions | null): void
  /**
   * Stores a publication with the next commit; `done` runs synchronously right after that
   * commit (null) or its failure (the error), in the order of the appends.
   */
  append(room: string, epoch: string, entry: StoredPublication, options: StreamOptions, done: (err: Error | null) => void): void
  /**
   * The committed publications of the stream from offset `from` up to `top`, oldest first, as
   * far as the window `options` sets holds them at time `at` (what the memory engine would
   * hold without a node budget), at most `limit` and `maxBytes` (never fewer than one).
   */
  read(room: string, epoch: string, range: { from: number, top: number, limit: number, maxBytes: number }, options: StreamOptions, at: number): Publication[]
  /**
   * A page of the stream for reading back, from the archive where the room keeps one
   * (`options.archiveDays`), else from its window: `before` (newest first, default `top` + 1)
   * or `after` (oldest first) an offset, committed publications up to `top` only, at most
   * `limit` and `maxBytes` (never fewer than one). `more`: publications beyond the page remain.
   */
  page(room: string, epoch: string, range: PageRange, options: StreamOptions, at: number): { publications: Publication[], more: boolean }
  /**
   * The room is gone: with the next commit its stream row goes, and its publications (of
   * `epoch`, the one the engine held, and of the stream row's) are deleted soon after, in
   * bounded batches. The next touch of the room finds no stream and begins a new one.
   */
  remove(room: string, epoch: string | null): void
  /** Commits what is pending and stops the store's timers; the connection stays open (its owner closes it). */
  close(): Promise<void>
}

/** What StreamStore.page reads: one direction from one offset, up to the committed top. */
export interface PageRange {
  before?: number
  after?: number
  top: number
  limit: number
  maxBytes: number
}

const DEFAULT_IDEMPOTENCY_WINDOW_MS = 5 * 60_000
/** Bounds a room's key map: a client sending a fresh key per publish cannot grow memory. */
const MAX_IDEMPOTENCY_KEYS_PER_ROOM = 10_000
/** A stream that holds nothing is kept at least this long after its last publish, so a
 * client that just missed a quiet spell still resumes in the same epoch. */
const MIN_IDLE_MS = 60 * 60_000
const SWEEP_INTERVAL_MS = 60_000
/**
 * Dropped entries are compacted away once they outnumber the held ones: each copy is paid for
 * by as many drops (publish stays O(1) amortised) and dead publications never outweigh live ones.
 * The floor spares tiny histories a new array on every publish.
 */
const COMPACT_AFTER = 16
/**
 * At the node budget, history is trimmed to this share of it: the rooms are sorted once per
 * eviction, so eviction is paid once per tenth of the budget published, not on every publish.
 */
const EVICT_TO = 0.9

type Stored = StoredPublication

interface Stream {
  epoch: string
  /** The last offset handed out (0 before the first publish). */
  offset: number
  /**
   * The last offset committed, what readers see: equal to `offset` without a store; with one,
   * publications between the two wait for their commit.
   */
  committed: number
  /**
   * With a store: the newest offset the node budget dropped from memory that the store may
   * still hold (0: none), so a read reaching that far back asks the store.
   */
  evictedThrough: number
  /** Always the contiguous run of offsets ending at `committed`: entries are only appended or dropped from the front. */
  stored: Stored[]
  /** Index of the oldest held entry in `stored` (entries before it are dropped). */
  head: number
  /** Bytes of the held entries. */
  bytes: number
  /**
   * Insertion-ordered, so the oldest keys are first both for expiry and for eviction. `commit`
   * is the first publish's commit while it is pending: a retry with its key waits for it.
   */
  keys: Map<string, { position: StreamPosition, at: number, commit: Promise<void> | null }>
  /** Creation or last publish: what "idle" is measured from. */
  lastPublishAt: number
  /** The latest settings seen, for the sweep, which gets none of its own. */
  options: StreamOptions | null
}

function heldCount (stream: Stream): number {
  return stream.stored.length - stream.head
}

/** Drops the `count` oldest held entries; returns the bytes they held. */
function dropOldest (stream: Stream, count: number): number {
  if (count <= 0) return 0
  const end = Math.min(stream.stored.length, stream.head + count)
  let freed = 0
  for (let i = stream.head; i < end; i++) freed += stream.stored[i]!.bytes
  stream.head = end
  stream.bytes -= freed
  if (stream.head >= stream.stored.length) {
    stream.stored = []
    stream.head = 0
  } else if (stream.head >= COMPACT_AFTER && stream.head >= heldCount(stream)) {
    stream.stored = stream.stored.slice(stream.head)
    stream.head = 0
  }
  return freed
}

/** How many of the oldest held entries must go for the stream to hold at most `bytes`. */
function countToFit (stream: Stream, bytes: number): number {
  let excess = stream.bytes - bytes
  let count = 0
  for (let i = stream.head; excess > 0 && i < stream.stored.length; i++, count++) excess -= stream.stored[i]!.bytes
  return count
}

/**
 * The embedded engine for one process: per-room streams numbered and kept in memory, delivery
 * to this process's handler, presence in maps. State is bounded (history by each room's size,
 * TTL and bytes and by the node's byte budget, idempotency keys by count and window, idle
 * empty streams dropped by a sweep), and a dropped stream comes back under a new epoch, so a
 * client is told it cannot recover rather than silently missing publications.
 */
export function createMemoryEngine (options: MemoryEngineOptions = {}): Engine {
  const now = options.now ?? Date.now
  const idempotencyWindowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS
  const maxHistoryBytes = options.maxHistoryBytes ?? Infinity
  const roomHistoryBytes = options.roomHistoryBytes ?? Infinity
  const store = options.store ?? null
  const onHandlerError = options.onHandlerError ?? ((err: unknown, room: string) => {
    process.emitWarning(err instanceof Error ? err : String(err), { code: 'SB_BROKER_HANDLER', detail: `room ${room}` })
  })

  const streams = new Map<string, Stream>()
  /** Bytes held by every stream together: what maxHistoryBytes bounds. */
  let heldBytes = 0
  const subscribed = new Set<string>()
  const presence = new Map<string, Map<string, Set<string>>>()
  let handler: BrokerHandler | null = null
  let controlHandler: ((message: ControlMessage) => void) | null = null
  let closed = false
  let brokerClosed = false

  // One FIFO for all deliveries: a handler that publishes from inside onPublication gets its
  // publication queued behind the one being handled, instead of delivered in the middle of it.
  const pending: Array<{ room: string, call: (h: BrokerHandler) => void }> = []
  let delivering = false

  function deliver (room: string, call: (h: BrokerHandler) => void): void {
    pending.push({ room, call })
    if (delivering) return
    delivering = true
    try {
      for (let next = pending.shift(); next !== undefined; next = pending.shift()) {
        if (handler === null) continue
        try {
          next.call(handler)
        } catch (err) {
          onHandlerError(err, next.room)
        }
      }
    } finally {
      delivering = false
    }
  }

  function assertOpen (): void {
    if (closed) throw new Error('memory engine is closed')
  }

  function prune (stream: Stream, streamOptions: StreamOptions | null, at: number): void {
    if (streamOptions !== null) {
      stream.options = streamOptions
      heldBytes -= dropOldest(stream, heldCount(stream) - Math.max(0, streamOptions.historySize))
      const ttlMs = streamOptions.historyTtlSeconds * 1000
      let expired = 0
      for (let i = stream.head; i < stream.stored.length; i++) {
        const entry = stream.stored[i]
        if (entry === undefined || at - entry.storedAt < ttlMs) break
        expired++
      }
      heldBytes -= dropOldest(stream, expired)
    }
    for (const [key, seen] of stream.keys) {
      if (at - seen.at < idempotencyWindowMs) break
      stream.keys.delete(key)
    }
  }

  function droppable (room: string, stream: Stream, at: number): boolean {
    // Local subscribers hold this epoch; replacing it under them would turn a quiet room
    // into a spurious "cannot recover" on their next publication.
    if (subscribed.has(room)) return false
    if (heldCount(stream) > 0 || stream.keys.size > 0 || stream.offset !== stream.committed) return false
    const ttlMs = (stream.options?.historyTtlSeconds ?? 0) * 1000
    return at - stream.lastPublishAt >= Math.max(ttlMs, MIN_IDLE_MS)
  }

  /** The room's stream, pruned with the caller's settings (or the last ones seen), created if missing. */
  function streamOf (room: string, streamOptions: StreamOptions | null, at: number): Stream {
    let stream = streams.get(room)
    if (stream !== undefined) {
      prune(stream, streamOptions ?? stream.options, at)
      if (droppable(room, stream, at)) stream = undefined
    }
    if (stream === undefined) {
      stream = loadStream(room, streamOptions, at)
      streams.set(room, stream)
      if (heldBytes > maxHistoryBytes) evict()
    }
    return stream
  }

  /**
   * A stream the process does not hold: the store's (first touch after a start, or after the
   * idle sweep dropped it from memory), else a new one, which the store records at once so
   * that its epoch survives a restart too.
   */
  function loadStream (room: string, streamOptions: StreamOptions | null, at: number): Stream {
    const loaded = store?.load(room, streamOptions, at) ?? null
    if (loaded === null) {
      const epoch = newEpoch()
      store?.begin(room, epoch, streamOptions)
      return { epoch, offset: 0, committed: 0, evictedThrough: 0, stored: [], head: 0, bytes: 0, keys: new Map(), lastPublishAt: at, options: streamOptions }
    }
    let bytes = 0
    for (const entry of loaded.recent) bytes += entry.bytes
    heldBytes += bytes
    const stream: Stream = {
      epoch: loaded.epoch,
      offset: loaded.offset,
      committed: loaded.offset,
      evictedThrough: 0,
      stored: loaded.recent,
      head: 0,
      bytes,
      keys: new Map(),
      lastPublishAt: at,
      options: streamOptions ?? loaded.options
    }
    prune(stream, stream.options, at)
    return stream
  }

  /** The room's stream was lost with a failed commit: forget it, so the next touch reloads what was committed. */
  function forget (room: string, stream: Stream): void {
    if (streams.get(room) !== stream) return
    heldBytes -= stream.bytes
    streams.delete(room)
  }

  function sweep (): void {
    const at = now()
    for (const [room, stream] of streams) {
      prune(stream, stream.options, at)
      if (droppable(room, stream, at)) streams.delete(room)
    }
  }

  /**
   * Over the node budget: the largest rooms are trimmed, oldest first, to one common level,
   * low enough that all of history fits in EVICT_TO of the budget. A flood in one room costs
   * that room its old publications before any quiet room loses one; positions stay valid (the
   * epoch is kept), and a read or recovery from before what is left is answered incomplete.
   */
  function evict (): void {
    const excess = heldBytes - Math.floor(maxHistoryBytes * EVICT_TO)
    if (excess <= 0) return
    const largest = [...streams.values()].filter((s) => s.bytes > 0).sort((a, b) => b.bytes - a.bytes)
    let sum = 0
    for (let k = 0; k < largest.length; k++) {
      sum += largest[k]!.bytes
      const below = largest[k + 1]?.bytes ?? 0
      // Trimming the k + 1 largest down to `below` would free sum - (k + 1) * below.
      if (sum - (k + 1) * below < excess) continue
      const level = Math.floor((sum - excess) / (k + 1))
      for (let i = 0; i <= k; i++) {
        const stream = largest[i]!
        const count = countToFit(stream, level)
        // The store keeps what the budget drops from memory: reads reaching back there ask it.
        if (store !== null && count > 0) stream.evictedThrough = stream.stored[stream.head + count - 1]!.publication.offset
        heldBytes -= dropOldest(stream, count)
      }
      return
    }
  }

  const sweepTimer = setInterval(sweep, SWEEP_INTERVAL_MS)
  // The sweep only bounds memory; it must never keep a process alive on its own.
  sweepTimer.unref()

  async function publish (room: string, request: PublishRequest, streamOptions: StreamOptions): Promise<PublishResult> {
    assertOpen()
    if (brokerClosed) throw new Error('memory broker is closed')
    const at = now()
    const stream = streamOf(room, streamOptions, at)
    const key = request.idempotencyKey
    if (key !== undefined) {
      const seen = stream.keys.get(key)
      if (seen !== undefined) {
        // The first publish with this key is not committed yet: its answer is not either.
        if (seen.commit !== null) await seen.commit
        return { ...seen.position, duplicate: true }
      }
    }

    stream.offset += 1
    const publication: Publication = { ...payloadOf(request), offset: stream.offset, from: { id: request.from.id }, ts: request.ts }
    const entry: Stored = { publication, storedAt: at, bytes: publicationBytes(request.payload, request.from.id) }
    const position = { epoch: stream.epoch, offset: stream.offset }
    const result = { ...position, duplicate: false }
    if (store === null) {
      rememberKey(stream, key, position, at, null)
      commitEntry(room, stream, entry, streamOptions)
      return result
    }
    const commit = new Promise<void>((resolve, reject) => {
      store.append(room, stream.epoch, entry, streamOptions, (err) => {
        if (err !== null) {
          // Nobody saw these offsets (neither the publisher nor a subscriber): the stream is
          // reloaded from what was committed, and they are handed out again.
          forget(room, stream)
          reject(err)
          return
        }
        commitEntry(room, stream, entry, streamOptions)
        resolve()
      })
    })
    rememberKey(stream, key, position, at, commit)
    await commit
    const seen = key === undefined ? undefined : stream.keys.get(key)
    if (seen?.commit === commit) seen.commit = null
    return result
  }

  function rememberKey (stream: Stream, key: string | undefined, position: StreamPosition, at: number, commit: Promise<void> | null): void {
    if (key === undefined) return
    if (stream.keys.size >= MAX_IDEMPOTENCY_KEYS_PER_ROOM) {
      const oldest = stream.keys.keys().next()
      if (oldest.done !== true) stream.keys.delete(oldest.value)
    }
    stream.keys.set(key, { position, at, commit })
    // A retry waiting on a failed commit gets the failure; the promise itself needs no other handler.
    commit?.catch(() => {})
  }

  /** A committed publication: it joins the hot window, becomes readable and is delivered. */
  function commitEntry (room: string, stream: Stream, entry: Stored, streamOptions: StreamOptions): void {
    stream.committed = entry.publication.offset
    stream.stored.push(entry)
    stream.bytes += entry.bytes
    heldBytes += entry.bytes
    stream.lastPublishAt = entry.storedAt
    heldBytes -= dropOldest(stream, heldCount(stream) - Math.max(0, streamOptions.historySize))
    // The newest publication stays even alone over the room's cap: a room keeps its last word.
    if (stream.bytes > roomHistoryBytes) heldBytes -= dropOldest(stream, Math.min(countToFit(stream, roomHistoryBytes), heldCount(stream) - 1))
    if (heldBytes > maxHistoryBytes) evict()

    if (subscribed.has(room)) {
      const epoch = stream.epoch
      const publication = entry.publication
      const call = (h: BrokerHandler): void => { h.onPublication(room, epoch, publication) }
      if (store === null) deliver(room, call)
      else deliverAfterReplies(room, call)
    }
  }

  // With a store, a commit runs in its own callback (a microtask, or a setImmediate while a
  // store transaction is open), and the publishers' replies are written a few promise hops
  // after it. Delivered at once, the fan-out could cork every subscriber's socket before the
  // reply's, and the transports flush sockets with an answer first only among those corked
  // together (ws-transport.ts, uncorkAll): a thousand subscribers would be written before the
  // publisher's reply. The fan-out of a commit therefore goes out on the next turn of the
  // loop, after the replies, all the commits of a turn together; one FIFO keeps offset order.
  const committedDeliveries: Array<{ room: string, call: (h: BrokerHandler) => void }> = []

  function deliverAfterReplies (room: string, call: (h: BrokerHandler) => void): void {
    committedDeliveries.push({ room, call })
    if (committedDeliveries.length === 1) setImmediate(deliverCommitted)
  }

  function deliverCommitted (): void {
    const batch = committedDeliveries.splice(0)
    for (const { room, call } of batch) deliver(room, call)
  }

  async function history (room: string, query: HistoryQuery, streamOptions: StreamOptions): Promise<HistoryResult> {
    assertOpen()
    const at = now()
    const stream = streamOf(room, streamOptions, at)
    const { epoch, committed: offset } = stream
    const limit = Math.max(0, Math.floor(query.limit))
    const held = heldCount(stream)
    const { since } = query

    if (since === undefined) {
      if (reachesEvicted(stream, offset - limit + 1)) return latestResult(epoch, offset, readStore(room, stream, offset - limit + 1, limit, query.maxBytes, streamOptions, at))
      const start = stream.stored.length - Math.min(limit, held)
      return latestResult(epoch, offset, page(stream, start, limit, query.maxBytes))
    }
    if (since.epoch !== epoch || since.offset >= offset) return sinceResult(since, epoch, offset, [])
    if (reachesEvicted(stream, Math.floor(since.offset) + 1)) {
      return sinceResult(since, epoch, offset, readStore(room, stream, Math.floor(since.offset) + 1, limit, query.maxBytes, streamOptions, at))
    }
    const firstHeld = offset - held + 1
    const from = Math.max(Math.floor(since.offset) + 1, firstHeld)
    return sinceResult(since, epoch, offset, page(stream, stream.head + (from - firstHeld), limit, query.maxBytes))
  }

  /** True when a read from offset `from` needs what the node budget dropped from memory (and the store kept). */
  function reachesEvicted (stream: Stream, from: number): boolean {
    return store !== null && stream.evictedThrough > 0 && from <= stream.evictedThrough
  }

  /** A read reaching back past what the node budget left in memory: the store still has it. */
  function readStore (room: string, stream: Stream, from: number, limit: number, maxBytes: number | undefined, streamOptions: StreamOptions, at: number): Publication[] {
    if (store === null || limit === 0) return []
    return store.read(room, stream.epoch, { from: Math.max(1, from), top: stream.committed, limit, maxBytes: maxBytes ?? Infinity }, streamOptions, at)
  }

  /** Up to `limit` publications from index `start`, within `maxBytes` (at least one). */
  function page (stream: Stream, start: number, limit: number, maxBytes = Infinity): Publication[] {
    const publications: Publication[] = []
    let bytes = 0
    for (let i = start; i < stream.stored.length && publications.length < limit; i++) {
      const entry = stream.stored[i]!
      if (publications.length > 0 && bytes + entry.bytes > maxBytes) break
      bytes += entry.bytes
      publications.push(entry.publication)
    }
    return publications
  }

  async function readPage (room: string, query: PageQuery, streamOptions: StreamOptions): Promise<HistoryPage> {
    assertOpen()
    const at = now()
    const stream = streamOf(room, streamOptions, at)
    const top = { epoch: stream.epoch, offset: stream.committed }
    const limit = Math.max(0, Math.floor(query.limit))
    if ((query.epoch !== undefined && query.epoch !== stream.epoch) || limit === 0) return pageResult(query, top, [], false)
    const maxBytes = query.maxBytes ?? Infinity
    const direction = query.after === undefined
      ? { before: Math.min(stream.committed + 1, Math.floor(query.before ?? Infinity)) }
      : { after: Math.max(0, Math.floor(query.after)) }
    // The store holds the archive (and everything the node budget dropped from memory).
    if (store !== null) {
      const read = store.page(room, stream.epoch, { ...direction, top: stream.committed, limit, maxBytes }, streamOptions, at)
      return pageResult(query, top, read.publications, read.more)
    }
    const held = heldCount(stream)
    const firstHeld = stream.committed - held + 1
    const publications: Publication[] = []
    let bytes = 0
    let more = false
    const step = direction.after === undefined ? -1 : 1
    let i = direction.after === undefined
      ? stream.head + Math.min(held, direction.before - firstHeld) - 1
      : stream.head + Math.max(0, direction.after + 1 - firstHeld)
    for (; i >= stream.head && i < stream.stored.length; i += step) {
      const entry = stream.stored[i]!
      if (publications.length >= limit || (publications.length > 0 && bytes + entry.bytes > maxBytes)) {
        more = true
        break
      }
      bytes += entry.bytes
      publications.push(entry.publication)
    }
    return pageResult(query, top, publications, more)
  }

  async function position (room: string): Promise<StreamPosition> {
    assertOpen()
    const stream = streamOf(room, null, now())
    return { epoch: stream.epoch, offset: stream.committed }
  }

  async function removeHistory (room: string): Promise<void> {
    assertOpen()
    const held = streams.get(room)
    heldBytes -= held?.bytes ?? 0
    streams.delete(room)
    // The store drops the stream with its next commit (even after a restart the next touch
    // finds none and begins a new epoch); its rows, archive included, go in the sweep's batches.
    store?.remove(room, held?.epoch ?? null)
  }

  async function subscribe (room: string): Promise<void> {
    assertOpen()
    if (brokerClosed) throw new Error('memory broker is closed')
    subscribed.add(room)
  }

  async function unsubscribe (room: string): Promise<void> {
    assertOpen()
    subscribed.delete(room)
  }

  async function publishEvent (room: string, event: RoomEvent): Promise<void> {
    assertOpen()
    if (brokerClosed) throw new Error('memory broker is closed')
    if (subscribed.has(room)) deliver(room, (h) => { h.onEvent(room, event) })
  }

  async function closeBroker (): Promise<void> {
    brokerClosed = true
    handler = null
    subscribed.clear()
    pending.length = 0
    committedDeliveries.length = 0
  }

  async function addPresence (room: string, connectionId: string, userId: string): Promise<boolean> {
    assertOpen()
    let users = presence.get(room)
    if (users === undefined) {
      users = new Map()
      presence.set(room, users)
    }
    let connections = users.get(userId)
    if (connections === undefined) {
      connections = new Set()
      users.set(userId, connections)
    }
    const first = connections.size === 0
    connections.add(connectionId)
    return first
  }

  async function removePresence (room: string, connectionId: string, userId: string): Promise<boolean> {
    assertOpen()
    const users = presence.get(room)
    const connections = users?.get(userId)
    if (users === undefined || connections === undefined || !connections.delete(connectionId)) return false
    if (connections.size > 0) return false
    users.delete(userId)
    if (users.size === 0) presence.delete(room)
    return true
  }

  async function getPresence (room: string): Promise<PresenceInfo> {
    assertOpen()
    const users = presence.get(room)
    if (users === undefined) return { users: [], connections: 0 }
    let connections = 0
    for (const set of users.values()) connections += set.size
    return { users: [...users.keys()].sort(), connections }
  }

  return {
    kind: 'memory',
    broker: {
      setHandler (h: BrokerHandler) { handler = h },
      publish,
      subscribe,
      unsubscribe,
      publishEvent,
      close: closeBroker
    },
    history: { history, page: readPage, position, removeHistory, bytesHeld: () => heldBytes },
    presence: { add: addPresence, remove: removePresence, get: getPresence },
    // One process is the whole cluster: a control message reaches its only node, at once.
    control: {
      async publishControl (message: ControlMessage) {
        assertOpen()
        if (controlHandler === null) return
        try {
          controlHandler(message)
        } catch (err) {
          onHandlerError(err, 'control')
        }
      },
      onControl (h) { controlHandler = h }
    },
    async close () {
      if (closed) return
      closed = true
      controlHandler = null
      clearInterval(sweepTimer)
      // Publishes still waiting for their commit are committed (and answered) before the end.
      await store?.close()
      await closeBroker()
      streams.clear()
      heldBytes = 0
      presence.clear()
    }
  }
}
