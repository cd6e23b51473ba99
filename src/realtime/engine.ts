import { randomBytes } from 'node:crypto'

/**
 * The engine interfaces: how publications are numbered, stored and carried between nodes,
 * and who is present. The in-memory engine (memory-engine.ts) is the embedded default; the
 * Redis engine (scale-out issue) implements the same interfaces, and one contract suite
 * (test/engine.contract.test.ts) runs against each.
 *
 * Semantics every implementation keeps:
 * - offsets per room start at 1 and grow by exactly 1 per publication;
 * - the epoch names one continuous stream: it changes whenever continuity is lost (history
 *   dropped, a new in-memory stream after a restart), so (epoch, offset) is a position a
 *   client can resume from or be told it cannot;
 * - a publish resolves only after the publication is numbered and stored, so an acknowledged
 *   publication is recoverable for as long as history keeps it;
 * - history keeps a publication as the payload text it was published with (never a parsed
 *   object graph), and drops only the oldest of a room (by count, TTL and bytes): what is held
 *   is always the contiguous run of offsets ending at the newest, so a read that cannot be
 *   answered in full says so (`complete: false`) rather than skipping.
 */

export interface StreamPosition {
  epoch: string
  offset: number
}

/** Who published: a user id, or `key:<name>` for an API key. */
export interface Publisher {
  id: string
}

/**
 * A publication's payload as the engines keep it: `json`, the JSON text of the `data` a client
 * sent (serialised once at publish and inlined into frames as it is), or `binary`, raw bytes
 * the server never interprets (an image, a protobuf message): each codec frames them its own
 * way (base64 in JSON frames, `bin` in MessagePack ones).
 */
export type Payload =
  | { kind: 'json', payload: string }
  | { kind: 'binary', payload: Buffer }

export type PayloadKind = Payload['kind']

/** A JSON value as a payload: its text, serialised once. */
export function jsonPayload (data: unknown): Payload {
  return { kind: 'json', payload: JSON.stringify(data) }
}

/** Just the payload of a request or a publication (a copy of the two fields, nothing else). */
export function payloadOf (from: Payload): Payload {
  return from.kind === 'json' ? { kind: 'json', payload: from.payload } : { kind: 'binary', payload: from.payload }
}

/** One numbered publication: its payload, who published it and when. */
export type Publication = Payload & {
  offset: number
  from: Publisher
  /** Server time of the publish, epoch milliseconds. */
  ts: number
}

/**
 * What one publication is counted as, beyond its payload and publisher id, in history budgets
 * and page caps: about the JSON envelope a frame wraps it in and the objects that hold it.
 */
export const PUBLICATION_OVERHEAD_BYTES = 128

/**
 * The bytes a publication counts for in every history budget (per node, per room) and page
 * cap, the same in every engine (the Redis scripts count `#payload + #from + overhead`).
 */
export function publicationBytes (payload: string | Uint8Array, publisherId: string): number {
  return (typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength) + Buffer.byteLength(publisherId) + PUBLICATION_OVERHEAD_BYTES
}

/** Per-room stream settings (from the room's row, or defaults for personal rooms). */
export interface StreamOptions {
  /** Publications kept for recovery; 0 keeps none (offsets still advance). */
  historySize: number
  historyTtlSeconds: number
  /**
   * Days the room's archive keeps publications beyond the recovery window (the room's
   * `archiveDays` with `archive` on); 0 or absent: no archive, only the window is kept.
   * An engine without an archive ignores it.
   */
  archiveDays?: number
}

export type PublishRequest = Payload & {
  from: Publisher
  ts: number
  /** Same key within the idempotency window → the first result, published once. */
  idempotencyKey?: string
}

export interface PublishResult extends StreamPosition {
  /** True when the idempotency key matched an earlier publish and nothing new was published. */
  duplicate: boolean
}

export interface HistoryQuery {
  /** Return publications after this position; without it, the most recent ones. */
  since?: StreamPosition
  /** At most this many publications (the oldest first when `since` is given, else the newest). */
  limit: number
  /**
   * At most this many bytes of publications (publicationBytes each), though never fewer than
   * one publication. The page is the oldest part of what `since` and `limit` select, so the
   * caller continues with `since` at its last offset. Absent: no byte cap.
   */
  maxBytes?: number
}

export interface HistoryResult extends StreamPosition {
  /** Publications in offset order. */
  publications: Publication[]
  /**
   * With `since`: true when the epoch matched and every publication after `since` is still
   * held and in this page (within `limit` and `maxBytes`), i.e. the caller misses nothing.
   * Without `since`: true unless `maxBytes` cut the page short of the newest publication.
   */
  complete: boolean
}

/**
 * Where a page of history starts: the publications of `epoch` below `before` (newest first)
 * or above `after` (oldest first). Offsets restart with each epoch, so a position is always
 * the pair; a page's `next` cursor may name another epoch than the one asked for.
 */
export interface PageCursor {
  epoch: string
  before?: number
  after?: number
}

/**
 * A page of a room's history for reading back (the archive and the recovery window): `before`
 * an offset (newest first; neither `before` nor `after`: the newest), or `after` one (oldest
 * first), in `epoch` (default: the room's current one). Never both `before` and `after`.
 */
export interface PageQuery {
  before?: number
  after?: number
  epoch?: string
  /** At most this many publications. */
  limit: number
  /** At most this many bytes (publicationBytes each), though never fewer than one publication. Absent: no cap. */
  maxBytes?: number
}

export interface HistoryPage {
  /** The epoch the publications' offsets count in. */
  epoch: string
  /** Newest first for `before` (and the newest page), oldest first for `after`. */
  publications: Publication[]
  /**
   * Where the next page in the same direction starts; null when there is nothing more: the
   * oldest publication kept was reached (`before`), or the newest (`after`: follow the room
   * live, subscribing with `since` at the top). Backward, a cursor may lead into an older
   * epoch where an archive keeps one (the cluster archive); forward from an epoch no longer
   * kept, it leads to the start of the current one.
   */
  next: PageCursor | null
  /** The room's current position. */
  top: StreamPosition
}

/**
 * A page from what an engine read: `publications` in the page's order and whether more were
 * there in that direction beyond them (cut by `limit` or `maxBytes`). Shared by every engine so
 * that cursors mean the same everywhere. `more` only counts within `top.epoch`: an engine
 * keeps no older epoch (the cluster archive does: redis-engine/archive-pages.ts joins its
 * pages to the window, and its cursor names the previous epoch when a backward page runs out).
 */
export function pageResult (query: PageQuery, top: StreamPosition, publications: Publication[], more: boolean): HistoryPage {
  const epoch = query.epoch ?? top.epoch
  if (epoch !== top.epoch) {
    // An epoch no longer kept: nothing in it; forward, the reader carries on in the current one.
    return { epoch, publications: [], next: query.after === undefined ? null : { epoch: top.epoch, after: 0 }, top }
  }
  const last = publications[publications.length - 1]
  if (!more || last === undefined) return { epoch, publications, next: null, top }
  return { epoch, publications, next: query.after === undefined ? { epoch, before: last.offset } : { epoch, after: last.offset }, top }
}

/** Events carried between nodes with no offset and no history (presence changes). */
export type RoomEvent =
  /** `info`: what the backend's connect hook attached to the connection that joined (src/realtime/room-hooks.ts). */
  | { type: 'join', user: { id: string, info?: unknown } }
  | { type: 'leave', user: { id: string } }

export interface BrokerHandler {
  /** A publication for a room this node subscribed to, in offset order per room. */
  onPublication(room: string, epoch: string, publication: Publication): void
  onEvent(room: string, event: RoomEvent): void
  /**
   * Live delivery continuity was lost for `rooms`, or for every subscribed room and the control
   * channel when absent (the Redis engine's pub/sub connection came back after a drop; on Redis
   * Cluster, the rooms of one shard that failed over or whose slot moved): publications may have
   * been skipped. The subscriptions themselves are active again; subscribers recover what they
   * missed from history.
   */
  onReset(rooms?: readonly string[]): void
}

/** Numbers publications and carries them (and room events) to every node that subscribed to the room. */
export interface Broker {
  setHandler(handler: BrokerHandler): void
  publish(room: string, request: PublishRequest, options: StreamOptions): Promise<PublishResult>
  /** This node wants the room's publications (called when the first local client subscribes). */
  subscribe(room: string): Promise<void>
  /** Called after the last local client left the room. */
  unsubscribe(room: string): Promise<void>
  publishEvent(room: string, event: RoomEvent): Promise<void>
  close(): Promise<void>
}

/** Keeps each room's recent publications for recovery and the history API. */
export interface History {
  history(room: string, query: HistoryQuery, options: StreamOptions): Promise<HistoryResult>
  /**
   * A page for reading back (PageQuery): on the memory engine from its window, or from the
   * SQLite archive with HISTORY_STORE=sqlite; on Redis from the stream window and, for a room
   * with archiveDays, the cluster archive in PostgreSQL beyond it.
   */
  page(room: string, query: PageQuery, options: StreamOptions): Promise<HistoryPage>
  /** The current top of the stream (offset 0 and a fresh epoch for a room never published to). */
  position(room: string): Promise<StreamPosition>
  /** Drops a room's history and archive (room deleted): the next publication starts a new epoch. */
  removeHistory(room: string): Promise<void>
  /**
   * Bytes (publicationBytes) of history this process holds, for an engine that keeps history
   * in the process; absent where history lives elsewhere (Redis).
   */
  bytesHeld?(): number
}

export interface PresenceInfo {
  users: string[]
  connections: number
}

/** Who is subscribed to a room, deduplicated per user across connections (and nodes). */
export interface Presence {
  /** Returns true when this is the user's first connection in the room (a `join`). */
  add(room: string, connectionId: string, userId: string): Promise<boolean>
  /** Returns true when it was the user's last connection in the room (a `leave`). */
  remove(room: string, connectionId: string, userId: string): Promise<boolean>
  get(room: string): Promise<PresenceInfo>
}

/** One engine bundles the three; the in-memory and Redis engines each provide all of them. */
export interface Engine {
  readonly kind: 'memory' | 'redis'
  broker: Broker
  history: History
  presence: Presence
  /** Cluster-wide control messages; absent, a node's kicks and revocations stay local. */
  control?: Control
  /** Cluster-wide connection counts; absent, a node enforces its caps on its own connections only. */
  connections?: ConnectionCounter
  /**
   * Publications waiting for the cluster archive in the queues this node looked at last
   * (the Redis engine with an archive); absent without one.
   */
  archivePending?(): number
  /**
   * Rejects when the engine cannot serve (its external service is unreachable); readiness
   * checks it. Absent on an engine that lives in the process and cannot be unreachable.
   */
  ping?(): Promise<void>
  close(): Promise<void>
}

/** A room change as the room service reports it (what live revocation acts on). */
export type RoomChange =
  | { type: 'member_removed' | 'banned' | 'member_role_changed', room: { id: string, visibility: string }, userId: string }
  | { type: 'room_deleted', room: { id: string, visibility: string } }
  /**
   * `presenceEvents` is the room's setting after the update: subscriptions here take it for
   * their later joins and leaves. Absent (a node of an earlier version sent it): they keep theirs.
   */
  | { type: 'room_updated', room: { id: string, visibility: string, presenceEvents?: boolean } }

/**
 * An order for every node to apply to its own connections. `node` names the node that sent
 * it: that node applied it already (before its HTTP response) and ignores its own echo.
 */
export type ControlMessage = { node: string } & (
  | { type: 'kick', connectionId: string }
  | { type: 'kick_user', userId: string }
  | { type: 'kick_api_key', keyId: string }
  | { type: 'room_change', change: RoomChange }
  /** Sessions of a user revoked until `until` (ms): deny their tokens, close their sockets (4001). */
  | { type: 'revoke_sessions', userId: string, sessionIds: string[], until: number }
  /** The account is gone or disabled: forget it as active, close its sockets (4504). */
  | { type: 'close_account', userId: string }
  /** The server API ended a user's subscriptions to a room: `unsubscribed` with reason `server`. */
  | { type: 'unsubscribe_user', userId: string, room: string }
  /** A node's figures, every NODE_REPORT_INTERVAL_MS (node-reports.ts). */
  | { type: 'node_report', report: NodeReport }
  /** Asks every node for its rooms with subscribers (room-census.ts); `prefix` filters them. */
  | { type: 'rooms_query', id: string, prefix: string }
  /** One node's answer to `rooms_query` `id`, for node `to`: [room, subscribers here], at most a bounded number. */
  | { type: 'rooms_answer', id: string, to: string, rooms: Array<[string, number]>, truncated: boolean }
  /** Asks every node for its connections matching the filter, at most `limit` (connection-search.ts). */
  | { type: 'connections_query', id: string, user?: string, room?: string, limit: number }
  /** One node's answer to `connections_query` `id`, for node `to`; `truncated` when it left some out. */
  | { type: 'connections_answer', id: string, to: string, items: ConnectionDescription[], truncated: boolean }
  /** Ends one connection's subscription to a room (`unsubscribed`, reason `server`): the node holding it applies it. */
  | { type: 'unsubscribe_connection', connectionId: string, room: string }
)

/** One connection as the admin API lists it. */
export interface ConnectionDescription {
  id: string
  principal: string
  kind: 'user' | 'apiKey'
  ip: string
  userAgent: string | null
  rooms: string[]
  connectedAt: number
}

/**
 * What a node says of itself on the control channel (GET /admin/nodes): the operators' view of
 * the cluster, from the nodes themselves. Rates are per second over the last ~10 s.
 */
export interface NodeReport {
  /** The node's id on the control channel (random, new at every start). */
  id: string
  /** Where it listens, as configured (host:port), and the machine's hostname. */
  address: string
  hostname: string
  version: string
  /** Epoch ms of the node's start. */
  startedAt: number
  /** Epoch ms of this report, by the node's clock. */
  reportedAt: number
  connections: number
  /** Rooms with at least one subscriber on this node. */
  rooms: number
  messagesInPerSecond: number
  messagesOutPerSecond: number
  rssBytes: number
  heapUsedBytes: number
  /** How late the node's report timer fired last time (ms): the event loop's delay at that moment. */
  eventLoopDelayMs: number
}

/**
 * Carries control messages to every node of the cluster, the sender included. Best-effort:
 * a node that is not connected when a message is sent never gets it (no history, no retry).
 */
export interface Control {
  /** Resolves once the message was handed to every node's transport (Redis accepted the PUBLISH). */
  publishControl(message: ControlMessage): Promise<void>
  /** Receives every control message, this node's own included. */
  onControl(handler: ((message: ControlMessage) => void) | null): void
}

/**
 * Counts a user's (or an API key's) open connections across every node. Each node's entries
 * expire unless that node keeps refreshing them, so a node that dies stops counting.
 */
export interface ConnectionCounter {
  /**
   * Registers `connectionId` for `key` when fewer than `limit` live connections are counted
   * (atomically: concurrent reservations on several nodes never exceed it). False when over.
   */
  reserve(key: string, connectionId: string, limit: number): Promise<boolean>
  /** The connection closed (or never opened): it stops counting. */
  release(key: string, connectionId: string): Promise<void>
}

/**
 * The recovery rule, shared by every engine: given the stream's current position and the
 * publications read after `since` (at most `limit`, oldest first), says whether the caller
 * misses nothing. A different epoch or a position ahead of the stream is never complete; the
 * read is complete only when it starts right after `since` and reaches the current offset.
 */
export function sinceResult (since: StreamPosition, epoch: string, offset: number, publications: Publication[]): HistoryResult {
  if (since.epoch !== epoch || since.offset > offset) return { epoch, offset, publications: [], complete: false }
  if (since.offset === offset) return { epoch, offset, publications: [], complete: true }
  const first = publications[0]
  const last = publications[publications.length - 1]
  const complete = first !== undefined && last !== undefined && first.offset === since.offset + 1 && last.offset === offset
  return { epoch, offset, publications, complete }
}

/** The same rule without `since`: complete unless the page stops short of the newest publication. */
export function latestResult (epoch: string, offset: number, publications: Publication[]): HistoryResult {
  const last = publications[publications.length - 1]
  return { epoch, offset, publications, complete: last === undefined || last.offset === offset }
}

const EPOCH_BYTES = 8
const EPOCHS_PER_DRAW = 128
let epochPool = Buffer.alloc(0)
let epochAt = 0

/**
 * A fresh epoch: 8 random bytes, base64url. The Redis engine sends one with every publish and
 * history read (its script keeps it only when the room's stream is new), so drawing from the
 * system's generator each time cost a call into OpenSSL per publish, dear when the path is
 * cold (measured in docs/performance.md, scenario 6). Like Node's own
 * randomUUID, randomness is drawn in batches and handed out once each. Random, not a counter:
 * a counter would tell every subscriber how busy the node is.
 */
export function newEpoch (): string {
  if (epochAt === epochPool.length) {
    epochPool = randomBytes(EPOCH_BYTES * EPOCHS_PER_DRAW)
    epochAt = 0
  }
  const epoch = epochPool.toString('base64url', epochAt, epochAt + EPOCH_BYTES)
  epochAt += EPOCH_BYTES
  return epoch
}
