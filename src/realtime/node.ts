import { randomUUID } from 'node:crypto'
import type { Principal, UserPrincipal } from '../auth/principal.js'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import { Admission, type AdmissionRefusal } from './admission.js'
import type { Authorizer, RoomGrant, RoomOperation, RoomTokenCheck } from './authorizer.js'
import { ClusterControl, type RevocationHost } from './cluster-control.js'
import { Connection, principalId, type ConnectionDescription, type ConnectionHost, type ConnectionMeta } from './connection.js'
import { payloadOf, type Engine, type HistoryPage, type HistoryQuery, type HistoryResult, type NodeReport, type PageQuery, type Payload, type PresenceInfo, type PublishResult, type RoomChange } from './engine.js'
import { RealtimeError, toRealtimeError, viaEngine } from './errors.js'
import { ConnectionSearch, type ConnectionListing } from './connection-search.js'
import { NodeReports, type ClusterSample, type ReportedNode } from './node-reports.js'
import { RoomCensus, type Census } from './room-census.js'
import { DeadlineWheel } from './deadline-wheel.js'
import { Hub, type ConnectionFilter } from './hub.js'
import type { RealtimeLimits } from './limits.js'
import type { Logger } from './logger.js'
import type { RealtimeMetrics } from './metrics.js'
import { NO_ROOM_HOOKS, type HookConnection, type RoomHooks } from './room-hooks.js'
import { RoomAuthorizer } from './room-authorizer.js'
import { RoomPresence } from './room-presence.js'
import type { RateLimiter } from '../limits/rate-limiter.js'
import type { PrepareFrame, Transport } from './transport.js'

// The types RealtimeNode's signatures use, so that its callers need import the node only.
export type { AdmissionRefusal } from './admission.js'
export type { RevocationHost } from './cluster-control.js'
export type { ConnectionFilter } from './hub.js'
export type { ClusterSample, ReportedNode } from './node-reports.js'
export type { ConnectionListing } from './connection-search.js'
export type { Census } from './room-census.js'

/** One room's outcome of a broadcast: its position, or the error of the table it met. */
export type BroadcastOutcome = { room: string, position: PublishResult } | { room: string, error: RealtimeError }

/** What the host process knows of itself for the node reports; the node adds its id, connections and rooms. */
export type HostFigures = Omit<NodeReport, 'id' | 'reportedAt' | 'eventLoopDelayMs' | 'connections' | 'rooms'>

/** The deadline wheel turns every quarter of the shortest deadline, within these bounds. */
const MIN_SWEEP_MS = 10
const MAX_SWEEP_MS = 1000

export interface NodeDeps {
  engine: Engine
  authorize: Authorizer
  /** Checks a room token a command or request carries (plugins/auth.ts); absent: room tokens are refused. */
  checkRoomToken?: RoomTokenCheck
  /** Verifies a fresh access token for `refresh` (signature, revocation, account); rejects when invalid. */
  verifyToken: (token: string) => Promise<UserPrincipal>
  /** Absent: no session or account revocation reaches the sockets (tests of the bare core). */
  revocation?: RevocationHost
  /**
   * A room's settings for the server API, which acts for the server itself (its caller was
   * checked at the HTTP edge): throws `not_found` for a room that does not exist. Absent:
   * every room exists with these defaults (tests of the bare core).
   */
  roomSettings?: (room: string) => Promise<RoomGrant>
  /** Node reports every `intervalMs` (node-reports.ts); absent: none (tests of the bare core). */
  reports?: { intervalMs: number, figures: () => HostFigures }
  prepareFrame: PrepareFrame
  limits: RealtimeLimits
  /**
   * The per-user (or per-API-key) publish rate over every connection and REST; shared by
   * every node when it counts in Redis. Absent: no per-user rate (the per-connection one holds).
   */
  publishRate?: RateLimiter
  metrics: RealtimeMetrics
  log: Logger
  now?: () => number
  /** The application backend's hooks (src/hooks); absent: none. */
  hooks?: RoomHooks
}

/** What the rest of the server (plugins, routes) may do with a real-time node. */
export interface RealtimeNode {
  /** Checks a handshake against the drain state and the connection caps, before the upgrade. */
  admit(principal: Principal, ip: string): AdmissionRefusal | null
  /**
   * The cluster-wide caps (with an engine that counts across nodes), after `admit` and before
   * the upgrade: the id the connection will have, already counted, or the cap it is over.
   */
  reserve(principal: Principal, ip: string): Promise<{ id: string } | { refusal: 'connections_per_user' | 'connections_per_ip' }>
  /** A reserved id whose socket will not open after all: it stops counting at once. */
  release(principal: Principal, ip: string, connectionId: string): void
  /** Registers an upgraded connection and sends its welcome (with the id `reserve` gave, if any). */
  connect(transport: Transport, principal: Principal, meta: ConnectionMeta, id?: string): Connection
  /**
   * Publishes a payload (JSON text or bytes) to a room as `principal`: per-user rate, grant
   * (by the principal's standing, or by `roomToken` when given), engine.
   */
  publish(principal: Principal, room: string, payload: Payload, idempotencyKey?: string, roomToken?: string): Promise<PublishResult>
  /** A page of a room's history, if `principal` (or its `roomToken`) may read it. */
  history(principal: Principal, room: string, query: HistoryQuery, roomToken?: string): Promise<HistoryResult>
  /** A page read back or forward through a room's history and archive, if `principal` (or its `roomToken`) may read its history. */
  page(principal: Principal, room: string, query: PageQuery, roomToken?: string): Promise<HistoryPage>
  /** Who is in a room, if `principal` (or its `roomToken`) may ask (one answer per room per second is shared). */
  presence(principal: Principal, room: string, roomToken?: string): Promise<PresenceInfo>
  /** This node's connections, by user and/or room. */
  listConnections(filter?: ConnectionFilter): ConnectionDescription[]
  /** Every node's connections, by user and/or room, at most `limit` (connection-search.ts). */
  searchConnections(filter: ConnectionFilter, limit: number): Promise<ConnectionListing>
  /** Ends one connection's subscription to a room, here or (forwarded) on the node holding it. */
  unsubscribeConnection(connectionId: string, room: string): Promise<'local' | 'not_subscribed' | 'forwarded' | null>
  /** Closes one connection with 4503, here or (forwarded) on another node. */
  kick(connectionId: string): Promise<'local' | 'forwarded' | null>
  /** Closes every connection of a user with 4503 on every node; how many were here. */
  kickUser(userId: string): Promise<number>
  /**
   * The server API: publishes one payload to each room, as `from`, without a per-principal
   * grant (the caller holds the admin role or scope); each room is numbered on its own, so the
   * outcome is per room, in the order asked.
   */
  broadcast(from: Principal, rooms: string[], payload: Payload, idempotencyKey?: string): Promise<BroadcastOutcome[]>
  /** Ends a user's subscriptions to a room (`unsubscribed`, reason `server`) on every node; how many here. */
  unsubscribeUser(userId: string, room: string): Promise<number>
  /** Counts of a room's presence across the cluster (connections, distinct users), no lists; `not_found` for no such room. */
  roomStats(room: string): Promise<{ connections: number, users: number }>
  /** The rooms with subscribers across the cluster (room-census.ts). */
  activeRooms(prefix: string): Promise<Census>
  /** The live nodes of the cluster from their reports (this one alone on the in-memory engine). */
  nodes(): ReportedNode[]
  /** The cluster's totals over the last report intervals, the oldest first (node-reports.ts). */
  clusterHistory(): ClusterSample[]
  /** This node's id in the reports and on the control channel. */
  readonly nodeId: string
  /** Closes every connection of a revoked API key on every node; how many were here. */
  kickApiKey(keyId: string): number
  /** Closes the sessions' sockets (4001) on every node and denies them there until `until`. */
  revokeSessions(userId: string, sessionIds: string[], until: number): Promise<number>
  /** Closes an account's sockets (4504) on every node. */
  closeAccount(userId: string): Promise<number>
  /** Applies a room change to open subscriptions here, then on every node. */
  applyRoomChange(change: RoomChange): Promise<void>
  /** Drains every connection over `windowMs` (reconnect push, then 1012); new ones are refused. */
  drain(windowMs: number): Promise<void>
  readonly draining: boolean
  stats(): { connections: number, rooms: number }
  /** Destroys every connection and stops the node's timers. */
  close(): void
}

/**
 * The real-time node: wires the local hub of connections and rooms, admission, the room
 * authorizer, room presence and cluster control to an engine (broker, history, presence),
 * and is the `ConnectionHost` of its connections. Fan-out: the engine hands it each
 * publication once, and the hub hands the same frame bytes to every local subscriber. It
 * runs the one deadline sweep of all its connections and the shutdown drain. It knows
 * nothing of HTTP: routes/ws hands it transports.
 */
export function createRealtimeNode (deps: NodeDeps): RealtimeNode {
  const { engine, limits, metrics, log, prepareFrame } = deps
  const hooks = deps.hooks ?? NO_ROOM_HOOKS
  const now = deps.now ?? Date.now
  let drainDone: Promise<void> | undefined

  const hub = new Hub<Connection>(
    {
      subscribe: (room) => viaEngine(log, () => engine.broker.subscribe(room)),
      unsubscribe: (room) => {
        engine.broker.unsubscribe(room).catch((err: unknown) => log.warn({ err, room }, 'broker unsubscribe failed'))
      }
    },
    (room, epoch, publication, codec) => prepareFrame(codec.message(room, epoch, publication)),
    (publication, written, bytes) => {
      metrics.messagesOut(written, bytes)
      metrics.publishToWrite(Math.max(0, now() - publication.ts) / 1000)
    }
  )
  const admission = new Admission({
    counts: hub,
    counter: engine.connections,
    limits,
    isSessionRevoked: (sessionId) => deps.revocation?.isSessionRevoked(sessionId) === true,
    log
  })
  const authorizer = new RoomAuthorizer({ authorize: deps.authorize, cacheMs: limits.authorizationCacheMs ?? 0, metrics, log, now })
  const presence = new RoomPresence(engine.presence, engine.broker, log, now, hooks)
  const control = new ClusterControl({ engine, hub, authorizer, ...(deps.revocation === undefined ? {} : { revocation: deps.revocation }), log })
  const roomSettings = deps.roomSettings ?? (async (): Promise<RoomGrant> => ({ stream: { historySize: 100, historyTtlSeconds: 3600 }, presenceEvents: true }))
  const reportConfig = deps.reports
  const reports = reportConfig === undefined
    ? null
    : new NodeReports({
      nodeId: control.nodeId,
      intervalMs: reportConfig.intervalMs,
      figures: () => ({ ...reportConfig.figures(), connections: hub.size, rooms: hub.roomCount }),
      ...(control.clustered ? { publish: async (report: NodeReport) => { await control.send({ type: 'node_report', report }) } } : {}),
      log,
      now
    })
  const census = new RoomCensus({
    nodeId: control.nodeId,
    local: () => hub.roomSizes(),
    send: async (message) => await control.send(message),
    peers: () => reports?.peers() ?? []
  })
  const connectionSearch = new ConnectionSearch({
    nodeId: control.nodeId,
    local: (filter) => hub.select(filter).map(c => c.describe()),
    send: async (message) => await control.send(message),
    peers: () => reports?.peers() ?? []
  })
  control.listen((message) => {
    switch (message.type) {
      case 'node_report': reports?.receive(message.report); return
      case 'rooms_query': census.query(message, message.node); return
      case 'rooms_answer': census.answer(message, message.node); return
      case 'connections_query': connectionSearch.query(message, message.node); return
      case 'connections_answer': connectionSearch.answer(message, message.node)
    }
  })
  reports?.start()

  // One timer for every connection's deadlines (heartbeat, idle, token expiry) instead of
  // three per connection: a handshake creates no timer, an inbound frame only moves a number,
  // and an idle connection carries no timer objects. Each turn visits only the connections
  // filed in the slots that fell due (about one in heartbeatMs / sweepMs of them), not all;
  // deadlines hold to within one slot.
  const sweepMs = Math.max(MIN_SWEEP_MS, Math.min(MAX_SWEEP_MS, limits.heartbeatMs / 4, limits.idleTimeoutMs / 4))
  const wheel = new DeadlineWheel<Connection>(sweepMs, now())
  // Expired grants go once per grant lifetime, on the same timer.
  const grantSweepMs = Math.max(limits.authorizationCacheMs ?? 0, MAX_SWEEP_MS)
  let grantSweepAt = now() + grantSweepMs
  const sweep = setInterval(() => {
    const at = now()
    wheel.turn(at, (connection) => {
      connection.tick(at)
      if (connection.state === 'open') wheel.fileBy(connection, connection.nextDeadline())
    })
    if (at >= grantSweepAt) {
      grantSweepAt = at + grantSweepMs
      authorizer.sweepExpired()
    }
  }, sweepMs)
  sweep.unref()

  /**
   * The grant for one operation: by the principal's standing, or, with a room token, by the
   * token (checked first: its user, ops and rooms) and the room (it exists, no ban). With a
   * token, also when it stops granting (epoch ms).
   */
  async function grantFor (principal: Principal, room: string, operation: RoomOperation, roomToken: string | undefined): Promise<{ grant: RoomGrant, expiresAt: number | null }> {
    if (roomToken === undefined) return { grant: await authorizer.authorize(principal, room, operation), expiresAt: null }
    if (deps.checkRoomToken === undefined) throw new RealtimeError('forbidden', 'Room tokens are not accepted by this server')
    const expiresAt = await deps.checkRoomToken(roomToken, principal, room, operation)
    return { grant: await authorizer.authorize(principal, room, operation, 'roomToken'), expiresAt }
  }

  const host: ConnectionHost = {
    engine,
    limits,
    metrics,
    log,
    now,
    prepareFrame,
    verifyToken: deps.verifyToken,
    grantFor,
    get revision () { return authorizer.revision },

    async publish (principal, room, payload, idempotencyKey, roomToken) {
      // Before authorization: a user over the rate costs no store queries.
      const decision = await deps.publishRate?.take(principalId(principal))
      if (decision !== undefined && !decision.allowed) {
        metrics.rateLimited('publishes_per_user')
        throw new RealtimeError('rate_limited', `Over this user's publish rate; retry in ${decision.retryAfterMs} ms`, decision.retryAfterMs)
      }
      const { stream } = (await grantFor(principal, room, 'publish', roomToken)).grant
      // After the room's own grant: the backend is asked only about publishes the room allows.
      const published = await hooks.publish(principal, room, payload)
      const result = await viaEngine(log, () => engine.broker.publish(room, {
        ...payloadOf(published),
        from: { id: principalId(principal) },
        ts: now(),
        ...(idempotencyKey === undefined ? {} : { idempotencyKey })
      }, stream))
      // A retry that matched its idempotency key published nothing: the backend heard of it the first time.
      if (!result.duplicate) hooks.published(principal, room, published, result)
      return result
    },

    async history (principal, room, query, roomToken) {
      const { stream } = (await grantFor(principal, room, 'history', roomToken)).grant
      return await viaEngine(log, () => engine.history.history(room, query, stream))
    },

    async page (principal, room, query, roomToken) {
      const { stream } = (await grantFor(principal, room, 'history', roomToken)).grant
      return await viaEngine(log, () => engine.history.page(room, query, stream))
    },

    async presence (principal, room, roomToken) {
      await grantFor(principal, room, 'presence', roomToken)
      return await presence.get(room)
    },

    subscribeHook: (connection, room) => hooks.subscribe(connection.principal, room, hookConnection(connection)),
    joinRoom: (connection, room) => hub.join(connection, room),
    leaveRoom: (connection, room) => hub.leave(connection, room),
    presenceJoin: (room, connectionId, userId, announce, info) => presence.join(room, connectionId, userId, announce, info),
    presenceLeave: (room, connectionId, userId, announce) => presence.leave(room, connectionId, userId, announce),

    tickBy: (connection, at) => { wheel.fileBy(connection, at) },

    unregister (connection, code) {
      wheel.remove(connection)
      if (!hub.remove(connection)) return
      admission.release(connection.principal, connection.meta.ip, connection.id)
      hooks.disconnected(connection.principal, hookConnection(connection), code)
    }
  }

  engine.broker.setHandler({
    onPublication (room, epoch, publication) {
      hub.broadcast(room, epoch, publication)
    },
    onEvent (room, event) {
      // A join or a leave, from any node.
      presence.changed(room)
      hub.push(room, (codec) => prepareFrame(codec.presence(event.type, room, event.user)))
    },
    onReset (rooms) {
      // Control messages (room changes from other nodes) may have been lost with the
      // connection: no grant from before may outlive it. A shard's rooms alone (Redis Cluster)
      // lost no control message: that channel has a connection of its own.
      if (rooms === undefined) authorizer.reset()
      presence.reset()
      // Live delivery may have skipped publications in these rooms: rather than let a gap pass
      // silently, every subscriber is told to subscribe again with `since` and recovers what
      // it missed from history (a client past the history window learns it with recovered: false).
      const only = rooms === undefined ? null : new Set(rooms)
      const affected = hub.roomsWithMembers().filter(([room]) => only === null || only.has(room))
      let revoked = 0
      for (const [room, members] of affected) {
        for (const connection of members) {
          connection.revoke(room, 'resubscribe')
          revoked++
        }
      }
      log.warn({ rooms: affected.length, subscriptions: revoked }, 'engine lost live delivery continuity: subscribers told to resubscribe')
    }
  })

  return {
    admit: (principal, ip) => admission.admit(principal, ip),
    reserve: (principal, ip) => admission.reserve(principal, ip),
    release: (principal, ip, connectionId) => admission.release(principal, ip, connectionId),

    connect (transport, principal, meta, id = randomUUID()) {
      const connection = new Connection(id, principal, transport, meta, host)
      hub.add(connection)
      metrics.connectionOpened()
      connection.open()
      return connection
    },

    publish: host.publish,
    history: host.history,
    page: host.page,
    presence: host.presence,

    listConnections (filter = {}) {
      return hub.select(filter).map(c => c.describe())
    },

    searchConnections: (filter, limit) => connectionSearch.list(filter, limit),
    unsubscribeConnection: (connectionId, room) => control.unsubscribeConnection(connectionId, room),
    kick: (connectionId) => control.kick(connectionId),
    kickUser: (userId) => control.kickUser(userId),
    kickApiKey: (keyId) => control.kickApiKey(keyId),

    async broadcast (from, rooms, payload, idempotencyKey) {
      const publisher = { id: principalId(from) }
      const ts = now()
      return await Promise.all(rooms.map(async (room): Promise<BroadcastOutcome> => {
        try {
          const { stream } = await roomSettings(room)
          const position = await viaEngine(log, () => engine.broker.publish(room, {
            ...payloadOf(payload),
            from: publisher,
            ts,
            ...(idempotencyKey === undefined ? {} : { idempotencyKey })
          }, stream))
          return { room, position }
        } catch (err) {
          // An error of the table stays this room's answer; anything else is a bug and fails the call.
          return { room, error: toRealtimeError(err) }
        }
      }))
    },

    unsubscribeUser: (userId, room) => control.unsubscribeUser(userId, room),

    async roomStats (room) {
      await roomSettings(room)
      const { users, connections } = await presence.get(room)
      return { connections, users: users.length }
    },

    activeRooms: (prefix) => census.gather(prefix),
    nodes: () => reports?.list() ?? [],
    clusterHistory: () => reports?.history() ?? [],
    nodeId: control.nodeId,

    revokeSessions: (userId, sessionIds, until) => control.revokeSessions(userId, sessionIds, until),
    closeAccount: (userId) => control.closeAccount(userId),
    applyRoomChange: (change) => control.applyRoomChange(change),

    /**
     * Each connection, at a random moment in the window, gets a `reconnect` push with a
     * jittered `retryAfterMs` and then close 1012, so a rolling deploy does not turn into a
     * reconnect storm. Resolves when all are gone; stragglers are destroyed shortly after
     * the window.
     */
    drain (windowMs) {
      drainDone ??= (async () => {
        admission.draining = true
        const timers: NodeJS.Timeout[] = []
        for (const connection of hub.all()) {
          timers.push(setTimeout(() => {
            const retryAfterMs = Math.floor(Math.random() * Math.min(5000, Math.max(windowMs, 1)))
            connection.send(connection.codec.reconnect(retryAfterMs))
            connection.close(CloseCodes.SERVICE_RESTART)
          }, Math.floor(Math.random() * windowMs)))
        }
        const deadline = now() + windowMs + 2000
        while (hub.size > 0 && now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
        for (const timer of timers) clearTimeout(timer)
        for (const connection of [...hub.all()]) connection.terminate()
      })()
      return drainDone
    },

    get draining () {
      return admission.draining
    },

    stats () {
      return { connections: hub.size, rooms: hub.roomCount }
    },

    close () {
      admission.draining = true
      clearInterval(sweep)
      control.close()
      reports?.close()
      census.close()
      connectionSearch.close()
      for (const connection of [...hub.all()]) connection.terminate()
    }
  }
}

/** A connection as the hooks describe it to the backend. */
function hookConnection (connection: Connection): HookConnection {
  const { info } = connection.meta
  return info === undefined ? { id: connection.id, ip: connection.meta.ip } : { id: connection.id, ip: connection.meta.ip, info }
}
