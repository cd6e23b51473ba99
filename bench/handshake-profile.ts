import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { type Profile, type ProfileNode, profileTree } from './profile-top.js'
import { cleanRun, scenarioLimits, scenarios } from './scenarios.js'
import { generate, startTarget, type Variant } from './servers.js'

/**
 * Where a handshake's CPU goes, server by server: each server is started with `--cpu-prof`,
 * given `--rounds` passes of scenario 5's handshakes (one generator each), and its profile is
 * read over the passes after the first two only (warm code), each up to the moment the
 * generator starts closing its connections, and outside close handlers: closes are not part
 * of a handshake (and the bench's connect-phase CPU leaves them out too).
 * Prints busy CPU per handshake by package or file, side by side, with the difference to the
 * first server: how docs/performance.md ("Latest run: handshakes") split Switchboard's cost.
 *
 *   node --import tsx bench/handshake-profile.ts --servers switchboard,ws-framed-jwt [--by function]
 *
 * The profiler's own overhead is in every number; compare servers, not absolute values.
 * Sample times and the passes' times are both CLOCK_MONOTONIC microseconds (V8 and
 * process.hrtime), which is what lets a profile be cut at the passes' edges.
 */


/** Stacks under these run when a socket closes. */
const CLOSING = /^(socketOnEnd|socketOnClose|emitCloseNT|onReadableStreamEnd|emitClose|close)$/
const COLD_ROUNDS = 2

/** The group a frame's time is counted in: its npm package, its node: module, or its file. */
function group (node: ProfileNode): string {
  const { url, functionName } = node.callFrame
  if (url === '') return `(${functionName})`
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg !== null) return pkg[1]!
  if (url.startsWith('node:')) return url
  return url.replace(/^file:\/\/.*?\/(dist\/|bench\/)/, '$1')
}

/** The group and the function: `--by function`, to see which functions of a package cost what. */
function groupAndFunction (node: ProfileNode): string {
  return `${group(node)} ${node.callFrame.functionName === '' ? '(anonymous)' : node.callFrame.functionName}:${node.callFrame.lineNumber + 1}`
}

/** Busy microseconds by group, counting only samples inside `windows` and outside close handlers. */
export function busyByGroup (profile: Profile, windows: Array<[number, number]>, groupOf: (node: ProfileNode) => string = group): Map<string, number> {
  const { startTime, samples, timeDeltas } = profile
  if (startTime === undefined || samples === undefined || timeDeltas === undefined) throw new Error('the profile has no timed samples')
  const { byId, parent } = profileTree(profile)
  const out = new Map<string, number>()
  let at = startTime
  for (let i = 0; i < samples.length; i++) {
    const delta = timeDeltas[i] ?? 0
    at += delta
    if (!windows.some(([from, to]) => at >= from && at <= to)) continue
    const leaf = byId.get(samples[i]!)
    if (leaf === undefined || leaf.callFrame.functionName === '(idle)') continue
    let closing = false
    for (let id: number | undefined = leaf.id; id !== undefined && !closing; id = parent.get(id)) closing = CLOSING.test(byId.get(id)?.callFrame.functionName ?? '')
    if (closing) continue
    const name = groupOf(leaf)
    out.set(name, (out.get(name) ?? 0) + delta)
  }
  return out
}

const nowMicros = (): number => Number(process.hrtime.bigint() / 1000n)

async function profileServer (variant: Variant, rounds: number, perRound: number, groupOf: (node: ProfileNode) => string): Promise<Map<string, number>> {
  const handshakes = scenarios('full').find(s => s.id === 'handshakes')!
  const args = ['--subscribers', '0', '--publishers', String(perRound), '--messages', '0', '--batch', '50']
  const dir = mkdtempSync(join(tmpdir(), 'handshake-profile-'))
  try {
    const target = await startTarget(variant, { rooms: [], env: scenarioLimits({ ...handshakes, connections: rounds * perRound }), cpuProfDir: dir })
    const windows: Array<[number, number]> = []
    try {
      for (let round = 0; round < rounds; round++) {
        const from = nowMicros()
        // The window ends when the generator starts closing: a close (the client's close
        // frame, the server's answer) is not part of a handshake, and not every close runs
        // under a stack CLOSING recognises.
        let closingAt: number | undefined
        let progress = '' // a line may come split over two chunks
        const { report, stderr } = await generate(target, args, dir, (text) => {
          progress = (progress + text).slice(-4096)
          if (closingAt === undefined && /^closing \d+ connections/m.test(progress)) closingAt = nowMicros()
        })
        if (report === undefined || !cleanRun(report)) throw new Error(`${variant}: round ${round + 1} did not open every connection\n${report?.warnings.join('\n') ?? stderr}`)
        if (closingAt === undefined) throw new Error(`${variant}: round ${round + 1}: the generator never said it was closing`)
        windows.push([from, closingAt])
        await new Promise(resolve => setTimeout(resolve, 1000))
      }
    } finally {
      await target.stop()
    }
    // One profile per thread (the peers' tsx loader has a worker): the main thread's is the largest.
    const files = readdirSync(dir, { recursive: true }).map(String).filter(f => f.endsWith('.cpuprofile')).map(f => join(dir, f))
    const main = files.sort((a, b) => statSync(b).size - statSync(a).size)[0]
    if (main === undefined) throw new Error(`${variant}: no CPU profile was written`)
    const busy = busyByGroup(JSON.parse(readFileSync(main, 'utf8')) as Profile, windows.slice(COLD_ROUNDS), groupOf)
    const count = (rounds - COLD_ROUNDS) * perRound
    return new Map([...busy].map(([name, micros]) => [name, micros / count]))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, ''))) {
  const { values } = parseArgs({ options: { servers: { type: 'string', default: 'switchboard,ws-framed-jwt' }, rounds: { type: 'string', default: '8' }, 'per-round': { type: 'string', default: '2000' }, top: { type: 'string', default: '30' }, by: { type: 'string', default: 'package' } } })
  if (values.by !== 'package' && values.by !== 'function') throw new Error('--by: package or function')
  const groupOf = values.by === 'function' ? groupAndFunction : group
  const servers = values.servers.split(',') as Variant[]
  const rounds = Number(values.rounds)
  const perRound = Number(values['per-round'])
  if (!Number.isInteger(rounds) || rounds <= COLD_ROUNDS) throw new Error(`--rounds: more than ${COLD_ROUNDS}`)
  const results: Array<Map<string, number>> = []
  for (const server of servers) {
    process.stderr.write(`profiling ${server}: ${rounds} rounds of ${perRound} handshakes\n`)
    results.push(await profileServer(server, rounds, perRound, groupOf))
  }
  const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0)
  const groups = [...new Set(results.flatMap(m => [...m.keys()]))]
  const first = results[0]!
  const other = results[1]
  // The largest differences first, either way (the hub's own write shows as a negative row).
  const weight = (name: string): number => other === undefined ? (first.get(name) ?? 0) : Math.abs((first.get(name) ?? 0) - (other.get(name) ?? 0))
  groups.sort((a, b) => weight(b) - weight(a))
  const cell = (n: number | undefined): string => (n ?? 0).toFixed(1).padStart(10)
  process.stdout.write(`busy µs per handshake (warm, closes excluded)\n${'group'.padEnd(44)}${servers.map(s => s.padStart(14)).join('')}${other === undefined ? '' : '  first − second'.padStart(16)}\n`)
  process.stdout.write(`${'all'.padEnd(44)}${results.map(m => cell(total(m)).padStart(14)).join('')}${other === undefined ? '' : cell(total(first) - total(other)).padStart(16)}\n`)
  for (const name of groups.slice(0, Number(values.top))) {
    process.stdout.write(`${name.slice(0, 43).padEnd(44)}${results.map(m => cell(m.get(name)).padStart(14)).join('')}${other === undefined ? '' : cell((first.get(name) ?? 0) - (other.get(name) ?? 0)).padStart(16)}\n`)
  }
}
