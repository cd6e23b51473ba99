import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { POOL_DEFAULTS } from './store/types.js'
import { EXTERNAL_PREFIX_PATTERN, USERNAME_PATTERN } from './schemas/common.js'

/** The algorithms an identity provider's tokens may use: no `none`, no HMAC without IDP_HMAC_SECRET. */
export const IDP_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'HS256', 'HS384', 'HS512'] as const
export type IdpAlgorithm = typeof IDP_ALGORITHMS[number]
const HMAC_ALGORITHMS: readonly IdpAlgorithm[] = ['HS256', 'HS384', 'HS512']
const PUBLIC_KEY_ALGORITHMS: readonly IdpAlgorithm[] = ['RS256', 'PS256', 'ES256', 'EdDSA']
/** A claim name, or a dotted path into nested claims (`realm_access.roles`). */
const CLAIM_NAME = '^[^\\s]{1,128}$'

/**
 * The calls Switchboard may make to the application's backend (docs/integration.md#hooks):
 * the refusing ones (connect, subscribe, publish) wait for its answer; the others are events.
 */
export const HOOK_NAMES = ['connect', 'subscribe', 'publish', 'published', 'join', 'leave', 'disconnect'] as const
export type HookName = typeof HOOK_NAMES[number]
/** A HOOKS_ROOMS entry: a room id where `*` stands for any run of characters. */
const ROOM_PATTERN = '[a-z0-9_.:*-]{1,64}'

/**
 * Every environment variable the server reads, in one schema. Values arrive as strings;
 * they are converted and checked once at boot, and a bad value stops the start with a
 * message naming the variable. `.env.example` documents each one.
 */
const Duration = (fallback: string) => Type.String({ pattern: '^[0-9]+(ms|s|m|h|d)?$', default: fallback, description: 'seconds, or a number with a unit: 500ms, 30s, 15m, 12h, 30d' })
const Bool = (fallback: 'true' | 'false') => Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')], { default: fallback })

export const EnvSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], { default: 'development' }),
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),
  DATA_DIR: Type.String({ minLength: 1, default: './data', description: 'Everything the server writes: the default SQLite file and the development JWT secret' }),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^(sqlite:|postgres://|postgresql://)', description: 'default: sqlite:<DATA_DIR>/switchboard.db' })),
  DATABASE_SCHEMA: Type.Optional(Type.String({ pattern: '^[a-z_][a-z0-9_]{0,62}$', description: 'PostgreSQL schema (default: public)' })),
  DATABASE_POOL_MAX: Type.Integer({ minimum: 1, maximum: 1000, default: POOL_DEFAULTS.max, description: 'PostgreSQL: connections per node at most' }),
  DATABASE_POOL_IDLE_MS: Type.Integer({ minimum: 100, default: POOL_DEFAULTS.idleMs, description: 'PostgreSQL: a connection idle this long closes, down to one kept open' }),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  JWT_ISSUER: Type.String({ minLength: 1, default: 'switchboard' }),
  JWT_CLOCK_TOLERANCE: Duration('5s'),
  ACCESS_TOKEN_TTL: Duration('15m'),
  REFRESH_TOKEN_TTL: Duration('30d'),
  ACCOUNT_CACHE_MS: Type.Integer({ minimum: 100, maximum: 60_000, default: 10_000, description: 'How long an account found active is trusted before the store is asked again; connected users are re-checked this often' }),
  REVOKED_SESSIONS_MAX: Type.Integer({ minimum: 1000, default: 100_000, description: 'Revoked sessions each node remembers until their access tokens expire' }),
  ROOM_TOKEN_SECRET: Type.Optional(Type.String({ minLength: 1, description: 'The secret the application\'s backend signs room tokens with (HS256); at least 32 bytes, not JWT_SECRET nor IDP_HMAC_SECRET' })),
  ROOM_TOKEN_MAX_TTL: Duration('1h'),
  ADMIN_USERNAME: Type.Optional(Type.String({ pattern: `^${USERNAME_PATTERN}$` })),
  ADMIN_PASSWORD: Type.Optional(Type.String({ minLength: 8, maxLength: 128 })),
  ALLOW_REGISTRATION: Bool('true'),
  AUTH_ACCOUNTS: Type.Optional(Type.Union([Type.Literal('builtin'), Type.Literal('external'), Type.Literal('both')], { description: 'Whose accounts sign in: builtin (username and password), external (the identity provider\'s tokens only) or both; default both when an IDP_* key source is set, else builtin' })),
  IDP_JWKS_URL: Type.Optional(Type.String({ pattern: '^https?://', description: 'The identity provider\'s JWKS document (https:// in production, except on loopback)' })),
  IDP_PUBLIC_KEY_FILE: Type.Optional(Type.String({ minLength: 1, description: 'A PEM public key (SPKI) the identity provider signs with' })),
  IDP_HMAC_SECRET: Type.Optional(Type.String({ minLength: 1, description: 'The secret the application\'s backend signs HS256/384/512 tokens with; at least 32 bytes, not JWT_SECRET' })),
  IDP_ALGORITHMS: Type.Optional(Type.String({ pattern: `^(${IDP_ALGORITHMS.join('|')})(,(${IDP_ALGORITHMS.join('|')}))*$`, description: 'Comma-separated; default: RS256,PS256,ES256,EdDSA with a public key source, HS256,HS384,HS512 with IDP_HMAC_SECRET' })),
  IDP_ISSUER: Type.Optional(Type.String({ minLength: 1, description: 'The iss of the identity provider\'s tokens: required with a key source, must differ from JWT_ISSUER' })),
  IDP_AUDIENCE: Type.Optional(Type.String({ minLength: 1, description: 'An aud the tokens must carry (comma-separated: any of them); required with a key source' })),
  IDP_CLOCK_TOLERANCE: Duration('5s'),
  IDP_USER_CLAIM: Type.String({ pattern: CLAIM_NAME, default: 'sub' }),
  IDP_USER_PREFIX: Type.String({ pattern: `^${EXTERNAL_PREFIX_PATTERN}$`, default: 'ext:', description: 'Put before the claim\'s value to make the user id; a lowercase word and a colon, so no built-in username can equal it' }),
  IDP_ADMIN_CLAIM: Type.Optional(Type.String({ pattern: CLAIM_NAME })),
  IDP_ADMIN_VALUE: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  IDP_NAME_CLAIM: Type.Optional(Type.String({ pattern: CLAIM_NAME })),
  IDP_JWKS_MAX_AGE: Duration('10m'),
  IDP_JWKS_COOLDOWN: Duration('30s'),
  IDP_JWKS_MAX_STALE: Duration('1h'),
  CORS_ORIGINS: Type.String({ default: '' }),
  TRUST_PROXY: Type.String({ default: 'false' }),
  LOGIN_RATE_LIMIT: Type.Integer({ minimum: 1, default: 10 }),
  LOGIN_FAILURES_BEFORE_DELAY: Type.Integer({ minimum: 1, default: 5, description: 'Failed sign-ins for one username from one address answered at once; each further one doubles a wait from 1 s' }),
  LOGIN_MAX_DELAY: Duration('15m'),
  LOGIN_FAILURES_PER_ADDRESS: Type.Integer({ minimum: 1, default: 20, description: 'Failed sign-ins from one address, any usernames, per LOGIN_FAILURE_WINDOW' }),
  LOGIN_FAILURE_WINDOW: Duration('15m'),
  RATE_LIMIT_MAX: Type.Integer({ minimum: 1, default: 600 }),
  HTTP_HEADERS_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 10_000, description: 'A request whose headers (and, with TLS, its handshake) are not complete this long after it began is cut (408)' }),
  HTTP_REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 30_000, description: 'A request not received whole (headers and body) this long after it began is cut (408)' }),
  HTTP_CONNECTION_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 60_000, description: 'A connection with no traffic either way for this long while a request is open is closed' }),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 72_000, description: 'An idle keep-alive connection is closed after this long' }),
  HTTP_MAX_CONNECTIONS_PER_IP: Type.Integer({ minimum: 0, default: 256, description: 'Open HTTP connections per peer address (trusted proxies exempt); 0: no cap' }),
  TLS_CERT_FILE: Type.Optional(Type.String({ minLength: 1 })),
  TLS_KEY_FILE: Type.Optional(Type.String({ minLength: 1 })),
  PASSWORD_HASH_COST: Type.Integer({ minimum: 10, maximum: 20, default: 15, description: 'log2 of scrypt N' }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10_000 }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 32, description: 'Bearer token for remote Prometheus scrapes of /metrics' })),
  WS_ALLOWED_ORIGINS: Type.String({ default: '' }),
  WS_HANDSHAKES_PER_IP_PER_MINUTE: Type.Integer({ minimum: 1, default: 120 }),
  WS_MAX_CONNECTIONS_PER_USER: Type.Integer({ minimum: 1, default: 20 }),
  WS_MAX_CONNECTIONS_PER_IP: Type.Integer({ minimum: 1, default: 1000 }),
  WS_MAX_MESSAGE_BYTES: Type.Integer({ minimum: 256, maximum: 16 * 1024 * 1024, default: 65_536 }),
  WS_MESSAGES_PER_SECOND: Type.Number({ exclusiveMinimum: 0, default: 50 }),
  WS_MESSAGES_BURST: Type.Integer({ minimum: 1, default: 100 }),
  WS_MAX_SUBSCRIPTIONS: Type.Integer({ minimum: 1, default: 100 }),
  WS_MAX_BUFFERED_BYTES: Type.Integer({ minimum: 1024, default: 1_048_576 }),
  WS_HEARTBEAT_MS: Type.Integer({ minimum: 100, default: 25_000 }),
  WS_IDLE_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 60_000 }),
  WS_DRAIN_MS: Type.Integer({ minimum: 0, default: 5_000 }),
  WS_COMPRESSION: Type.Union([Type.Literal('off'), Type.Literal('on')], { default: 'off', description: 'permessage-deflate for clients that offer it' }),
  WS_COMPRESSION_THRESHOLD: Type.Integer({ minimum: 0, default: 1024, description: 'Frames with fewer payload bytes go uncompressed even with WS_COMPRESSION=on' }),
  AUTHORIZATION_CACHE_MS: Type.Integer({ minimum: 0, maximum: 60_000, default: 10_000, description: 'How long a granted room operation is remembered; room changes drop it at once; 0: ask the store every time' }),
  PUBLISH_RATE_PER_USER: Type.Number({ minimum: 0, default: 100, description: 'Publishes per second per user or API key, over all its connections and REST, cluster-wide with Redis; 0: no limit' }),
  PUBLISH_BURST_PER_USER: Type.Integer({ minimum: 1, default: 200 }),
  HISTORY_STORE: Type.Optional(Type.Union([Type.Literal('memory'), Type.Literal('sqlite')], { description: 'Where the embedded engine keeps history: sqlite (in the DATABASE_URL file, survives a restart; the default with a sqlite: file) or memory (lost on restart; the default otherwise); with REDIS_URL history is Redis\'s' })),
  HISTORY_MEMORY_BYTES: Type.Integer({ minimum: 1_048_576, default: 268_435_456, description: 'Bytes of history the in-memory engine keeps for all rooms together; past it the oldest publications of the largest rooms go' }),
  HISTORY_ROOM_BYTES: Type.Integer({ minimum: 65_536, default: 8_388_608, description: 'Bytes of history one room keeps (either engine); past it its oldest publications go' }),
  HISTORY_PAGE_BYTES: Type.Integer({ minimum: 65_536, default: 1_048_576, description: 'Bytes of publications one history page (or recovery) carries at most' }),
  BROADCAST_MAX_ROOMS: Type.Integer({ minimum: 1, maximum: 1000, default: 100, description: 'Rooms one POST /broadcast may publish to' }),
  NODE_REPORT_INTERVAL_MS: Type.Integer({ minimum: 100, maximum: 60_000, default: 5000, description: 'How often each node reports its figures (GET /admin/nodes); a node silent for three intervals is dropped' }),
  ARCHIVE_BY_DEFAULT: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false'), Type.Literal('1'), Type.Literal('0')], { description: 'Whether new rooms keep an archive beyond the recovery window when their creator does not say (`archive`); default: true with HISTORY_STORE=sqlite, false otherwise' })),
  ARCHIVE_MAX_DAYS: Type.Integer({ minimum: 1, maximum: 3650, default: 90, description: 'Most days an ordinary user may give a room\'s archive (archiveDays); admins may set up to 3650' }),
  ARCHIVE_ROOM_BYTES: Type.Integer({ minimum: 1_048_576, default: 268_435_456, description: 'Bytes one room\'s archive keeps; past it the sweep deletes its oldest publications' }),
  ARCHIVE_QUEUE_ROOM_BYTES: Type.Integer({ minimum: 65_536, default: 16_777_216, description: 'Cluster archive (REDIS_URL + PostgreSQL): bytes of one room\'s publications that may wait in Redis for the database; past it publishes to the room are refused with a temporary error until the database catches up' }),
  MAX_ROOMS_PER_USER: Type.Integer({ minimum: 1, default: 50, description: 'Rooms an ordinary user may have created (and not deleted); admins are exempt' }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://', description: 'Redis for scale-out (pub/sub, history, presence); unset: the in-memory engine' })),
  // Braces would break the per-room hash tag that keeps a room's keys in one Cluster slot.
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Seeds of a Redis Cluster (comma-separated host:port, or redis://[user:password@]host:port, rediss:// for TLS): the Redis engine runs on the cluster with sharded pub/sub; not with REDIS_URL or REDIS_SENTINELS' })),
  REDIS_SENTINELS: Type.Optional(Type.String({ pattern: '^[^,\\s:]+:[0-9]{1,5}(,[^,\\s:]+:[0-9]{1,5})*$', description: 'host:port of Redis Sentinels (comma-separated): the master named REDIS_SENTINEL_MASTER is found through them and followed on failover' })),
  REDIS_SENTINEL_MASTER: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$', default: 'mymaster' }),
  REDIS_SENTINEL_PASSWORD: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_WAIT_REPLICAS: Type.Integer({ minimum: 0, maximum: 16, default: 0, description: 'Replicas that must confirm a publication (Redis WAIT) before it is acknowledged; 0: the primary alone' }),
  REDIS_WAIT_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: 1500, default: 500 }),
  REDIS_KEY_PREFIX: Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', default: 'sb:' }),
  PRESENCE_TTL_SECONDS: Type.Integer({ minimum: 2, maximum: 3600, default: 30 }),
  HOOKS_URL: Type.Optional(Type.String({ pattern: '^https?://', description: 'The application backend\'s endpoint for hooks (docs/integration.md#hooks); unset: no hooks' })),
  HOOKS_SECRET: Type.Optional(Type.String({ minLength: 1, description: 'HMAC-SHA256 key of the hooks\' signature header; at least 32 bytes, required with HOOKS_URL' })),
  HOOKS_EVENTS: Type.Optional(Type.String({ pattern: `^(${HOOK_NAMES.join('|')})(,(${HOOK_NAMES.join('|')}))*$`, description: 'The hooks that are on, comma-separated; required with HOOKS_URL' })),
  HOOKS_ROOMS: Type.String({ pattern: `^${ROOM_PATTERN}(,${ROOM_PATTERN})*$`, default: '*', description: 'Rooms the room hooks (subscribe, publish, published, join, leave) apply to: ids or patterns with *, comma-separated' }),
  HOOKS_TIMEOUT_MS: Type.Integer({ minimum: 10, maximum: 30_000, default: 1000, description: 'One hook call\'s deadline, connecting and reading the answer included' }),
  HOOKS_CONCURRENCY: Type.Integer({ minimum: 2, maximum: 10_000, default: 64, description: 'Hook calls in flight per node at most (events may take half)' }),
  HOOKS_RETRIES: Type.Integer({ minimum: 0, maximum: 10, default: 3, description: 'Retries of an event the backend did not take, with backoff, before it is dropped' }),
  HOOKS_QUEUE_BYTES: Type.Integer({ minimum: 65_536, default: 8_388_608, description: 'Bytes of events waiting (queued or between retries) per node; past it new events are dropped' })
})

type Env = Static<typeof EnvSchema>

export interface Config {
  env: Env['NODE_ENV']
  host: string
  port: number
  logLevel: Env['LOG_LEVEL']
  dataDir: string
  databaseUrl: string
  /** PostgreSQL schema to use instead of the default search_path (ignored for SQLite). */
  databaseSchema: string | null
  /** PostgreSQL's connection pool (ignored for SQLite). */
  databasePool: { max: number, idleMs: number }
  jwt: {
    secret: string
    /** True when the secret was generated for development rather than configured. */
    generated: boolean
    issuer: string
    clockToleranceSeconds: number
    accessTokenTtlSeconds: number
  }
  refreshTokenTtlSeconds: number
  /** Revocation (src/auth/revocation.ts): the account check's cache, and the denylist's bound per node. */
  revocation: { accountCacheMs: number, maxRevokedSessions: number }
  admin: { username: string, password: string } | null
  allowRegistration: boolean
  /** Whose accounts sign in: Switchboard's own (password, its tokens), the identity provider's, or both. */
  accounts: 'builtin' | 'external' | 'both'
  /** The application's identity provider (docs/integration.md); null: none configured. */
  idp: IdpConfig | null
  /**
   * Room tokens (docs/integration.md, "Room tokens"): the backend's HS256 secret (null: only
   * the identity provider's keys sign them, if configured), and the longest life one may have left.
   */
  roomTokens: { secret: string | null, maxTtlSeconds: number }
  corsOrigins: string[]
  /** Fastify's trustProxy: false, true, a hop count, or a list of addresses/CIDRs. */
  trustProxy: boolean | number | string[]
  loginRateLimit: number
  /** Sign-in failures, counted per (address, username) and per address: src/limits/login-throttle.ts. */
  loginThrottle: {
    /** Failures of one (address, username) answered at once; each further one doubles a wait from 1 s. */
    failuresBeforeDelay: number
    /** The doubling wait stops growing here. */
    maxDelayMs: number
    /** Failures from one address, any usernames, per window; past them every attempt waits for the window's end. */
    failuresPerAddress: number
    /** The address's window, fixed from its first failure. */
    addressWindowMs: number
  }
  rateLimitMax: number
  /** Deadlines and the connection cap of the HTTP server, before any route runs. */
  http: {
    headersTimeoutMs: number
    requestTimeoutMs: number
    connectionTimeoutMs: number
    keepAliveTimeoutMs: number
    /** Open connections per peer address, upgraded WebSockets and trusted proxies not counted; null: no cap. */
    maxConnectionsPerIp: number | null
  }
  tls: { cert: Buffer, key: Buffer } | null
  shutdownGraceMs: number
  /** log2 of scrypt's N for new password hashes. */
  passwordHashCost: number
  /** Static bearer token a remote Prometheus presents on /metrics; null: loopback or admin JWT only. */
  metricsToken: string | null
  ws: {
    /** Origins allowed to open WebSockets; empty means same origin as the Host header only; '*' means any. */
    allowedOrigins: string[]
    handshakesPerIpPerMinute: number
    maxConnectionsPerUser: number
    maxConnectionsPerIp: number
    maxMessageBytes: number
    messagesPerSecond: number
    messagesBurst: number
    maxSubscriptions: number
    maxBufferedBytes: number
    heartbeatMs: number
    idleTimeoutMs: number
    drainMs: number
    authorizationCacheMs: number
    /** permessage-deflate (WS_COMPRESSION=on): payloads below `threshold` bytes go uncompressed; null: off, never negotiated. */
    compression: { threshold: number } | null
  }
  /** Per user (or API key) over every connection and REST, on every node; null: unlimited. */
  publishRate: { perSecond: number, burst: number } | null
  /** History bounds, by bytes (publicationBytes): docs/security.md#history-memory. */
  history: {
    /**
     * Where history lives: `sqlite` (the embedded engine over the store's SQLite file, survives
     * a restart), `memory` (the embedded engine alone) or `redis` (the Redis engine's).
     */
    store: 'memory' | 'sqlite' | 'redis'
    /** All rooms' history in the in-memory engine (unused with Redis). */
    memoryBytes: number
    /** One room's history, either engine. */
    roomBytes: number
    /** One history page or recovery; over WebSocket also at most half of ws.maxBufferedBytes. */
    pageBytes: number
  }
  /** The archive beyond the recovery window (docs/api.md#archive). */
  archive: {
    /** New rooms archive unless their creator says otherwise (ARCHIVE_BY_DEFAULT). */
    byDefault: boolean
    /** Most archiveDays an ordinary user may set; admins up to the schema's bound. */
    maxDays: number
    /** Bytes one room's archive keeps (the SQLite store's sweep enforces it). */
    roomBytes: number
    /** Cluster archive: bytes one room's queue in Redis holds before its publishes are refused. */
    queueRoomBytes: number
  }
  /** Rooms an ordinary user may have created; admins are exempt. */
  maxRoomsPerUser: number
  /** The server API for backends (docs/api.md): rooms per broadcast, and how often nodes report. */
  serverApi: { broadcastMaxRooms: number, nodeReportIntervalMs: number }
  /** The Redis engine (scale-out); null: the in-memory engine of this process. */
  redis: {
    url: string
    /** Seeds of a Redis Cluster (the URL then carries their credentials and TLS); null: one Redis. */
    clusterNodes: Array<{ host: string, port: number }> | null
    /** Sentinels to find the master through (the URL's host and port are then unused); null: the URL's host. */
    sentinels: Array<{ host: string, port: number }> | null
    sentinelMaster: string
    sentinelPassword?: string
    /** Replicas that must confirm a publication before it is acknowledged (0: none), and for how long it may wait. */
    waitReplicas: number
    waitTimeoutMs: number
    keyPrefix: string
    /** A dead node's connections leave presence within this many seconds. */
    presenceTtlSeconds: number
  } | null
  /** Calls to the application's backend (src/hooks); null: HOOKS_URL unset. */
  hooks: HooksConfig | null
}

export interface HooksConfig {
  url: string
  /** The HMAC-SHA256 key every call is signed with. */
  secret: string
  events: ReadonlySet<HookName>
  /** Room patterns the room hooks apply to (`*`: any run of characters). */
  rooms: string[]
  timeoutMs: number
  concurrency: number
  retries: number
  queueBytes: number
}

export interface IdpConfig {
  /** Where the public keys come from: a JWKS URL or one PEM key; null with IDP_HMAC_SECRET alone. */
  publicKeys: { jwksUrl: string } | { pem: string } | null
  hmacSecret: string | null
  algorithms: IdpAlgorithm[]
  issuer: string
  audience: string[]
  clockToleranceSeconds: number
  /** Claims mapping: the user id's claim and prefix, the admin claim and value, the display name's claim. */
  userClaim: string
  userPrefix: string
  admin: { claim: string, value: string } | null
  nameClaim: string | null
  /** JWKS cache: refetched after maxAgeMs, at most once per cooldownMs for unknown kids, served stale up to maxStaleMs. */
  jwks: { maxAgeMs: number, cooldownMs: number, maxStaleMs: number }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Parses `15m`-style durations (a bare number means seconds) into seconds. */
export function parseDurationSeconds (value: string): number {
  const match = /^([0-9]+)(ms|s|m|h|d)?$/.exec(value)
  if (match === null) throw new ConfigError(`invalid duration "${value}"`)
  const n = Number(match[1])
  const unit = match[2] ?? 's'
  const factor = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[unit] ?? 1
  return n * factor
}

function parseTrustProxy (value: string): Config['trustProxy'] {
  const v = value.trim()
  if (v === 'false' || v === '0' || v === '') return false
  if (v === 'true') return true
  if (/^[0-9]+$/.test(v)) return Number(v)
  const list = v.split(',').map(s => s.trim()).filter(Boolean)
  for (const entry of list) {
    if (!/^[0-9a-fA-F:.]+(\/[0-9]{1,3})?$/.test(entry) && !['loopback', 'linklocal', 'uniquelocal'].includes(entry)) {
      throw new ConfigError(`TRUST_PROXY: "${entry}" is not an IP address, CIDR range, hop count, true or false`)
    }
  }
  return list
}

/**
 * ROOM_TOKEN_SECRET is a key of its own: were it JWT_SECRET or IDP_HMAC_SECRET, a token signed
 * for one purpose would carry a valid signature for the other (the `typ` claim still tells
 * them apart, but the keys are the first wall).
 */
function roomTokenSettings (env: Env, jwtSecret: string): Config['roomTokens'] {
  const maxTtlSeconds = parseDurationSeconds(env.ROOM_TOKEN_MAX_TTL)
  if (maxTtlSeconds < 1 || maxTtlSeconds > 86_400) throw new ConfigError('ROOM_TOKEN_MAX_TTL: must be between 1s and 24h')
  const secret = env.ROOM_TOKEN_SECRET ?? null
  if (secret !== null) {
    if (Buffer.byteLength(secret) < 32) throw new ConfigError('ROOM_TOKEN_SECRET: must be at least 32 bytes')
    if (secret === jwtSecret) throw new ConfigError('ROOM_TOKEN_SECRET: must differ from JWT_SECRET')
    if (secret === env.IDP_HMAC_SECRET) throw new ConfigError('ROOM_TOKEN_SECRET: must differ from IDP_HMAC_SECRET')
  }
  return { secret, maxTtlSeconds }
}

/**
 * Development convenience: a random secret generated once and kept under DATA_DIR, so tokens
 * survive restarts. Production must configure JWT_SECRET explicitly.
 */
function developmentSecret (dataDir: string): string {
  const file = join(dataDir, 'jwt-secret')
  if (existsSync(file)) {
    const stored = readFileSync(file, 'utf8').trim()
    if (stored.length >= 32) return stored
  }
  mkdirSync(dirname(file), { recursive: true })
  const secret = randomBytes(48).toString('base64url')
  writeFileSync(file, secret + '\n', { mode: 0o600 })
  return secret
}

/**
 * Variables that were removed, with what took their place. Set, they stop the start: ignored,
 * they would leave an operator believing in a protection that is gone.
 */
const RETIRED: Record<string, string> = {
  LOGIN_USER_FAILURE_LIMIT: 'the per-username lockout let anyone lock a user out. Failures now count per address and username (LOGIN_FAILURES_BEFORE_DELAY, LOGIN_MAX_DELAY) and per address (LOGIN_FAILURES_PER_ADDRESS per LOGIN_FAILURE_WINDOW): see docs/security.md#sign-in-throttling'
}

/**
 * Reads and validates the configuration from an environment object (process.env by default).
 * Throws ConfigError naming the first bad variable.
 */
export function loadConfig (source: Record<string, string | undefined> = process.env): Config {
  for (const [variable, instead] of Object.entries(RETIRED)) {
    if (source[variable] !== undefined && source[variable] !== '') throw new ConfigError(`${variable}: no longer read; ${instead}`)
  }
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = source[key]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const converted = Value.Convert(EnvSchema, raw) as Record<string, unknown>
  // Value.Convert parses integers with parseInt, so PORT=1e3 would become 1 and 3.5 would
  // become 3; only plain digits count, anything else stays a string and fails the check below.
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const value = source[key]
    if (schema.type === 'integer' && value !== undefined && value !== '' && !/^[0-9]+$/.test(value)) converted[key] = value
  }
  const withDefaults = Value.Default(EnvSchema, converted)
  const firstError = Value.Errors(EnvSchema, withDefaults).First()
  if (firstError !== undefined) {
    const variable = firstError.path.replace(/^\//, '') || 'environment'
    // A connection string carries the database (or Redis) password.
    const shown = source[variable] === undefined ? '(unset)' : /SECRET|PASSWORD|DATABASE_URL|REDIS_URL|HOOKS_URL/.test(variable) ? '(hidden)' : JSON.stringify(source[variable])
    throw new ConfigError(`${variable}: ${firstError.message} (got ${shown})`)
  }
  const env = withDefaults as Env
  const production = env.NODE_ENV === 'production'
  const dataDir = resolve(env.DATA_DIR)
  // Derived, not a fixed ./data path: a volume mounted at DATA_DIR must hold the database.
  const databaseUrl = env.DATABASE_URL ?? `sqlite:${join(dataDir, 'switchboard.db')}`

  let secret = env.JWT_SECRET
  let generated = false
  if (secret === undefined) {
    if (production) throw new ConfigError('JWT_SECRET: required when NODE_ENV=production (at least 32 bytes)')
    secret = developmentSecret(dataDir)
    generated = true
  } else if (Buffer.byteLength(secret) < 32) {
    if (production) throw new ConfigError('JWT_SECRET: must be at least 32 bytes when NODE_ENV=production')
  }

  if ((env.ADMIN_USERNAME === undefined) !== (env.ADMIN_PASSWORD === undefined)) {
    throw new ConfigError('ADMIN_USERNAME and ADMIN_PASSWORD: set both or neither')
  }
  if ((env.TLS_CERT_FILE === undefined) !== (env.TLS_KEY_FILE === undefined)) {
    throw new ConfigError('TLS_CERT_FILE and TLS_KEY_FILE: set both or neither')
  }
  let tls: Config['tls'] = null
  if (env.TLS_CERT_FILE !== undefined && env.TLS_KEY_FILE !== undefined) {
    tls = { cert: readFileOrFail('TLS_CERT_FILE', env.TLS_CERT_FILE), key: readFileOrFail('TLS_KEY_FILE', env.TLS_KEY_FILE) }
  }

  const accessTokenTtlSeconds = parseDurationSeconds(env.ACCESS_TOKEN_TTL)
  const refreshTokenTtlSeconds = parseDurationSeconds(env.REFRESH_TOKEN_TTL)
  // The drain must fit in the grace period, with room for closing handshakes and the store.
  if (env.SHUTDOWN_GRACE_MS < env.WS_DRAIN_MS + 3000) throw new ConfigError(`SHUTDOWN_GRACE_MS: must be at least WS_DRAIN_MS + 3000 (${env.WS_DRAIN_MS + 3000})`)

  if (env.REDIS_CLUSTER_NODES !== undefined && env.REDIS_URL !== undefined) throw new ConfigError('REDIS_CLUSTER_NODES: not with REDIS_URL (one Redis or a cluster, not both; put credentials and rediss:// in the cluster seeds)')
  if (env.REDIS_CLUSTER_NODES !== undefined && env.REDIS_SENTINELS !== undefined) throw new ConfigError('REDIS_CLUSTER_NODES: not with REDIS_SENTINELS (a Redis Cluster fails over by itself)')
  const cluster = env.REDIS_CLUSTER_NODES === undefined ? null : clusterSeeds(env.REDIS_CLUSTER_NODES)
  if (env.REDIS_URL !== undefined && !URL.canParse(env.REDIS_URL)) throw new ConfigError('REDIS_URL: not a valid URL (redis://[user:password@]host[:port][/db])')
  if (env.REDIS_SENTINELS !== undefined && env.REDIS_URL === undefined) throw new ConfigError('REDIS_SENTINELS: needs REDIS_URL too (it switches on the Redis engine and carries the password and database; its host is replaced by the master the sentinels name)')
  if (env.REDIS_SENTINELS !== undefined && env.REDIS_URL?.startsWith('rediss:') === true) throw new ConfigError('REDIS_SENTINELS: TLS (rediss://) through sentinels is not supported yet; use redis:// on a private network, or a TLS endpoint without sentinels')

  const loginMaxDelaySeconds = parseDurationSeconds(env.LOGIN_MAX_DELAY)
  const loginFailureWindowSeconds = parseDurationSeconds(env.LOGIN_FAILURE_WINDOW)
  // Longer than an hour, the wait is a lockout for the one person who legitimately forgot a
  // password on that device; it also stays well inside the day a pair's failures are remembered.
  if (loginMaxDelaySeconds < 1 || loginMaxDelaySeconds > 3600) throw new ConfigError('LOGIN_MAX_DELAY: must be between 1s (the first wait) and 1h')
  if (loginFailureWindowSeconds < 1) throw new ConfigError('LOGIN_FAILURE_WINDOW: must be at least 1s')
  // Node refuses a headers deadline past the request's: the headers are part of the request.
  if (env.HTTP_HEADERS_TIMEOUT_MS > env.HTTP_REQUEST_TIMEOUT_MS) throw new ConfigError(`HTTP_HEADERS_TIMEOUT_MS: must not exceed HTTP_REQUEST_TIMEOUT_MS (${env.HTTP_REQUEST_TIMEOUT_MS})`)

  if (accessTokenTtlSeconds < 10) throw new ConfigError('ACCESS_TOKEN_TTL: must be at least 10s')
  if (refreshTokenTtlSeconds < accessTokenTtlSeconds) throw new ConfigError('REFRESH_TOKEN_TTL: must not be shorter than ACCESS_TOKEN_TTL')

  const idp = identityProvider(env, production, secret)
  const accounts = env.AUTH_ACCOUNTS ?? (idp === null ? 'builtin' : 'both')
  if (accounts !== 'builtin' && idp === null) throw new ConfigError(`AUTH_ACCOUNTS: ${accounts} needs the identity provider's keys (IDP_JWKS_URL, IDP_PUBLIC_KEY_FILE or IDP_HMAC_SECRET)`)
  if (accounts === 'external' && env.ADMIN_USERNAME !== undefined) throw new ConfigError('ADMIN_USERNAME: with AUTH_ACCOUNTS=external nobody signs in with a password; make admins with IDP_ADMIN_CLAIM and IDP_ADMIN_VALUE')

  const roomTokens = roomTokenSettings(env, secret)

  return {
    env: env.NODE_ENV,
    host: env.HOST,
    port: env.PORT,
    logLevel: env.LOG_LEVEL,
    dataDir,
    databaseUrl,
    databaseSchema: env.DATABASE_SCHEMA ?? null,
    databasePool: { max: env.DATABASE_POOL_MAX, idleMs: env.DATABASE_POOL_IDLE_MS },
    jwt: {
      secret,
      generated,
      issuer: env.JWT_ISSUER,
      clockToleranceSeconds: parseDurationSeconds(env.JWT_CLOCK_TOLERANCE),
      accessTokenTtlSeconds
    },
    refreshTokenTtlSeconds,
    revocation: { accountCacheMs: env.ACCOUNT_CACHE_MS, maxRevokedSessions: env.REVOKED_SESSIONS_MAX },
    admin: env.ADMIN_USERNAME !== undefined && env.ADMIN_PASSWORD !== undefined
      ? { username: env.ADMIN_USERNAME, password: env.ADMIN_PASSWORD }
      : null,
    allowRegistration: env.ALLOW_REGISTRATION === 'true' || env.ALLOW_REGISTRATION === '1',
    accounts,
    idp,
    roomTokens,
    corsOrigins: env.CORS_ORIGINS.split(',').map(s => s.trim()).filter(Boolean),
    trustProxy: parseTrustProxy(env.TRUST_PROXY),
    loginRateLimit: env.LOGIN_RATE_LIMIT,
    loginThrottle: {
      failuresBeforeDelay: env.LOGIN_FAILURES_BEFORE_DELAY,
      maxDelayMs: loginMaxDelaySeconds * 1000,
      failuresPerAddress: env.LOGIN_FAILURES_PER_ADDRESS,
      addressWindowMs: loginFailureWindowSeconds * 1000
    },
    rateLimitMax: env.RATE_LIMIT_MAX,
    http: {
      headersTimeoutMs: env.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: env.HTTP_REQUEST_TIMEOUT_MS,
      connectionTimeoutMs: env.HTTP_CONNECTION_TIMEOUT_MS,
      keepAliveTimeoutMs: env.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      maxConnectionsPerIp: env.HTTP_MAX_CONNECTIONS_PER_IP === 0 ? null : env.HTTP_MAX_CONNECTIONS_PER_IP
    },
    tls,
    shutdownGraceMs: env.SHUTDOWN_GRACE_MS,
    passwordHashCost: env.PASSWORD_HASH_COST,
    metricsToken: env.METRICS_TOKEN ?? null,
    ws: {
      allowedOrigins: env.WS_ALLOWED_ORIGINS.split(',').map(o => o.trim()).filter(Boolean),
      handshakesPerIpPerMinute: env.WS_HANDSHAKES_PER_IP_PER_MINUTE,
      maxConnectionsPerUser: env.WS_MAX_CONNECTIONS_PER_USER,
      maxConnectionsPerIp: env.WS_MAX_CONNECTIONS_PER_IP,
      maxMessageBytes: env.WS_MAX_MESSAGE_BYTES,
      messagesPerSecond: env.WS_MESSAGES_PER_SECOND,
      messagesBurst: env.WS_MESSAGES_BURST,
      maxSubscriptions: env.WS_MAX_SUBSCRIPTIONS,
      maxBufferedBytes: env.WS_MAX_BUFFERED_BYTES,
      heartbeatMs: env.WS_HEARTBEAT_MS,
      idleTimeoutMs: env.WS_IDLE_TIMEOUT_MS,
      drainMs: env.WS_DRAIN_MS,
      compression: env.WS_COMPRESSION === 'on' ? { threshold: env.WS_COMPRESSION_THRESHOLD } : null,
      authorizationCacheMs: env.AUTHORIZATION_CACHE_MS
    },
    publishRate: env.PUBLISH_RATE_PER_USER === 0 ? null : { perSecond: env.PUBLISH_RATE_PER_USER, burst: env.PUBLISH_BURST_PER_USER },
    history: { store: historyStore(env, databaseUrl), memoryBytes: env.HISTORY_MEMORY_BYTES, roomBytes: env.HISTORY_ROOM_BYTES, pageBytes: env.HISTORY_PAGE_BYTES },
    archive: { byDefault: archiveByDefault(env, historyStore(env, databaseUrl)), maxDays: env.ARCHIVE_MAX_DAYS, roomBytes: env.ARCHIVE_ROOM_BYTES, queueRoomBytes: env.ARCHIVE_QUEUE_ROOM_BYTES },
    maxRoomsPerUser: env.MAX_ROOMS_PER_USER,
    serverApi: { broadcastMaxRooms: env.BROADCAST_MAX_ROOMS, nodeReportIntervalMs: env.NODE_REPORT_INTERVAL_MS },
    redis: env.REDIS_URL === undefined && cluster === null
      ? null
      : {
          url: cluster?.url ?? env.REDIS_URL ?? '',
          clusterNodes: cluster?.nodes ?? null,
          sentinels: env.REDIS_SENTINELS === undefined
            ? null
            : env.REDIS_SENTINELS.split(',').map((entry) => {
              const at = entry.lastIndexOf(':')
              return { host: entry.slice(0, at), port: Number(entry.slice(at + 1)) }
            }),
          sentinelMaster: env.REDIS_SENTINEL_MASTER,
          ...(env.REDIS_SENTINEL_PASSWORD === undefined ? {} : { sentinelPassword: env.REDIS_SENTINEL_PASSWORD }),
          waitReplicas: env.REDIS_WAIT_REPLICAS,
          waitTimeoutMs: env.REDIS_WAIT_TIMEOUT_MS,
          keyPrefix: env.REDIS_KEY_PREFIX,
          presenceTtlSeconds: env.PRESENCE_TTL_SECONDS
        },
    hooks: hooksConfig(env, secret)
  }
}

/**
 * HOOKS_*: null without HOOKS_URL. A URL asks for a secret (an unsigned call could be forged
 * by anyone who can reach the backend) and for the list of hooks: a refusing hook makes every
 * connect, subscribe or publish wait for the backend, so none is switched on by default.
 */
function hooksConfig (env: Env, jwtSecret: string): HooksConfig | null {
  if (env.HOOKS_URL === undefined) {
    for (const variable of ['HOOKS_SECRET', 'HOOKS_EVENTS'] as const) {
      if (env[variable] !== undefined) throw new ConfigError(`${variable}: set without HOOKS_URL`)
    }
    return null
  }
  if (!URL.canParse(env.HOOKS_URL)) throw new ConfigError('HOOKS_URL: not a valid URL')
  if (env.HOOKS_SECRET === undefined) throw new ConfigError('HOOKS_SECRET: required with HOOKS_URL (at least 32 bytes; the backend checks each call\'s signature with it)')
  if (Buffer.byteLength(env.HOOKS_SECRET) < 32) throw new ConfigError('HOOKS_SECRET: must be at least 32 bytes')
  if (env.HOOKS_SECRET === jwtSecret) throw new ConfigError('HOOKS_SECRET: must differ from JWT_SECRET (the backend holds it)')
  if (env.HOOKS_EVENTS === undefined) throw new ConfigError(`HOOKS_EVENTS: required with HOOKS_URL (the hooks to call, comma-separated among ${HOOK_NAMES.join(',')})`)
  return {
    url: env.HOOKS_URL,
    secret: env.HOOKS_SECRET,
    events: new Set(env.HOOKS_EVENTS.split(',') as HookName[]),
    rooms: [...new Set(env.HOOKS_ROOMS.split(','))],
    timeoutMs: env.HOOKS_TIMEOUT_MS,
    concurrency: env.HOOKS_CONCURRENCY,
    retries: env.HOOKS_RETRIES,
    queueBytes: env.HOOKS_QUEUE_BYTES
  }
}

/**
 * The identity provider's settings, or null when no key source is set. Every rule that keeps
 * a confusion out is checked here, at boot: an HMAC algorithm only with IDP_HMAC_SECRET (so a
 * public key is never used as an HMAC secret), a public-key algorithm only with a public key
 * source, an issuer and an audience always, an issuer that is not Switchboard's own (tokens
 * are routed by it: src/auth/token-verifier.ts).
 */
function identityProvider (env: Env, production: boolean, jwtSecret: string): IdpConfig | null {
  const { IDP_JWKS_URL: jwksUrl, IDP_PUBLIC_KEY_FILE: keyFile, IDP_HMAC_SECRET: hmacSecret } = env
  if (jwksUrl === undefined && keyFile === undefined && hmacSecret === undefined) {
    for (const variable of ['IDP_ISSUER', 'IDP_AUDIENCE', 'IDP_ALGORITHMS', 'IDP_ADMIN_CLAIM', 'IDP_ADMIN_VALUE', 'IDP_NAME_CLAIM'] as const) {
      if (env[variable] !== undefined) throw new ConfigError(`${variable}: set without a key source (IDP_JWKS_URL, IDP_PUBLIC_KEY_FILE or IDP_HMAC_SECRET)`)
    }
    return null
  }
  if (jwksUrl !== undefined && keyFile !== undefined) throw new ConfigError('IDP_JWKS_URL and IDP_PUBLIC_KEY_FILE: set one or the other')
  if (env.IDP_ISSUER === undefined) throw new ConfigError('IDP_ISSUER: required with IDP_JWKS_URL, IDP_PUBLIC_KEY_FILE or IDP_HMAC_SECRET (the iss of the provider\'s tokens)')
  if (env.IDP_AUDIENCE === undefined) throw new ConfigError('IDP_AUDIENCE: required with IDP_JWKS_URL, IDP_PUBLIC_KEY_FILE or IDP_HMAC_SECRET (an aud the provider\'s tokens carry for Switchboard)')
  if (env.IDP_ISSUER === env.JWT_ISSUER) throw new ConfigError('IDP_ISSUER: must differ from JWT_ISSUER (tokens are told apart by their issuer)')
  if (jwksUrl !== undefined) {
    if (!URL.canParse(jwksUrl)) throw new ConfigError('IDP_JWKS_URL: not a valid URL')
    const url = new URL(jwksUrl)
    // Keys fetched over plain HTTP can be swapped on the way, and with them every identity.
    if (production && url.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) {
      throw new ConfigError('IDP_JWKS_URL: must be https:// when NODE_ENV=production (plain http only on loopback)')
    }
  }
  if (hmacSecret !== undefined) {
    if (Buffer.byteLength(hmacSecret) < 32) throw new ConfigError('IDP_HMAC_SECRET: must be at least 32 bytes')
    if (hmacSecret === jwtSecret) throw new ConfigError('IDP_HMAC_SECRET: must differ from JWT_SECRET (the backend\'s tokens must not be able to pass as Switchboard\'s)')
  }
  let pem: string | null = null
  if (keyFile !== undefined) {
    pem = readFileOrFail('IDP_PUBLIC_KEY_FILE', keyFile).toString('utf8')
    if (!pem.includes('-----BEGIN PUBLIC KEY-----')) throw new ConfigError('IDP_PUBLIC_KEY_FILE: not a PEM public key (-----BEGIN PUBLIC KEY-----)')
  }
  const hasPublicKeys = jwksUrl !== undefined || pem !== null
  const algorithms = env.IDP_ALGORITHMS === undefined
    ? [...(hasPublicKeys ? PUBLIC_KEY_ALGORITHMS : []), ...(hmacSecret === undefined ? [] : HMAC_ALGORITHMS)]
    : [...new Set(env.IDP_ALGORITHMS.split(',') as IdpAlgorithm[])]
  for (const algorithm of algorithms) {
    if (HMAC_ALGORITHMS.includes(algorithm) && hmacSecret === undefined) throw new ConfigError(`IDP_ALGORITHMS: ${algorithm} needs IDP_HMAC_SECRET (an HMAC is never checked with a public key)`)
    if (PUBLIC_KEY_ALGORITHMS.includes(algorithm) && !hasPublicKeys) throw new ConfigError(`IDP_ALGORITHMS: ${algorithm} needs IDP_JWKS_URL or IDP_PUBLIC_KEY_FILE`)
  }
  if ((env.IDP_ADMIN_CLAIM === undefined) !== (env.IDP_ADMIN_VALUE === undefined)) throw new ConfigError('IDP_ADMIN_CLAIM and IDP_ADMIN_VALUE: set both or neither')
  const clockToleranceSeconds = parseDurationSeconds(env.IDP_CLOCK_TOLERANCE)
  if (clockToleranceSeconds > 300) throw new ConfigError('IDP_CLOCK_TOLERANCE: at most 5m')
  const cooldownMs = parseDurationSeconds(env.IDP_JWKS_COOLDOWN) * 1000
  const maxAgeMs = parseDurationSeconds(env.IDP_JWKS_MAX_AGE) * 1000
  const maxStaleMs = parseDurationSeconds(env.IDP_JWKS_MAX_STALE) * 1000
  // Unknown kids refetch at most once per cooldown: 0 would let a flood of made-up kids flood the provider.
  if (cooldownMs < 1000) throw new ConfigError('IDP_JWKS_COOLDOWN: at least 1s')
  if (maxAgeMs < cooldownMs) throw new ConfigError('IDP_JWKS_MAX_AGE: must not be shorter than IDP_JWKS_COOLDOWN')
  if (maxStaleMs < maxAgeMs) throw new ConfigError('IDP_JWKS_MAX_STALE: must not be shorter than IDP_JWKS_MAX_AGE')
  return {
    publicKeys: jwksUrl !== undefined ? { jwksUrl } : pem !== null ? { pem } : null,
    hmacSecret: hmacSecret ?? null,
    algorithms,
    issuer: env.IDP_ISSUER,
    audience: env.IDP_AUDIENCE.split(',').map(a => a.trim()).filter(Boolean),
    clockToleranceSeconds,
    userClaim: env.IDP_USER_CLAIM,
    userPrefix: env.IDP_USER_PREFIX,
    admin: env.IDP_ADMIN_CLAIM !== undefined && env.IDP_ADMIN_VALUE !== undefined ? { claim: env.IDP_ADMIN_CLAIM, value: env.IDP_ADMIN_VALUE } : null,
    nameClaim: env.IDP_NAME_CLAIM ?? null,
    jwks: { maxAgeMs, cooldownMs, maxStaleMs }
  }
}

/** HISTORY_STORE, or its default: durable on embedded defaults, Redis's with Redis. */
function historyStore (env: Env, databaseUrl: string): Config['history']['store'] {
  const sqlite = databaseUrl.startsWith('sqlite:')
  if (env.REDIS_URL !== undefined || env.REDIS_CLUSTER_NODES !== undefined) {
    if (env.HISTORY_STORE !== undefined) throw new ConfigError(`HISTORY_STORE: ${env.HISTORY_STORE} is for the embedded engine; with Redis (REDIS_URL or REDIS_CLUSTER_NODES) history lives in Redis (leave HISTORY_STORE unset)`)
    return 'redis'
  }
  if (env.HISTORY_STORE === 'sqlite' && !sqlite) throw new ConfigError('HISTORY_STORE: sqlite needs a sqlite: DATABASE_URL (history is kept in that file)')
  // An in-memory database survives no restart: durable history there would only hold every
  // publication in the process a second time, beside the engine's own window.
  const file = sqlite && databaseUrl !== 'sqlite::memory:'
  return env.HISTORY_STORE ?? (file ? 'sqlite' : 'memory')
}

/**
 * ARCHIVE_BY_DEFAULT, or its default: on where an archive is kept (the SQLite history store of
 * embedded defaults), off elsewhere, where the setting would only be recorded for later.
 */
function archiveByDefault (env: Env, store: Config['history']['store']): boolean {
  if (env.ARCHIVE_BY_DEFAULT !== undefined) return env.ARCHIVE_BY_DEFAULT === 'true' || env.ARCHIVE_BY_DEFAULT === '1'
  return store === 'sqlite'
}

/**
 * REDIS_CLUSTER_NODES: seeds as `host:port` or `redis[s]://[user:password@]host:port`. Every node
 * of a cluster takes the same credentials and TLS, so the seeds must agree on them; the first
 * seed's URL carries them (a cluster has database 0 only).
 */
function clusterSeeds (value: string): { url: string, nodes: Array<{ host: string, port: number }> } {
  const fail = (why: string): never => { throw new ConfigError(`REDIS_CLUSTER_NODES: ${why} (host:port or redis://[user:password@]host:port, rediss:// for TLS, comma-separated)`) }
  const urls = value.split(',').map((entry) => entry.trim()).map((entry) => {
    if (entry === '') fail('an empty seed')
    const text = /^[a-z]+:\/\//i.test(entry) ? entry : `redis://${entry}`
    if (!URL.canParse(text)) fail('a seed is not host:port or a URL')
    const url = new URL(text)
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') fail(`${url.protocol} is not redis: or rediss:`)
    if (url.hostname === '' || url.port === '') fail('every seed needs a host and a port')
    if (url.pathname !== '' && url.pathname !== '/') fail('a cluster has no database number')
    if (url.search !== '' || url.hash !== '') fail('a seed takes no query or fragment')
    return url
  })
  const identity = (url: URL): string => `${url.protocol}${url.username}:${url.password}`
  if (new Set(urls.map(identity)).size > 1) fail('every seed must use the same scheme and credentials (one cluster, one set of them)')
  const first = urls[0]!
  const auth = first.username === '' && first.password === '' ? '' : `${first.username}:${first.password}@`
  return {
    url: `${first.protocol}//${auth}${first.host}`,
    nodes: urls.map((url) => ({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) }))
  }
}

function readFileOrFail (variable: string, path: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new ConfigError(`${variable}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}
