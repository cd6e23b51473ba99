import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { createSqliteHistory } from '../src/realtime/sqlite-history.js'
import { createStore } from '../src/store/index.js'

/**
 * What one group commit of durable history costs the event loop under each `synchronous`
 * setting (issue 21): docs/performance.md, "Durable history on embedded defaults".
 *
 * The store's real SQLite file (WAL, in the system's temporary directory, as the server's data
 * directory would be on this machine) and the real sqlite-history module: `--ticks` commits of
 * `--per-tick` 100-byte publications each, one tick after the other, timed wall-clock (the
 * loop is blocked for the whole commit: better-sqlite3 is synchronous) and in process CPU time.
 *
 *   node --import tsx bench/history-commit.ts [--ticks 2000] [--per-tick 10]
 */

const { values } = parseArgs({ options: { ticks: { type: 'string', default: '2000' }, 'per-tick': { type: 'string', default: '10' } } })
const ticks = Number(values.ticks)
const perTick = Number(values['per-tick'])
const print = (line: string): void => { process.stdout.write(`${line}\n`) }
const KEEP = { historySize: 1000, historyTtlSeconds: 3600 }

async function measure (synchronous: 'NORMAL' | 'FULL'): Promise<{ wallUs: number, cpuUs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-commit-'))
  try {
    const store = await createStore(`sqlite:${join(dir, 'bench.db')}`)
    const connection = store.sqlite!
    connection.pragma(`synchronous = ${synchronous}`)
    const history = createSqliteHistory(connection)
    const payload = JSON.stringify('x'.repeat(98))
    let offset = 0
    const cpuStart = process.cpuUsage()
    const start = performance.now()
    for (let t = 0; t < ticks; t++) {
      await new Promise<void>((resolve) => {
        let left = perTick
        for (let i = 0; i < perTick; i++) {
          offset += 1
          const publication = { kind: 'json' as const, payload, offset, from: { id: 'loader' }, ts: Date.now() }
          history.append('bench-0', 'epoch', { publication, storedAt: Date.now(), bytes: 200 }, KEEP, () => { if (--left === 0) resolve() })
        }
      })
    }
    const wallUs = (performance.now() - start) * 1000 / ticks
    const cpu = process.cpuUsage(cpuStart)
    await history.close()
    await store.close()
    return { wallUs, cpuUs: (cpu.user + cpu.system) / ticks }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

print(`${new Date().toISOString()}  load ${loadavg().map((l) => l.toFixed(2)).join(' ')}  ${ticks} commits of ${perTick} publications`)
for (const synchronous of ['NORMAL', 'FULL', 'NORMAL', 'FULL'] as const) {
  const { wallUs, cpuUs } = await measure(synchronous)
  print(`synchronous=${synchronous.padEnd(6)}  per commit: ${wallUs.toFixed(0)} µs wall (the event loop blocked), ${cpuUs.toFixed(0)} µs CPU`)
}
