import type { ScenarioResult, Spread } from './summary.js'
import { variantName } from './summary.js'
import type { Variant } from './servers.js'

/**
 * The suite's chart, SVG written by hand (no chart library): four panels of horizontal bars,
 * one bar per server, each the median with a whisker from the lowest to the highest run.
 * Throughput and latency first, then memory and handshakes.
 */

interface Panel {
  title: string
  /** Several bars per server (e.g. p50, p99, p99.9), each one shade. */
  series: Array<{ label: string, metric: string }>
  scenario: ScenarioResult['id']
  format: (n: number) => string
}

const PANELS: Panel[] = [
  { title: 'Burst fan-out: deliveries per server CPU-second (higher is better)', scenario: 'burst', series: [{ label: '', metric: 'deliveriesPerCpuS' }], format: n => `${Math.round(n / 1000)}k` },
  { title: 'Steady fan-out: delivery latency, ms (lower is better)', scenario: 'steady', series: [{ label: 'p50', metric: 'p50Ms' }, { label: 'p99', metric: 'p99Ms' }, { label: 'p99.9', metric: 'p999Ms' }], format: n => n.toFixed(1) },
  { title: 'Idle: RSS per connection, KB (lower is better)', scenario: 'idle', series: [{ label: '', metric: 'rssPerConnBytes' }], format: n => (n / 1000).toFixed(1) },
  { title: 'Handshakes: connects per server CPU-second (higher is better)', scenario: 'handshakes', series: [{ label: '', metric: 'connectsPerCpuS' }], format: n => Math.round(n).toLocaleString('en-US') }
]

const COLORS: Record<string, string> = { switchboard: '#2563eb', 'ws-framed': '#16a34a', 'ws-framed-jwt': '#65a30d', 'ws-naive': '#ca8a04', socketio: '#9333ea', 'switchboard-redis': '#7c3aed', 'switchboard-2-nodes': '#0891b2' }
const SHADES = [1, 0.7, 0.45]
const WIDTH = 960
const PANEL_W = 460
const LABEL_W = 110
const BAR_H = 12
const GAP = 8

function escape (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function panel (p: Panel, result: ScenarioResult | undefined, x: number, y: number): { svg: string, height: number } {
  const parts = [`<text x="${x}" y="${y + 12}" class="title">${escape(p.title)}</text>`]
  const variants = result === undefined ? [] : (Object.keys(result.summary) as Variant[])
  const spreads = variants.flatMap(v => p.series.map(s => result?.summary[v]?.[s.metric])).filter((s): s is Spread => s !== undefined)
  if (variants.length === 0 || spreads.length === 0) {
    parts.push(`<text x="${x}" y="${y + 36}" class="note">not measured in this run</text>`)
    return { svg: parts.join(''), height: 60 }
  }
  const top = Math.max(...spreads.map(s => s.max)) * 1.15
  // Room on the right for the value label of the longest bar.
  const plotW = PANEL_W - LABEL_W - 90
  const scale = (n: number): number => (n / top) * plotW
  let cy = y + 26
  for (const v of variants) {
    const groupTop = cy
    p.series.forEach((series, i) => {
      const s = result?.summary[v]?.[series.metric]
      const bx = x + LABEL_W
      if (s !== undefined) {
        const w = Math.max(1, scale(s.median))
        parts.push(
          `<rect x="${bx}" y="${cy}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${COLORS[v] ?? '#555'}" fill-opacity="${SHADES[i] ?? 1}"/>`,
          // The range of the runs: a whisker from min to max.
          s.n > 1 ? `<line x1="${(bx + scale(s.min)).toFixed(1)}" x2="${(bx + scale(s.max)).toFixed(1)}" y1="${cy + BAR_H / 2}" y2="${cy + BAR_H / 2}" class="range"/>` : '',
          `<text x="${(bx + Math.max(w, s.n > 1 ? scale(s.max) : 0) + 4).toFixed(1)}" y="${cy + BAR_H - 2}" class="value">${escape(p.format(s.median))}${series.label === '' ? '' : ` ${series.label}`}</text>`
        )
      }
      cy += BAR_H + 2
    })
    parts.push(`<text x="${x + LABEL_W - 6}" y="${((groupTop + cy) / 2 + 4).toFixed(1)}" class="label" text-anchor="end">${escape(variantName(v))}</text>`)
    cy += GAP
  }
  return { svg: parts.join(''), height: cy - y + 10 }
}

/** The chart as an SVG document; `caption` says which run it is (date, machine, size). */
export function renderChart (results: ScenarioResult[], caption: string): string {
  const body: string[] = []
  let y = 40
  for (let i = 0; i < PANELS.length; i += 2) {
    const row = [0, 1].map(j => {
      const p = PANELS[i + j]
      return p === undefined ? { svg: '', height: 0 } : panel(p, results.find(r => r.id === p.scenario), 20 + j * (PANEL_W + 20), y)
    })
    body.push(...row.map(r => r.svg))
    y += Math.max(...row.map(r => r.height)) + 16
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="system-ui, sans-serif">`,
    '<style>.title{font-size:12px;font-weight:600}.label{font-size:11px}.value{font-size:10px;fill:#333}.note{font-size:11px;fill:#777}.caption{font-size:11px;fill:#555}.range{stroke:#111;stroke-width:1.5}</style>',
    `<rect width="${WIDTH}" height="${y}" fill="#fff"/>`,
    `<text x="20" y="22" class="caption">${escape(caption)} — bars: median of the runs; whiskers: lowest to highest run</text>`,
    ...body,
    '</svg>'
  ].join('\n') + '\n'
}
