import { readFileSync } from 'node:fs'
import { relative } from 'node:path'
import { ROOT } from './servers.js'

/**
 * The hottest frames of a V8 CPU profile (`bench/run.ts --cpu-prof` writes one per server
 * process): self time (samples in the function itself) and total time (with its callees), as
 * a share of all samples, so a profile can be read without a browser.
 *
 *   node --import tsx bench/profile-top.ts bench/results/profiles/switchboard-….cpuprofile [--top 25]
 *     [--between FROM,TO] [--timeline]
 *
 * `--between` keeps the samples from FROM to TO seconds after the profile started (a phase of a
 * long run, such as the capacity scenario's idle minute) and adds each frame's self time in
 * milliseconds; `--timeline` prints the busy (not idle) milliseconds of each second, to find
 * the phases.
 */

export interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number }, hitCount?: number, children?: number[] }
/** V8's .cpuprofile: a call tree, and the sampled leaf of each tick with its time since the previous one (µs). */
export interface Profile { nodes: ProfileNode[], startTime?: number, samples?: number[], timeDeltas?: number[] }

/** The call tree's nodes by id, and each node's parent (its caller). */
export function profileTree (profile: Profile): { byId: Map<number, ProfileNode>, parent: Map<number, number> } {
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  return { byId, parent }
}

export interface Frame { name: string, self: number, total: number }

function label (node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame
  if (url === '') return `(${functionName || 'anonymous'})`
  const file = url.startsWith('file://') ? relative(ROOT, new URL(url).pathname) : url
  return `${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`
}

/** Each sample's leaf node id and its time since the profile started (µs). */
function timedSamples (profile: Profile): Array<{ id: number, atUs: number }> {
  const out: Array<{ id: number, atUs: number }> = []
  let at = 0
  profile.samples?.forEach((id, k) => {
    at += profile.timeDeltas?.[k] ?? 0
    out.push({ id, atUs: at })
  })
  return out
}

/** Busy (not idle) milliseconds of the profiled thread in each second of the profile. */
export function timeline (profile: Profile): number[] {
  const { byId } = profileTree(profile)
  const seconds: number[] = []
  const samples = timedSamples(profile)
  samples.forEach(({ id, atUs }, k) => {
    const next = samples[k + 1]
    if (next === undefined || byId.get(id)?.callFrame.functionName === '(idle)') return
    const second = Math.floor(atUs / 1e6)
    seconds[second] = (seconds[second] ?? 0) + (next.atUs - atUs) / 1000
  })
  return Array.from(seconds, ms => Math.round(ms ?? 0))
}

/**
 * Self and total sample shares per function (a function met twice on one stack counts once in
 * its total); with `between` (seconds after the profile started), only the samples in it.
 */
export function topFrames (profile: Profile, between?: [number, number]): Frame[] {
  const { byId, parent } = profileTree(profile)
  const hits = new Map<number, number>()
  if (between !== undefined) {
    for (const { id, atUs } of timedSamples(profile)) if (atUs >= between[0] * 1e6 && atUs < between[1] * 1e6) hits.set(id, (hits.get(id) ?? 0) + 1)
  } else if (profile.samples !== undefined) for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1)
  else for (const n of profile.nodes) hits.set(n.id, n.hitCount ?? 0)
  let all = 0
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  for (const [id, count] of hits) {
    all += count
    const leaf = byId.get(id)
    if (leaf === undefined) continue
    self.set(label(leaf), (self.get(label(leaf)) ?? 0) + count)
    const seen = new Set<string>()
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const name = label(byId.get(at)!)
      if (seen.has(name)) continue
      seen.add(name)
      total.set(name, (total.get(name) ?? 0) + count)
    }
  }
  return [...total.keys()]
    .map(name => ({ name, self: (self.get(name) ?? 0) / all, total: (total.get(name) ?? 0) / all }))
    .sort((a, b) => b.self - a.self)
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, ''))) {
  const file = process.argv[2]
  const option = (name: string): string | undefined => {
    const at = process.argv.indexOf(name)
    return at > 0 ? process.argv[at + 1] : undefined
  }
  const top = Number(option('--top') ?? 25)
  const between = option('--between')?.split(',').map(Number) as [number, number] | undefined
  if (file === undefined || (between !== undefined && (between.length !== 2 || between.some(n => !Number.isFinite(n))))) {
    process.stderr.write('usage: node --import tsx bench/profile-top.ts FILE.cpuprofile [--top N] [--between FROM,TO] [--timeline]\n')
    process.exit(2)
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  if (process.argv.includes('--timeline')) {
    process.stdout.write(`busy ms per second: ${timeline(profile).join(' ')}\n`)
  }
  const frames = topFrames(profile, between)
  const pct = (n: number): string => `${(n * 100).toFixed(1).padStart(5)} %`
  // Self time in ms over the window: the share of its samples times its length.
  const windowMs = between === undefined ? null : (between[1] - between[0]) * 1000
  const ms = (n: number): string => windowMs === null ? '' : `${(n * windowMs).toFixed(0).padStart(7)} ms `
  process.stdout.write(` self    total  ${windowMs === null ? '' : ' self in window '}  function\n`)
  for (const f of frames.slice(0, top)) process.stdout.write(`${pct(f.self)} ${pct(f.total)} ${ms(f.self)}  ${f.name}\n`)
}
