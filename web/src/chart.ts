/**
 * A small line chart drawn as inline SVG, in the page (no CDN, no library: the CSP allows
 * scripts from this origin only, and the page works without internet). Each series is one
 * polyline over a shared time axis; the y axis starts at 0 and ends at the peak, rounded up.
 */
const SVG = 'http://www.w3.org/2000/svg'
const WIDTH = 600
const HEIGHT = 160
const PAD = { left: 44, right: 8, top: 10, bottom: 20 }

export interface Series {
  label: string
  /** A CSS class of the line (its colour comes from styles.css). */
  class: string
  values: number[]
}

export interface LineChart {
  el: HTMLElement
  /** Redraws with `times` (epoch ms, the oldest first) and one value per time in each series. */
  update (times: number[], series: Series[]): void
}

function svg<K extends keyof SVGElementTagNameMap> (tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag)
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value))
  if (text !== undefined) el.textContent = text
  return el
}

/** 1, 2 or 5 times a power of ten, at least `value`: the axis ends on a round number. */
export function niceCeiling (value: number): number {
  if (!(value > 0)) return 1
  const power = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power
  return 10 * power
}

export function formatValue (value: number): string {
  if (value >= 1000) return `${(value / 1000).toFixed(value >= 10_000 ? 0 : 1)}k`
  return value < 10 && !Number.isInteger(value) ? value.toFixed(1) : Math.round(value).toString()
}

function span (ms: number): string {
  const minutes = Math.round(ms / 60_000)
  return minutes >= 1 ? `${minutes} min ago` : `${Math.max(1, Math.round(ms / 1000))} s ago`
}

export function lineChart (title: string): LineChart {
  const heading = document.createElement('h3')
  heading.textContent = title
  const picture = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', preserveAspectRatio: 'none' })
  const legend = document.createElement('ul')
  legend.className = 'legend'
  const el = document.createElement('figure')
  el.className = 'chart'
  el.append(heading, picture, legend)

  return {
    el,
    update (times, series) {
      picture.replaceChildren()
      legend.replaceChildren()
      const first = times[0]
      const last = times.at(-1)
      const peak = niceCeiling(Math.max(0, ...series.flatMap(s => s.values)))
      const plotW = WIDTH - PAD.left - PAD.right
      const plotH = HEIGHT - PAD.top - PAD.bottom
      const x = (t: number): number => first === undefined || last === undefined || last === first ? PAD.left + plotW : PAD.left + ((t - first) / (last - first)) * plotW
      const y = (v: number): number => PAD.top + plotH - (v / peak) * plotH
      for (const v of [0, peak / 2, peak]) {
        picture.append(svg('line', { class: 'grid', x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v) }))
        picture.append(svg('text', { class: 'axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatValue(v)))
      }
      if (first !== undefined && last !== undefined) {
        picture.append(svg('text', { class: 'axis', x: PAD.left, y: HEIGHT - 4 }, last === first ? 'now' : span(last - first)))
        picture.append(svg('text', { class: 'axis', x: WIDTH - PAD.right, y: HEIGHT - 4, 'text-anchor': 'end' }, 'now'))
      }
      const said: string[] = []
      for (const s of series) {
        const points = s.values.map((v, i) => `${x(times[i] ?? 0).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
        picture.append(svg('polyline', { class: `line ${s.class}`, points, 'vector-effect': 'non-scaling-stroke' }))
        const now = s.values.at(-1) ?? 0
        const max = Math.max(0, ...s.values)
        said.push(`${s.label}: now ${formatValue(now)}, peak ${formatValue(max)}`)
        const item = document.createElement('li')
        const swatch = document.createElement('span')
        swatch.className = `swatch ${s.class}`
        swatch.setAttribute('aria-hidden', 'true')
        item.append(swatch, `${s.label}: ${formatValue(now)}`)
        legend.append(item)
      }
      const during = first === undefined || last === undefined || last === first ? 'now' : `over the last ${span(last - first).replace(' ago', '')}`
      picture.setAttribute('aria-label', `${title} ${during}. ${said.join('; ')}.`)
      picture.dataset.points = String(times.length)
    }
  }
}
