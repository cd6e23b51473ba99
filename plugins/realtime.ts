import type { FastifyInstance } from 'fastify'
import { hostname } from 'node:os'
import fp from 'fastify-plugin'
import { createRateLimiter, type RateLimiter } from '../src/limits/rate-limiter.js'
import { authorizePersonal, isPersonalRoom, PERSONAL_GRANT, PERSONAL_ROOM_PREFIX } from '../src/rooms/personal.js'
import type { Room } from '../src/store/types.js'
import { jsonPayload, type Engine } from '../src/realtime/engine.js'
import { toRealtimeError, UnavailableError } from '../src/realtime/errors.js'
import { createMemoryEngine, type StreamStore } from '../src/realtime/memory-engine.js'
import { createSqliteHistory } from '../src/realtime/sqlite-history.js'
import { createRedisEngine, type RedisEngineOptions } from '../src/realtime/redis-engine/index.js'
import { describeRedisEndpoint } from '../src/redis.js'
import { createRealtimeNode, type HostFigures, type RealtimeNode } from '../src/realtime/node.js'
import type { Authorizer, RoomGrant } from '../src/realtime/authorizer.js'
import { Errors, isUnavailableError } from '../src/errors.js'
import { createRateMeter } from '../src/realtime/metrics.js'
import { APP_VERSION } from '../src/version.js'
import { prepareWsFrame } from '../src/realtime/ws-frames.js'

declare module 'fastify' {
  interface FastifyInstance {
    realtime: RealtimeNode
    /** The engine behind the node (memory or Redis): readiness pings it. */
    realtimeEngine: Engine
  }
}

/** Most publications one subscribe may recover; beyond it the client is told it missed some. */
const MAX_RECOVERY_PUBLICATIONS = 1000

/**
 * The real-time node: the Redis engine when REDIS_URL is set (every node shares numbering,
 * history and presence), else the in-memory engine (the embedded default, one node);
 * authorization from the room service for every room operation, live revocation on room
 * changes (applied here, then carried to every node by the engine's control channel), and
 * the drain on shutdown. routes/ws connects sockets to it; REST routes publish
 * through it.
 */
export default fp(async (app) => {
  const { ws, redis, history } = app.config
  const engine: Engine = redis === null
    ? createMemoryEngine({ maxHistoryBytes: history.memoryBytes, roomHistoryBytes: history.roomBytes, ...durableStore(app) })
    : await createRedisEngine({
      roomHistoryBytes: history.roomBytes,
      url: redis.url,
      clusterNodes: redis.clusterNodes,
      sentinels: redis.sentinels,
      sentinelMaster: redis.sentinelMaster,
      ...(redis.sentinelPassword === undefined ? {} : { sentinelPassword: redis.sentinelPassword }),
      waitReplicas: redis.waitReplicas,
      waitTimeoutMs: redis.waitTimeoutMs,
      keyPrefix: redis.keyPrefix,
      presenceTtlSeconds: redis.presenceTtlSeconds,
      ...clusterArchive(app),
      log: app.log.child({ component: 'redis-engine' })
    })
  if (redis === null) app.log.info({ engine: 'memory', history: history.store }, 'real-time engine: in-memory (single node)')
  else app.log.info({ engine: 'redis', ...describeRedisEndpoint(redis), keyPrefix: redis.keyPrefix }, 'real-time engine: redis')
  app.decorate('realtimeEngine', engine)
  const metrics = app.realtimeMetrics

  // What a room's row says about its stream and presence, the one place both paths below read it:
  // a publish that left out archiveDays would tell the history store the archive is off.
  const grantOf = (row: Room): RoomGrant => ({
    stream: { historySize: row.historySize, historyTtlSeconds: row.historyTtlSeconds, archiveDays: row.archive ? row.archiveDays : 0 },
    presenceEvents: row.presenceEvents
  })

  const authorize: Authorizer = async (principal, room, operation, basis = 'standing') => {
    // No room token names a personal room (src/auth/room-token-claims.ts): their one rule holds.
    if (isPersonalRoom(room)) return authorizePersonal(principal, room, operation)
    try {
      const { room: row } = await app.rooms.authorize(principal, room, operation, basis === 'roomToken')
      return grantOf(row)
    } catch (err) {
      const mapped = toRealtimeError(err)
      if (mapped.protocolCode === 'unavailable') app.log.warn({ err, room }, 'authorization failed: dependency error')
      throw mapped
    }
  }

  // The server API acts for the server: a room's existence and settings, no principal's grant.
  const roomSettings = async (room: string): Promise<RoomGrant> => {
    if (isPersonalRoom(room)) return PERSONAL_GRANT
    try {
      const row = await app.store.getRoom(room)
      if (row === undefined) throw new Errors.RoomNotFound()
      return grantOf(row)
    } catch (err) {
      throw toRealtimeError(err)
    }
  }
  const rates = createRateMeter(() => app.metrics.totals())
  const startedAt = Date.now()
  const figures = (): HostFigures => {
    const { messagesInPerSecond, messagesOutPerSecond } = rates()
    const memory = process.memoryUsage()
    return {
      address: `${app.config.host}:${app.config.port}`,
      hostname: hostname(),
      version: APP_VERSION,
      startedAt,
      messagesInPerSecond,
      messagesOutPerSecond,
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed
    }
  }

  const node = createRealtimeNode({
    engine,
    authorize,
    roomSettings,
    reports: { intervalMs: app.config.serverApi.nodeReportIntervalMs, figures },
    ...(app.config.publishRate === null ? {} : { publishRate: publishRateLimiter(app, app.config.publishRate) }),
    checkRoomToken: async (token, principal, room, operation) => {
      try {
        return await app.checkRoomToken(token, principal, room, operation)
      } catch (err) {
        // The identity provider's keys could not be fetched: temporary, not a bad token.
        if (isUnavailableError(err)) throw new UnavailableError()
        throw err
      }
    },
    verifyToken: async (token) => {
      try {
        return await app.verifyAccessToken(token)
      } catch (err) {
        // The account check could not reach the store: a temporary error, not a bad token.
        if (isUnavailableError(err)) throw new UnavailableError()
        throw err
      }
    },
    revocation: {
      isSessionRevoked: sessionId => app.revocations.sessions.isRevoked(sessionId),
      sessionsRevoked: (sessionIds, until) => { app.revocations.sessions.mirror(sessionIds, until) },
      accountClosed: (userId) => { app.revocations.accounts.forget(userId) },
      // Users of the identity provider are asked about too: an admin may have disabled one (issue 25).
      closedAccounts: async userIds => await app.revocations.accounts.closedAmong(userIds),
      recheckMs: app.config.revocation.accountCacheMs
    },
    prepareFrame: prepareWsFrame,
    limits: {
      maxMessageBytes: ws.maxMessageBytes,
      messagesPerSecond: ws.messagesPerSecond,
      messagesBurst: ws.messagesBurst,
      maxSubscriptions: ws.maxSubscriptions,
      maxBufferedBytes: ws.maxBufferedBytes,
      heartbeatMs: ws.heartbeatMs,
      idleTimeoutMs: ws.idleTimeoutMs,
      tokenClockToleranceMs: app.config.jwt.clockToleranceSeconds * 1000,
      maxConnectionsPerUser: ws.maxConnectionsPerUser,
      maxConnectionsPerIp: ws.maxConnectionsPerIp,
      maxRecoveryPublications: MAX_RECOVERY_PUBLICATIONS,
      historyPageBytes: history.pageBytes,
      authorizationCacheMs: ws.authorizationCacheMs
    },
    metrics,
    hooks: app.backendHooks,
    log: app.log.child({ component: 'realtime' })
  })
  app.decorate('realtime', node)

  app.rooms.onChange(async (change) => {
    try {
      await node.applyRoomChange(change)
    } catch (err) {
      app.log.error({ err, room: change.room.id }, 'live revocation failed')
    }
  })

  // Membership events (docs/protocol.md §11): a publication to the user's personal room, so it
  // reaches every device of theirs on every node. The change is made already: a failure to tell
  // is logged, not the request's failure (the user's list is right again on its next read).
  app.rooms.onMembership(async ({ userId, by, event }) => {
    let err: unknown = null
    try {
      const [outcome] = await node.broadcast(by, [`${PERSONAL_ROOM_PREFIX}${userId}`], jsonPayload(event))
      if (outcome !== undefined && 'error' in outcome) err = outcome.error
    } catch (thrown) {
      err = thrown
    }
    if (err !== null) app.log.warn({ err, userId, room: event.room.id, event: event.type }, 'membership event not published')
  })

  app.revocations.onRevocation({
    sessionsRevoked: async (userId, sessionIds, until) => { await node.revokeSessions(userId, sessionIds, until) },
    accountClosed: async (userId) => { await node.closeAccount(userId) },
    apiKeysRevoked: (keyIds) => { for (const keyId of keyIds) node.kickApiKey(keyId) }
  })

  app.lifecycle.onShutdown(() => node.drain(ws.drainMs))
  app.addHook('onClose', async () => {
    node.close()
    await engine.close()
  })
}, { name: 'realtime', dependencies: ['config', 'store', 'redis', 'auth', 'rooms', 'shutdown', 'metrics', 'hooks'] })

/**
 * HISTORY_STORE=sqlite: the durable store under the in-memory engine, on the store's own
 * SQLite connection (Store.sqlite explains why the connection is shared).
 */
function durableStore (app: FastifyInstance): { store?: StreamStore } {
  if (app.config.history.store !== 'sqlite') return {}
  const connection = app.store.sqlite
  if (connection === undefined) throw new Error('HISTORY_STORE=sqlite needs the SQLite store')
  const log = app.log.child({ component: 'sqlite-history' })
  return {
    store: createSqliteHistory(connection, {
      roomHistoryBytes: app.config.history.roomBytes,
      archiveRoomBytes: app.config.archive.roomBytes,
      onSweepError: (err) => { log.warn({ err }, 'history sweep failed') }
    })
  }
}

/**
 * The cluster archive: with Redis and PostgreSQL, archived rooms' publications go through a
 * queue in Redis into PostgreSQL (src/realtime/redis-engine/archiver.ts). With Redis and a
 * SQLite file there is no archive shared by the nodes: archiveDays is ignored there.
 */
function clusterArchive (app: FastifyInstance): { archive?: RedisEngineOptions['archive'] } {
  if (app.store.kind !== 'postgres') return {}
  return {
    archive: {
      store: app.store,
      queueRoomBytes: app.config.archive.queueRoomBytes,
      onArchived: (lagMs) => { app.metrics.archived(lagMs / 1000) },
      onSwept: (rows) => { app.metrics.archiveSwept(rows) }
    }
  }
}

/** Per user or API key; shared by every node when the cluster has Redis. */
function publishRateLimiter (app: FastifyInstance, rate: { perSecond: number, burst: number }): RateLimiter {
  return createRateLimiter({
    ratePerSecond: rate.perSecond,
    burst: rate.burst,
    redis: app.redis,
    prefix: `${app.config.redis?.keyPrefix ?? 'sb:'}publish-rate:`,
    log: app.log,
    what: 'publish rate'
  })
}
