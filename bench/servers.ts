import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createSigner } from 'fast-jwt'
import pg from 'pg'
import { Redis } from 'ioredis'
import type { LoadReport } from '../src/cli/load/report.js'
import { freePort } from '../support/free-port.js'
import { oneShotRequest } from '../support/http.js'
import { dropSchema } from '../support/postgres.js'
import { deleteRedisKeys } from '../support/redis.js'

/**
 * The servers under test, each a real process of its own: the three peers (bench/peers/) and
 * Switchboard from its build (`node dist/src/server.js`), one node or two through Redis.
 * The server is pinned to CPU 0 and the load generator to CPU 1 when `taskset` exists, so
 * the generator's cost does not land on the server's core.
 */

export const ROOT = fileURLToPath(new URL('..', import.meta.url))
export const PEERS = ['switchboard', 'ws-framed', 'ws-naive', 'socketio'] as const
export type Peer = typeof PEERS[number]
/**
 * Scenario 6 compares Switchboard on embedded defaults with one node and with two nodes on
 * Redis and PostgreSQL, and the frame-once hub in the same three set-ups (its processes
 * relaying through Redis PUBLISH); scenario 5 adds the frame-once hub verifying the same JWT
 * before each upgrade. The binary fan-out drives the same Switchboard on each of its codecs
 * (the generator's `--codec`): JSON with bytes as base64, and MessagePack. The burst runs
 * Switchboard on embedded defaults (history durable in SQLite) beside the same server with
 * history in memory only (HISTORY_STORE=memory), to price durability (issue 21).
 */
export type Variant = Peer | 'switchboard-memory-history' | 'switchboard-redis' | 'switchboard-2-nodes' | 'switchboard-json' | 'switchboard-msgpack' | 'ws-framed-jwt' | 'ws-framed-redis' | 'ws-framed-2-nodes'

export const SERVER_CPU = '0'
export const GENERATOR_CPU = '1'
export const HAS_TASKSET = spawnSync('sh', ['-c', 'command -v taskset'], { stdio: 'ignore' }).status === 0

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const DATABASE_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

const READY_WITHIN_MS = 30_000
const GENERATOR_TIMEOUT_MS = 10 * 60_000
const STOP_GRACE_MS = 5_000
const BENCH_USER = { username: 'loader', password: 'bench user password' }

/**
 * The lab's rooms are bench-0, bench-1, …, passed to the generator with `--room-prefix`: the
 * rooms Switchboard is set up with and the rooms the generator joins are named in one place,
 * not through the generator's default.
 */
export const ROOM_PREFIX = 'bench-'

export function roomNames (count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${ROOM_PREFIX}${i}`)
}

/** The peer each variant is a set-up of (`--peers` selects by peer). */
export const PEER_OF: Record<Variant, Peer> = {
  switchboard: 'switchboard',
  'switchboard-memory-history': 'switchboard',
  'switchboard-redis': 'switchboard',
  'switchboard-2-nodes': 'switchboard',
  'switchboard-json': 'switchboard',
  'switchboard-msgpack': 'switchboard',
  'ws-framed': 'ws-framed',
  'ws-framed-jwt': 'ws-framed',
  'ws-framed-redis': 'ws-framed',
  'ws-framed-2-nodes': 'ws-framed',
  'ws-naive': 'ws-naive',
  socketio: 'socketio'
}

/** The adapter module `switchboard load --target` loads for each peer (Switchboard's is built in). */
export const ADAPTERS: Record<Variant, string> = {
  switchboard: 'switchboard',
  'switchboard-memory-history': 'switchboard',
  'switchboard-redis': 'switchboard',
  'switchboard-2-nodes': 'switchboard',
  'switchboard-json': 'switchboard',
  'switchboard-msgpack': 'switchboard',
  'ws-framed': 'bench/peers/hub-adapter.ts',
  'ws-framed-jwt': 'bench/peers/hub-adapter.ts',
  'ws-framed-redis': 'bench/peers/hub-adapter.ts',
  'ws-framed-2-nodes': 'bench/peers/hub-adapter.ts',
  'ws-naive': 'bench/peers/hub-adapter.ts',
  socketio: 'bench/peers/socketio-adapter.ts'
}

/** Switchboard settings a variant changes from embedded defaults (beside the scenario's raised limits). */
const VARIANT_ENV: Partial<Record<Variant, Record<string, string>>> = {
  'switchboard-memory-history': { HISTORY_STORE: 'memory' }
}

/** Generator flags a variant adds to every run against it (the scenario's flags come first). */
export const GENERATOR_ARGS: Partial<Record<Variant, string[]>> = {
  'switchboard-json': ['--codec', 'json'],
  'switchboard-msgpack': ['--codec', 'msgpack']
}

export interface RunningTarget {
  variant: Variant
  url: string
  /** Scenario 6: publishers connect to the second node. */
  publisherUrl?: string
  /** The process whose CPU and RSS the generator measures (the subscribers' node). */
  pid: number
  /** Switchboard: an access token of an ordinary user (not the admin). */
  token?: string
  stop(): Promise<void>
}

export interface StartOptions {
  /** Rooms Switchboard must have (public, created by the bench user, who owns them). */
  rooms: string[]
  /** Switchboard limits this scenario raises (docs/performance.md says which and why). */
  env: Record<string, string>
  /** Write a V8 CPU profile of the server into this folder (`node --cpu-prof`). */
  cpuProfDir?: string
  /** false: leave the server unpinned (the functional tests). */
  pin?: boolean
}

/** `node args…` on `cpu` (through taskset when there is one): taskset execs, so the pid is node's. */
export function spawnPinned (cpu: string | undefined, args: string[], env: Record<string, string>): ChildProcess {
  const pin = HAS_TASKSET && cpu !== undefined
  const command = pin ? 'taskset' : process.execPath
  const argv = pin ? ['-c', cpu, process.execPath, ...args] : args
  return spawn(command, argv, {
    cwd: ROOT,
    // Not process.env: npm's and the shell's variables must not change how the servers behave.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
}

/** Keeps a child's output (bounded) for error messages, and a promise of its exit. */
function watch (child: ChildProcess): { output: () => string, exited: Promise<void> } {
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString()).slice(-8192) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  return { output: () => output, exited }
}

async function stopChild (child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  await Promise.race([exited, new Promise<void>(resolve => { timer = setTimeout(resolve, STOP_GRACE_MS) })])
  clearTimeout(timer)
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL')
    await exited
  }
}

/**
 * One folder per server: node names each profile after its pid and thread (tsx's loader runs
 * in a worker thread of its own, whose profile a fixed --cpu-prof-name would overwrite).
 */
function profileArgs (dir: string | undefined, name: string): string[] {
  return dir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${join(dir, name)}`]
}

/** A peer of bench/peers/, ready once it printed `ready PORT`. */
async function startPeer (peer: Exclude<Peer, 'switchboard'> | 'ws-framed-redis', options: StartOptions, env: Record<string, string> = {}): Promise<RunningTarget> {
  const port = await freePort()
  const child = spawnPinned(options.pin === false ? undefined : SERVER_CPU, [...profileArgs(options.cpuProfDir, peer), '--import', 'tsx', `bench/peers/${peer}.ts`], { ...env, PORT: String(port), NODE_ENV: 'production' })
  const { output, exited } = watch(child)
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${peer}: no ready line within ${READY_WITHIN_MS} ms\n${output()}`)), READY_WITHIN_MS)
      child.stdout?.on('data', () => {
        if (/^ready \d+/m.test(output())) { clearTimeout(timer); resolve() }
      })
      void exited.then(() => { clearTimeout(timer); reject(new Error(`${peer} exited before it was ready\n${output()}`)) })
    })
  } catch (err) {
    // A server that did not come up must not stay pinned to the server core for the next runs.
    await stopChild(child, exited)
    throw err
  }
  return { variant: peer, url: `http://127.0.0.1:${port}`, pid: child.pid!, stop: () => stopChild(child, exited) }
}

interface Node { url: string, child: ChildProcess, output: () => string, exited: Promise<void> }

async function startNode (env: Record<string, string>, options: StartOptions, name: string, port?: number): Promise<Node> {
  port ??= await freePort()
  const child = spawnPinned(options.pin === false ? undefined : SERVER_CPU, [...profileArgs(options.cpuProfDir, name), 'dist/src/server.js'], { ...env, HOST: '127.0.0.1', PORT: String(port) })
  const { output, exited } = watch(child)
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + READY_WITHIN_MS
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited at start (is it built? npm run build)\n${output()}`)
    const status = await oneShotRequest(url, 'GET', '/health/ready').then(r => r.status, () => 0)
    if (status === 200) return { url, child, output, exited }
    if (Date.now() > deadline) {
      // Not left running (pinned to the server core) behind the error.
      await stopChild(child, exited)
      throw new Error(`${name}: not ready within ${READY_WITHIN_MS} ms\n${output()}`)
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/**
 * An ordinary user (role `user`, not the admin, whose standing skips the room checks),
 * registered and logged in; it creates the public rooms, so it is their owner and may publish
 * under the default `members` policy. Every subscribe and publish goes through the room
 * access checks (docs/authorization.md).
 */
async function prepareSwitchboard (url: string, rooms: string[]): Promise<string> {
  const registered = await oneShotRequest(url, 'POST', '/auth/register', { body: BENCH_USER })
  if (registered.status !== 201) throw new Error(`register: HTTP ${registered.status} ${JSON.stringify(registered.body)}`)
  const login = await oneShotRequest(url, 'POST', '/auth/login', { body: BENCH_USER })
  if (login.status !== 200) throw new Error(`login: HTTP ${login.status} ${JSON.stringify(login.body)}`)
  const token = login.body.accessToken as string
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < rooms.length) {
      const id = rooms[next++]!
      const res = await oneShotRequest(url, 'POST', '/rooms', { body: { id }, token })
      if (res.status !== 201) throw new Error(`creating room ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`)
    }
  }
  await Promise.all(Array.from({ length: 8 }, worker))
  return token
}

/**
 * Switchboard as deployed, not as tested: production mode, JWT auth with a real secret,
 * validation on, the embedded store. Only the limits of `options.env` are raised; logging is
 * at warn (one line per connection would cost CPU), and password hashing is cheap because
 * it happens only in the set-up, before anything is measured.
 */
function switchboardEnv (dataDir: string, options: StartOptions): Record<string, string> {
  return {
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    DATA_DIR: dataDir,
    DATABASE_URL: `sqlite:${join(dataDir, 'switchboard.db')}`,
    JWT_SECRET: randomBytes(32).toString('hex'),
    PASSWORD_HASH_COST: '10',
    ALLOW_REGISTRATION: 'true',
    ...options.env
  }
}

type OneNode = 'switchboard' | 'switchboard-memory-history' | 'switchboard-json' | 'switchboard-msgpack'

async function startSwitchboard (options: StartOptions, variant: OneNode = 'switchboard'): Promise<RunningTarget> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  let node: Node | undefined
  try {
    node = await startNode({ ...switchboardEnv(dataDir, options), ...VARIANT_ENV[variant] }, options, 'switchboard')
    const token = await prepareSwitchboard(node.url, options.rooms)
    const { child, exited } = node
    return {
      variant,
      url: node.url,
      pid: child.pid!,
      token,
      stop: async () => { await stopChild(child, exited); rmSync(dataDir, { recursive: true, force: true }) }
    }
  } catch (err) {
    if (node !== undefined) await stopChild(node.child, node.exited)
    rmSync(dataDir, { recursive: true, force: true })
    throw err
  }
}

/** Switchboard nodes sharing their store (and Redis, when more than one), with the bench user's token. */
export interface SwitchboardCluster {
  urls: string[]
  /** The node processes, in the order of `urls` (a restarted node's new pid replaces its old one). */
  pids: number[]
  /** An access token of the bench user, who created (and owns) the rooms. */
  token: string
  /**
   * Stops node `i` with `signal` (SIGTERM: its drain; SIGKILL: none), then starts it again on
   * the same port with the same settings and store; resolves once it is ready again.
   */
  restart(i: number, signal: 'SIGTERM' | 'SIGKILL'): Promise<void>
  /** Stops every node, then removes the data folder, the schema and the Redis keys of this run. */
  stop(): Promise<void>
}

/**
 * Switchboard as `count` nodes. `embedded`: one node on embedded defaults (SQLite in a private
 * folder, the memory engine). `redis`: nodes sharing one PostgreSQL schema and one Redis under
 * a private key prefix (both unique to this run and removed afterwards: the Redis and the
 * database are shared with other work, so nothing else is touched — never FLUSHALL).
 */
export async function startSwitchboardCluster (count: number, options: StartOptions, engine: 'embedded' | 'redis' = 'redis'): Promise<SwitchboardCluster> {
  if (engine === 'embedded' && count !== 1) throw new Error('embedded defaults run one node')
  const id = randomBytes(5).toString('hex')
  const schema = `bench_${id}`
  const prefix = `sb-bench-${id}:`
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-bench-'))
  const env = engine === 'embedded'
    ? switchboardEnv(dataDir, options)
    : { ...switchboardEnv(dataDir, options), DATABASE_URL, DATABASE_SCHEMA: schema, REDIS_URL, REDIS_KEY_PREFIX: prefix }
  const names = Array.from({ length: count }, (_, i) => engine === 'embedded' ? 'switchboard' : count === 1 ? 'switchboard-redis' : `switchboard-${String.fromCharCode(97 + i)}`)
  const nodes: Node[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map(n => stopChild(n.child, n.exited)))
    rmSync(dataDir, { recursive: true, force: true })
    if (engine === 'redis') {
      await dropSchema(DATABASE_URL, schema).catch(() => {})
      await deleteRedisKeys(REDIS_URL, prefix).catch(() => {})
    }
  }
  try {
    // One after the other: the first creates the schema.
    for (let i = 0; i < count; i++) nodes.push(await startNode(env, options, names[i]!))
    const token = await prepareSwitchboard(nodes[0]!.url, options.rooms)
    const cluster: SwitchboardCluster = {
      urls: nodes.map(n => n.url),
      pids: nodes.map(n => n.child.pid!),
      token,
      restart: async (i, signal) => {
        const node = nodes[i]!
        node.child.kill(signal)
        await node.exited
        nodes[i] = await startNode(env, options, names[i]!, Number(new URL(node.url).port))
        cluster.pids[i] = nodes[i]!.child.pid!
      },
      stop
    }
    return cluster
  } catch (err) {
    await stop()
    throw err
  }
}

/** With two nodes, publishers connect to the second node and subscribers to the first. */
async function startCluster (count: 1 | 2, options: StartOptions): Promise<RunningTarget> {
  const cluster = await startSwitchboardCluster(count, options)
  return {
    variant: count === 1 ? 'switchboard-redis' : 'switchboard-2-nodes',
    url: cluster.urls[0]!,
    ...(count === 2 ? { publisherUrl: cluster.urls[1]! } : {}),
    pid: cluster.pids[0]!,
    token: cluster.token,
    stop: cluster.stop
  }
}

/** Whether Redis and PostgreSQL answer (scenario 6 is skipped, and says so, when not). */
export async function clusterServices (): Promise<string | undefined> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  redis.on('error', () => {})
  try {
    await redis.connect()
    await redis.ping()
  } catch {
    return `Redis not reachable at ${REDIS_URL}`
  } finally {
    redis.disconnect()
  }
  const client = new pg.Client({ connectionString: DATABASE_URL, connectionTimeoutMillis: 2000 })
  try {
    await client.connect()
  } catch {
    return `PostgreSQL not reachable at ${DATABASE_URL}`
  } finally {
    await client.end().catch(() => {})
  }
  return undefined
}

/**
 * The frame-once hub as `count` processes joined by Redis pub/sub (bench/peers/ws-framed-redis.ts)
 * under a channel prefix unique to this run; with two, publishers connect to the second.
 */
async function startHubCluster (count: 1 | 2, options: StartOptions): Promise<RunningTarget> {
  const env = { HUB_REDIS_URL: REDIS_URL, HUB_REDIS_PREFIX: `sb-bench-hub-${randomBytes(5).toString('hex')}:` }
  const hubs: RunningTarget[] = []
  const stop = async (): Promise<void> => { await Promise.all(hubs.map(h => h.stop())) }
  try {
    for (let i = 0; i < count; i++) hubs.push(await startPeer('ws-framed-redis', options, env))
  } catch (err) {
    await stop()
    throw err
  }
  const [subscribers, publishers] = [hubs[0]!, hubs.at(-1)!]
  return {
    variant: count === 1 ? 'ws-framed-redis' : 'ws-framed-2-nodes',
    url: subscribers.url,
    ...(count === 2 ? { publisherUrl: publishers.url } : {}),
    pid: subscribers.pid,
    stop
  }
}

export function startTarget (variant: Variant, options: StartOptions): Promise<RunningTarget> {
  if (variant === 'ws-framed-redis') return startHubCluster(1, options)
  if (variant === 'ws-framed-2-nodes') return startHubCluster(2, options)
  if (variant === 'switchboard' || variant === 'switchboard-memory-history' || variant === 'switchboard-json' || variant === 'switchboard-msgpack') return startSwitchboard(options, variant)
  if (variant === 'switchboard-redis') return startCluster(1, options)
  if (variant === 'switchboard-2-nodes') return startCluster(2, options)
  if (variant === 'ws-framed-jwt') return startJwtHub(options)
  return startPeer(variant, options)
}

/**
 * The frame-once hub checking a JWT before each upgrade, with a token shaped like
 * Switchboard's access tokens (HS256, iss, sub, role, jti, sid, iat, exp) signed by fast-jwt, the
 * library both use.
 */
async function startJwtHub (options: StartOptions): Promise<RunningTarget> {
  const secret = randomBytes(32).toString('hex')
  const sign = createSigner({ key: secret, algorithm: 'HS256', iss: 'switchboard', expiresIn: 3_600_000 })
  const token = sign({ sub: BENCH_USER.username, role: 'user', jti: randomBytes(16).toString('hex'), sid: randomBytes(16).toString('hex') })
  const peer = await startPeer('ws-framed', options, { JWT_SECRET: secret })
  return { ...peer, variant: 'ws-framed-jwt', token }
}

/** One `switchboard load --json` on the generator's CPU, against a running server; `onStderr` sees its progress lines as they come. */
export function generate (target: RunningTarget, scenarioArgs: string[], configDir: string, onStderr?: (text: string) => void): Promise<{ report: LoadReport | undefined, stderr: string }> {
  const args = [
    '--import', 'tsx', 'src/cli/index.ts', 'load', ...scenarioArgs, ...(GENERATOR_ARGS[target.variant] ?? []),
    '--room-prefix', ROOM_PREFIX, '--url', target.url, '--target', ADAPTERS[target.variant], '--server-pid', String(target.pid), '--json',
    ...(target.token === undefined ? [] : ['--token', target.token]),
    ...(target.publisherUrl === undefined ? [] : ['--publisher-url', target.publisherUrl])
  ]
  // No stored CLI session: the token is passed explicitly.
  const child = spawnPinned(GENERATOR_CPU, args, { SWITCHBOARD_CONFIG: join(configDir, 'none.json'), NODE_ENV: 'production' })
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => {
    onStderr?.(chunk.toString())
    stderr = (stderr + chunk.toString()).slice(-16_384)
  })
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), GENERATOR_TIMEOUT_MS)
    child.once('exit', () => {
      clearTimeout(timer)
      let report: LoadReport | undefined
      try { report = JSON.parse(stdout) as LoadReport } catch { report = undefined }
      resolve({ report, stderr })
    })
  })
}
