import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import pg from 'pg'
import { Redis } from 'ioredis'
import { WebSocket, type PerMessageDeflateOptions } from 'ws'
import pino from 'pino'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig, type Config } from '../src/config.js'
import { buildLoggerOptions } from '../src/logger.js'
import { hashPassword } from '../src/auth/passwords.js'
import type { UserRole } from '../src/store/types.js'
import { dropSchema } from '../support/postgres.js'
import { decodeMsgpack, encodeMsgpack } from '@switchboard/protocol/msgpack'
import { MSGPACK_PROTOCOL_VERSION } from '@switchboard/protocol/messages'

export type StoreKind = 'sqlite' | 'postgres'
export const STORE_KINDS: StoreKind[] = ['sqlite', 'postgres']

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789'
/** Every test user has this password: tests are about rules, not passwords. */
export const PASSWORD = 'correct horse battery'

let postgresReachable: Promise<boolean> | undefined
function checkPostgres (): Promise<boolean> {
  postgresReachable ??= (async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 3000 })
    try {
      await client.connect()
      await client.query('select 1')
      return true
    } catch {
      return false
    } finally {
      await client.end().catch(() => {})
    }
  })()
  return postgresReachable
}

/**
 * `skip` option for a suite that needs PostgreSQL: false when it is reachable, a reason when
 * not. Under REQUIRE_SERVICES=1 (CI) a missing PostgreSQL is an error, never a skip.
 */
export async function skipUnlessStore (kind: StoreKind): Promise<false | string> {
  if (kind === 'sqlite') return false
  if (await checkPostgres()) return false
  const reason = `PostgreSQL not reachable at ${TEST_DATABASE_URL}`
  if (process.env.REQUIRE_SERVICES === '1') throw new Error(`${reason} (REQUIRE_SERVICES=1)`)
  return reason
}

export const TEST_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

let redisReachable: Promise<boolean> | undefined
function checkRedis (): Promise<boolean> {
  redisReachable ??= (async () => {
    const client = new Redis(TEST_REDIS_URL, { lazyConnect: true, connectTimeout: 3000, disconnectTimeout: 100, maxRetriesPerRequest: 0, retryStrategy: () => null })
    client.on('error', () => {})
    try {
      await client.connect()
      await client.ping()
      return true
    } catch {
      return false
    } finally {
      client.disconnect()
    }
  })()
  return redisReachable
}

/**
 * `skip` option for a suite that needs Redis (REDIS_URL, else 127.0.0.1:6379): false when it
 * answers, a reason when not. Under REQUIRE_SERVICES=1 (CI) a missing Redis is an error.
 */
export async function skipUnlessRedis (): Promise<false | string> {
  if (await checkRedis()) return false
  const reason = `Redis not reachable at ${TEST_REDIS_URL}`
  if (process.env.REQUIRE_SERVICES === '1') throw new Error(`${reason} (REQUIRE_SERVICES=1)`)
  return reason
}

/** One command on a connection of its own (a sentinel's, a private server's, or to read what the server stored). */
export async function redisCall (url: string, ...args: [string, ...string[]]): Promise<unknown> {
  const conn = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  conn.on('error', () => {})
  try {
    await conn.connect()
    return await conn.call(...args)
  } finally {
    // QUIT rather than disconnect() when it can: it leaves no close timer behind (tests count timers).
    await conn.quit().catch(() => conn.disconnect())
  }
}

/** A fresh, empty database for one test: an in-memory SQLite, or a new PostgreSQL schema dropped afterwards. */
async function freshDatabase (t: TestContext, kind: StoreKind): Promise<Record<string, string>> {
  if (kind === 'sqlite') return { DATABASE_URL: 'sqlite::memory:' }
  const schema = `t_${randomBytes(6).toString('hex')}`
  t.after(() => dropSchema(TEST_DATABASE_URL, schema))
  return { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema }
}

export function tempDir (t: TestContext, prefix = 'switchboard-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Self-signed for localhost and 127.0.0.1, valid for a day, made fresh for each run. */
export function selfSignedCertificate (dir: string): { certFile: string, keyFile: string } {
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'
  ], { stdio: 'pipe' })
  return { certFile, keyFile }
}

/** The value of one sample line of a Prometheus scrape, e.g. sample(text, 'switchboard_disconnects_total{code="4008"}'). */
export function sample (text: string, series: string): number | undefined {
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

export interface TestApp {
  app: FastifyInstance
  config: Config
  /** Base URL of the listening server, e.g. http://127.0.0.1:34567 */
  url: string
  /** Every log line the app wrote so far, parsed. */
  logs: () => Array<Record<string, unknown>>
  /** The raw log text, for "this string never appears" checks. */
  logText: () => string
  request: (method: string, path: string, options?: RequestOptions) => Promise<TestResponse>
  /** Creates a user straight in the store (no HTTP, no rate limits). */
  createUser: (id: string, role?: UserRole) => Promise<void>
  /** Logs in over HTTP and returns the access token. */
  login: (id: string, password?: string) => Promise<string>
  /** createUser + login. */
  userToken: (id: string, role?: UserRole) => Promise<string>
}

export interface RequestOptions {
  token?: string
  apiKey?: string
  body?: unknown
  headers?: Record<string, string>
}

export interface TestResponse {
  status: number
  headers: Headers
  body: any // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read whatever JSON came back
  text: string
}

/** Environment for tests: cheap password hashing, a fixed secret, generous login budget. */
export function testEnv (overrides: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    JWT_SECRET: TEST_JWT_SECRET,
    PASSWORD_HASH_COST: '10',
    LOGIN_RATE_LIMIT: '1000',
    LOGIN_FAILURES_BEFORE_DELAY: '1000',
    LOGIN_FAILURES_PER_ADDRESS: '1000',
    RATE_LIMIT_MAX: '100000',
    WS_DRAIN_MS: '100',
    WS_HANDSHAKES_PER_IP_PER_MINUTE: '100000',
    // Suites publish in bursts; the per-user publish rate has its own tests (test/limits.test.ts).
    PUBLISH_RATE_PER_USER: '0',
    ...overrides
  }
}

/**
 * Builds the real app on a fresh database, listens on a random loopback port, and closes it
 * when the test ends. Requests go over real HTTP.
 */
export async function build (t: TestContext, options: { store?: StoreKind, env?: Record<string, string> } = {}): Promise<TestApp> {
  const kind = options.store ?? 'sqlite'
  const env = testEnv({ DATA_DIR: tempDir(t), ...(await freshDatabase(t, kind)), ...options.env })
  const config = loadConfig(env)

  const lines: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done() } })
  const logger = pino(buildLoggerOptions(config), sink)
  const app = await buildApp(config, { logger })
  t.after(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  const url = `${config.tls === null ? 'http' : 'https'}://127.0.0.1:${address.port}`

  const request = async (method: string, path: string, opts: RequestOptions = {}): Promise<TestResponse> => {
    const headers: Record<string, string> = { ...opts.headers }
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
    if (opts.apiKey !== undefined) headers['x-api-key'] = opts.apiKey
    if (opts.body !== undefined) headers['content-type'] ??= 'application/json'
    const res = await fetch(url + path, {
      method,
      headers,
      ...(opts.body !== undefined ? { body: typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body) } : {})
    })
    const text = await res.text()
    let body: unknown = text
    try { body = text === '' ? undefined : JSON.parse(text) } catch { /* not JSON: keep the text */ }
    return { status: res.status, headers: res.headers, body, text }
  }

  const createUser = async (id: string, role: UserRole = 'user'): Promise<void> => {
    const created = await app.store.createUser({ id, passwordHash: await hashPassword(PASSWORD, 10), role })
    if (created === null) throw new Error(`user ${id} exists`)
  }

  const login = async (id: string, password = PASSWORD): Promise<string> => {
    const res = await request('POST', '/auth/login', { body: { username: id, password } })
    if (res.status !== 200) throw new Error(`login ${id} failed: ${res.status} ${res.text}`)
    return res.body.accessToken as string
  }

  return {
    app,
    config,
    url,
    logs: () => {
      return lines.flatMap(l => l.split('\n')).filter(Boolean).map(l => JSON.parse(l) as Record<string, unknown>)
    },
    logText: () => lines.join(''),
    request,
    createUser,
    login,
    userToken: async (id, role) => { await createUser(id, role); return await login(id) }
  }
}

// ---------------------------------------------------------------------------------------
// WebSocket test client

export interface WsFrame { type: string, id?: string | number, [key: string]: any } // eslint-disable-line @typescript-eslint/no-explicit-any -- frames are read loosely in tests

export interface WsClient {
  socket: WebSocket
  /** Every frame received so far, parsed, in order. */
  frames: WsFrame[]
  welcome: WsFrame
  /** A string or bytes go as they are (a text or a binary frame); anything else in the connection's codec. */
  send: (frame: unknown) => void
  /** Sends a command with a fresh id and resolves with its reply or error frame. */
  command: (frame: Record<string, unknown>) => Promise<WsFrame>
  /** Resolves with the first frame (already received or future) matching `match`. */
  next: (match: (frame: WsFrame) => boolean, timeoutMs?: number) => Promise<WsFrame>
  closed: Promise<{ code: number, reason: string }>
  close: () => void
}

let commandSeq = 0

/**
 * Opens a real WebSocket to the test server and waits for the welcome frame. Closed when the
 * test ends. Rejects with the HTTP status when the handshake is refused. It offers no
 * permessage-deflate unless `perMessageDeflate` says so (ws's client options).
 */
export async function wsConnect (t: TestContext, base: { url: string }, options: { token?: string, apiKey?: string, query?: string, headers?: Record<string, string>, protocols?: string[], perMessageDeflate?: boolean | PerMessageDeflateOptions } = {}): Promise<WsClient> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  if (options.apiKey !== undefined) headers['x-api-key'] = options.apiKey
  const url = base.url.replace(/^http/, 'ws') + '/ws' + (options.query ?? '')
  const socket = new WebSocket(url, options.protocols ?? [], { headers, perMessageDeflate: options.perMessageDeflate ?? false })
  const frames: WsFrame[] = []
  const waiters: Array<{ match: (f: WsFrame) => boolean, resolve: (f: WsFrame) => void }> = []
  // Frames of switchboard.v1.msgpack are binary: read as MessagePack, bytes as Uint8Array.
  socket.on('message', (data, isBinary) => {
    const frame = (isBinary ? decodeMsgpack(data as Buffer) : JSON.parse(data.toString())) as WsFrame
    frames.push(frame)
    for (const waiter of [...waiters]) {
      if (waiter.match(frame)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve(frame)
      }
    }
  })
  const closed = new Promise<{ code: number, reason: string }>(resolve => {
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
  })
  socket.on('error', () => {})
  t.after(() => { socket.terminate() })

  const next = (match: (frame: WsFrame) => boolean, timeoutMs = 10_000): Promise<WsFrame> => {
    const seen = frames.find(match)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got ${JSON.stringify(frames.slice(-5))}`)), timeoutMs)
      waiters.push({ match, resolve: (f) => { clearTimeout(timer); resolve(f) } })
    })
  }

  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => reject(Object.assign(new Error(`handshake refused: ${res.statusCode ?? 0} ${body}`), { statusCode: res.statusCode, body })))
    })
    socket.once('error', reject)
  })
  const welcome = await next(f => f.type === 'welcome')
  // Objects go out in the connection's codec; strings and buffers as they are (text, binary).
  const encode = (frame: unknown): string | Uint8Array => socket.protocol === MSGPACK_PROTOCOL_VERSION ? encodeMsgpack(frame) : JSON.stringify(frame)
  return {
    socket,
    frames,
    welcome,
    send: (frame) => socket.send(typeof frame === 'string' || frame instanceof Uint8Array ? frame : encode(frame)),
    command: async (frame) => {
      const id = `c${++commandSeq}`
      socket.send(encode({ ...frame, id }))
      return await next(f => (f.type === 'reply' || f.type === 'error') && f.id === id)
    },
    next,
    closed,
    close: () => socket.close()
  }
}
