import { encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js'
import { connectRawWebSocket, HandshakeError, webSocketUrl, type RawMessage, type RawWebSocket } from '../src/cli/load/raw-websocket.js'
import { histogram } from '../src/cli/load/run.js'
import { backoffDelay, DEFAULT_BACKOFF_BASE_MS } from '@switchboard/client'
import { isReconnectCode } from '@switchboard/protocol/close-codes'

/**
 * One generator process of the capacity and reconnect-storm scenarios (bench/capacity.ts forks
 * several: a process may hold at most 20,000 open files here). It holds its share of the
 * connections from its own source address, each authenticated with its user's token and
 * subscribed to its room of 100 and to the broadcast room; answers the server's pings (the
 * client does); and, when a connection is lost, reconnects as the SDK does (the `reconnect`
 * push's delay, else full-jitter backoff; any node, as a load balancer would pick) and
 * resubscribes with `since`, checking every offset it is given: a gap is a lost message, an
 * offset seen before a duplicate. It reports to the parent over IPC what the parent asks.
 */

export interface WorkerInit {
  type: 'init'
  /** The nodes; connection i first goes to urls[i % urls.length], a reconnect to any. */
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
  /** The largest backoff bound of a reconnect (ms): the SDK's default unless a run compares another. */
  backoffCapMs: number
}

export type ParentMessage =
  | WorkerInit
  | { type: 'connect', upTo: number }
  | { type: 'broadcast-reset' }
  | { type: 'broadcast-report' }
  | { type: 'steady-start' }
  | { type: 'steady-stop' }
  /** A storm begins now (`t0`, wall-clock ms): reconnects are timed from it. */
  | { type: 'storm-start', t0: number }
  | { type: 'storm-report' }
  | { type: 'close' }

/** What a worker saw of a storm so far. */
export interface StormReport {
  /** Connections that lost their socket since the storm began (each counted once). */
  lost: number
  /** Of those, connections open and resubscribed to both rooms again. */
  back: number
  /** When each came back, ms after t0. */
  backMs: number[]
  /** Failed reconnect attempts, by reason (HTTP status or system error code). */
  refused: Record<string, number>
  /** Offsets skipped (messages lost), offsets seen twice, resubscribes answered `recovered: false`. */
  gaps: number
  duplicates: number
  notRecovered: number
  /** Connections the server closed for good (a terminal close code), by code. */
  terminal: Record<string, number>
  /** Of each room this worker holds, the lowest offset its subscribers have reached (-1: none held). */
  lowestOffset: number[]
}

export type WorkerMessage =
  | { type: 'ready' }
  /** Histograms in microseconds, as HdrHistogram's compressed base64 (the parent adds them up). */
  | { type: 'connected', held: number, connectUs: string, failures: Record<string, number> }
  | { type: 'broadcast', received: number, lastAt: number }
  | { type: 'steady', latencyUs: string }
  | { type: 'storm', report: StormReport }
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

interface Position { epoch: string, offset: number }

interface Publication { offset: number }

interface Frame {
  type: string
  id?: number
  room?: string
  epoch?: string
  offset?: number
  data?: { t?: number }
  retryAfterMs?: number
  result?: { room: string, epoch: string, offset: number, recovered: boolean, publications: Publication[] }
  error?: { code?: string }
}

/** One held connection: where it is in each of its two rooms, and its reconnect state. */
interface Held {
  i: number
  socket: RawWebSocket | null
  positions: Map<string, Position>
  attempt: number
  retryAfterMs: number | null
  /** Lost during the current storm (counted once even when it drops again). */
  lostInStorm: boolean
  /** When it was last back (open and resubscribed), wall-clock ms. */
  backAt: number
  /** Held (its first connect succeeded): a lost socket is reconnected. */
  kept: boolean
}

let init: WorkerInit | undefined
const held: Held[] = []
let next = 0
let broadcastReceived = 0
let broadcastLastAt = 0
let steady: Histogram | null = null
const closedEarly: Record<string, number> = {}
let closing = false
let storm: Omit<StormReport, 'lowestOffset' | 'back' | 'backMs'> & { t0: number } | null = null

function stormCount (field: 'refused' | 'terminal', key: string): void {
  if (storm !== null) storm[field][key] = (storm[field][key] ?? 0) + 1
}

/** Checks one offset of a room against where the connection was: counts a gap or a duplicate. */
function advance (h: Held, room: string, epoch: string, offset: number): void {
  const at = h.positions.get(room)
  if (at === undefined || at.epoch !== epoch) {
    h.positions.set(room, { epoch, offset })
    return
  }
  if (offset <= at.offset) {
    if (storm !== null) storm.duplicates++
    return
  }
  if (offset > at.offset + 1 && storm !== null) storm.gaps += offset - at.offset - 1
  at.offset = offset
}

function onMessage (h: Held, frame: Frame): void {
  const room = frame.room!
  advance(h, room, frame.epoch!, frame.offset!)
  if (room === init!.broadcastRoom) {
    broadcastReceived++
    broadcastLastAt = nowMs()
  } else if (steady !== null && typeof frame.data?.t === 'number') {
    steady.recordValue(Math.max(1, Math.round((nowMs() - frame.data.t) * 1000)))
  }
}

/** A subscribe reply: the publications it recovered, then its position. */
function onSubscribed (h: Held, result: NonNullable<Frame['result']>, since: Position | undefined): void {
  if (since !== undefined) {
    if (!result.recovered || result.epoch !== since.epoch) {
      if (storm !== null) storm.notRecovered++
      h.positions.set(result.room, { epoch: result.epoch, offset: result.offset })
      return
    }
    for (const p of result.publications) advance(h, result.room, result.epoch, p.offset)
  }
  // The reply's position is where the subscription stands, not a message: past what the
  // connection has seen it is a gap; at or before it, nothing.
  const at = h.positions.get(result.room)
  if (at === undefined || at.epoch !== result.epoch) h.positions.set(result.room, { epoch: result.epoch, offset: result.offset })
  else if (result.offset > at.offset) advance(h, result.room, result.epoch, result.offset)
}

/**
 * Opens connection `h` on `url`: waits for the welcome, subscribes to both rooms (with `since`
 * when it was subscribed before), and resolves once both replies are in.
 */
async function open (h: Held, url: string): Promise<void> {
  const w = init!
  const socket = await connectRawWebSocket(webSocketUrl(url, '/ws'), {
    timeoutMs: CONNECT_TIMEOUT_MS,
    localAddress: w.localAddress,
    protocols: ['switchboard.v1'],
    headers: { Authorization: `Bearer ${w.tokens[userOf(h.i, w.connectionsPerUser)]!}` }
  })
  h.socket = socket
  const rooms = [`${w.roomPrefix}${roomOf(h.i, w.rooms)}`, w.broadcastRoom]
  const since = rooms.map(room => h.positions.get(room))
  await new Promise<void>((resolve, reject) => {
    let replies = 0
    let settled = false
    const timer = setTimeout(() => { settled = true; reject(new Error('subscribe: no reply')) }, REPLY_TIMEOUT_MS)
    socket.onClose((code) => {
      clearTimeout(timer)
      h.socket = null
      if (!settled) {
        settled = true
        reject(new Error(`closed ${code}`))
      }
      if (!closing) lost(h, code)
    })
    socket.onMessage((message: RawMessage) => {
      if (typeof message !== 'string') return
      const frame = JSON.parse(message) as Frame
      switch (frame.type) {
        case 'welcome':
          rooms.forEach((room, k) => {
            const at = since[k]
            socket.send(JSON.stringify({ type: 'subscribe', id: k + 1, room, ...(at === undefined ? {} : { since: at }) }))
          })
          return
        case 'reply':
          onSubscribed(h, frame.result!, since[frame.id! - 1])
          if (++replies === 2 && !settled) {
            settled = true
            clearTimeout(timer)
            resolve()
          }
          return
        case 'message':
          onMessage(h, frame)
          return
        case 'reconnect':
          h.retryAfterMs = frame.retryAfterMs ?? null
          return
        case 'error':
          if (!settled) {
            settled = true
            clearTimeout(timer)
            reject(new Error(`error ${frame.error?.code ?? 'unknown'}`))
          }
      }
    })
  })
}

/** A held connection lost its socket: reconnect as the SDK does, unless the close was final. */
function lost (h: Held, code: number): void {
  if (!h.kept) return
  if (storm !== null && !h.lostInStorm) {
    h.lostInStorm = true
    storm.lost++
  }
  if (!isReconnectCode(code)) {
    closedEarly[code] = (closedEarly[code] ?? 0) + 1
    stormCount('terminal', String(code))
    return
  }
  retryLater(h)
}

function retryLater (h: Held): void {
  const delay = h.retryAfterMs ?? backoffDelay(h.attempt, DEFAULT_BACKOFF_BASE_MS, init!.backoffCapMs)
  h.retryAfterMs = null
  h.attempt++
  setTimeout(() => { void reconnect(h) }, delay)
}

async function reconnect (h: Held): Promise<void> {
  if (closing) return
  const urls = init!.urls
  try {
    await open(h, urls[Math.floor(Math.random() * urls.length)]!)
    h.attempt = 0
    h.backAt = nowMs()
  } catch (err) {
    if (err instanceof HandshakeError) {
      stormCount('refused', err.details.status === undefined ? err.details.code ?? 'handshake failed' : `HTTP ${err.details.status}`)
      retryLater(h)
      return
    }
    // The socket opened: closing it schedules the retry (lost()), once, if it has not closed already.
    stormCount('refused', err instanceof Error ? err.message.slice(0, 60) : String(err))
    h.socket?.terminate()
  }
}

async function connectUpTo (upTo: number): Promise<void> {
  const w = init!
  const target = Math.min(upTo, w.count)
  const connect = histogram()
  const failures: Record<string, number> = {}
  const lane = async (): Promise<void> => {
    while (next < target) {
      const h: Held = { i: w.first + next++, socket: null, positions: new Map(), attempt: 0, retryAfterMs: null, lostInStorm: false, backAt: 0, kept: false }
      const started = nowMs()
      try {
        await open(h, w.urls[h.i % w.urls.length]!)
        h.kept = true
        held.push(h)
        connect.recordValue(Math.max(1, Math.round((nowMs() - started) * 1000)))
      } catch (err) {
        h.socket?.terminate()
        const reason = err instanceof Error ? err.message.slice(0, 80) : String(err)
        failures[reason] = (failures[reason] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: w.concurrency }, lane))
  send({ type: 'connected', held: held.length, connectUs: encodeIntoCompressedBase64(connect), failures })
}

function stormReport (): StormReport {
  const w = init!
  const lowestOffset = new Array<number>(w.rooms).fill(-1)
  const backMs: number[] = []
  for (const h of held) {
    if (storm !== null && h.lostInStorm && h.socket !== null && h.attempt === 0 && h.backAt >= storm.t0) backMs.push(Math.round(h.backAt - storm.t0))
    const room = roomOf(h.i, w.rooms)
    const at = h.positions.get(`${w.roomPrefix}${room}`)?.offset ?? -1
    lowestOffset[room] = lowestOffset[room] === -1 ? at : Math.min(lowestOffset[room]!, at)
  }
  const s = storm ?? { lost: 0, refused: {}, gaps: 0, duplicates: 0, notRecovered: 0, terminal: {}, t0: 0 }
  return { lost: s.lost, back: backMs.length, backMs, refused: s.refused, gaps: s.gaps, duplicates: s.duplicates, notRecovered: s.notRecovered, terminal: s.terminal, lowestOffset }
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
    case 'storm-start':
      for (const h of held) h.lostInStorm = false
      storm = { t0: message.t0, lost: 0, refused: {}, gaps: 0, duplicates: 0, notRecovered: 0, terminal: {} }
      return
    case 'storm-report':
      send({ type: 'storm', report: stormReport() })
      return
    case 'close':
      closing = true
      if (Object.keys(closedEarly).length > 0) send({ type: 'closed-early', codes: closedEarly })
      for (const h of held) h.socket?.terminate()
      // Let the IPC message go out before the process ends.
      setTimeout(() => process.exit(0), 200)
  }
})
