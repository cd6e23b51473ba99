import { randomUUID } from 'node:crypto'
import type { Principal, UserPrincipal } from '../auth/principal.js'
import { CloseCodes } from '../protocol/close-codes.js'
import { presenceFrame, reconnectFrame } from '../protocol/frames.js'
import type { UnsubscribeReason } from '../protocol/messages.js'
import { Connection, principalId, type ConnectionHost } from './connection.js'
import { messageText } from './publication-frames.js'
import type { RealtimeLimits } from './limits.js'
import type { Authorizer, RoomOperation } from './authorizer.js'
import type { ControlMessage, Engine, PresenceInfo, Publication, RoomChange, RoomEvent, StreamOptions } from './engine.js'
import { AppError } from '../errors.js'
import { RealtimeError, UnavailableError } from './errors.js'
import type { RateLimiter } from '../limits/rate-limiter.js'
import { AuthorizationCache, grantAsk, principalPrefix } from './authorization-cache.js'
import { SharedAnswers } from './shared-answers.js'
import type { Logger } from './logger.js'
import type { RealtimeMetrics } from './metrics.js'
import type { PrepareFrame, PreparedFrame, Transport } from './transport.js'

/** The deadline sweep runs every quarter of the shortest deadline, within these bounds. */
const MIN_SWEEP_MS = 10
const MAX_SWEEP_MS = 1000

/**
 * What the node needs of the auth layer to apply revocations (src/auth/revocation.ts): given
 * to it, so that the core imports nothing of auth but the principal's type.
 */
export interface RevocationHost {
  /** A Map lookup: true when the session's tokens were revoked (a handshake racing a revocation is refused). */
  isSessionRevoked(sessionId: string): boolean
  /** Another node revoked these sessions: deny their tokens here too, until `until` (ms). */
  sessionsRevoked(sessionIds: string[], until: number): void
  /** Another node closed this account: stop taking it for active here. */
  accountClosed(userId: string): void
  /** Of these users (connected here), those whose accounts are gone or disabled, from the store. */
  closedAccounts(userIds: string[]): Promise<string[]>
  /** How often the node asks closedAccounts about its connected users (ms). */
  recheckMs: number
}

export interface NodeDeps {
  engine: Engine
  authorize: Authorizer
  /** Verifies a fresh access token for `refresh` (signature, revocation, account); rejects when invalid. */
  verifyToken: (token: string) => Promise<UserPrincipal>
  /** Absent: no session or account revocation reaches the sockets (tests of the bare core). */
  revocation?: RevocationHost
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
}

export type AdmissionRefusal = 'draining' | 'revoked' | 'connections_per_user' | 'connections_per_ip'

export interface ConnectionFilter {
  user?: string
  room?: string
}

/** Local fan-out state of one room: its subscribers and the broker subscription they share. */
interface LocalRoom {
  connections: Set<Connection>
  /** Resolves once this node's broker subscription is active; every subscriber waits on it. */
  ready: Promise<void>
}

export type RealtimeNode = ReturnType<typeof createRealtimeNode>

/** Grants the cache holds at most (users × rooms × operations in use within its TTL). */
const AUTHORIZATION_CACHE_ENTRIES = 100_000
/** How long one presence answer serves a room's asks (roomPresence), and for how many rooms at most. */
const PRESENCE_ANSWER_MS = 1000
const PRESENCE_ANSWER_ROOMS = 10_000

/**
 * The real-time node: the local hub of connections and rooms, wired to an engine (broker,
 * history, presence). It owns admission (per-user and per-IP caps), fan-out (a publication is
 * encoded and framed once, then the same bytes go to every local subscriber), live revocation,
 * kicks and the shutdown drain. It knows nothing of HTTP: routes/ws hands it transports.
 */
export function createRealtimeNode (deps: NodeDeps) {
  const { engine, limits, metrics, log, prepareFrame } = deps
  const now = deps.now ?? Date.now
  const connections = new Map<string, Connection>()
  const byUser = new Map<string, Set<Connection>>()
  const byIp = new Map<string, number>()
  const rooms = new Map<string, LocalRoom>()
  let draining = false
  let drainDone: Promise<void> | undefined

  // One timer for every connection's deadlines (heartbeat, idle, token expiry) instead of
  // three per connection: a handshake creates no timer, an inbound frame only moves a number,
  // and an idle connection carries no timer objects. The sweep is a few comparisons per
  // connection (about a millisecond per 100,000); deadlines hold to within one sweep period.
  const sweepMs = Math.max(MIN_SWEEP_MS, Math.min(MAX_SWEEP_MS, limits.heartbeatMs / 4, limits.idleTimeoutMs / 4))
  const sweep = setInterval(() => {
    const at = now()
    for (const connection of connections.values()) connection.tick(at)
  }, sweepMs)
  sweep.unref()
  let revision = 0
  const grants = new AuthorizationCache(limits.authorizationCacheMs ?? 0, AUTHORIZATION_CACHE_ENTRIES, now)
  /** Store asks in flight, by grant (grantAsk), with the revision they were asked at. */
  const asking = new Map<string, { revision: number, answer: Promise<StreamOptions> }>()

  /**
   * deps.authorize behind the grant cache. The revision taken before the store is asked
   * tells whether a change that drops grants was applied meanwhile: then the answer may
   * predate it and is used once, not kept. A grant past the middle of its life is renewed in
   * the background, so a busy publisher never waits for the store (a PostgreSQL query, or
   * a new connection to it after a lull); until the answer comes the grant serves as before.
   * Asks of one grant while the store answers it share that answer (thousands of devices on
   * one API key reconnecting after a deploy ask the store once, not once each), unless a
   * change that drops grants came between.
   */
  async function authorize (principal: Principal, room: string, operation: RoomOperation): Promise<StreamOptions> {
    const cached = grants.get(principal, room, operation)
    if (cached !== undefined) {
      metrics.roomAuthorization('cache')
      if (cached.renew) renewGrant(principal, room, operation)
      return cached.options
    }
    if (!grants.enabled) {
      metrics.roomAuthorization('store')
      return await deps.authorize(principal, room, operation)
    }
    const key = grantAsk(principal, room, operation)
    const asked = asking.get(key)
    if (asked !== undefined && asked.revision === revision) {
      metrics.roomAuthorization('shared')
      return await asked.answer
    }
    metrics.roomAuthorization('store')
    const before = revision
    const answer = deps.authorize(principal, room, operation)
    asking.set(key, { revision: before, answer })
    try {
      const options = await answer
      if (revision === before) grants.set(principal, room, operation, options)
      return options
    } finally {
      if (asking.get(key)?.answer === answer) asking.delete(key)
    }
  }

  function renewGrant (principal: Principal, room: string, operation: RoomOperation): void {
    const before = revision
    deps.authorize(principal, room, operation).then((options) => {
      if (revision !== before) return metrics.grantRenewal('superseded')
      grants.set(principal, room, operation, options)
      metrics.grantRenewal('renewed')
    }, (err: unknown) => {
      // A refusal ends the grant now; a store that cannot answer leaves it to its expiry,
      // after which the next use asks in the foreground (and is answered `unavailable`).
      if (err instanceof AppError && err.protocolCode !== 'unavailable') {
        grants.drop(principal, room, operation)
        metrics.grantRenewal('refused')
      } else {
        log.debug({ err, room, operation }, 'grant renewal failed; the grant lasts until it expires')
        metrics.grantRenewal('failed')
      }
    })
  }

  /**
   * One presence answer per room serves every ask of that room on this node for a second,
   * and concurrent asks share one engine call. A room's presence costs the engine work in
   * proportion to its size (with Redis, one script over every entry: about 25 ms for 10,000,
   * during which Redis serves no other client), and any member may ask as often as its message
   * rate allows: without this, one client could keep Redis busy for the whole cluster. What
   * this node learns changes a room's presence (its own joins and leaves, join and leave
   * events of rooms it serves) drops that room's answer, so an answer is never older than a
   * change seen here, and never older than a second.
   */
  const presenceAnswers = new SharedAnswers<PresenceInfo>(PRESENCE_ANSWER_MS, PRESENCE_ANSWER_ROOMS, now)
  function roomPresence (room: string): Promise<PresenceInfo> {
    return presenceAnswers.get(room, () => viaEngine(() => engine.presence.get(room)))
  }

  /** Names this node on the control channel, so it ignores the echo of what it applied already. */
  const nodeId = randomUUID()
  /** Other nodes exist only with a shared engine: with the in-memory one, an unknown connection id is simply unknown. */
  const clustered = engine.kind !== 'memory' && engine.control !== undefined

  /** Engine calls fail with a temporary error the client may retry, never as a bug. */
  async function viaEngine<T> (call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      if (err instanceof AppError) throw err
      log.warn({ err }, 'engine call failed')
      throw new UnavailableError()
    }
  }

  const internals: ConnectionHost = {
    engine,
    limits,
    metrics,
    log,
    now,
    prepareFrame,
    verifyToken: deps.verifyToken,
    authorize,
    get revision () { return revision },

    async publish (principal, room, json, idempotencyKey) {
      // Before authorization: a user over the rate costs no store queries.
      const decision = await deps.publishRate?.take(principalId(principal))
      if (decision !== undefined && !decision.allowed) {
        metrics.rateLimited('publishes_per_user')
        throw new RealtimeError('rate_limited', `Over this user's publish rate; retry in ${decision.retryAfterMs} ms`, decision.retryAfterMs)
      }
      const options = await authorize(principal, room, 'publish')
      return await viaEngine(() => engine.broker.publish(room, {
        payload: json,
        kind: 'json',
        from: { id: principalId(principal) },
        ts: now(),
        ...(idempotencyKey === undefined ? {} : { idempotencyKey })
      }, options))
    },

    async history (principal, room, query) {
      const options = await authorize(principal, room, 'history')
      return await viaEngine(() => engine.history.history(room, query, options))
    },

    async presence (principal, room) {
      await authorize(principal, room, 'presence')
      return await roomPresence(room)
    },

    async joinRoom (connection, room) {
      let local = rooms.get(room)
      if (local === undefined) {
        const created: LocalRoom = { connections: new Set(), ready: Promise.resolve() }
        created.ready = viaEngine(() => engine.broker.subscribe(room)).catch((err: unknown) => {
          // Nobody is served by a room whose broker subscription failed: forget it so the next
          // subscriber tries again.
          if (rooms.get(room) === created) rooms.delete(room)
          throw err
        })
        rooms.set(room, created)
        local = created
      }
      local.connections.add(connection)
      await local.ready
    },

    leaveRoom (connection, room) {
      const local = rooms.get(room)
      if (local === undefined || !local.connections.delete(connection)) return
      if (local.connections.size === 0) {
        rooms.delete(room)
        engine.broker.unsubscribe(room).catch((err: unknown) => log.warn({ err, room }, 'broker unsubscribe failed'))
      }
    },

    async presenceJoin (room, connectionId, userId) {
      try {
        const first = await engine.presence.add(room, connectionId, userId)
        presenceAnswers.drop(room)
        if (first) {
          await engine.broker.publishEvent(room, { type: 'join', user: { id: userId } })
        }
      } catch (err) {
        // Presence is advisory: a failure must not fail the subscription it follows.
        log.warn({ err, room }, 'presence join failed')
      }
    },

    presenceLeave (room, connectionId, userId) {
      presenceAnswers.drop(room)
      engine.presence.remove(room, connectionId, userId)
        .then(async (left) => {
          presenceAnswers.drop(room)
          if (left) await engine.broker.publishEvent(room, { type: 'leave', user: { id: userId } })
        })
        .catch((err: unknown) => log.warn({ err, room }, 'presence leave failed'))
    },

    unregister (connection) {
      if (!connections.delete(connection.id)) return
      const userKey = admissionKey(connection.principal)
      const set = byUser.get(userKey)
      set?.delete(connection)
      if (set?.size === 0) byUser.delete(userKey)
      const count = (byIp.get(connection.meta.ip) ?? 1) - 1
      if (count <= 0) byIp.delete(connection.meta.ip)
      else byIp.set(connection.meta.ip, count)
      releaseReservation(userKey, connection.id)
      releaseReservation(ipKey(connection.meta.ip), connection.id)
    }
  }

  function releaseReservation (key: string, connectionId: string): void {
    engine.connections?.release(key, connectionId)
      // Not fatal: an entry that is not released stops counting when its refresh lapses.
      .catch((err: unknown) => log.debug({ err, connId: connectionId }, 'connection count release failed'))
  }

  engine.broker.setHandler({
    onPublication (room: string, epoch: string, publication: Publication) {
      const local = rooms.get(room)
      if (local === undefined) return
      let frame: PreparedFrame | undefined
      let written = 0
      const shared = (): PreparedFrame => {
        written++
        frame ??= prepareFrame(messageText(room, epoch, publication))
        return frame
      }
      for (const connection of local.connections) connection.deliver(room, epoch, publication, shared)
      if (frame !== undefined) {
        metrics.messagesOut(written, written * frame.byteLength)
        metrics.publishToWrite(Math.max(0, now() - publication.ts) / 1000)
      }
    },
    onEvent (room: string, event: RoomEvent) {
      // A join or a leave, from any node.
      presenceAnswers.drop(room)
      const local = rooms.get(room)
      if (local === undefined) return
      let frame: PreparedFrame | undefined
      const shared = (): PreparedFrame => (frame ??= prepareFrame(presenceFrame(event.type, room, event.user)))
      for (const connection of local.connections) connection.pushToRoom(room, shared)
    },
    onReset () {
      // Control messages (room changes from other nodes) may have been lost with the
      // connection: no grant from before may outlive it.
      revision++
      grants.clear()
      presenceAnswers.clear()
      // Live delivery may have skipped publications in any room: rather than let a gap pass
      // silently, every subscriber is told to subscribe again with `since` and recovers what
      // it missed from history (a client past the history window learns it with recovered: false).
      const affected = [...rooms]
      let revoked = 0
      for (const [room, local] of affected) {
        for (const connection of [...local.connections]) {
          connection.revoke(room, 'resubscribe')
          revoked++
        }
      }
      log.warn({ rooms: affected.length, subscriptions: revoked }, 'engine lost live delivery continuity: subscribers told to resubscribe')
    }
  })

  /**
   * Sends a control message to the other nodes (this one applied it already). Failures are
   * logged, not thrown: what this node could do is done, and the channel is best-effort.
   */
  async function broadcast (message: DistributiveOmit<ControlMessage, 'node'>): Promise<boolean> {
    if (!clustered || engine.control === undefined) return false
    try {
      await engine.control.publishControl({ ...message, node: nodeId } as ControlMessage)
      return true
    } catch (err) {
      log.warn({ err, control: message.type }, 'control message not sent: other nodes do not apply it')
      return false
    }
  }

  function kickLocal (connectionId: string): boolean {
    const connection = connections.get(connectionId)
    if (connection === undefined) return false
    connection.close(CloseCodes.KICKED)
    return true
  }

  function kickUserLocal (userId: string): number {
    revision++
    grants.dropPrincipal(principalPrefix({ kind: 'user', userId }))
    const targets = select({ user: userId })
    for (const connection of targets) connection.close(CloseCodes.KICKED)
    return targets.length
  }

  function kickApiKeyLocal (keyId: string): number {
    revision++
    grants.dropPrincipal(principalPrefix({ kind: 'apiKey', keyId }))
    const targets = [...(byUser.get(`key:${keyId}`) ?? [])]
    for (const connection of targets) connection.close(CloseCodes.KICKED, 'api key revoked')
    return targets.length
  }

  /** Closes this node's sockets of the given sessions of a user with 4001: the client's refresh fails, it signs in again. */
  function revokeSessionsLocal (userId: string, sessionIds: string[]): number {
    const revoked = new Set(sessionIds)
    const targets = select({ user: userId }).filter(c => c.principal.kind === 'user' && revoked.has(c.principal.sessionId))
    for (const connection of targets) connection.close(CloseCodes.TOKEN_EXPIRED, 'session revoked')
    return targets.length
  }

  /** Closes this node's sockets of an account that is gone or disabled with the terminal 4504. */
  function closeAccountLocal (userId: string): number {
    revision++
    grants.dropPrincipal(principalPrefix({ kind: 'user', userId }))
    const targets = select({ user: userId })
    for (const connection of targets) connection.close(CloseCodes.ACCOUNT_CLOSED)
    return targets.length
  }

  /**
   * An account removed behind the auth service's back (straight in the database) announces
   * nothing: every recheckMs the node asks the store, in batches, which of its connected
   * users are gone, and closes their sockets. One run at a time.
   */
  let accountCheck: Promise<void> | null = null
  const accountTimer = deps.revocation === undefined
    ? undefined
    : setInterval(() => {
      const host = deps.revocation
      if (accountCheck !== null || host === undefined) return
      const users: string[] = []
      for (const key of byUser.keys()) if (key.startsWith('user:')) users.push(key.slice('user:'.length))
      if (users.length === 0) return
      accountCheck = host.closedAccounts(users)
        .then((closed) => { for (const userId of closed) closeAccountLocal(userId) })
        .catch((err: unknown) => log.warn({ err }, 'account check of connected users failed; retried at the next interval'))
        .finally(() => { accountCheck = null })
    }, deps.revocation.recheckMs)
  accountTimer?.unref()

  /** Applies a room change to this node's subscriptions; the history removal only where `removeHistory` (once per cluster). */
  async function applyRoomChangeLocal (change: RoomChange, removeHistory: boolean): Promise<void> {
    revision++
    const roomId = change.room.id
    grants.dropRoom(roomId)
    const revoke = (connections: Connection[], reason: UnsubscribeReason): void => {
      for (const connection of connections) connection.revoke(roomId, reason)
    }
    const notAdmin = (c: Connection): boolean => !(c.principal.kind === 'user' && c.principal.role === 'admin')
    switch (change.type) {
      case 'room_deleted':
        revoke(subscribersOf(roomId, null), 'room_deleted')
        if (removeHistory) await viaEngine(() => engine.history.removeHistory(roomId)).catch((err: unknown) => log.warn({ err, room: roomId }, 'history removal failed'))
        return
      case 'banned':
        revoke(subscribersOf(roomId, change.userId).filter(notAdmin), 'banned')
        return
      case 'member_removed':
        if (change.room.visibility === 'private') revoke(subscribersOf(roomId, change.userId).filter(notAdmin), 'removed')
        return
      case 'member_role_changed':
        return
      case 'room_updated': {
        if (change.room.visibility !== 'private') return
        await Promise.all(subscribersOf(roomId, null).map(async (connection) => {
          try {
            await deps.authorize(connection.principal, roomId, 'subscribe')
          } catch (err) {
            if (err instanceof AppError && err.protocolCode === 'unavailable') {
              // The store cannot say: access stays as it was until the client's next subscribe.
              log.warn({ err, room: roomId, connId: connection.id }, 'access re-check after a room update: store unavailable')
              return
            }
            // A refusal, or a bug in the check: fail closed (the client can subscribe again).
            if (!(err instanceof AppError)) log.error({ err, room: roomId, connId: connection.id }, 'access re-check after a room update failed')
            connection.revoke(roomId, 'forbidden')
          }
        }))
      }
    }
  }

  engine.control?.onControl((message: ControlMessage) => {
    if (message.node === nodeId) return
    switch (message.type) {
      case 'kick':
        kickLocal(message.connectionId)
        return
      case 'kick_user':
        kickUserLocal(message.userId)
        return
      case 'kick_api_key':
        kickApiKeyLocal(message.keyId)
        return
      case 'room_change':
        applyRoomChangeLocal(message.change, false)
          .catch((err: unknown) => log.error({ err, room: message.change.room.id }, 'live revocation from another node failed'))
        return
      case 'revoke_sessions':
        // Denied first: a handshake or request after the sockets close is refused here too.
        deps.revocation?.sessionsRevoked(message.sessionIds, message.until)
        revokeSessionsLocal(message.userId, message.sessionIds)
        return
      case 'close_account':
        deps.revocation?.accountClosed(message.userId)
        closeAccountLocal(message.userId)
    }
  })

  function admissionKey (principal: Principal): string {
    return principal.kind === 'user' ? `user:${principal.userId}` : `key:${principal.keyId}`
  }

  function ipKey (ip: string): string {
    return `ip:${ip}`
  }

  function select (filter: ConnectionFilter): Connection[] {
    let candidates: Iterable<Connection> = connections.values()
    if (filter.user !== undefined) candidates = byUser.get(`user:${filter.user}`) ?? []
    const out: Connection[] = []
    for (const connection of candidates) {
      if (filter.room !== undefined && !connection.subscriptions.has(filter.room)) continue
      out.push(connection)
    }
    return out
  }

  /** Connections subscribed to `room` that belong to `userId` (all of them when null). */
  function subscribersOf (room: string, userId: string | null): Connection[] {
    const local = rooms.get(room)
    if (local === undefined) return []
    return [...local.connections].filter(c => userId === null || c.userId === userId)
  }

  return {
    /** Checks a handshake against the drain state and the connection caps, before the upgrade. */
    admit (principal: Principal, ip: string): AdmissionRefusal | null {
      if (draining) return 'draining'
      if (principal.kind === 'user' && deps.revocation?.isSessionRevoked(principal.sessionId) === true) return 'revoked'
      if ((byUser.get(admissionKey(principal))?.size ?? 0) >= limits.maxConnectionsPerUser) return 'connections_per_user'
      if ((byIp.get(ip) ?? 0) >= limits.maxConnectionsPerIp) return 'connections_per_ip'
      return null
    },

    /**
     * The cluster-wide caps per user and per address (with an engine that counts across
     * nodes), checked after `admit` and before the upgrade: resolves with the id the
     * connection will have, already counted, or the cap it is over. Counting failures let the
     * handshake through (the local caps still hold): Redis being away must not lock users out.
     */
    async reserve (principal: Principal, ip: string): Promise<{ id: string } | { refusal: 'connections_per_user' | 'connections_per_ip' }> {
      const id = randomUUID()
      const counter = engine.connections
      if (counter === undefined) return { id }
      const userKey = admissionKey(principal)
      try {
        const [user, address] = await Promise.allSettled([
          counter.reserve(userKey, id, limits.maxConnectionsPerUser),
          counter.reserve(ipKey(ip), id, limits.maxConnectionsPerIp)
        ])
        if (user.status === 'rejected') throw user.reason
        if (address.status === 'rejected') throw address.reason
        if (user.value && address.value) return { id }
        // One cap said no: the other's count must not keep the refused connection.
        if (user.value) releaseReservation(userKey, id)
        if (address.value) releaseReservation(ipKey(ip), id)
        return { refusal: user.value ? 'connections_per_ip' : 'connections_per_user' }
      } catch (err) {
        log.warn({ err }, 'cluster-wide connection count unavailable: only the local caps apply')
        return { id }
      }
    },

    /** A reserved id whose socket will not open after all: it stops counting at once. */
    release (principal: Principal, ip: string, connectionId: string): void {
      releaseReservation(admissionKey(principal), connectionId)
      releaseReservation(ipKey(ip), connectionId)
    },

    /** Registers an upgraded connection and sends its welcome (with the id `reserve` gave, if any). */
    connect (transport: Transport, principal: Principal, meta: { ip: string, userAgent?: string }, id: string = randomUUID()): Connection {
      const connection = new Connection(id, principal, transport, meta, internals)
      connections.set(connection.id, connection)
      const key = admissionKey(principal)
      let set = byUser.get(key)
      if (set === undefined) byUser.set(key, set = new Set())
      set.add(connection)
      byIp.set(meta.ip, (byIp.get(meta.ip) ?? 0) + 1)
      metrics.connectionOpened()
      connection.open()
      return connection
    },

    publish: internals.publish,
    history: internals.history,
    presence: internals.presence,

    listConnections (filter: ConnectionFilter = {}) {
      return select(filter).map(c => c.describe())
    },

    /**
     * Closes one connection with 4503 (kicked). `local` when it was on this node; `forwarded`
     * when it is not here and the other nodes were told (best-effort: whether it existed is
     * not known); null when it is nowhere (a single node) or the message could not be sent.
     */
    async kick (connectionId: string): Promise<'local' | 'forwarded' | null> {
      if (kickLocal(connectionId)) return 'local'
      return await broadcast({ type: 'kick', connectionId }) ? 'forwarded' : null
    },

    /** Closes every connection of a user with 4503, on every node; returns how many were on this one. */
    async kickUser (userId: string): Promise<number> {
      const closed = kickUserLocal(userId)
      await broadcast({ type: 'kick_user', userId })
      return closed
    },

    /**
     * Closes every connection authenticated with an API key that was just revoked (4503): on
     * this node at once, on the others when the control message reaches them. Returns how many
     * were on this node.
     */
    kickApiKey (keyId: string): number {
      const closed = kickApiKeyLocal(keyId)
      void broadcast({ type: 'kick_api_key', keyId })
      return closed
    },

    /**
     * Session revocation (logout, refresh-token reuse, sign out everywhere): closes the
     * sessions' sockets here with 4001, then tells the other nodes, which deny the sessions
     * until `until` and close theirs. Resolves once Redis took the message. Returns how many
     * were closed on this node.
     */
    async revokeSessions (userId: string, sessionIds: string[], until: number): Promise<number> {
      const closed = revokeSessionsLocal(userId, sessionIds)
      await broadcast({ type: 'revoke_sessions', userId, sessionIds, until })
      return closed
    },

    /** An account deleted or disabled: its sockets are closed with 4504 here, then on every node. */
    async closeAccount (userId: string): Promise<number> {
      const closed = closeAccountLocal(userId)
      await broadcast({ type: 'close_account', userId })
      return closed
    },

    /**
     * Live revocation: applies a room change to open subscriptions before the HTTP request that
     * made it answers. Removals and bans act at once on the connections of that user (admins
     * keep their access); a room that became private is re-checked subscriber by subscriber.
     * This node applies it first, then tells the others through the control channel and waits
     * until Redis took the message: anything published after that reaches them after it.
     */
    async applyRoomChange (change: RoomChange): Promise<void> {
      await applyRoomChangeLocal(change, true)
      await broadcast({ type: 'room_change', change })
    },

    /**
     * Drains every connection over `windowMs`: each, at a random moment in the window, gets a
     * `reconnect` push with a jittered `retryAfterMs` and then close 1012, so a rolling deploy
     * does not turn into a reconnect storm. New connections are refused meanwhile (admit).
     * Resolves when all are gone; stragglers are destroyed shortly after the window.
     */
    drain (windowMs: number): Promise<void> {
      drainDone ??= (async () => {
        draining = true
        const timers: NodeJS.Timeout[] = []
        for (const connection of connections.values()) {
          timers.push(setTimeout(() => {
            const retryAfterMs = Math.floor(Math.random() * Math.min(5000, Math.max(windowMs, 1)))
            connection.sendText(reconnectFrame(retryAfterMs))
            connection.close(CloseCodes.SERVICE_RESTART)
          }, Math.floor(Math.random() * windowMs)))
        }
        const deadline = now() + windowMs + 2000
        while (connections.size > 0 && now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
        for (const timer of timers) clearTimeout(timer)
        for (const connection of [...connections.values()]) connection.terminate()
      })()
      return drainDone
    },

    get draining (): boolean {
      return draining
    },

    stats (): { connections: number, rooms: number } {
      return { connections: connections.size, rooms: rooms.size }
    },

    /** Destroys every connection (after a drain there are none left). */
    close (): void {
      draining = true
      clearInterval(sweep)
      clearInterval(accountTimer)
      for (const connection of [...connections.values()]) connection.terminate()
    }
  }
}

/** Omit over each member of a union (plain Omit would merge the members). */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
