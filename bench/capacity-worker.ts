import { encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js'
import { connectRawWebSocket, webSocketUrl, type RawMessage, type RawWebSocket } from '../src/cli/load/raw-websocket.js'
import { histogram } from '../src/cli/load/run.js'

/**
 * One generator process of the capacity scenario (bench/capacity.ts forks several: a process
 * may hold at most 20,000 open files here). It holds its share of the connections from its own
 * source address, each authenticated with its user's token and subscribed to its room of 100
 * and to the broadcast room, answers the server's pings (the client does), and reports to the
 * parent over IPC what the parent asks: connect times, broadcast arrivals, steady latencies.
 */

export interface WorkerInit {
  type: 'init'
  /** The nodes; connection i goes to urls[i % urls.length]. */
  urls: string[]
  localAddress: string
  /** Global index of this worker's first connection, and how many it holds at most. */
  first: number
  count: number
  /** The token of each user; connection i is user userOf(i). */
  tokens: string[]
  connectionsPerUser: number
  rooms: number
  roomPrefix: string
  broadcastRoom: string
  /** Handshakes in flight at once. */
  concurrency: number
}

export type ParentMessage =
  | WorkerInit
  | { type: 'connect', upTo: number }
  | { type: 'broadcast-reset' }
  | { type: 'broadcast-report' }
  | { type: 'steady-start' }
  | { type: 'steady-stop' }
  | { type: 'close' }

export type WorkerMessage =
  | { type: 'ready' }
  /** Histograms in microseconds, as HdrHistogram's compressed base64 (the parent adds them up). */
  | { type: 'connected', held: number, connectUs: string, failures: Record<string, number> }
  | { type: 'broadcast', received: number, lastAt: number }
  | { type: 'steady', latencyUs: string }
  | { type: 'closed-early', codes: Record<string, number> }

const CONNECT_TIMEOUT_MS = 30_000
const REPLY_TIMEOUT_MS = 30_000

/** Connection i (global) is in room i % rooms; ten consecutive connections are one user's, each in another room. */
export function roomOf (i: number, rooms: number): number {
  return i % rooms
}

export function userOf (i: number, connectionsPerUser: number): number {
  return Math.floor(i / connectionsPerUser)
}

function send (message: WorkerMessage): void {
  process.send?.(message)
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across the processes of one machine. */
function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

let init: WorkerInit | undefined
const sockets: RawWebSocket[] = []
let next = 0
let broadcastReceived = 0
let broadcastLastAt = 0
let steady: Histogram | null = null
const closedEarly: Record<string, number> = {}
let closing = false

function onMessage (message: RawMessage): void {
  if (typeof message !== 'string' || !message.startsWith('{"type":"message"')) return
  const frame = JSON.parse(message) as { room: string, data: { t?: number } }
  if (frame.room === init!.broadcastRoom) {
    broadcastReceived++
    broadcastLastAt = nowMs()
  } else if (steady !== null && typeof frame.data.t === 'number') {
    steady.recordValue(Math.max(1, Math.round((nowMs() - frame.data.t) * 1000)))
  }
}

/** Opens connection `i`, waits for its welcome and both subscribe replies; resolves with the time it took. */
async function open (i: number): Promise<number> {
  const w = init!
  const started = nowMs()
  const url = webSocketUrl(w.urls[i % w.urls.length]!, '/ws')
  const socket = await connectRawWebSocket(url, {
    timeoutMs: CONNECT_TIMEOUT_MS,
    localAddress: w.localAddress,
    protocols: ['switchboard.v1'],
    headers: { Authorization: `Bearer ${w.tokens[userOf(i, w.connectionsPerUser)]!}` }
  })
  await new Promise<void>((resolve, reject) => {
    let replies = 0
    const timer = setTimeout(() => { reject(new Error('subscribe: no reply')) }, REPLY_TIMEOUT_MS)
    socket.onClose((code) => {
      clearTimeout(timer)
      reject(new Error(`closed ${code}`))
      if (!closing) closedEarly[code] = (closedEarly[code] ?? 0) + 1
    })
    socket.onMessage((message) => {
      if (typeof message === 'string' && message.startsWith('{"type":"welcome"')) {
        socket.send(`{"type":"subscribe","id":1,"room":"${w.roomPrefix}${roomOf(i, w.rooms)}"}`)
        socket.send(`{"type":"subscribe","id":2,"room":"${w.broadcastRoom}"}`)
        return
      }
      if (typeof message === 'string' && message.startsWith('{"type":"reply"')) {
        if (++replies === 2) {
          clearTimeout(timer)
          socket.onMessage(onMessage)
          resolve()
        }
        return
      }
      if (typeof message === 'string' && message.startsWith('{"type":"error"')) {
        clearTimeout(timer)
        reject(new Error(`error frame: ${message.slice(0, 200)}`))
      }
    })
  })
  sockets.push(socket)
  return nowMs() - started
}

async function connectUpTo (upTo: number): Promise<void> {
  const w = init!
  const target = Math.min(upTo, w.count)
  const connect = histogram()
  const failures: Record<string, number> = {}
  const lane = async (): Promise<void> => {
    while (next < target) {
      const i = w.first + next++
      try {
        connect.recordValue(Math.max(1, Math.round(await open(i) * 1000)))
      } catch (err) {
        const reason = err instanceof Error ? err.message.slice(0, 80) : String(err)
        failures[reason] = (failures[reason] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: w.concurrency }, lane))
  send({ type: 'connected', held: sockets.length, connectUs: encodeIntoCompressedBase64(connect), failures })
}

process.on('message', (message: ParentMessage) => {
  switch (message.type) {
    case 'init':
      init = message
      send({ type: 'ready' })
      return
    case 'connect':
      void connectUpTo(message.upTo)
      return
    case 'broadcast-reset':
      broadcastReceived = 0
      broadcastLastAt = 0
      return
    case 'broadcast-report':
      send({ type: 'broadcast', received: broadcastReceived, lastAt: broadcastLastAt })
      return
    case 'steady-start':
      steady = histogram()
      return
    case 'steady-stop': {
      const h = steady ?? histogram()
      steady = null
      send({ type: 'steady', latencyUs: encodeIntoCompressedBase64(h) })
      return
    }
    case 'close':
      closing = true
      if (Object.keys(closedEarly).length > 0) send({ type: 'closed-early', codes: closedEarly })
      for (const s of sockets) s.terminate()
      // Let the IPC message go out before the process ends.
      setTimeout(() => process.exit(0), 200)
  }
})
