import { outageLogThrottle, type RedisClient } from '../redis.js'

/**
 * Sessions whose access tokens must stop working before they expire (logout, refresh-token
 * reuse, sign out everywhere), checked on every authenticated request and handshake.
 *
 * Why sessions and not token ids: one sign-in issues an access token at every refresh, and
 * the server keeps none of their `jti`s. Every access token carries its session (`sid`, the
 * refresh-token family); revoking a session ends its refresh tokens in the store and puts
 * the session here until `windowMs` (access-token TTL plus clock tolerance) from now: by then
 * every access token the session issued has expired, and it can issue no more. One entry per
 * revoked session, whatever the number of refreshes, and nothing written per refresh.
 *
 * Checking is a Map lookup: each node keeps every entry in memory. With Redis the entries
 * are also written to one sorted set (scored by revocation time, trimmed past the window),
 * which a node reads whole when it starts and reads what is new from every SYNC_INTERVAL_MS:
 * the control channel tells running nodes at once, the sorted set catches a node that started
 * later or missed a control message while cut off from Redis.
 *
 * Bounded: at most `maxEntries` per node. Past it the entries nearest their end go first
 * (entries are kept in revocation order, so that is the Map's first), and a warning is
 * logged: a revoked session whose entry goes keeps its access tokens until they expire, as
 * before revocation existed; its refresh tokens stay revoked. Only sign-ins can add entries,
 * and sign-ins are rate limited per address (LOGIN_RATE_LIMIT).
 */
export interface SessionDenylist {
  isRevoked(sessionId: string): boolean
  /** Denies the sessions here and (with Redis) for every node; resolves with when the entries end (ms). */
  revoke(sessionIds: string[]): Promise<number>
  /** Another node revoked these sessions (the control channel): deny them here too, until `until`. */
  mirror(sessionIds: string[], until: number): void
  /** Reads the shared entries (with Redis; nothing without): once at start, then every SYNC_INTERVAL_MS. */
  start(): Promise<void>
  close(): void
}

export interface SessionDenylistOptions {
  /** How long a revoked session stays denied: the access-token TTL plus the clock tolerance. */
  windowMs: number
  maxEntries: number
  /** The limits' Redis connection; null on a single node. */
  redis: RedisClient | null
  keyPrefix: string
  log: { warn(obj: object, msg: string): void }
  now?: () => number
}

/** How often a node reads revocations it may have missed from Redis. */
export const SYNC_INTERVAL_MS = 5000
/** Revocations written this long before the last one read are read again: the nodes' clocks differ. */
const CLOCK_SKEW_MARGIN_MS = 10_000

export function createSessionDenylist (options: SessionDenylistOptions): SessionDenylist {
  const { windowMs, maxEntries, redis, log } = options
  const now = options.now ?? Date.now
  const key = `${options.keyPrefix}revoked-sessions`
  /** sessionId → end of the denial (ms), in insertion order: nearest end first. */
  const entries = new Map<string, number>()
  const fullWarning = outageLogThrottle()
  const redisWarning = outageLogThrottle()
  /** The latest revocation time read from Redis (ms), where the next sync starts. */
  let readUpTo = -Infinity
  let timer: NodeJS.Timeout | undefined

  function add (sessionId: string, until: number): void {
    if (until <= now()) return
    const known = entries.get(sessionId)
    if (known !== undefined && known >= until) return
    // Re-inserted at the end, so the Map stays ordered by the end of the denial.
    entries.delete(sessionId)
    if (entries.size >= maxEntries) evict()
    entries.set(sessionId, until)
  }

  function evict (): void {
    const at = now()
    for (const [sessionId, until] of entries) {
      if (until > at && entries.size < maxEntries) return
      entries.delete(sessionId)
      if (until > at) {
        const due = fullWarning()
        if (due !== null) log.warn({ maxEntries, suppressed: due.suppressed }, 'revoked-session list full (REVOKED_SESSIONS_MAX): the oldest revocations lapse before their tokens expire')
        return
      }
    }
  }

  async function sync (): Promise<void> {
    if (redis === null) return
    const at = now()
    try {
      const from = readUpTo === -Infinity ? at - windowMs : readUpTo - CLOCK_SKEW_MARGIN_MS
      const read = await redis.zrangebyscore(key, from, '+inf', 'WITHSCORES')
      for (let i = 0; i + 1 < read.length; i += 2) {
        const revokedAt = Number(read[i + 1])
        add(read[i]!, revokedAt + windowMs)
        if (revokedAt > readUpTo) readUpTo = revokedAt
      }
      if (readUpTo === -Infinity) readUpTo = at
    } catch (err) {
      const due = redisWarning()
      if (due !== null) log.warn({ err, suppressed: due.suppressed }, 'revoked sessions not read from redis; retried shortly')
    }
  }

  return {
    isRevoked (sessionId) {
      const until = entries.get(sessionId)
      if (until === undefined) return false
      if (until > now()) return true
      entries.delete(sessionId)
      return false
    },

    async revoke (sessionIds) {
      const at = now()
      const until = at + windowMs
      for (const sessionId of sessionIds) add(sessionId, until)
      if (redis !== null && sessionIds.length > 0) {
        try {
          await redis.multi()
            .zadd(key, ...sessionIds.flatMap(sessionId => [at, sessionId]))
            .zremrangebyscore(key, '-inf', at - windowMs)
            .pexpire(key, windowMs)
            .exec()
        } catch (err) {
          // Running nodes still hear of it through the control channel; only a node that
          // starts within the window would miss it.
          log.warn({ err, sessions: sessionIds.length }, 'revoked sessions not recorded in redis')
        }
      }
      return until
    },

    mirror (sessionIds, until) {
      for (const sessionId of sessionIds) add(sessionId, until)
    },

    async start () {
      if (redis === null) return
      await sync()
      timer = setInterval(() => { void sync() }, SYNC_INTERVAL_MS)
      timer.unref()
    },

    close () {
      clearInterval(timer)
      entries.clear()
    }
  }
}
