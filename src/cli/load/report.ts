import type { Histogram } from 'hdr-histogram-js'
import { clkTck } from './proc.js'
import type { LoadResult } from './run.js'

/** The `--json` output of `switchboard load`: one object, described in docs/load-generator.md. */
export interface LoadReport {
  target: string
  url: string
  mode: 'rate' | 'burst'
  config: {
    subscribers: number
    publishers: number
    rooms: number
    roomPrefix: string
    size: number
    /** Payloads were bytes (`--binary`). */
    binary: boolean
    rate: number | null
    messages: number | null
    durationS: number
    /** Open loop: seconds published before `durationS`, untimed (0: none). */
    warmupS: number
    batch: number
    drainMs: number
  }
  connect: { connections: number, totalMs: number, perSecond: number | null, p50Ms: number | null, p99Ms: number | null, maxMs: number | null }
  /** `planned` includes the `warmup` messages published first. */
  messages: { planned: number, warmup: number, published: number, refused: Record<string, number>, unsent: number }
  deliveries: { expected: number, delivered: number, lost: number, duplicates: number, unexpected: number, elapsedS: number, perSecond: number | null }
  latencyMs: Percentiles
  sendLagMs: Percentiles | null
  /**
   * WebSocket bytes (frames and their headers) from the first publish to the end of the drain:
   * read by all subscribers, and per delivery; written by all publishers, and per publish.
   * Null when the adapter does not count bytes.
   */
  wire: { subscriberBytes: number, publisherBytes: number, bytesPerDelivery: number | null, bytesPerPublish: number | null } | null
  closed: Array<{ code: number, count: number, role: 'subscriber' | 'publisher', hint?: string }>
  server: {
    pid: number
    clkTck: number
    cpuSeconds: { connect: number, run: number }
    rssBytes: { before: number, afterConnect: number, after: number }
    rssPerConnectionBytes: number | null
    deliveriesPerCpuSecond: number | null
    connectionsPerCpuSecond: number | null
  } | null
  warnings: string[]
}

export interface Percentiles {
  count: number
  p50: number | null
  p90: number | null
  p99: number | null
  p99_9: number | null
  max: number | null
  mean: number | null
}

const ms = (micros: number): number => Math.round(micros) / 1000
const round = (n: number, digits = 3): number => Math.round(n * 10 ** digits) / 10 ** digits
const rate = (count: number, seconds: number): number | null => seconds > 0 ? round(count / seconds, 1) : null

/**
 * A percentile in ms. HdrHistogram answers with the top of the value's bucket (within 0.1 %
 * at 3 significant digits), which can pass the exact maximum it also keeps: capped there.
 */
function at (h: Histogram, percentile: number): number {
  return ms(Math.min(h.getValueAtPercentile(percentile), h.maxValue))
}

export function percentiles (h: Histogram): Percentiles {
  if (h.totalCount === 0) return { count: 0, p50: null, p90: null, p99: null, p99_9: null, max: null, mean: null }
  return {
    count: h.totalCount,
    p50: at(h, 50),
    p90: at(h, 90),
    p99: at(h, 99),
    p99_9: at(h, 99.9),
    max: ms(h.maxValue),
    mean: ms(h.mean)
  }
}

export function summarize (result: LoadResult, url: string): LoadReport {
  const o = result.options
  const c = result.connect
  const d = result.deliveries
  const elapsedS = d.elapsedMs / 1000
  let server: LoadReport['server'] = null
  if (result.server !== undefined) {
    const { before, afterConnect, after, pid } = result.server
    const connectCpu = round(afterConnect.cpuSeconds - before.cpuSeconds, 2)
    const runCpu = round(after.cpuSeconds - afterConnect.cpuSeconds, 2)
    server = {
      pid,
      clkTck: clkTck(),
      cpuSeconds: { connect: connectCpu, run: runCpu },
      rssBytes: { before: before.rssBytes, afterConnect: afterConnect.rssBytes, after: after.rssBytes },
      rssPerConnectionBytes: c.connections > 0 ? Math.round((afterConnect.rssBytes - before.rssBytes) / c.connections) : null,
      deliveriesPerCpuSecond: rate(d.delivered, runCpu),
      connectionsPerCpuSecond: rate(c.connections, connectCpu)
    }
  }
  return {
    target: result.target,
    url,
    mode: o.mode,
    config: {
      subscribers: o.subscribers,
      publishers: o.publishers,
      rooms: o.rooms,
      roomPrefix: o.roomPrefix,
      size: o.size,
      binary: o.binary,
      rate: o.mode === 'rate' ? o.rate : null,
      messages: o.messages ?? null,
      durationS: o.durationMs / 1000,
      warmupS: o.mode === 'rate' ? o.warmupMs / 1000 : 0,
      batch: o.batch,
      drainMs: o.drainMs
    },
    connect: {
      connections: c.connections,
      totalMs: round(c.totalMs, 1),
      perSecond: rate(c.connections, c.totalMs / 1000),
      p50Ms: c.histogram.totalCount === 0 ? null : at(c.histogram, 50),
      p99Ms: c.histogram.totalCount === 0 ? null : at(c.histogram, 99),
      maxMs: c.histogram.totalCount === 0 ? null : ms(c.histogram.maxValue)
    },
    messages: {
      planned: result.messages.planned,
      warmup: result.messages.warmup,
      published: result.messages.published,
      refused: Object.fromEntries(result.messages.refused.map(r => [r.code, r.count])),
      unsent: result.messages.unsent
    },
    deliveries: {
      expected: d.expected,
      delivered: d.delivered,
      lost: d.lost,
      duplicates: d.duplicates,
      unexpected: d.unexpected,
      elapsedS: round(elapsedS),
      perSecond: rate(d.delivered, elapsedS)
    },
    latencyMs: percentiles(result.latency),
    sendLagMs: o.mode === 'rate' ? percentiles(result.sendLag) : null,
    wire: result.wire === null
      ? null
      : {
          subscriberBytes: result.wire.received,
          publisherBytes: result.wire.sent,
          bytesPerDelivery: d.delivered > 0 ? round(result.wire.received / d.delivered, 1) : null,
          bytesPerPublish: result.messages.published > 0 ? round(result.wire.sent / result.messages.published, 1) : null
        },
    closed: result.closed,
    server,
    warnings: result.warnings
  }
}

const fmt = (n: number | null, unit = ''): string => n === null ? '-' : `${n.toLocaleString('en-US', { maximumFractionDigits: 3 })}${unit}`
const count = (n: number, noun: string): string => `${fmt(n)} ${noun}${n === 1 ? '' : 's'}`
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const kb = (bytes: number | null): string => bytes === null ? '-' : `${(bytes / 1024).toFixed(1)} KiB`

function latencyRow (p: Percentiles): string {
  if (p.count === 0) return '(no samples)'
  return `p50 ${fmt(p.p50)}   p90 ${fmt(p.p90)}   p99 ${fmt(p.p99)}   p99.9 ${fmt(p.p99_9)}   max ${fmt(p.max)}   (${fmt(p.count)} samples)`
}

/** The human-readable table: one labelled line per measure. */
export function formatTable (r: LoadReport): string {
  const c = r.config
  const rows: Array<[string, string]> = [
    ['target', `${r.target} at ${r.url}`],
    ['load', `${count(c.subscribers, 'subscriber')} in ${count(c.rooms, 'room')} (${c.roomPrefix}0…), ${count(c.publishers, 'publisher')}, ${fmt(c.size)}-byte ${c.binary ? 'binary ' : ''}payloads`],
    ['mode', r.mode === 'rate'
      ? `open loop, ${fmt(c.rate)} messages/s for ${fmt(c.durationS)} s${c.warmupS > 0 ? ` after a warm-up of ${fmt(c.warmupS)} s (not timed)` : ''}${c.messages === null ? '' : ` (at most ${fmt(c.messages)})`}`
      : `burst of ${fmt(c.messages)} messages (cap ${fmt(c.durationS)} s)`],
    ['connect', `${count(r.connect.connections, 'connection')} in ${fmt(r.connect.totalMs)} ms (${fmt(r.connect.perSecond)}/s); each: p50 ${fmt(r.connect.p50Ms)} ms, p99 ${fmt(r.connect.p99Ms)} ms, max ${fmt(r.connect.maxMs)} ms`],
    ['messages', `${fmt(r.messages.planned)} planned${r.messages.warmup > 0 ? ` (${fmt(r.messages.warmup)} in the warm-up)` : ''}, ${fmt(r.messages.published)} published, ${fmt(Object.values(r.messages.refused).reduce((a, b) => a + b, 0))} refused, ${fmt(r.messages.unsent)} unsent`],
    ['deliveries', `${fmt(r.deliveries.delivered)} of ${fmt(r.deliveries.expected)} expected, ${fmt(r.deliveries.perSecond)}/s over ${fmt(r.deliveries.elapsedS)} s`],
    ['LOST', fmt(r.deliveries.lost)],
    ['DUPLICATE', fmt(r.deliveries.duplicates)],
    ...(r.deliveries.unexpected > 0 ? [['UNEXPECTED', fmt(r.deliveries.unexpected)] as [string, string]] : []),
    ['latency ms', latencyRow(r.latencyMs)],
    ...(r.sendLagMs === null ? [] : [['send lag ms', latencyRow(r.sendLagMs)] as [string, string]]),
    ...(r.wire === null ? [] : [['wire', `${fmt(r.wire.bytesPerDelivery)} bytes per delivery (${mb(r.wire.subscriberBytes)} read by subscribers), ${fmt(r.wire.bytesPerPublish)} bytes per publish`] as [string, string]])
  ]
  if (r.server !== null) {
    const s = r.server
    rows.push(
      ['server CPU', `${fmt(s.cpuSeconds.run)} s while publishing, ${fmt(s.cpuSeconds.connect)} s while connecting (pid ${s.pid}, CLK_TCK ${s.clkTck})`],
      ['server RSS', `${mb(s.rssBytes.before)} before, ${mb(s.rssBytes.afterConnect)} connected (${kb(s.rssPerConnectionBytes)} per connection), ${mb(s.rssBytes.after)} after`],
      ['per server CPU-s', `${fmt(s.deliveriesPerCpuSecond)} deliveries, ${fmt(s.connectionsPerCpuSecond)} connections`]
    )
  }
  for (const closed of r.closed) rows.push(['CLOSED', `${count(closed.count, closed.role)} with ${closed.code}${closed.hint === undefined ? '' : ` (${closed.hint})`}`])
  const width = Math.max(...rows.map(([label]) => label.length))
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n')
}
