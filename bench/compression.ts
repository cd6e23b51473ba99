import { loadavg } from 'node:os'
import { performance } from 'node:perf_hooks'
import { constants, deflateRawSync } from 'node:zlib'
import { parseArgs } from 'node:util'
import type { Socket } from 'node:net'
import { WebSocket } from 'ws'
import { sampleProcess } from '../src/cli/load/proc.js'
import { oneShotRequest } from '../support/http.js'
import { roomNames, startTarget, type RunningTarget } from './servers.js'

/**
 * What permessage-deflate (WS_COMPRESSION=on) costs and saves: docs/performance.md,
 * "Compression". Switchboard from its build (`npm run build` first), pinned to CPU 0 as in the
 * lab; the clients run in this process. Three set-ups: compression off, on with the default
 * threshold (1024 bytes), and on with threshold 0 (every frame compressed).
 *
 * - Idle RSS per connection: `--connections` clients that offer permessage-deflate (as
 *   browsers do) connect and idle; then each sends one compressed command (ws compresses
 *   every message at its threshold 0), and the RSS is read again: what an inflater kept per
 *   connection would show there.
 * - Per delivery: `--subscribers` clients in one room, `--messages` chat messages (JSON of
 *   200–1000 bytes: a sentence or a few, an author, a timestamp) published by one more client
 *   in batches of ten, each batch delivered everywhere before the next. Server CPU (utime +
 *   stime) per delivery, and bytes on the wire per delivery (what the subscribers' sockets
 *   read: headers, payloads, compressed or not). The server's CPU rate while idle (measured
 *   for a few seconds before) is subtracted over the publishing time: the clients, which
 *   inflate every compressed message, make the publishing last longer when compression is on.
 *
 * - Deflate settings: the same messages' `message` frames, and history-like pages of 100 of
 *   them, deflated in this process at zlib levels 1 and 6 with windows of 4 and 32 KiB: time
 *   per payload and compressed size (what chose the settings of src/realtime/ws-deflate.ts).
 *
 *   npm run build && taskset -c 1 node --import tsx bench/compression.ts [--connections 2000] [--subscribers 500] [--messages 400] [--runs 3] [--only memory,delivery,settings]
 *
 * Each measure is taken `--runs` times, the set-ups alternating within each run (the machines
 * here are shared: neighbours' load drifts from minute to minute), and printed as the median
 * with the range. `--cpu-prof DIR` profiles each fan-out's server (bench/profile-top.ts reads them).
 *
 * (taskset keeps the clients, which inflate every message, off the server's CPU 0.)
 */

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '2000' },
    subscribers: { type: 'string', default: '500' },
    messages: { type: 'string', default: '400' },
    only: { type: 'string', default: 'memory,delivery,settings' },
    runs: { type: 'string', default: '3' },
    'cpu-prof': { type: 'string' }
  }
})
const PARTS = new Set(values.only.split(','))
const RUNS = Number(values.runs)
/** Write a V8 CPU profile of each fan-out's server into this folder (one file per server, by pid). */
const CPU_PROF_DIR = values['cpu-prof']
const CONNECTIONS = Number(values.connections)
const SUBSCRIBERS = Number(values.subscribers)
const MESSAGES = Number(values.messages)
const BATCH = 10
const WARMUP_MESSAGES = 100
const SETTLE_MS = 3000
const IDLE_SAMPLE_MS = 5000
const ROOM = roomNames(1)[0]!

const print = (line: string): void => { process.stdout.write(`${line}\n`) }
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

interface Setup { name: string, env: Record<string, string> }
const SETUPS: Setup[] = [
  { name: 'off', env: { WS_COMPRESSION: 'off' } },
  { name: 'on, threshold 1024', env: { WS_COMPRESSION: 'on' } },
  { name: 'on, threshold 0', env: { WS_COMPRESSION: 'on', WS_COMPRESSION_THRESHOLD: '0' } }
]

/** Limits raised so that the bench's own clients are never refused or cut off. */
function limits (connections: number): Record<string, string> {
  const n = String(connections + 100)
  return {
    WS_MAX_CONNECTIONS_PER_USER: n,
    WS_MAX_CONNECTIONS_PER_IP: n,
    WS_HANDSHAKES_PER_IP_PER_MINUTE: String(10 * connections),
    HTTP_MAX_CONNECTIONS_PER_IP: n,
    WS_IDLE_TIMEOUT_MS: '600000',
    WS_MESSAGES_PER_SECOND: '100000',
    WS_MESSAGES_BURST: '100000',
    PUBLISH_RATE_PER_USER: '0'
  }
}

// Chat text: a seeded stream of common words, so every run publishes the same messages.
const WORDS = ('the a to and of in is it you that for on was with are this be at have not but can what all we your just so about ' +
  'like if out up do get one time my me no will when there how now they know would think more see here good really then okay ' +
  'yes sure thanks meeting tomorrow deploy build server client room message lunch coffee review ticket release bug fix merge ' +
  'branch test green red morning afternoon weekend customer invoice design draft slides call later friday monday').split(' ')
let seed = 42
const random = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648

/** A chat message's data: JSON of 200–1000 bytes. */
function chatMessage (n: number): Record<string, unknown> {
  const target = 200 + Math.floor(random() * 800)
  const base = { id: `m_${n.toString(36)}_${Math.floor(random() * 1e9).toString(36)}`, author: { id: `u_${Math.floor(random() * 5000)}`, name: 'Grace Hopper' }, sentAt: new Date(1_765_000_000_000 + n * 1371).toISOString(), text: '' }
  const words: string[] = []
  while (JSON.stringify({ ...base, text: words.join(' ') }).length < target) words.push(WORDS[Math.floor(random() * WORDS.length)]!)
  return { ...base, text: words.join(' ') }
}

interface Client { socket: WebSocket, received: number, waiters: Array<() => void>, replies: Map<string, () => void> }

/** One client: offers permessage-deflate (compressing everything it sends), counts the messages it receives. */
async function connect (target: RunningTarget, deflate = true): Promise<Client> {
  const socket = new WebSocket(`${target.url.replace(/^http/, 'ws')}/ws`, { headers: { authorization: `Bearer ${target.token!}` }, perMessageDeflate: deflate ? { threshold: 0 } : false })
  const client: Client = { socket, received: 0, waiters: [], replies: new Map() }
  const welcomed = new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.once('close', code => reject(new Error(`closed with ${code} before the welcome`)))
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as { type: string, id?: string }
      if (frame.type === 'welcome') resolve()
      else if (frame.type === 'message') {
        client.received++
        for (const wake of client.waiters.splice(0)) wake()
      } else if (frame.id !== undefined) client.replies.get(frame.id)?.()
    })
  })
  await welcomed
  return client
}

let commandSeq = 0
async function command (client: Client, body: Record<string, unknown>): Promise<void> {
  const id = `c${++commandSeq}`
  const answered = new Promise<void>(resolve => client.replies.set(id, resolve))
  client.socket.send(JSON.stringify({ ...body, id }))
  await answered
  client.replies.delete(id)
}

async function untilReceived (client: Client, count: number): Promise<void> {
  while (client.received < count) await new Promise<void>(resolve => client.waiters.push(resolve))
}

async function connectAll (target: RunningTarget, count: number): Promise<Client[]> {
  const clients: Client[] = []
  while (clients.length < count) clients.push(...await Promise.all(Array.from({ length: Math.min(100, count - clients.length) }, () => connect(target))))
  return clients
}

function closeAll (clients: Client[]): void {
  for (const client of clients) client.socket.terminate()
}

const rss = (target: RunningTarget): number => sampleProcess(target.pid).rssBytes

async function idleMemory (setup: Setup): Promise<{ idle: number, afterCommand: number }> {
  const target = await startTarget('switchboard', { rooms: [], env: { ...limits(CONNECTIONS), ...setup.env } })
  try {
    await sleep(SETTLE_MS)
    const base = rss(target)
    const clients = await connectAll(target, CONNECTIONS)
    await sleep(SETTLE_MS)
    const idle = rss(target)
    for (let i = 0; i < clients.length; i += 100) await Promise.all(clients.slice(i, i + 100).map(c => command(c, { type: 'ping' })))
    await sleep(SETTLE_MS)
    const afterCommand = rss(target)
    closeAll(clients)
    return { idle: (idle - base) / CONNECTIONS, afterCommand: (afterCommand - base) / CONNECTIONS }
  } finally {
    await target.stop()
  }
}

/** switchboard_ws_* counters from a loopback scrape (no token needed there). */
async function deflateCounters (target: RunningTarget): Promise<Record<string, number>> {
  const res = await oneShotRequest(target.url, 'GET', '/metrics')
  const text = typeof res.body === 'string' ? res.body : JSON.stringify(res.body)
  const out: Record<string, number> = {}
  for (const match of text.matchAll(/^switchboard_ws_(\w+)_total (\S+)$/gm)) out[match[1]!] = Number(match[2])
  return out
}

async function fanOut (setup: Setup): Promise<{ cpuMicros: number, idleCpuPercent: number, seconds: number, wireBytes: number, payloadBytes: number, deflatesPerPublication: number, deflateMicros: number }> {
  const target = await startTarget('switchboard', { rooms: [ROOM], env: { ...limits(SUBSCRIBERS + 1), ...setup.env }, ...(CPU_PROF_DIR === undefined ? {} : { cpuProfDir: CPU_PROF_DIR }) })
  try {
    const subscribers = await connectAll(target, SUBSCRIBERS)
    for (const subscriber of subscribers) await command(subscriber, { type: 'subscribe', room: ROOM })
    const publisher = await connect(target, false)
    seed = 42
    let published = 0
    let payloadBytes = 0
    const publish = async (count: number): Promise<void> => {
      for (let sent = 0; sent < count; sent += BATCH) {
        const batch = Array.from({ length: Math.min(BATCH, count - sent) }, () => chatMessage(published++))
        for (const data of batch) payloadBytes += Buffer.byteLength(JSON.stringify(data))
        await Promise.all(batch.map(data => command(publisher, { type: 'publish', room: ROOM, data })))
        await Promise.all(subscribers.map(s => untilReceived(s, published)))
      }
    }
    await publish(WARMUP_MESSAGES)
    // The server's CPU while nothing is published (timers, GC of the warm-up): subtracted, at
    // its rate, over the publishing, which lasts longer when the clients inflate every message.
    const idleFrom = { cpu: sampleProcess(target.pid).cpuSeconds, at: performance.now() }
    await sleep(IDLE_SAMPLE_MS)
    const idleRate = (sampleProcess(target.pid).cpuSeconds - idleFrom.cpu) / (performance.now() - idleFrom.at)
    const bytesRead = (): number => subscribers.reduce((sum, s) => sum + ((s.socket as unknown as { _socket: Socket })._socket.bytesRead), 0)
    const counters = await deflateCounters(target)
    const cpuBefore = sampleProcess(target.pid).cpuSeconds
    const startedAt = performance.now()
    const readBefore = bytesRead()
    payloadBytes = 0
    await publish(MESSAGES)
    const busyMs = performance.now() - startedAt
    const cpu = sampleProcess(target.pid).cpuSeconds - cpuBefore - idleRate * busyMs
    const wire = bytesRead() - readBefore
    const after = await deflateCounters(target)
    closeAll([...subscribers, publisher])
    const deliveries = MESSAGES * SUBSCRIBERS
    const deflates = (after.deflates ?? 0) - (counters.deflates ?? 0)
    return {
      cpuMicros: cpu / deliveries * 1e6,
      idleCpuPercent: idleRate * 1000 * 100,
      seconds: busyMs / 1000,
      wireBytes: wire / deliveries,
      payloadBytes: payloadBytes / MESSAGES,
      deflatesPerPublication: deflates / MESSAGES,
      deflateMicros: deflates === 0 ? 0 : ((after.deflate_seconds ?? 0) - (counters.deflate_seconds ?? 0)) / deflates * 1e6
    }
  } finally {
    await target.stop()
  }
}

/** Time and size of one deflate of each payload, at each level and window. */
function deflateSettings (): void {
  seed = 42
  const frames = Array.from({ length: 1000 }, (_, n) => Buffer.from(JSON.stringify({ type: 'message', room: 'team-42', epoch: 'k3j9x2', offset: n + 1, data: chatMessage(n), from: { id: 'u_17' }, ts: 1_765_000_000_000 + n })))
  const pages = Array.from({ length: 10 }, (_, p) => Buffer.from(`[${frames.slice(p * 100, p * 100 + 100).join(',')}]`))
  print('\n| Payloads | Level | Window | Time per payload | Compressed / original |')
  print('|---|---|---|---|---|')
  for (const [name, payloads, rounds] of [['chat frames', frames, 20], ['pages of 100', pages, 5]] as const) {
    for (const level of [1, 6]) {
      for (const windowBits of [12, 15]) {
        const options = { level, windowBits, memLevel: 8, finishFlush: constants.Z_SYNC_FLUSH }
        let inBytes = 0
        let outBytes = 0
        for (const payload of payloads) { inBytes += payload.length; outBytes += deflateRawSync(payload, options).length - 4 }
        const begun = performance.now()
        for (let round = 0; round < rounds; round++) for (const payload of payloads) deflateRawSync(payload, options)
        const micros = (performance.now() - begun) * 1000 / (rounds * payloads.length)
        print(`| ${name} (${Math.round(inBytes / payloads.length)} B) | ${level} | ${2 ** windowBits / 1024} KiB | ${micros.toFixed(1)} µs | ${(outBytes / inBytes).toFixed(3)} |`)
      }
    }
  }
}

print(`# permessage-deflate: ${new Date().toISOString()}, load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
if (PARTS.has('memory') || PARTS.has('delivery')) {
  print(`${CONNECTIONS} idle connections; ${SUBSCRIBERS} subscribers × ${MESSAGES} chat messages (after ${WARMUP_MESSAGES} of warm-up)\n`)
  print('| Set-up | Idle RSS per connection | … after one compressed command | Server CPU per delivery | Wire bytes per delivery | Deflates per publication | Deflate time per publication | Publishing took | Server idle CPU |')
  print('|---|---|---|---|---|---|---|---|---|')
  let payloadBytes = 0
  const memory = SETUPS.map(() => ({ idle: [] as number[], afterCommand: [] as number[] }))
  const delivery = SETUPS.map(() => ({ cpuMicros: [] as number[], idleCpuPercent: [] as number[], seconds: [] as number[], wireBytes: [] as number[], deflatesPerPublication: [] as number[], deflateMicros: [] as number[] }))
  for (let run = 0; run < RUNS; run++) {
    for (const [i, setup] of SETUPS.entries()) {
      if (PARTS.has('memory')) {
        const measured = await idleMemory(setup)
        memory[i]!.idle.push(measured.idle / 1024)
        memory[i]!.afterCommand.push(measured.afterCommand / 1024)
      }
      if (PARTS.has('delivery')) {
        const measured = await fanOut(setup)
        payloadBytes = measured.payloadBytes
        for (const key of ['cpuMicros', 'idleCpuPercent', 'seconds', 'wireBytes', 'deflatesPerPublication', 'deflateMicros'] as const) delivery[i]![key].push(measured[key])
      }
    }
  }
  /** The median, and the range when the runs differ: `4.1 (3.9–4.6)`. */
  const summary = (samples: number[], digits: number, unit: string): string => {
    if (samples.length === 0) return '–'
    const sorted = [...samples].sort((a, b) => a - b)
    const median = sorted[Math.floor(sorted.length / 2)]!
    const range = sorted.length > 1 && sorted[0]!.toFixed(digits) !== sorted.at(-1)!.toFixed(digits) ? ` (${sorted[0]!.toFixed(digits)}–${sorted.at(-1)!.toFixed(digits)})` : ''
    return `${median.toFixed(digits)}${unit}${range}`
  }
  for (const [i, setup] of SETUPS.entries()) {
    const m = memory[i]!
    const d = delivery[i]!
    print(`| ${setup.name} | ${summary(m.idle, 1, ' KB')} | ${summary(m.afterCommand, 1, ' KB')} | ${summary(d.cpuMicros, 2, ' µs')} | ${summary(d.wireBytes, 0, ' B')} | ${summary(d.deflatesPerPublication, 2, '')} | ${summary(d.deflateMicros, 1, ' µs')} | ${summary(d.seconds, 1, ' s')} | ${summary(d.idleCpuPercent, 1, ' %')} |`)
  }
  if (payloadBytes > 0) print(`\nThe messages' data: ${payloadBytes.toFixed(0)} bytes of JSON on average.`)
}
if (PARTS.has('settings')) deflateSettings()
print(`\nload average at the end: ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
