import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Redis, type RedisOptions } from 'ioredis'

/**
 * How every Switchboard connection to Redis behaves (the real-time engine's and the
 * cluster-wide limits'): fail fast while Redis is away, reconnect forever, log without
 * flooding. Nothing here throws out of an event: calls reject and the caller decides.
 */

export interface RedisLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

export const DEFAULT_REDIS_TIMEOUT_MS = 2000
/** One log line per source per this interval while Redis is away: an outage must not flood the log. */
const OUTAGE_LOG_INTERVAL_MS = 10_000

/**
 * For the lines a Redis outage repeats (connection errors, limits falling back): call it on
 * every occurrence; it answers how many were held back since the last line when one is due
 * now, or null to stay quiet.
 */
export function outageLogThrottle (intervalMs = OUTAGE_LOG_INTERVAL_MS): () => { suppressed: number } | null {
  let last = -Infinity
  let suppressed = 0
  return () => {
    const now = Date.now()
    if (now - last < intervalMs) {
      suppressed++
      return null
    }
    last = now
    const held = suppressed
    suppressed = 0
    return { suppressed: held }
  }
}

/**
 * A value placed inside a key's {hash tag}: braces (and the escape character itself) are
 * escaped, so the tag always ends where the caller put it and every key of one room or one
 * limit lands in one Redis Cluster slot.
 */
export function hashTag (value: string): string {
  return value.replace(/[%{}]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

/** Where Redis is: the URL's host, or the master that Sentinels name (followed on failover). */
export interface RedisEndpoint {
  /** redis:// or rediss:// URL: credentials and database number (and the host, without sentinels). */
  url: string
  sentinels?: Array<{ host: string, port: number }> | null
  /** The master's name in the sentinels' configuration. */
  sentinelMaster?: string
  sentinelPassword?: string
}

export interface RedisConnectionOptions {
  /** Shown in CLIENT LIST and in the log lines about this connection. */
  name: string
  log: RedisLogger
  /** Connect and command timeout: calls fail after this long instead of hanging. */
  timeoutMs?: number
  /** Extra ioredis options (e.g. autoResubscribe for a pub/sub connection). */
  options?: RedisOptions
}

/**
 * A lazily connecting ioredis connection that fails fast: a call while Redis is away rejects
 * at once instead of waiting in a queue, and one in flight when the connection drops is
 * rejected, never resent later (a publish reported failed must not happen behind the
 * caller's back: the client retries it with its idempotency key). Call connect() (or let
 * the first command fail) — lazyConnect keeps construction synchronous and side-effect free.
 */
export function createRedisConnection (endpoint: RedisEndpoint, options: RedisConnectionOptions): Redis {
  const timeoutMs = options.timeoutMs ?? DEFAULT_REDIS_TIMEOUT_MS
  const common: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    // disconnect() is only used on a broken connection (close QUITs a live one); ioredis
    // would otherwise keep a 2 s timer for a socket that will never report closing.
    disconnectTimeout: 100,
    // Reconnect forever with capped exponential backoff and jitter.
    retryStrategy: (times) => Math.floor(Math.min(2000, 50 * 2 ** Math.min(times, 6)) * (0.5 + Math.random() * 0.5)),
    connectionName: options.name,
    ...options.options
  }
  const conn = endpoint.sentinels === undefined || endpoint.sentinels === null || endpoint.sentinels.length === 0
    ? new Redis(endpoint.url, common)
    : new Redis({ ...common, ...viaSentinels(endpoint, endpoint.sentinels) })
  watch(conn, options.name, options.log)
  return conn
}

/** ioredis's Sentinel options: the URL gives the master's credentials and database. */
function viaSentinels (endpoint: RedisEndpoint, sentinels: Array<{ host: string, port: number }>): RedisOptions {
  const url = new URL(endpoint.url)
  const db = Number(url.pathname.slice(1) || '0')
  return {
    sentinels,
    name: endpoint.sentinelMaster ?? 'mymaster',
    ...(url.username === '' ? {} : { username: decodeURIComponent(url.username) }),
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
    ...(endpoint.sentinelPassword === undefined ? {} : { sentinelPassword: endpoint.sentinelPassword }),
    db: Number.isInteger(db) ? db : 0,
    // Sentinels are asked again on every reconnect, so a failover's new master is found.
    sentinelRetryStrategy: (times) => Math.min(2000, 50 * 2 ** Math.min(times, 6))
  }
}

/** For logs: the URL without its password, and the sentinels when they are used. */
export function describeRedisEndpoint (endpoint: RedisEndpoint): Record<string, unknown> {
  return {
    redis: redactRedisUrl(endpoint.url),
    ...(endpoint.sentinels === undefined || endpoint.sentinels === null ? {} : { sentinels: endpoint.sentinels.map(s => `${s.host}:${s.port}`), master: endpoint.sentinelMaster })
  }
}

/** Connection events: logged (errors rate-limited), never thrown. */
function watch (conn: Redis, name: string, log: RedisLogger): void {
  const throttle = outageLogThrottle()
  let ready = false
  let everReady = false
  conn.on('error', (err: Error) => {
    const due = throttle()
    if (due !== null) log.warn({ err, connection: name, suppressed: due.suppressed }, 'redis connection error')
  })
  conn.on('ready', () => {
    if (everReady) log.info({ connection: name }, 'redis connection restored')
    ready = true
    everReady = true
  })
  conn.on('close', () => {
    if (ready && !quitting.has(conn)) log.warn({ connection: name }, 'redis connection lost; reconnecting')
    ready = false
  })
}

/** Connections being closed on purpose: their 'close' is not a lost connection. */
const quitting = new WeakSet<Redis>()

/** Closes a connection politely (QUIT), or at once when it is broken. */
export async function quitRedis (conn: Redis): Promise<void> {
  quitting.add(conn)
  try {
    await conn.quit()
  } catch {
    conn.disconnect()
  }
}

export interface RedisScript { body: string, sha: string }

/**
 * A Lua script from `.lua` files shipped next to the code (`new URL('./lua/x.lua',
 * import.meta.url)`; the build copies them into dist), joined in order so shared functions
 * come first. Read when the module loads: a missing file stops the start, not a publish later.
 * Every script of the tree is loaded through here, and test/lua-scripts.test.ts compiles each
 * file in Redis.
 */
export function loadRedisScript (...files: URL[]): RedisScript {
  return redisScript(files.map((file) => readFileSync(file, 'utf8')).join('\n'))
}

function redisScript (body: string): RedisScript {
  return { body, sha: createHash('sha1').update(body).digest('hex') }
}

/** EVALSHA, falling back to EVAL when Redis does not know the script (a restarted Redis). */
export async function runScript (conn: Redis, script: RedisScript, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
  try {
    return await conn.evalsha(script.sha, keys.length, ...keys, ...args)
  } catch (err) {
    // NOSCRIPT means nothing ran: sending the body is safe.
    if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return await conn.eval(script.body, keys.length, ...keys, ...args)
    throw err
  }
}

/**
 * runScript with the reply's strings as Buffers (integers stay numbers): for replies that may
 * hold bytes that are not UTF-8, which the string form would replace.
 */
export async function runScriptBuffer (conn: Redis, script: RedisScript, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
  try {
    return await conn.callBuffer('EVALSHA', script.sha, keys.length, ...keys, ...args)
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return await conn.callBuffer('EVAL', script.body, keys.length, ...keys, ...args)
    throw err
  }
}

/** The URL without its password, for logs. */
export function redactRedisUrl (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparseable url)'
  }
}
