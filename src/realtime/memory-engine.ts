import type {
  BrokerHandler, ControlMessage, Engine, HistoryQuery, HistoryResult, PresenceInfo, Publication, PublishRequest,
  PublishResult, RoomEvent, StreamOptions, StreamPosition
} from './engine.js'
import { latestResult, newEpoch, payloadOf, publicationBytes, sinceResult } from './engine.js'

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

interface Stored {
  publication: Publication
  storedAt: number
  /** publicationBytes of the publication, counted once at publish. */
  bytes: number
}

interface Stream {
  epoch: string
  /** The last offset handed out (0 before the first publish). */
  offset: number
  /** Always the contiguous run of offsets ending at `offset`: entries are only appended or dropped from the front. */
  stored: Stored[]
  /** Index of the oldest held entry in `stored` (entries before it are dropped). */
  head: number
  /** Bytes of the held entries. */
  bytes: number
  /** Insertion-ordered, so the oldest keys are first both for expiry and for eviction. */
  keys: Map<string, { position: StreamPosition, at: number }>
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
    if (heldCount(stream) > 0 || stream.keys.size > 0) return false
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
      stream = { epoch: newEpoch(), offset: 0, stored: [], head: 0, bytes: 0, keys: new Map(), lastPublishAt: at, options: streamOptions }
      streams.set(room, stream)
    }
    return stream
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
        heldBytes -= dropOldest(stream, countToFit(stream, level))
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
      if (seen !== undefined) return { ...seen.position, duplicate: true }
    }

    stream.offset += 1
    const publication: Publication = { ...payloadOf(request), offset: stream.offset, from: { id: request.from.id }, ts: request.ts }
    const bytes = publicationBytes(request.payload, request.from.id)
    stream.stored.push({ publication, storedAt: at, bytes })
    stream.bytes += bytes
    heldBytes += bytes
    stream.lastPublishAt = at
    heldBytes -= dropOldest(stream, heldCount(stream) - Math.max(0, streamOptions.historySize))
    // The newest publication stays even alone over the room's cap: a room keeps its last word.
    if (stream.bytes > roomHistoryBytes) heldBytes -= dropOldest(stream, Math.min(countToFit(stream, roomHistoryBytes), heldCount(stream) - 1))
    if (heldBytes > maxHistoryBytes) evict()

    const position = { epoch: stream.epoch, offset: stream.offset }
    if (key !== undefined) {
      if (stream.keys.size >= MAX_IDEMPOTENCY_KEYS_PER_ROOM) {
        const oldest = stream.keys.keys().next()
        if (oldest.done !== true) stream.keys.delete(oldest.value)
      }
      stream.keys.set(key, { position, at })
    }

    if (subscribed.has(room)) {
      const epoch = stream.epoch
      deliver(room, (h) => { h.onPublication(room, epoch, publication) })
    }
    return { ...position, duplicate: false }
  }

  async function history (room: string, query: HistoryQuery, streamOptions: StreamOptions): Promise<HistoryResult> {
    assertOpen()
    const stream = streamOf(room, streamOptions, now())
    const { epoch, offset } = stream
    const limit = Math.max(0, Math.floor(query.limit))
    const held = heldCount(stream)
    const { since } = query

    if (since === undefined) {
      const start = stream.stored.length - Math.min(limit, held)
      return latestResult(epoch, offset, page(stream, start, limit, query.maxBytes))
    }
    if (since.epoch !== epoch || since.offset >= offset) return sinceResult(since, epoch, offset, [])
    const firstHeld = offset - held + 1
    const from = Math.max(Math.floor(since.offset) + 1, firstHeld)
    return sinceResult(since, epoch, offset, page(stream, stream.head + (from - firstHeld), limit, query.maxBytes))
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

  async function position (room: string): Promise<StreamPosition> {
    assertOpen()
    const stream = streamOf(room, null, now())
    return { epoch: stream.epoch, offset: stream.offset }
  }

  async function removeHistory (room: string): Promise<void> {
    assertOpen()
    heldBytes -= streams.get(room)?.bytes ?? 0
    streams.delete(room)
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
    history: { history, position, removeHistory, bytesHeld: () => heldBytes },
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
      await closeBroker()
      streams.clear()
      heldBytes = 0
      presence.clear()
    }
  }
}
