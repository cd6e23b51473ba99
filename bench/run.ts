import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { basename, join } from 'node:path'
import { parseArgs } from 'node:util'
import { capacityMarkdown, runCapacitySetup, setups as capacitySetups, type CapacityResult } from './capacity.js'
import { renderChart } from './chart.js'
import { cleanRun, scenarioLimits, scenarios, type Scenario, type Size } from './scenarios.js'
import { clusterServices, generate, HAS_TASKSET, PEER_OF, PEERS, ROOT, roomNames, SERVER_CPU, GENERATOR_CPU, startTarget, type Variant } from './servers.js'
import { markdown, summarise, targets, type RunRecord, type ScenarioResult, type TargetResult } from './summary.js'

/**
 * The benchmark suite (issue 6, docs/performance.md): every scenario runs every server in
 * turn, in alternating order, several times, each against a fresh server process pinned to
 * CPU 0 with the load generator (`switchboard load`) pinned to CPU 1; the medians, ranges
 * and ratios go to bench/results/<date>.json, a markdown table and an SVG chart.
 *
 *   node --import tsx bench/run.ts [--quick] [--runs N] [--only burst,steady,…] [--cpu-prof] [--update-docs] [--from FILE]
 */

const USAGE = `bench/run.ts — the benchmark suite (docs/performance.md)
  --quick          small sizes, one run each: under two minutes (npm run bench:quick)
  --runs N         runs per scenario and server (default: 3, quick: 1; at full size at least 5 for scenario 5, 11 for scenario 6)
  --only IDS       comma-separated scenarios: burst, steady, rooms, idle, handshakes, two-nodes, binary-fanout, capacity
  --peers NAMES    comma-separated servers (default: all): switchboard, ws-framed, ws-naive, socketio
  --cpu-prof       write a V8 CPU profile of every server process to bench/results/profiles/
  --update-docs    write the table and chart into docs/performance.md and docs/performance.svg
  --from FILE      no run: the table, chart and targets again from a results JSON`

const WARMUP_SETTLE_MS = 1000
const CAPACITY = 'capacity'
const RESULTS = join(ROOT, 'bench', 'results')
const DOC = join(ROOT, 'docs', 'performance.md')
const BEGIN = '<!-- bench:results:begin -->'
const END = '<!-- bench:results:end -->'

function log (text: string): void {
  process.stderr.write(text + '\n')
}

interface Machine {
  cpus: number
  cpuModel: string
  memoryGiB: number
  os: string
  node: string
  commit: string
  taskset: { server: string, generator: string } | null
  loadAverageAtStart: number[]
  loadAverageAtEnd?: number[]
}

function machine (): Machine {
  const cpus = os.cpus()
  let commit = 'unknown'
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
  } catch { /* not a checkout */ }
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    commit,
    taskset: HAS_TASKSET ? { server: `CPU ${SERVER_CPU}`, generator: `CPU ${GENERATOR_CPU}` } : null,
    loadAverageAtStart: os.loadavg().map(n => Math.round(n * 100) / 100)
  }
}

async function runScenario (s: Scenario, asked: number, peers: Set<Variant>, cpuProfDir: string | undefined, configDir: string): Promise<ScenarioResult> {
  const runs = Math.max(asked, s.minRuns ?? 0)
  const extra = Object.fromEntries(Object.entries(s.raise).map(([k, v]) => [k, v.value]))
  const switchboardEnv = { ...scenarioLimits(s), ...extra }
  const variants = s.variants.filter(v => peers.has(PEER_OF[v]))
  const result: ScenarioResult = { id: s.id, title: s.title, description: s.description, args: s.args, switchboardEnv, runs: [], summary: {} }
  if (s.id === 'two-nodes') {
    const missing = await clusterServices()
    if (missing !== undefined) {
      log(`[${s.id}] skipped: ${missing}`)
      return { ...result, skipped: missing }
    }
  }
  const rooms = roomNames(s.rooms)
  for (let run = 0; run < runs; run++) {
    // Alternating order: whichever server runs first or last in a noisy stretch changes.
    const order = run % 2 === 0 ? variants : [...variants].reverse()
    for (const [position, variant] of order.entries()) {
      const target = await startTarget(variant, { rooms, env: switchboardEnv, ...(cpuProfDir === undefined ? {} : { cpuProfDir }) })
      let outcome: Awaited<ReturnType<typeof generate>>
      try {
        if (s.warmup !== undefined) {
          const warm = await generate(target, s.warmup, configDir)
          if (warm.report === undefined || !cleanRun(warm.report)) throw new Error(`[${s.id}] ${variant}: the warm-up pass failed\n${warm.stderr}`)
          // Its connections closed when it exited; let the server finish with them first.
          await new Promise(resolve => setTimeout(resolve, WARMUP_SETTLE_MS))
        }
        outcome = await generate(target, s.args, configDir)
      } finally {
        await target.stop()
      }
      const { report, stderr } = outcome
      if (report === undefined) throw new Error(`[${s.id}] ${variant}: the generator printed no report\n${stderr}`)
      const record: RunRecord = { variant, run, position, clean: cleanRun(report), metrics: s.metrics(report), warnings: report.warnings }
      result.runs.push(record)
      const shown = Object.entries(record.metrics).slice(0, 3).map(([k, v]) => `${k} ${v === null ? '–' : Math.round(v * 1000) / 1000}`).join(', ')
      log(`[${s.id}] run ${run + 1}/${runs} ${variant}: ${shown}${record.clean ? '' : ` (NOT CLEAN: ${report.warnings[0] ?? `${report.deliveries.lost} lost`})`}`)
    }
  }
  result.summary = summarise(result.runs)
  return result
}

/** Replaces the generated part of docs/performance.md (between the markers) with `text`. */
function updateDoc (text: string): void {
  const doc = readFileSync(DOC, 'utf8')
  const begin = doc.indexOf(BEGIN)
  const end = doc.indexOf(END)
  if (begin < 0 || end < begin) throw new Error(`${DOC}: the markers ${BEGIN} … ${END} are missing`)
  writeFileSync(DOC, doc.slice(0, begin + BEGIN.length) + '\n' + text + doc.slice(end))
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      runs: { type: 'string' },
      only: { type: 'string' },
      peers: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      'update-docs': { type: 'boolean', default: false },
      from: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  mkdirSync(RESULTS, { recursive: true })
  if (values.from !== undefined) {
    // Tables, chart and targets again from a run's JSON (after a change to how they are drawn).
    const suite = JSON.parse(readFileSync(values.from, 'utf8')) as Suite
    suite.targets = targets(suite.scenarios)
    report(suite, basename(values.from, '.json'), values['update-docs'])
    return
  }
  const size: Size = values.quick ? 'quick' : 'full'
  const runs = values.runs === undefined ? (values.quick ? 1 : 3) : Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error('--runs: a whole number from 1 to 20')
  const all = scenarios(size)
  const ids = [...all.map(s => s.id), CAPACITY]
  const only = values.only?.split(',')
  const unknownScenario = only?.find(id => !ids.includes(id))
  if (unknownScenario !== undefined) throw new Error(`--only: no scenario "${unknownScenario}" (${ids.join(', ')})`)
  const chosen = only === undefined ? all : all.filter(s => only.includes(s.id))
  // The capacity scenario is not one generator against one server per run: bench/capacity.ts drives it.
  const withCapacity = only === undefined || only.includes(CAPACITY)
  const peerNames = values.peers?.split(',') ?? [...PEERS]
  const unknownPeer = peerNames.find(name => !(PEERS as readonly string[]).includes(name))
  if (unknownPeer !== undefined) throw new Error(`--peers: no server "${unknownPeer}" (${PEERS.join(', ')})`)
  const peers = new Set(peerNames as Variant[])
  const cpuProfDir = values['cpu-prof'] ? join(RESULTS, 'profiles') : undefined
  if (cpuProfDir !== undefined) mkdirSync(cpuProfDir, { recursive: true })

  const started = new Date()
  const description = machine()
  log(`benchmark suite (${size}, ${runs} run${runs === 1 ? '' : 's'} each) on ${description.cpus} × ${description.cpuModel}; ${HAS_TASKSET ? `server on CPU ${SERVER_CPU}, generator on CPU ${GENERATOR_CPU}` : 'no taskset: server and generator share the CPUs'}`)
  const configDir = mkdtempSync(join(os.tmpdir(), 'switchboard-bench-cli-'))
  const results: ScenarioResult[] = []
  try {
    for (const s of chosen) {
      // A scenario that fails is reported as such; the others' results are kept.
      try {
        results.push(await runScenario(s, runs, peers, cpuProfDir, configDir))
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err)
        log(`[${s.id}] FAILED: ${reason}`)
        results.push({ id: s.id, title: s.title, description: s.description, args: s.args, switchboardEnv: {}, runs: [], summary: {}, skipped: `failed: ${reason.split('\n')[0]}` })
      }
    }
  } finally {
    rmSync(configDir, { recursive: true, force: true })
  }
  let capacity: CapacityResult[] | undefined
  if (withCapacity) {
    capacity = []
    for (const setup of capacitySetups(size === 'quick')) {
      try {
        capacity.push(await runCapacitySetup(setup))
      } catch (err) {
        log(`[capacity] ${setup.name} FAILED: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  }
  const suite: Suite = {
    date: started.toISOString(),
    size,
    runs,
    durationS: Math.round((Date.now() - started.getTime()) / 1000),
    machine: { ...description, loadAverageAtEnd: os.loadavg().map(n => Math.round(n * 100) / 100) },
    scenarios: results,
    targets: targets(results),
    ...(capacity === undefined ? {} : { capacity })
  }
  // Only a full run of every scenario is the day's result (committed); a quick or partial run
  // is named apart (and ignored by git), so it never overwrites it.
  const partial = only !== undefined && (chosen.length < all.length || !withCapacity)
  const stamp = suite.date.slice(0, 10) + (size === 'quick' ? '-quick' : '') + (partial ? `-only-${only.join('-')}` : '')
  writeFileSync(join(RESULTS, `${stamp}.json`), JSON.stringify(suite, null, 2) + '\n')
  report(suite, stamp, values['update-docs'])
}

interface Suite {
  date: string
  size: Size
  runs: number
  durationS: number
  machine: Machine
  scenarios: ScenarioResult[]
  targets: TargetResult[]
  /** The capacity scenario's two set-ups (absent from runs that left it out). */
  capacity?: CapacityResult[]
}

/** Writes the table and the chart of a suite run next to its JSON (and into docs/ when asked), and prints the targets. */
function report (suite: Suite, stamp: string, updateDocs: boolean): void {
  const m = suite.machine
  const when = suite.date.slice(0, 16).replace('T', ' ')
  const plural = suite.runs === 1 ? '' : 's'
  const caption = `Switchboard benchmark ${when} UTC, ${suite.size}, ${suite.runs} run${plural}, ${m.cpus} × ${m.cpuModel}`
  const table = markdown(suite.scenarios, suite.targets) + (suite.capacity === undefined ? '' : '\n' + capacityMarkdown(suite.capacity))
  const svg = renderChart(suite.scenarios, caption)
  writeFileSync(join(RESULTS, `${stamp}.md`), table)
  writeFileSync(join(RESULTS, `${stamp}.svg`), svg)
  if (updateDocs) {
    writeFileSync(join(ROOT, 'docs', 'performance.svg'), svg)
    updateDoc([
      `Latest run: ${when} UTC (${suite.size}, ${suite.runs} run${plural} per server, ${suite.durationS} s), commit \`${m.commit}\`,`,
      `on ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node};`,
      `${m.taskset === null ? 'no taskset: server and generator shared the CPUs' : `server pinned to CPU ${SERVER_CPU}, generator to CPU ${GENERATOR_CPU} (taskset)`};`,
      `load average ${m.loadAverageAtStart.join(' / ')} at the start, ${(m.loadAverageAtEnd ?? []).join(' / ')} at the end.`,
      `Raw results: [bench/results/${stamp}.json](../bench/results/${stamp}.json).`,
      '',
      '![Throughput, latency, memory and handshakes per server](performance.svg)',
      '',
      table.replace(/^### /gm, '#### ')
    ].join('\n'))
  }
  process.stdout.write(table)
  log(`\nwrote bench/results/${stamp}.md and .svg${updateDocs ? '; updated docs/performance.md and docs/performance.svg' : ''}`)
  for (const t of suite.targets) log(`  ${t.met === null ? 'not measured' : t.met ? 'met   ' : 'MISSED'}  ${t.target}: ${t.measured}`)
}

main().catch((err: unknown) => {
  log(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  process.exit(1)
})
