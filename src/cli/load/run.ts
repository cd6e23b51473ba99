import { randomBytes } from 'node:crypto'
import { build, type Histogram } from 'hdr-histogram-js'
import { CliError } from '../api.js'
import type { LoadAdapter, LoadConnection, CloseInfo, Payload } from './adapter.js'
import { PublishError } from './adapter.js'
import { binaryPool, decodeBinaryPayload, decodePayload, encodeBinaryPayload, encodePayload, makePlan, nowMicros, publisherOf, type DecodedPayload, type Plan } from './plan.js'
import { sampleProcess, type ProcSample } from './proc.js'

/**
 * The engine of `switchboard load`: connects subscribers and publishers through an adapter,
 * publishes on an open-loop schedule (or in a burst), and accounts for every delivery.
 *
 * Open loop: in rate mode message k has an intended send time t0 + k / rate, fixed before the
 * run. Its latency is measured from that time, not from when it was actually written, so a
 * publisher that falls behind (the server acknowledges slowly, the event loop stalls) shows
 * up as latency instead of silently lowering the rate (no coordinated omission).
 */

export interface LoadOptions {
  subscribers: number
  publishers: number
  rooms: number
  roomPrefix: string
  /** Payload bytes. */
  size: number
  /** Payloads are random bytes (`--binary`) instead of text. */
  binary: boolean
  mode: 'rate' | 'burst'
  /** Total messages per second over all publishers (rate mode). */
  rate: number
  /** Message cap (rate mode, optional) or count (burst mode). */
  messages: number | undefined
  durationMs: number
  /**
   * Rate mode: publish on the same schedule for this long before the measured `durationMs`.
   * Its messages are delivered and accounted for like the others, but their latencies are not
   * recorded: the first fan-outs of a fresh process run unoptimised code, and that start-up
   * would otherwise be most of a short run's p99.
   */
  warmupMs: number
  batch: number
  drainMs: number
  createRooms: boolean
  serverPid?: number | undefined
}

export interface Logger {
  /** A progress line: rewritten in place on a terminal, shown now and then otherwise. */
  progress(text: string, final?: boolean): void
  warn(text: string): void
}

/** Burst mode holds a publisher while more than this is queued in its socket. */
export const BURST_BUFFER_BYTES = 256 * 1024
/** Bound on the per-subscriber delivery bitmaps, in bytes. */
const MAX_TRACKING_BYTES = 512 * 1024 * 1024

export interface Counted { code: string, count: number, message: string, hint?: string }

export interface LoadResult {
  target: string
  options: LoadOptions
  connect: {
    connections: number
    totalMs: number
    /** Per connection, microseconds: handshake to ready (welcome). */
    histogram: Histogram
  }
  messages: {
    planned: number
    /** The first this many of them were published during the warm-up (latencies not recorded). */
    warmup: number
    /** Written and not refused. */
    published: number
    /** Refused by the server (by error code). */
    refused: Counted[]
    /** Due by the schedule but never written (publisher closed, or still queued when the drain ended). */
    unsent: number
  }
  deliveries: {
    expected: number
    delivered: number
    lost: number
    duplicates: number
    /** Deliveries of messages not published to that subscriber's room (never expected). */
    unexpected: number
    /** From the first intended send to the last delivery. */
    elapsedMs: number
  }
  /** Delivery latency, microseconds (first deliveries only, of messages after the warm-up). */
  latency: Histogram
  /** Rate mode: how late publishers wrote each message after its intended time, microseconds. */
  sendLag: Histogram
  /**
   * WebSocket bytes (frames with their headers) from the first publish to the end of the
   * drain: read by the subscribers, written by the publishers. Null when the adapter's
   * connections do not count them.
   */
  wire: { received: number, sent: number } | null
  /** Connections the server closed during the run. */
  closed: Array<{ code: number, count: number, role: 'subscriber' | 'publisher', hint?: string }>
  server?: {
    pid: number
    before: ProcSample
    afterConnect: ProcSample
    after: ProcSample
  }
  warnings: string[]
}

/** Microseconds, from 1 µs to an hour, at three significant digits. */
export function histogram (): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 })
}

interface Subscriber { conn: LoadConnection, room: number, seen: Uint8Array }

interface Publisher {
  conn: LoadConnection
  index: number
  queue: number[]
  head: number
  inFlight: number
  dead: boolean
  /** Burst mode: a setImmediate retry is pending. */
  retry: boolean
}

export async function runLoad (adapter: LoadAdapter, o: LoadOptions, log: Logger): Promise<LoadResult> {
  const roomNames = Array.from({ length: o.rooms }, (_, i) => `${o.roomPrefix}${i}`)
  const warmupMs = o.mode === 'rate' ? o.warmupMs : 0
  const planned = o.publishers === 0
    ? 0
    : o.mode === 'burst' ? o.messages ?? 0 : Math.min(o.messages ?? Infinity, Math.floor(o.rate * (warmupMs + o.durationMs) / 1000))
  /** Messages 0 … warmup − 1 are due during the warm-up (message k is due at t0 + k / rate). */
  const warmup = Math.min(planned, Math.floor(o.rate * warmupMs / 1000))
  const plan: Plan = makePlan(planned, Math.max(1, o.publishers), o.rooms)
  const pool = o.binary ? binaryPool(o.size, randomBytes) : undefined
  const payload = (k: number, publisher: number, intendedMicros: number): Payload =>
    pool === undefined ? encodePayload(k, publisher, intendedMicros, o.size) : encodeBinaryPayload(k, publisher, intendedMicros, o.size, pool)
  const subsInRoom = new Uint32Array(o.rooms)
  let tracking = 0
  for (let i = 0; i < o.subscribers; i++) {
    subsInRoom[i % o.rooms]!++
    tracking += plan.perRoom[i % o.rooms]!
  }
  if (tracking > MAX_TRACKING_BYTES) {
    throw new CliError(`subscribers × messages per room is ${tracking}: over the ${MAX_TRACKING_BYTES} the generator tracks; use fewer messages, more rooms or fewer subscribers`, 2)
  }

  const warnings: string[] = []
  const warn = (text: string): void => { warnings.push(text); log.warn(text) }
  const connectHist = histogram()
  const latency = histogram()
  const sendLag = histogram()
  const subscribers: Subscriber[] = []
  const publishers: Publisher[] = []
  const closes = new Map<string, { code: number, count: number, role: 'subscriber' | 'publisher', hint?: string }>()
  const onClose = (role: 'subscriber' | 'publisher') => (info: CloseInfo): void => {
    const key = `${role}:${info.code}`
    const seen = closes.get(key)
    if (seen !== undefined) seen.count++
    else closes.set(key, { code: info.code, count: 1, role, ...(info.hint === undefined ? {} : { hint: info.hint }) })
  }
  const sample = (): ProcSample | undefined => o.serverPid === undefined ? undefined : sampleProcess(o.serverPid)

  // Deliveries, counted as they arrive.
  let received = 0
  let duplicates = 0
  let unexpectedLive = 0
  let lastDeliveryMicros = 0

  const runMs = warmupMs + o.durationMs + o.drainMs + 60_000
  await adapter.prepare?.(roomNames, { create: o.createRooms, runMs })
  const before = sample()

  try {
    // ---------------------------------------------------------------------------------
    // Connect: subscribers, then publishers, in batches.
    const total = o.subscribers + o.publishers
    const connectStart = performance.now()
    for (let start = 0; start < total; start += o.batch) {
      const end = Math.min(total, start + o.batch)
      const results = await Promise.allSettled(Array.from({ length: end - start }, async (_, j) => {
        const index = start + j
        const began = performance.now()
        const conn = await adapter.connect(index, index < o.subscribers ? 'subscriber' : 'publisher')
        connectHist.recordValue(Math.max(1, Math.round((performance.now() - began) * 1000)))
        if (index < o.subscribers) {
          const room = index % o.rooms
          const sub: Subscriber = { conn, room, seen: new Uint8Array(plan.perRoom[room]!) }
          subscribers.push(sub)
          conn.onClose(onClose('subscriber'))
          conn.onMessage(receiver(sub, roomNames[room]!))
          await conn.subscribe(roomNames[room]!)
        } else {
          const pub: Publisher = { conn, index: index - o.subscribers, queue: [], head: 0, inFlight: 0, dead: false, retry: false }
          publishers.push(pub)
          conn.onClose((info) => { pub.dead = true; onClose('publisher')(info) })
        }
      }))
      const failure = results.find(r => r.status === 'rejected')
      if (failure !== undefined) throw (failure as PromiseRejectedResult).reason
      log.progress(`connecting: ${Math.min(end, o.subscribers)}/${o.subscribers} subscribers, ${Math.max(0, end - o.subscribers)}/${o.publishers} publishers (${((performance.now() - connectStart) / 1000).toFixed(1)} s)`, end === total)
    }
    const connectMs = performance.now() - connectStart
    publishers.sort((a, b) => a.index - b.index)
    const afterConnect = sample()

    // ---------------------------------------------------------------------------------
    // Publish.
    const perPublisher = o.publishers === 0 ? 0 : Math.ceil(planned / o.publishers)
    for (const line of adapter.checkLoad?.({
      mode: o.mode,
      ratePerPublisher: o.mode === 'rate' && o.publishers > 0 ? o.rate / o.publishers : 0,
      messagesPerPublisher: perPublisher,
      size: o.size,
      binary: o.binary
    }) ?? []) warn(line)

    // Bytes on the wire from here on: subscribers read deliveries, publishers write publishes.
    const wireBytes = (): { received: number, sent: number } | null => {
      let received = 0
      let sent = 0
      for (const { conn } of subscribers) {
        if (conn.bytesReceived === undefined) return null
        received += conn.bytesReceived
      }
      for (const { conn } of publishers) {
        if (conn.bytesSent === undefined) return null
        sent += conn.bytesSent
      }
      return { received, sent }
    }
    const wireBefore = wireBytes()

    const sentOk = new Uint8Array(planned)
    let expectedLive = 0
    let inFlight = 0
    const refused = new Map<string, Counted>()
    const maxInFlight = adapter.maxInFlight ?? Infinity
    const t0 = performance.now()
    const t0Micros = Math.round((performance.timeOrigin + t0) * 1000)
    const intervalMicros = o.mode === 'rate' ? 1_000_000 / o.rate : 0
    let stopped = false

    const send = (pub: Publisher, k: number, intendedMicros: number): void => {
      const room = plan.room[k]!
      sentOk[k] = 1
      expectedLive += subsInRoom[room]!
      pub.inFlight++
      inFlight++
      pub.conn.publish(roomNames[room]!, payload(k, pub.index, intendedMicros)).then(() => {
        pub.inFlight--
        inFlight--
        pump(pub)
      }, (err: unknown) => {
        pub.inFlight--
        inFlight--
        sentOk[k] = 0
        expectedLive -= subsInRoom[room]!
        const code = err instanceof PublishError ? err.code : 'error'
        if (code === 'closed') pub.dead = true
        const seen = refused.get(code)
        if (seen !== undefined) seen.count++
        else refused.set(code, { code, count: 1, message: (err as Error).message, ...(err instanceof PublishError && err.hint !== undefined ? { hint: err.hint } : {}) })
        pump(pub)
      })
    }

    const pump = (pub: Publisher): void => {
      if (pub.dead || stopped) return
      if (o.mode === 'rate') {
        while (pub.head < pub.queue.length && pub.inFlight < maxInFlight) {
          const k = pub.queue[pub.head++]!
          const intended = t0Micros + Math.round(k * intervalMicros)
          if (k >= warmup) sendLag.recordValue(Math.max(1, nowMicros() - intended))
          send(pub, k, intended)
        }
        if (pub.head === pub.queue.length) { pub.queue.length = 0; pub.head = 0 }
        return
      }
      while (pub.head < pub.queue.length && pub.inFlight < maxInFlight) {
        if (pub.conn.bufferedAmount > BURST_BUFFER_BYTES) {
          if (!pub.retry) {
            pub.retry = true
            setImmediate(() => { pub.retry = false; pump(pub) })
          }
          return
        }
        send(pub, pub.queue[pub.head++]!, nowMicros())
      }
    }

    const queued = (): number => publishers.reduce((n, p) => n + (p.dead ? 0 : p.queue.length - p.head), 0)
    const unsentNow = (): number => publishers.reduce((n, p) => n + p.queue.length - p.head, 0)

    let next = 0
    if (planned > 0) {
      const spread = `over ${o.publishers} publisher${o.publishers === 1 ? '' : 's'} to ${o.rooms} room${o.rooms === 1 ? '' : 's'}`
      log.progress(o.mode === 'rate' ? `publishing ${planned} messages at ${o.rate}/s ${spread}${warmup > 0 ? ` (the first ${warmup} a warm-up, not timed)` : ''}` : `publishing ${planned} messages in a burst ${spread}`, true)
    }
    if (o.mode === 'burst') {
      for (let k = 0; k < planned; k++) publishers[publisherOf(k, o.publishers)]!.queue.push(k)
      next = planned
      for (const pub of publishers) pump(pub)
      // Burst: stop writing at the duration cap; the rest is unsent.
      await new Promise<void>(resolve => {
        const deadline = t0 + o.durationMs
        const check = (): void => {
          if (queued() === 0) { resolve(); return }
          if (performance.now() >= deadline) { stopped = true; resolve(); return }
          setTimeout(check, 5)
        }
        check()
      })
    } else if (planned > 0) {
      // Rate: hand each message to its publisher when its intended time comes.
      let lastProgress = t0
      await new Promise<void>(resolve => {
        const tick = (): void => {
          const now = performance.now()
          const due = Math.min(planned, Math.floor((now - t0) * o.rate / 1000) + 1)
          const touched = new Set<Publisher>()
          while (next < due) {
            const pub = publishers[publisherOf(next, o.publishers)]!
            pub.queue.push(next++)
            touched.add(pub)
          }
          for (const pub of touched) pump(pub)
          if (now - lastProgress >= 1000) {
            lastProgress = now
            log.progress(`publishing: ${next}/${planned} due, ${received} deliveries (${((now - t0) / 1000).toFixed(0)} s)`)
          }
          if (next >= planned) { resolve(); return }
          setTimeout(tick, Math.max(0, (next / o.rate) * 1000 - (performance.now() - t0)))
        }
        tick()
      })
    }

    // ---------------------------------------------------------------------------------
    // Drain: until every expected delivery came and every publish was answered, or drainMs.
    const drainEnd = performance.now() + o.drainMs
    await new Promise<void>(resolve => {
      const check = (): void => {
        if ((queued() === 0 && inFlight === 0 && received >= expectedLive) || performance.now() >= drainEnd) { resolve(); return }
        setTimeout(check, 5)
      }
      check()
    })
    stopped = true
    const after = sample()
    const wireAfter = wireBytes()

    // ---------------------------------------------------------------------------------
    // Account: per subscriber, every message published to its room is delivered or lost.
    let expected = 0
    let delivered = 0
    let unexpected = unexpectedLive
    for (const sub of subscribers) {
      const messages = plan.byRoom[sub.room]!
      for (let j = 0; j < messages.length; j++) {
        if (sentOk[messages[j]!] === 1) {
          expected++
          if (sub.seen[j] === 1) delivered++
        } else if (sub.seen[j] === 1) {
          unexpected++
        }
      }
    }
    let published = 0
    for (let k = 0; k < planned; k++) published += sentOk[k]!
    const unsent = unsentNow() + (planned - next)

    const refusedList = [...refused.values()]
    for (const r of refusedList) {
      warn(`${r.count} publish${r.count === 1 ? ' was' : 'es were'} refused: ${r.code}: ${r.message}${r.hint === undefined ? '' : ` (${r.hint})`}`)
    }
    const closed = [...closes.values()]
    for (const c of closed) {
      warn(`the server closed ${c.count} ${c.role} connection${c.count === 1 ? '' : 's'} with ${c.code}${c.hint === undefined ? '' : `: ${c.hint}`}`)
    }
    if (unsent > 0) warn(`${unsent} scheduled messages were never sent (publishers closed or still backlogged when the drain ended)`)

    return {
      target: adapter.name,
      options: o,
      connect: { connections: total, totalMs: connectMs, histogram: connectHist },
      messages: { planned, warmup, published, refused: refusedList, unsent },
      deliveries: {
        expected,
        delivered,
        lost: expected - delivered,
        duplicates,
        unexpected,
        elapsedMs: lastDeliveryMicros === 0 ? 0 : (lastDeliveryMicros - t0Micros) / 1000
      },
      latency,
      sendLag,
      wire: wireBefore === null || wireAfter === null ? null : { received: wireAfter.received - wireBefore.received, sent: wireAfter.sent - wireBefore.sent },
      closed,
      ...(o.serverPid === undefined || before === undefined || afterConnect === undefined || after === undefined
        ? {}
        : { server: { pid: o.serverPid, before, afterConnect, after } }),
      warnings
    }
  } finally {
    const all = [...subscribers.map(s => s.conn), ...publishers.map(p => p.conn)]
    if (all.length > 0) log.progress(`closing ${all.length} connections`, true)
    await Promise.all(all.map(c => c.close().catch(() => {})))
  }

  /** A delivered payload's head; null when it is not one of ours, of the kind published (and, bytes, intact). */
  function decoded (payload: Payload): DecodedPayload | null {
    if (typeof payload === 'string') return pool === undefined ? decodePayload(payload) : null
    return pool === undefined ? null : decodeBinaryPayload(payload, o.size, pool)
  }

  /** The delivery handler of one subscriber: decode, check, deduplicate, time. */
  function receiver (sub: Subscriber, roomName: string): (room: string, payload: Payload) => void {
    return (room, payload) => {
      const now = nowMicros()
      const d = decoded(payload)
      if (d === null || d.k >= planned || plan.room[d.k] !== sub.room || room !== roomName) {
        unexpectedLive++
        return
      }
      const j = plan.indexInRoom[d.k]!
      if (sub.seen[j] === 1) {
        duplicates++
        return
      }
      sub.seen[j] = 1
      received++
      lastDeliveryMicros = now
      if (d.k >= warmup) latency.recordValue(Math.max(1, now - d.intendedMicros))
    }
  }
}
