import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { createSigner } from 'fast-jwt'
import { build, decodeFromCompressedBase64 } from 'hdr-histogram-js'
import { Redis } from 'ioredis'
import { connectRawWebSocket, webSocketUrl, type RawWebSocket } from '../src/cli/load/raw-websocket.js'
import { sampleProcess, type ProcSample } from '../src/cli/load/proc.js'
import { percentiles, type Percentiles } from '../src/cli/load/report.js'
import { histogram } from '../src/cli/load/run.js'
import { oneShotRequest } from '../support/http.js'
import type { ParentMessage, StormReport, WorkerMessage } from './capacity-worker.js'
import { DEFAULT_BACKOFF_CAP_MS } from '@switchboard/client'
import { GENERATOR_CPU, HAS_TASKSET, REDIS_URL, ROOT, roomNames, ROOM_PREFIX, startSwitchboardCluster, type SwitchboardCluster } from './servers.js'

/**
 * The capacity scenario (issue 23, docs/capacity.md): many long-lived authenticated
 * connections, each subscribed to one of 1,000 rooms and to one broadcast room, held by several
 * generator processes (bench/capacity-worker.ts) from their own 127.0.0.x source addresses.
 * Run twice: one node on embedded defaults at the most connections its open-file limit allows,
 * and the whole count over several nodes on Redis and PostgreSQL (a process may hold at most
 * 20,000 open files here, so 100,000 connections need several node processes, as a multi-core
 * host would run one per core anyway).
 *
 * Measured as the count grows: connect rate and p99 connect time (TCP connect to both subscribe
 * replies); RSS per connection at each checkpoint (the node processes' growth above their idle
 * baseline, summed, over the connections; Redis's memory beside it); idle CPU with heartbeats at
 * their defaults; one HTTP publish to the broadcast room: time from the request to the last
 * delivery, and the servers' CPU for it; a steady 1 message/s in each room: p50/p99 latency.
 *
 *   node --import tsx bench/capacity.ts [--quick] [--only one-node|cluster] [--storms drain,kill,rolling|none]
 *     [--connections N] [--idle SECONDS] [--steady SECONDS] [--backoff-cap MS] [--cpu-prof DIR] [--json FILE]
 *
 * `--connections` runs a set-up at a partial size (checkpoints at half and all of it);
 * `--backoff-cap` gives the clients another largest backoff bound than the SDK's default;
 * `--cpu-prof DIR` writes a V8 CPU profile of each node into DIR (read it with
 * bench/profile-top.ts; `--from-end` keeps the idle minute's samples alone).
 */

export interface CapacitySetup {
  name: 'one-node' | 'cluster'
  title: string
  nodes: number
  connections: number
  generators: number
  checkpoints: number[]
  idleSeconds: number
  steadySeconds: number
  broadcasts: number
  /** Reconnect storms, one after the other: node 0 drained (SIGTERM), node 0 killed (SIGKILL), every node drained in turn. */
  storms: StormKind[]
  /** The clients' largest backoff bound (ms): the SDK's default unless a run compares another. */
  backoffCapMs: number
}

export type StormKind = 'drain' | 'kill' | 'rolling'

export interface StormResult {
  kind: StormKind
  /** From the first signal to the last restarted node being ready again. */
  readyAfterMs: number
  /** Connections that lost their socket, and of those, back (open and resubscribed) by the end. */
  lost: number
  back: number
  /** Times until 99 % and 100 % of the lost connections were back: after the first signal, and after the (last) new node was ready. */
  p99BackMs: number | null
  allBackMs: number | null
  p99AfterReadyMs: number | null
  allAfterReadyMs: number | null
  /** Connections back in each second after the first signal (the drain's spread). */
  backPerSecond: number[]
  refused: Record<string, number>
  terminal: Record<string, number>
  /**
   * Messages lost: offsets a connection skipped (`gaps`), and acknowledged offsets a room's
   * subscribers never reached by the end (`behind`); then offsets seen twice, and resubscribes
   * answered `recovered: false`.
   */
  lostMessages: number
  gaps: number
  behind: number
  duplicates: number
  notRecovered: number
  published: number
  peakRssBytes: number
  cpuSeconds: number
}

export interface Checkpoint {
  connections: number
  /** Connections opened per second of wall time between the previous checkpoint and this one. */
  connectPerS: number
  connectMs: Percentiles
  rssPerConnectionBytes: number
  redisUsedMemoryBytes: number | null
  failures: Record<string, number>
}

export interface CapacityResult {
  setup: CapacitySetup
  held: number
  checkpoints: Checkpoint[]
  /** Server CPU while idle with heartbeats, in % of one core per 20,000 connections. */
  idleCpuPercentPer20k: number
  idleCpuPercent: number
  broadcast: { lastDeliveryMs: number[], delivered: number[], cpuSeconds: number[] }
  steady: { messagesPerS: number, sent: number, refused: Record<string, number>, latencyMs: Percentiles }
  storms: StormResult[]
  closedEarly: Record<string, number>
  /** Settings raised beyond defaults, with why. */
  raised: Record<string, string>
}

const CONNECTIONS_PER_USER = 10
const ROOMS = 1000
const BROADCAST_ROOM = `${ROOM_PREFIX}all`
/** Handshakes each generator keeps in flight. */
const CONCURRENCY = 64
const SETTLE_MS = 5000
const BROADCAST_WITHIN_MS = 60_000
const STEADY_RATE = ROOMS
const TOKEN_TTL_MS = 3 * 3600_000
/** How long after the last restarted node is ready a storm may take before it is reported as it stands. */
const STORM_WITHIN_MS = 120_000
/**
 * Publisher connections of the steady load, over the nodes: a connection runs its commands in
 * order, each publish waiting for its commit, so one connection would queue past its bound of
 * commands in flight (`rate_limited`) long before 1,000 a second.
 */
const PUBLISHERS = 50

export function setups (quick: boolean): CapacitySetup[] {
  if (quick) {
    return [
      { name: 'one-node', title: 'One node, embedded defaults', nodes: 1, connections: 2000, generators: 1, checkpoints: [1000, 2000], idleSeconds: 5, steadySeconds: 3, broadcasts: 1, storms: ['drain', 'kill'], backoffCapMs: DEFAULT_BACKOFF_CAP_MS },
      { name: 'cluster', title: 'Two nodes on Redis', nodes: 2, connections: 4000, generators: 2, checkpoints: [2000, 4000], idleSeconds: 5, steadySeconds: 3, broadcasts: 1, storms: ['drain', 'kill', 'rolling'], backoffCapMs: DEFAULT_BACKOFF_CAP_MS }
    ]
  }
  return [
    // 20,000 open files, less the listening socket, the database, logs and a margin.
    { name: 'one-node', title: 'One node, embedded defaults', nodes: 1, connections: 19_000, generators: 2, checkpoints: [10_000, 19_000], idleSeconds: 60, steadySeconds: 20, broadcasts: 3, storms: ['drain', 'kill'], backoffCapMs: DEFAULT_BACKOFF_CAP_MS },
    // Six nodes: five would hold 20,000 each, past the limit with their own files.
    { name: 'cluster', title: 'Six nodes on one Redis', nodes: 6, connections: 100_000, generators: 6, checkpoints: [10_000, 50_000, 100_000], idleSeconds: 60, steadySeconds: 20, broadcasts: 3, storms: ['drain', 'kill', 'rolling'], backoffCapMs: DEFAULT_BACKOFF_CAP_MS }
  ]
}

function log (text: string): void {
  process.stderr.write(`[capacity] ${text}\n`)
}

function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** The settings a setup raises, each with why (docs/capacity.md lists them). */
function raisedSettings (s: CapacitySetup): Record<string, { value: string, why: string }> {
  const perNode = String(Math.ceil(s.connections / s.nodes) + 100)
  return {
    WS_MAX_CONNECTIONS_PER_IP: { value: perNode, why: 'each generator connects from one source address' },
    WS_HANDSHAKES_PER_IP_PER_MINUTE: { value: String(s.connections * 2), why: 'the same, at connect rate' },
    HTTP_MAX_CONNECTIONS_PER_IP: { value: perNode, why: 'the same, counted before the upgrade' },
    MAX_ROOMS_PER_USER: { value: String(ROOMS + 100), why: 'the bench user creates the 1,001 rooms' },
    RATE_LIMIT_MAX: { value: String(ROOMS * 3), why: 'set-up only: the rooms are created over REST' },
    WS_MAX_CONNECTIONS_PER_USER: { value: String(PUBLISHERS + 20), why: `steady load: the bench user publishes over ${PUBLISHERS} connections (${STEADY_RATE / PUBLISHERS} messages/s each, under the per-connection rate)` },
    PUBLISH_RATE_PER_USER: { value: '0', why: 'the steady load is one user publishing 1,000 messages/s' }
  }
}

/** Connections are the application's own users: HS256 tokens of an identity provider (no rows in Switchboard). */
function idpEnv (secret: string): Record<string, string> {
  return { IDP_HMAC_SECRET: secret, IDP_ISSUER: 'bench-idp', IDP_AUDIENCE: 'switchboard', IDP_ALGORITHMS: 'HS256' }
}

async function startServers (s: CapacitySetup, env: Record<string, string>, cpuProfDir: string | undefined): Promise<SwitchboardCluster> {
  return await startSwitchboardCluster(s.nodes, { rooms: [...roomNames(ROOMS), BROADCAST_ROOM], env, ...(cpuProfDir === undefined ? {} : { cpuProfDir }) }, s.nodes === 1 ? 'embedded' : 'redis')
}

function spawnWorker (): ChildProcess {
  const args = ['--import', 'tsx', 'bench/capacity-worker.ts']
  const command = HAS_TASKSET ? 'taskset' : process.execPath
  const argv = HAS_TASKSET ? ['-c', GENERATOR_CPU, process.execPath, ...args] : args
  return spawn(command, argv, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'production' } })
}

/** One worker's next IPC message of `type`. */
function next<T extends WorkerMessage['type']> (worker: ChildProcess, type: T): Promise<Extract<WorkerMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: WorkerMessage): void => {
      if (m.type !== type) return
      worker.off('message', onMessage)
      worker.off('exit', onExit)
      resolve(m as Extract<WorkerMessage, { type: T }>)
    }
    const onExit = (code: number | null): void => { reject(new Error(`a generator exited (${code ?? 'signal'}) while waiting for "${type}"`)) }
    worker.on('message', onMessage)
    worker.once('exit', onExit)
  })
}

function samples (pids: number[]): ProcSample[] {
  return pids.map(pid => sampleProcess(pid))
}

const cpuOf = (before: ProcSample[], after: ProcSample[]): number => after.reduce((sum, a, i) => sum + a.cpuSeconds - before[i]!.cpuSeconds, 0)

async function redisMemory (redis: Redis | null): Promise<number | null> {
  if (redis === null) return null
  const info = await redis.info('memory')
  const match = /^used_memory:(\d+)/m.exec(info)
  return match?.[1] === undefined ? null : Number(match[1])
}

/**
 * The steady load: 1 message/s per room over PUBLISHERS connections spread over the nodes, the
 * send time in the payload. A publisher whose node goes away reconnects to any node after a
 * short jittered wait; meanwhile the others carry its share. `acked` holds, per room, the
 * highest offset a publish reply confirmed: what every subscriber must reach.
 */
class SteadyPublisher {
  readonly acked = new Array<number>(ROOMS).fill(-1)
  readonly refused: Record<string, number> = {}
  sent = 0
  unsent = 0
  private readonly sockets: Array<RawWebSocket | null> = []
  private readonly roomOfId = new Map<number, number>()
  private timer: NodeJS.Timeout | undefined
  private stopped = false

  constructor (private readonly urls: () => string[], private readonly token: string) {}

  async start (): Promise<void> {
    await Promise.all(Array.from({ length: PUBLISHERS }, (_, k) => this.open(k, this.urls()[k % this.urls().length]!)))
    const started = nowMs()
    let due = 0
    this.timer = setInterval(() => {
      const target = Math.floor((nowMs() - started) / 1000 * STEADY_RATE)
      while (due < target) {
        const room = due % ROOMS
        const socket = this.pick(due++)
        if (socket === null) {
          this.unsent++
          continue
        }
        const id = ++this.sent
        this.roomOfId.set(id, room)
        socket.send(`{"type":"publish","id":${id},"room":"${ROOM_PREFIX}${room}","data":{"t":${nowMs()}}}`)
      }
    }, 10)
  }

  /** Stops sending, waits `drainMs` for the last replies, and closes. */
  async stop (drainMs = 1000): Promise<void> {
    clearInterval(this.timer)
    await sleep(drainMs)
    this.stopped = true
    for (const socket of this.sockets) socket?.close()
  }

  /** The k-th message's connection, or the next open one after it. */
  private pick (k: number): RawWebSocket | null {
    for (let j = 0; j < this.sockets.length; j++) {
      const socket = this.sockets[(k + j) % this.sockets.length]
      if (socket !== null && socket !== undefined) return socket
    }
    return null
  }

  private async open (k: number, url: string): Promise<void> {
    this.sockets[k] = null
    let socket: RawWebSocket
    try {
      socket = await connectRawWebSocket(webSocketUrl(url, '/ws'), { timeoutMs: 10_000, protocols: ['switchboard.v1'], headers: { Authorization: `Bearer ${this.token}` } })
    } catch {
      this.reopenLater(k)
      return
    }
    socket.onMessage((m) => {
      if (typeof m !== 'string') return
      if (m.startsWith('{"type":"reply"')) {
        const reply = JSON.parse(m) as { id: number, result?: { offset?: number } }
        const room = this.roomOfId.get(reply.id)
        this.roomOfId.delete(reply.id)
        if (room !== undefined && typeof reply.result?.offset === 'number') this.acked[room] = Math.max(this.acked[room]!, reply.result.offset)
      } else if (m.startsWith('{"type":"error"')) {
        const error = JSON.parse(m) as { id?: number, error?: { code?: string } }
        if (error.id !== undefined) this.roomOfId.delete(error.id)
        const code = error.error?.code ?? 'unknown'
        this.refused[code] = (this.refused[code] ?? 0) + 1
      }
    })
    socket.onClose(() => {
      if (this.sockets[k] === socket) this.sockets[k] = null
      this.reopenLater(k)
    })
    this.sockets[k] = socket
  }

  private reopenLater (k: number): void {
    if (this.stopped) return
    const urls = this.urls()
    setTimeout(() => { if (!this.stopped) void this.open(k, urls[Math.floor(Math.random() * urls.length)]!) }, 500 + Math.random() * 1000)
  }
}

/** Every worker's storm report, merged. */
async function stormReports (workers: ChildProcess[]): Promise<StormReport[]> {
  return await Promise.all(workers.map(async (w) => {
    const answer = next(w, 'storm')
    w.send({ type: 'storm-report' } satisfies ParentMessage)
    return (await answer).report
  }))
}

/** The time by which `share` of `lost` connections were back, from sorted times; null when fewer came back. */
function backBy (sorted: number[], lost: number, share: number): number | null {
  const needed = Math.ceil(lost * share)
  if (needed === 0) return 0
  return sorted.length >= needed ? sorted[needed - 1]! : null
}

/**
 * One reconnect storm under the steady load: the node(s) restarted as `kind` says, every client
 * reconnecting as the SDK does; done when every lost connection is back (or STORM_WITHIN_MS
 * after the last node is ready). Then the publisher stops, and each room's lowest offset among
 * its subscribers is compared with the highest acknowledged one.
 */
async function runStorm (kind: StormKind, servers: SwitchboardCluster, workers: ChildProcess[]): Promise<StormResult> {
  const publisher = new SteadyPublisher(() => servers.urls, servers.token)
  await publisher.start()
  await sleep(2000)
  const t0 = nowMs()
  for (const w of workers) w.send({ type: 'storm-start', t0 } satisfies ParentMessage)
  // CPU of every node process seen during the storm (a restarted node's from its start), and the peak of their summed RSS.
  const cpu = new Map<number, { first: number, last: number }>()
  for (const pid of servers.pids) {
    const sample = sampleProcess(pid)
    cpu.set(pid, { first: sample.cpuSeconds, last: sample.cpuSeconds })
  }
  let peakRssBytes = 0
  const sampler = setInterval(() => {
    let rss = 0
    for (const pid of servers.pids) {
      try {
        const sample = sampleProcess(pid)
        rss += sample.rssBytes
        const seen = cpu.get(pid)
        if (seen === undefined) cpu.set(pid, { first: 0, last: sample.cpuSeconds })
        else seen.last = sample.cpuSeconds
      } catch { /* exited, or not started yet */ }
    }
    peakRssBytes = Math.max(peakRssBytes, rss)
  }, 500)
  try {
    const restarting = kind === 'rolling' ? servers.urls.map((_, i) => i) : [0]
    for (const i of restarting) await servers.restart(i, kind === 'kill' ? 'SIGKILL' : 'SIGTERM')
    const readyAfterMs = Math.round(nowMs() - t0)
    log(`${kind}: ${restarting.length} node(s) restarted, ready ${readyAfterMs} ms after the first signal`)
    const deadline = Date.now() + STORM_WITHIN_MS
    let reports = await stormReports(workers)
    while (Date.now() < deadline) {
      const lost = reports.reduce((sum, r) => sum + r.lost, 0)
      const back = reports.reduce((sum, r) => sum + r.back, 0)
      if (lost > 0 && back >= lost) break
      await sleep(1000)
      reports = await stormReports(workers)
    }
    await publisher.stop(2000)
    reports = await stormReports(workers)
    const sum = (f: (r: StormReport) => number): number => reports.reduce((total, r) => total + f(r), 0)
    const merge = (f: (r: StormReport) => Record<string, number>): Record<string, number> => {
      const out: Record<string, number> = {}
      for (const r of reports) for (const [k, n] of Object.entries(f(r))) out[k] = (out[k] ?? 0) + n
      return out
    }
    const backMs = reports.flatMap(r => r.backMs).sort((a, b) => a - b)
    const lost = sum(r => r.lost)
    // A room's subscribers that never reached its last acknowledged offset lost the difference.
    let behind = 0
    for (let room = 0; room < ROOMS; room++) {
      const lowest = Math.min(...reports.map(r => r.lowestOffset[room]!).filter(o => o >= 0))
      if (Number.isFinite(lowest) && publisher.acked[room]! > lowest) behind += publisher.acked[room]! - lowest
    }
    const after = (ms: number | null): number | null => ms === null ? null : Math.max(0, ms - readyAfterMs)
    const p99BackMs = backBy(backMs, lost, 0.99)
    const allBackMs = backBy(backMs, lost, 1)
    const backPerSecond = new Array<number>(Math.ceil((backMs.at(-1) ?? 0) / 1000) + 1).fill(0)
    for (const ms of backMs) backPerSecond[Math.floor(ms / 1000)]!++
    return {
      kind,
      readyAfterMs,
      lost,
      back: backMs.length,
      p99BackMs,
      allBackMs,
      p99AfterReadyMs: after(p99BackMs),
      allAfterReadyMs: after(allBackMs),
      backPerSecond,
      refused: merge(r => r.refused),
      terminal: merge(r => r.terminal),
      lostMessages: sum(r => r.gaps) + behind,
      gaps: sum(r => r.gaps),
      behind,
      duplicates: sum(r => r.duplicates),
      notRecovered: sum(r => r.notRecovered),
      published: publisher.sent,
      peakRssBytes,
      cpuSeconds: Math.round([...cpu.values()].reduce((total, c) => total + c.last - c.first, 0) * 100) / 100
    }
  } finally {
    clearInterval(sampler)
    await publisher.stop(0)
  }
}

export async function runCapacitySetup (s: CapacitySetup, cpuProfDir?: string): Promise<CapacityResult> {
  const secret = randomBytes(32).toString('hex')
  const raise = raisedSettings(s)
  const env = { ...Object.fromEntries(Object.entries(raise).map(([k, v]) => [k, v.value])), ...idpEnv(secret) }
  log(`${s.title}: starting ${s.nodes} node(s)`)
  const servers = await startServers(s, env, cpuProfDir)
  const redis = s.nodes > 1 ? new Redis(REDIS_URL) : null
  const workers: ChildProcess[] = []
  try {
    const patched = await oneShotRequest(servers.urls[0]!, 'PATCH', `/rooms/${BROADCAST_ROOM}`, { token: servers.token, body: { presenceEvents: false } })
    if (patched.status !== 200) throw new Error(`PATCH ${BROADCAST_ROOM}: HTTP ${patched.status} ${JSON.stringify(patched.body)}`)
    const sign = createSigner({ key: secret, algorithm: 'HS256', iss: 'bench-idp', aud: 'switchboard', expiresIn: TOKEN_TTL_MS })
    const users = Math.ceil(s.connections / CONNECTIONS_PER_USER)
    const tokens = Array.from({ length: users }, (_, u) => sign({ sub: `u${u}` }))
    await sleep(SETTLE_MS)
    const baseline = samples(servers.pids)
    const share = Math.ceil(s.connections / s.generators)
    for (let g = 0; g < s.generators; g++) {
      const worker = spawnWorker()
      workers.push(worker)
      const ready = next(worker, 'ready')
      const first = g * share
      worker.send({
        type: 'init', urls: servers.urls, localAddress: `127.0.0.${11 + g}`, first, count: Math.min(share, s.connections - first),
        tokens, connectionsPerUser: CONNECTIONS_PER_USER, rooms: ROOMS, roomPrefix: ROOM_PREFIX, broadcastRoom: BROADCAST_ROOM, concurrency: CONCURRENCY, backoffCapMs: s.backoffCapMs
      } satisfies ParentMessage)
      await ready
    }
    const checkpoints: Checkpoint[] = []
    let held = 0
    for (const target of s.checkpoints) {
      const perWorker = Math.ceil(target / s.generators)
      const started = nowMs()
      const answers = await Promise.all(workers.map(async (w) => {
        const answer = next(w, 'connected')
        w.send({ type: 'connect', upTo: perWorker } satisfies ParentMessage)
        return await answer
      }))
      const wallS = (nowMs() - started) / 1000
      const connect = histogram()
      const failures: Record<string, number> = {}
      for (const a of answers) {
        connect.add(decodeFromCompressedBase64(a.connectUs))
        for (const [reason, n] of Object.entries(a.failures)) failures[reason] = (failures[reason] ?? 0) + n
      }
      const added = answers.reduce((sum, a) => sum + a.held, 0) - held
      held += added
      await sleep(SETTLE_MS)
      const now = samples(servers.pids)
      const growth = now.reduce((sum, p, i) => sum + p.rssBytes - baseline[i]!.rssBytes, 0)
      const checkpoint: Checkpoint = {
        connections: held,
        connectPerS: Math.round(added / wallS),
        connectMs: percentiles(connect),
        rssPerConnectionBytes: Math.round(growth / Math.max(1, held)),
        redisUsedMemoryBytes: await redisMemory(redis),
        failures
      }
      checkpoints.push(checkpoint)
      log(`${held} connections: ${checkpoint.connectPerS}/s, p99 connect ${checkpoint.connectMs.p99} ms, ${checkpoint.rssPerConnectionBytes} B RSS each${Object.keys(failures).length > 0 ? `, failures ${JSON.stringify(failures)}` : ''}`)
    }

    const idleBefore = samples(servers.pids)
    await sleep(s.idleSeconds * 1000)
    const idleCpu = cpuOf(idleBefore, samples(servers.pids))
    const idleCpuPercent = idleCpu / s.idleSeconds * 100
    const idleCpuPercentPer20k = idleCpuPercent / (held / 20_000)
    log(`idle with heartbeats: ${idleCpuPercent.toFixed(2)} % of a core (${idleCpuPercentPer20k.toFixed(2)} % per 20,000)`)

    const broadcast: CapacityResult['broadcast'] = { lastDeliveryMs: [], delivered: [], cpuSeconds: [] }
    for (let b = 0; b < s.broadcasts; b++) {
      for (const w of workers) w.send({ type: 'broadcast-reset' } satisfies ParentMessage)
      await sleep(200)
      const before = samples(servers.pids)
      const sentAt = nowMs()
      const published = await oneShotRequest(servers.urls[0]!, 'POST', `/rooms/${BROADCAST_ROOM}/messages`, { token: servers.token, body: { data: { broadcast: b } } })
      if (published.status !== 201 && published.status !== 200) throw new Error(`broadcast publish: HTTP ${published.status} ${JSON.stringify(published.body)}`)
      let delivered = 0
      let lastAt = 0
      const deadline = Date.now() + BROADCAST_WITHIN_MS
      while (Date.now() < deadline) {
        await sleep(100)
        const reports = await Promise.all(workers.map(async (w) => {
          const answer = next(w, 'broadcast')
          w.send({ type: 'broadcast-report' } satisfies ParentMessage)
          return await answer
        }))
        delivered = reports.reduce((sum, r) => sum + r.received, 0)
        lastAt = Math.max(...reports.map(r => r.lastAt))
        if (delivered >= held) break
      }
      broadcast.cpuSeconds.push(Math.round(cpuOf(before, samples(servers.pids)) * 1000) / 1000)
      broadcast.lastDeliveryMs.push(Math.round(lastAt - sentAt))
      broadcast.delivered.push(delivered)
      log(`broadcast ${b + 1}: ${delivered}/${held} delivered, the last ${Math.round(lastAt - sentAt)} ms after the request`)
    }

    for (const w of workers) w.send({ type: 'steady-start' } satisfies ParentMessage)
    const publisher = new SteadyPublisher(() => servers.urls, servers.token)
    await publisher.start()
    await sleep(s.steadySeconds * 1000)
    await publisher.stop()
    const { sent, refused } = publisher
    const latency = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 })
    for (const w of workers) {
      const answer = next(w, 'steady')
      w.send({ type: 'steady-stop' } satisfies ParentMessage)
      latency.add(decodeFromCompressedBase64((await answer).latencyUs))
    }
    const steady = { messagesPerS: STEADY_RATE, sent, refused, latencyMs: percentiles(latency) }
    log(`steady ${STEADY_RATE}/s: p50 ${steady.latencyMs.p50} ms, p99 ${steady.latencyMs.p99} ms over ${steady.latencyMs.count} deliveries${Object.keys(refused).length > 0 ? `, refused ${JSON.stringify(refused)}` : ''}`)

    const storms: StormResult[] = []
    for (const kind of s.storms) {
      const storm = await runStorm(kind, servers, workers)
      storms.push(storm)
      log(`${kind}: ${storm.back}/${storm.lost} back, 99 % ${storm.p99AfterReadyMs} ms and all ${storm.allAfterReadyMs} ms after ready; ${storm.lostMessages} lost (${storm.gaps} skipped, ${storm.behind} behind), ${storm.duplicates} duplicated, ${storm.notRecovered} not recovered; refused ${JSON.stringify(storm.refused)}`)
    }

    const closedEarly: Record<string, number> = {}
    await Promise.all(workers.map(async (w) => {
      const early = new Promise<void>((resolve) => {
        w.on('message', (m: WorkerMessage) => {
          if (m.type === 'closed-early') for (const [code, n] of Object.entries(m.codes)) closedEarly[code] = (closedEarly[code] ?? 0) + n
        })
        w.once('exit', () => resolve())
      })
      w.send({ type: 'close' } satisfies ParentMessage)
      await early
    }))
    return {
      setup: s,
      held,
      checkpoints,
      idleCpuPercent: Math.round(idleCpuPercent * 100) / 100,
      idleCpuPercentPer20k: Math.round(idleCpuPercentPer20k * 100) / 100,
      broadcast,
      steady,
      storms,
      closedEarly,
      raised: Object.fromEntries(Object.entries(raise).map(([k, v]) => [k, `${v.value}: ${v.why}`]))
    }
  } finally {
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL')
    redis?.disconnect()
    await servers.stop()
  }
}

const kb = (bytes: number): string => `${(bytes / 1000).toFixed(2)} KB`

/** The scenario's tables, with the issue's targets. */
export function capacityMarkdown (results: CapacityResult[]): string {
  const lines = ['### Capacity', '',
    'Authenticated connections (10 per user, the application\'s own users through an identity provider\'s HS256 tokens), each subscribed to one of 1,000 rooms and to one broadcast room (join/leave pushes off), held by generator processes from their own 127.0.0.x addresses; heartbeats at their defaults.', '']
  for (const r of results) {
    lines.push(`**${r.setup.title}: ${r.held.toLocaleString('en-US')} connections**`, '',
      '| Connections | Connects/s | p50 connect | p99 connect | RSS per connection (nodes) | Redis memory |', '|---:|---:|---:|---:|---:|---:|')
    for (const c of r.checkpoints) {
      lines.push(`| ${c.connections.toLocaleString('en-US')} | ${c.connectPerS.toLocaleString('en-US')} | ${c.connectMs.p50 ?? '–'} ms | ${c.connectMs.p99 ?? '–'} ms | ${kb(c.rssPerConnectionBytes)} | ${c.redisUsedMemoryBytes === null ? '–' : `${(c.redisUsedMemoryBytes / 2 ** 20).toFixed(1)} MiB`} |`)
    }
    const worst = Math.max(...r.broadcast.lastDeliveryMs)
    const rssLast = r.checkpoints.at(-1)?.rssPerConnectionBytes ?? 0
    lines.push('',
      `- Idle with heartbeats: ${r.idleCpuPercent} % of a core in all, **${r.idleCpuPercentPer20k} % per 20,000 connections** (target ≤ 2 %: ${r.idleCpuPercentPer20k <= 2 ? 'met' : 'missed'}).`,
      `- Broadcast to all: the last delivery ${r.broadcast.lastDeliveryMs.join(', ')} ms after the HTTP publish (target ≤ 1,000 ms: ${worst <= 1000 ? 'met' : 'missed'}), delivered ${r.broadcast.delivered.join(', ')}; server CPU ${r.broadcast.cpuSeconds.join(', ')} s.`,
      `- Steady ${r.steady.messagesPerS.toLocaleString('en-US')} messages/s (1 per room per second): p50 ${r.steady.latencyMs.p50} ms, p99 **${r.steady.latencyMs.p99} ms** (target ≤ 50 ms: ${(r.steady.latencyMs.p99 ?? Infinity) <= 50 ? 'met' : 'missed'}) over ${r.steady.latencyMs.count.toLocaleString('en-US')} deliveries; refused: ${Object.keys(r.steady.refused).length === 0 ? 'none' : JSON.stringify(r.steady.refused)}.`,
      `- RSS per connection at the end: ${kb(rssLast)} (target ≤ 6 KB: ${rssLast <= 6000 ? 'met' : 'missed'}).`,
      `- Connections closed by the server for good during the run: ${Object.keys(r.closedEarly).length === 0 ? 'none' : JSON.stringify(r.closedEarly)}.`, '')
  }
  lines.push('### Reconnect storm', '',
    'On the capacity scenario\'s connections, under its steady load (1 message/s per room): node 0 drained (SIGTERM: its jittered `reconnect` push, then 1012), node 0 killed (SIGKILL: no drain), and every node drained in turn (rolling); each restarted on its port and store. Every client reconnects as the SDK does (the push\'s delay, else full-jitter backoff from 0.5 s; to any node) and resubscribes with `since`; each offset is checked. Times are after the (last) restarted node was ready; target: 99 % back within 30 s, nothing lost.', '',
    '| Set-up | Storm | Node(s) ready after | Lost connections | Back | 99 % back | All back | Messages lost | Duplicated | Not recovered | Refused handshakes | Peak RSS (nodes) | Server CPU |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|')
  for (const r of results) {
    for (const st of r.storms) {
      const refused = Object.entries(st.refused).map(([why, n]) => `${why} ${n}`).join(', ') || 'none'
      lines.push(`| ${r.setup.title} | ${st.kind} | ${(st.readyAfterMs / 1000).toFixed(1)} s | ${st.lost.toLocaleString('en-US')} | ${st.back.toLocaleString('en-US')} | ${st.p99AfterReadyMs === null ? 'never' : `${(st.p99AfterReadyMs / 1000).toFixed(1)} s`} | ${st.allAfterReadyMs === null ? 'never' : `${(st.allAfterReadyMs / 1000).toFixed(1)} s`} | ${st.lostMessages} | ${st.duplicates} | ${st.notRecovered} | ${refused} | ${(st.peakRssBytes / 2 ** 20).toFixed(0)} MiB | ${st.cpuSeconds} s |`)
    }
  }
  lines.push('', 'Connections back per second after the first signal (the drain spreads them over its window):', '')
  for (const r of results) {
    for (const st of r.storms) lines.push(`- ${r.setup.title}, ${st.kind}: ${st.backPerSecond.join(' ')}`)
  }
  lines.push('')
  return lines.join('\n')
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      storms: { type: 'string' },
      connections: { type: 'string' },
      idle: { type: 'string' },
      steady: { type: 'string' },
      'backoff-cap': { type: 'string' },
      'cpu-prof': { type: 'string' },
      json: { type: 'string' }
    }
  })
  const storms = values.storms?.split(',').filter(Boolean) as StormKind[] | undefined
  const positive = (text: string | undefined, name: string): number | undefined => {
    if (text === undefined) return undefined
    const n = Number(text)
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name}: a positive integer, not ${text}`)
    return n
  }
  const connections = positive(values.connections, 'connections')
  const idleSeconds = positive(values.idle, 'idle')
  const steadySeconds = positive(values.steady, 'steady')
  const backoffCapMs = positive(values['backoff-cap'], 'backoff-cap')
  const chosen = setups(values.quick)
    .filter(s => values.only === undefined || s.name === values.only)
    .map(s => storms === undefined ? s : { ...s, storms: s.storms.filter(k => storms.includes(k)) })
    .map(s => connections === undefined ? s : { ...s, connections, checkpoints: [Math.ceil(connections / 2), connections] })
    .map(s => ({ ...s, idleSeconds: idleSeconds ?? s.idleSeconds, steadySeconds: steadySeconds ?? s.steadySeconds, backoffCapMs: backoffCapMs ?? s.backoffCapMs }))
  const results: CapacityResult[] = []
  for (const s of chosen) results.push(await runCapacitySetup(s, values['cpu-prof']))
  if (values.json !== undefined) {
    const { writeFileSync } = await import('node:fs')
    writeFileSync(values.json, JSON.stringify(results, null, 2) + '\n')
  }
  process.stdout.write(capacityMarkdown(results))
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`capacity: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exit(1)
  })
}
