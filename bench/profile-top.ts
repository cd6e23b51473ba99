import { readFileSync } from 'node:fs'
import { relative } from 'node:path'
import { ROOT } from './servers.js'

/**
 * The hottest frames of a V8 CPU profile (`bench/run.ts --cpu-prof` writes one per server
 * process): self time (samples in the function itself) and total time (with its callees), as
 * a share of all samples, so a profile can be read without a browser.
 *
 *   node --import tsx bench/profile-top.ts bench/results/profiles/switchboard-….cpuprofile [--top 25]
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

/** Self and total sample shares per function (a function met twice on one stack counts once in its total). */
export function topFrames (profile: Profile): Frame[] {
  const { byId, parent } = profileTree(profile)
  const hits = new Map<number, number>()
  if (profile.samples !== undefined) for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1)
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
  const topIndex = process.argv.indexOf('--top')
  const top = topIndex > 0 ? Number(process.argv[topIndex + 1]) : 25
  if (file === undefined) {
    process.stderr.write('usage: node --import tsx bench/profile-top.ts FILE.cpuprofile [--top N]\n')
    process.exit(2)
  }
  const frames = topFrames(JSON.parse(readFileSync(file, 'utf8')) as Profile)
  const pct = (n: number): string => `${(n * 100).toFixed(1).padStart(5)} %`
  process.stdout.write(' self    total   function\n')
  for (const f of frames.slice(0, top)) process.stdout.write(`${pct(f.self)} ${pct(f.total)}   ${f.name}\n`)
}
