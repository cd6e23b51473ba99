import type { Static } from '@sinclair/typebox'
import type { ClusterHistorySchema, NodeSchema } from '../../src/schemas/server-api.js'
import { request } from './api.js'
import { describeError, type Context } from './context.js'
import { lineChart, formatValue } from './chart.js'
import { formatTime, h, replace } from './dom.js'

/** A node as GET /admin/nodes reports it, and a sample of GET /admin/nodes/history: the server's schemas (types only, nothing bundled). */
export type ReportedNode = Static<typeof NodeSchema>
type Sample = Static<typeof ClusterHistorySchema>['samples'][number]

/** Refreshed at the report interval, but not more often than this (a 100 ms interval is for tests of the server). */
const MIN_REFRESH_MS = 1000

export function formatBytes (n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GiB`
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`
  return `${Math.round(n / 1024)} KiB`
}

export function formatUptime (ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min`
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`
}

/** A node's name on screen: its address, and "this node" for the one answering. */
export function nodeName (n: Pick<ReportedNode, 'address' | 'self'>): string {
  return n.self ? `${n.address} (this node)` : n.address
}

/**
 * The cluster: the totals of every live node (the headline numbers), a row per node from its
 * reports (GET /admin/nodes), and two charts of the cluster's totals over the samples the
 * answering node keeps (GET /admin/nodes/history). Everything comes from the node reports,
 * the same figures as each node's /metrics (docs/web.md says which metric is which).
 */
export function clusterSection (ctx: Context): { el: HTMLElement, dispose (): void } {
  const auth = ctx.session
  const total = h('dd', {}, '–')
  const outRate = h('dd', {}, '–')
  const inRate = h('dd', {}, '–')
  const nodeCount = h('dd', {}, '–')
  const stats = h('dl', { class: 'stats', 'aria-label': 'Headline metrics' },
    h('div', {}, h('dt', {}, 'Connections'), total),
    h('div', {}, h('dt', {}, 'Messages delivered / s'), outRate),
    h('div', {}, h('dt', {}, 'Messages received / s'), inRate),
    h('div', {}, h('dt', {}, 'Nodes'), nodeCount))
  const rows = h('tbody')
  const table = h('div', { class: 'table-scroll' },
    h('table', { class: 'nodes', 'aria-labelledby': 'cluster-title' },
      h('thead', {}, h('tr', {}, ...['Node', 'Version', 'Uptime', 'Connections', 'Rooms', 'In / s', 'Out / s', 'Memory (RSS)', 'Heap', 'Loop delay', 'Reported'].map(t => h('th', { scope: 'col' }, t)))),
      rows))
  const connectionsChart = lineChart('Connections')
  const messagesChart = lineChart('Messages per second')
  const span = h('p', { class: 'hint' })
  const error = h('p', { class: 'error', role: 'alert' })
  let timer: ReturnType<typeof setTimeout> | undefined
  let disposed = false

  function row (n: ReportedNode): HTMLTableRowElement {
    const cell = (text: string): HTMLTableCellElement => h('td', {}, text)
    return h('tr', { class: n.self ? 'self' : '' },
      h('th', { scope: 'row' }, h('span', { class: 'who' }, nodeName(n)), h('br'), h('small', { class: 'hint' }, `${n.hostname} · ${n.id.slice(0, 8)}`)),
      cell(n.version), cell(formatUptime(n.reportedAt - n.startedAt)), cell(String(n.connections)), cell(String(n.rooms)),
      cell(formatValue(n.messagesInPerSecond)), cell(formatValue(n.messagesOutPerSecond)),
      cell(formatBytes(n.rssBytes)), cell(formatBytes(n.heapUsedBytes)), cell(`${Math.round(n.eventLoopDelayMs)} ms`),
      h('td', {}, h('time', { datetime: new Date(n.lastSeenAt).toISOString() }, formatTime(n.lastSeenAt))))
  }

  async function refresh (): Promise<void> {
    clearTimeout(timer)
    let intervalMs = 5000
    try {
      const [nodes, history] = await Promise.all([
        request<{ intervalMs: number, items: ReportedNode[] }>('GET', '/admin/nodes', { auth }),
        request<{ intervalMs: number, capacity: number, samples: Sample[] }>('GET', '/admin/nodes/history', { auth })
      ])
      if (disposed) return
      intervalMs = nodes.intervalMs
      error.textContent = ''
      const sum = (pick: (n: ReportedNode) => number): number => nodes.items.reduce((acc, n) => acc + pick(n), 0)
      total.textContent = String(sum(n => n.connections))
      outRate.textContent = formatValue(sum(n => n.messagesOutPerSecond))
      inRate.textContent = formatValue(sum(n => n.messagesInPerSecond))
      nodeCount.textContent = String(nodes.items.length)
      replace(rows, ...nodes.items.map(row))
      const times = history.samples.map(s => s.at)
      connectionsChart.update(times, [{ label: 'Open', class: 'series-a', values: history.samples.map(s => s.connections) }])
      messagesChart.update(times, [
        { label: 'Delivered / s', class: 'series-a', values: history.samples.map(s => s.messagesOutPerSecond) },
        { label: 'Received / s', class: 'series-b', values: history.samples.map(s => s.messagesInPerSecond) }
      ])
      span.textContent = `One sample every ${formatValue(history.intervalMs / 1000)} s, the last ${history.capacity} kept by the node that answers.`
    } catch (err) {
      if (!disposed) error.textContent = `Could not load the cluster figures: ${describeError(err)}`
    }
    if (!disposed) timer = setTimeout(() => { void refresh() }, Math.max(MIN_REFRESH_MS, intervalMs))
  }

  void refresh()
  const el = h('section', { 'aria-labelledby': 'cluster-title' },
    h('h2', { id: 'cluster-title' }, 'Cluster'),
    stats, error, table,
    h('div', { class: 'charts' }, connectionsChart.el, messagesChart.el),
    span)
  return { el, dispose () { disposed = true; clearTimeout(timer) } }
}
