import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import { WebSocket } from 'ws'
import { buildApp } from '../src/app.js'
import { hashPassword } from '../src/auth/passwords.js'
import { loadConfig } from '../src/config.js'

/**
 * How long the event loop stalls while a large history is read (issue 19, finding 2), and
 * how long a liveness probe waits meanwhile: docs/performance.md, "History reads and the
 * event loop".
 *
 * One server in this process holds a room of 1,000 publications of about 18.6 KiB (arrays of
 * ~6,200 empty objects: 18.6 MiB in all, the finding's room). A client process (its JSON
 * parsing is not on the server's loop) reads the whole history over REST and then over
 * WebSocket, paging with `since` as a client does, while it probes GET /health/live every few
 * milliseconds. The server's loop delay is sampled with monitorEventLoopDelay over the reads.
 * It runs twice: with the default page cap (HISTORY_PAGE_BYTES, 1 MiB), and with caps large
 * enough that the whole history is one answer, which is what a read did before pages.
 *
 *   node --import tsx bench/history-read.ts [--publications 1000] [--objects 6200] [--rounds 3]
 */

// A full collection on demand, so that the seed's garbage is collected before the reads and a
// pause it causes is not counted as theirs (the flag can be set at run time; `gc` then comes
// from a fresh context).
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

const ROOM = 'archive'
const print = (line: string): void => { process.stdout.write(`${line}\n`) }
const MiB = 1024 * 1024

interface ClientJob { url: string, token: string }
interface ReadReport { pages: number, bytes: number, ms: number }
interface ClientReport { rest: ReadReport, ws: ReadReport, probes: number, probeMaxMs: number }

/** Set in the client process this script forks: what to read, and with which token. */
const CLIENT_JOB = 'HISTORY_READ_CLIENT_JOB'

const clientJob = process.env[CLIENT_JOB]
if (clientJob !== undefined) {
  process.send?.(await clientReads(JSON.parse(clientJob) as ClientJob))
} else {
  await main()
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      publications: { type: 'string', default: '1000' },
      objects: { type: 'string', default: '6200' },
      rounds: { type: 'string', default: '3' }
    }
  })
  const publications = Number(values.publications)
  const objects = Number(values.objects)
  const rounds = Number(values.rounds)
  const variants: Array<{ name: string, env: Record<string, string> }> = [
    { name: 'pages (HISTORY_PAGE_BYTES=1 MiB)', env: {} },
    { name: 'one answer (caps lifted)', env: { HISTORY_PAGE_BYTES: String(256 * MiB), WS_MAX_BUFFERED_BYTES: String(512 * MiB) } }
  ]
  print(`history of ${publications} publications of ${objects} empty objects each; ${rounds} rounds per variant`)
  // A wall-clock delay counts time the process waited for a core: the machine's load says how much of it that may be.
  print(`load average at start: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`)
  print('variant | read | pages | MiB | read ms | loop delay max ms | loop delay p99 ms | p50 ms | /health/live max ms')
  for (const variant of variants) {
    for (let round = 1; round <= rounds; round++) {
      const result = await runOnce(publications, objects, variant.env)
      for (const [read, report] of [['REST', result.client.rest], ['WebSocket', result.client.ws]] as const) {
        print(`${variant.name} | ${read} | ${report.pages} | ${(report.bytes / MiB).toFixed(1)} | ${report.ms.toFixed(0)} | ` +
          `${result.delay.max.toFixed(1)} | ${result.delay.p99.toFixed(1)} | ${result.delay.p50.toFixed(1)} | ${result.client.probeMaxMs.toFixed(1)}`)
      }
    }
  }
}

/** One server, seeded, read by one client process; the loop delay covers both reads (REST then WebSocket). */
async function runOnce (publications: number, objects: number, env: Record<string, string>): Promise<{ client: ClientReport, delay: { max: number, p99: number, p50: number } }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'switchboard-history-read-'))
  const config = loadConfig({
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    DATA_DIR: dataDir,
    DATABASE_URL: 'sqlite::memory:',
    JWT_SECRET: 'history-read-bench-secret-0123456789abcdef',
    PASSWORD_HASH_COST: '10',
    RATE_LIMIT_MAX: '1000000',
    PUBLISH_RATE_PER_USER: '0',
    // The finding's room: 18.6 MiB of history in one room, so the room's own cap must allow it.
    HISTORY_ROOM_BYTES: String(64 * MiB),
    ...env
  })
  const app = await buildApp(config)
  try {
    await app.listen({ host: '127.0.0.1', port: 0 })
    const address = app.server.address()
    if (address === null || typeof address === 'string') throw new Error('no address')
    const url = `http://127.0.0.1:${address.port}`

    await app.store.createUser({ id: 'archivist', passwordHash: await hashPassword('bench password', 10), role: 'admin' })
    const login = await fetch(`${url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'archivist', password: 'bench password' }) })
    const { accessToken } = await login.json() as { accessToken: string }
    const principal = { kind: 'user' as const, userId: 'archivist', role: 'admin' as const, tokenId: 'bench', expiresAt: Math.floor(Date.now() / 1000) + 3600, sessionId: 'bench' }
    await app.rooms.create(principal, { id: ROOM, historySize: publications, historyTtlSeconds: 3600 })
    const json = JSON.stringify(Array.from({ length: objects }, () => ({})))
    for (let i = 0; i < publications; i++) await app.realtime.publish(principal, ROOM, { kind: 'json', payload: json })

    gc()
    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    const client = await new Promise<ClientReport>((resolve, reject) => {
      const job: ClientJob = { url, token: accessToken }
      const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx'], env: { ...process.env, [CLIENT_JOB]: JSON.stringify(job) } })
      child.once('message', (report) => { resolve(report as ClientReport); child.kill() })
      child.once('error', reject)
      child.once('exit', (code) => { if (code !== 0 && code !== null) reject(new Error(`client exited with ${code}`)) })
    })
    delay.disable()
    return { client, delay: { max: delay.max / 1e6, p99: delay.percentile(99) / 1e6, p50: delay.percentile(50) / 1e6 } }
  } finally {
    await app.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------------------
// The client process: reads and probes

async function clientReads (job: ClientJob): Promise<ClientReport> {
  let reading = true
  let probes = 0
  let probeMaxMs = 0
  const probing = (async () => {
    while (reading) {
      const at = performance.now()
      await (await fetch(`${job.url}/health/live`)).text()
      probeMaxMs = Math.max(probeMaxMs, performance.now() - at)
      probes++
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  const rest = await restRead(job)
  const ws = await wsRead(job)
  reading = false
  await probing
  return { rest, ws, probes, probeMaxMs }
}

interface Page { epoch: string, complete: boolean, publications: Array<{ offset: number }> }

async function restRead (job: ClientJob): Promise<ReadReport> {
  const started = performance.now()
  let query = 'limit=1000'
  let pages = 0
  let bytes = 0
  for (;;) {
    const res = await fetch(`${job.url}/rooms/${ROOM}/messages?${query}`, { headers: { authorization: `Bearer ${job.token}` } })
    const text = await res.text()
    if (res.status !== 200) throw new Error(`history: ${res.status} ${text.slice(0, 200)}`)
    pages++
    bytes += Buffer.byteLength(text)
    const page = JSON.parse(text) as Page
    if (page.complete) break
    query = `limit=1000&epoch=${page.epoch}&since=${page.publications.at(-1)!.offset}`
  }
  return { pages, bytes, ms: performance.now() - started }
}

async function wsRead (job: ClientJob): Promise<ReadReport> {
  const socket = new WebSocket(`${job.url.replace(/^http/, 'ws')}/ws`, { headers: { authorization: `Bearer ${job.token}` }, perMessageDeflate: false, maxPayload: 1024 * MiB })
  const frames: string[] = []
  let wake: (() => void) | undefined
  socket.on('message', (data) => { frames.push(data.toString()); wake?.() })
  const closed = new Promise<never>((_resolve, reject) => socket.once('close', (code) => reject(new Error(`closed with ${code}`))))
  closed.catch(() => {})
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
  const nextFrame = async (): Promise<string> => {
    while (frames.length === 0) await Promise.race([new Promise<void>((resolve) => { wake = resolve }), closed])
    return frames.shift()!
  }
  await nextFrame() // welcome
  const started = performance.now()
  let pages = 0
  let bytes = 0
  let since: { epoch: string, offset: number } | undefined
  for (let id = 1; ; id++) {
    socket.send(JSON.stringify({ type: 'history', id, room: ROOM, limit: 1000, ...(since === undefined ? {} : { since }) }))
    const text = await nextFrame()
    const frame = JSON.parse(text) as { type: string, result: Page }
    if (frame.type !== 'reply') throw new Error(`history: ${text.slice(0, 200)}`)
    pages++
    bytes += Buffer.byteLength(text)
    if (frame.result.complete) break
    since = { epoch: frame.result.epoch, offset: frame.result.publications.at(-1)!.offset }
  }
  const ms = performance.now() - started
  socket.close()
  return { pages, bytes, ms }
}
