import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'

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

/**
 * Hash slot of a key on Redis Cluster (CRC16-XMODEM of the key, or of its {hash tag}, mod 16384):
 * which primary a room's keys and shard channel live on.
 */
export function keySlot (key: string): number {
  let bytes = Buffer.from(key)
  const open = bytes.indexOf(0x7b)
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1)
    if (close > open + 1) bytes = bytes.subarray(open + 1, close)
  }
  let crc = 0
  for (const byte of bytes) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

/** A connection to one Redis (directly or through Sentinels) or to a Redis Cluster. */
export type RedisClient = Redis | Cluster

/** Where Redis is: the URL's host, the master that Sentinels name (followed on failover), or a cluster's seeds. */
export interface RedisEndpoint {
  /**
   * redis:// or rediss:// URL: credentials and database number (and the host, without
   * sentinels). On a cluster: the first seed's, carrying the credentials and TLS of them all.
   */
  url: string
  /** Seeds of a Redis Cluster (REDIS_CLUSTER_NODES); null or absent: one Redis. */
  clusterNodes?: Array<{ host: string, port: number }> | null
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
  /** On a cluster: one subscriber connection per primary for shard channels (SSUBSCRIBE). */
  sharded?: boolean
}

/**
 * A lazily connecting ioredis connection that fails fast: a call while Redis is away rejects
 * at once instead of waiting in a queue, and one in flight when the connection drops is
 * rejected, never resent later (a publish reported failed must not happen behind the
 * caller's back: the client retries it with its idempotency key). Call connect() (or let
 * the first command fail) — lazyConnect keeps construction synchronous and side-effect free.
 */
export function createRedisConnection (endpoint: RedisEndpoint & { clusterNodes?: null }, options: RedisConnectionOptions): Redis
export function createRedisConnection (endpoint: RedisEndpoint, options: RedisConnectionOptions): RedisClient
export function createRedisConnection (endpoint: RedisEndpoint, options: RedisConnectionOptions): RedisClient {
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
    retryStrategy: reconnectDelay,
    connectionName: options.name,
    ...options.options
  }
  if (endpoint.clusterNodes !== undefined && endpoint.clusterNodes !== null && endpoint.clusterNodes.length > 0) {
    const cluster = new Cluster(endpoint.clusterNodes, viaCluster(endpoint, common, options.sharded === true))
    watch(cluster, options.name, options.log)
    return cluster
  }
  const conn = endpoint.sentinels === undefined || endpoint.sentinels === null || endpoint.sentinels.length === 0
    ? new Redis(endpoint.url, common)
    : new Redis({ ...common, ...viaSentinels(endpoint, endpoint.sentinels) })
  watch(conn, options.name, options.log)
  return conn
}

/** Reconnect forever with capped exponential backoff and jitter. */
function reconnectDelay (times: number): number {
  return Math.floor(Math.min(2000, 50 * 2 ** Math.min(times, 6)) * (0.5 + Math.random() * 0.5))
}

/** How often a cluster connection reads the slot map again besides on MOVED: how soon a failover or migration is followed. */
const CLUSTER_SLOTS_REFRESH_MS = 1000

/**
 * ioredis's Cluster options: the per-node connections behave as one Redis's (fail fast, short
 * timeouts), the credentials and TLS come from the seeds' URL. Redirections (MOVED, ASK) and a
 * failover's refreshed slot map are followed by ioredis.
 */
function viaCluster (endpoint: RedisEndpoint, common: RedisOptions, sharded: boolean): ClusterOptions {
  const url = new URL(endpoint.url)
  // ioredis's Cluster takes these itself; the nodes' connections must not have them.
  const { retryStrategy: _retry, enableOfflineQueue, lazyConnect, ...perNode } = common
  return {
    lazyConnect,
    enableOfflineQueue,
    clusterRetryStrategy: reconnectDelay,
    slotsRefreshInterval: CLUSTER_SLOTS_REFRESH_MS,
    slotsRefreshTimeout: common.connectTimeout,
    shardedSubscribers: sharded,
    redisOptions: {
      ...perNode,
      ...(url.username === '' ? {} : { username: decodeURIComponent(url.username) }),
      ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
      ...(url.protocol === 'rediss:' ? { tls: {} } : {})
    }
  }
}

/**
 * WAIT for `replicas` on the connection that just wrote `key`: on a cluster, the primary that
 * owns the key's slot (WAIT has no key; ioredis would send it to any node). Answers how many
 * replicas confirmed.
 */
export async function waitForReplicas (conn: RedisClient, key: string, replicas: number, timeoutMs: number): Promise<number> {
  if (!(conn instanceof Cluster)) return Number(await conn.wait(replicas, timeoutMs))
  const owner = conn.slots[keySlot(key)]?.[0]
  const node = conn.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === owner)
  // The slot moved or its primary is gone since the write: nothing can be confirmed.
  if (node === undefined) return 0
  return Number(await node.wait(replicas, timeoutMs))
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
    ...(endpoint.sentinels === undefined || endpoint.sentinels === null ? {} : { sentinels: endpoint.sentinels.map(s => `${s.host}:${s.port}`), master: endpoint.sentinelMaster }),
    ...(endpoint.clusterNodes === undefined || endpoint.clusterNodes === null ? {} : { clusterNodes: endpoint.clusterNodes.map(s => `${s.host}:${s.port}`) })
  }
}

/** Connection events: logged (errors rate-limited), never thrown. */
function watch (conn: RedisClient, name: string, log: RedisLogger): void {
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
const quitting = new WeakSet<RedisClient>()

/** Closes a connection politely (QUIT), or at once when it is broken. */
export async function quitRedis (conn: RedisClient): Promise<void> {
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
export async function runScript (conn: RedisClient, script: RedisScript, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
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
export async function runScriptBuffer (conn: RedisClient, script: RedisScript, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
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
