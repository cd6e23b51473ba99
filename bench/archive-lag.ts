import { randomBytes } from 'node:crypto'
import { loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { createRedisEngine } from '../src/realtime/redis-engine/index.js'
import { createStore } from '../src/store/index.js'
import { dropSchema } from '../support/postgres.js'
import { deleteRedisKeys } from '../support/redis.js'

/**
 * The cluster archive's lag (issue 21): docs/performance.md, "Cluster archive lag".
 *
 * The real Redis engine with the real PostgreSQL store (a private schema and key prefix,
 * removed at the end) in this process: `--rate` publishes a second, spread over `--rooms`
 * archived rooms, for `--seconds`, each with a 100-byte payload. The lag of a publication is
 * from its publish script (Redis's clock) to PostgreSQL confirming its row (this process's
 * clock; same machine), as the switchboard_archive_lag_seconds histogram counts it. Then it
 * waits for the queues to drain and prints the percentiles and the machine's load.
 *
 *   node --import tsx bench/archive-lag.ts [--rate 1000] [--seconds 10] [--rooms 10]
 *   (REDIS_URL and DATABASE_URL default to the local test services)
 */

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    rooms: { type: 'string', default: '10' }
  }
})
const rate = Number(values.rate)
const seconds = Number(values.seconds)
const roomCount = Number(values.rooms)
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const databaseUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const print = (line: string): void => { process.stdout.write(`${line}\n`) }
const silent = { trace () {}, debug () {}, info () {}, warn () {}, error () {}, fatal () {}, child () { return silent } }

const schema = `bench_${randomBytes(5).toString('hex')}`
const keyPrefix = `sbbench:${randomBytes(5).toString('hex')}:`
const store = await createStore(databaseUrl, { pgSchema: schema })
const lags: number[] = []
const engine = await createRedisEngine({
  url: redisUrl,
  keyPrefix,
  log: silent as never,
  archive: { store, queueRoomBytes: 64 * 1024 * 1024, onArchived: (lagMs) => { lags.push(lagMs) } }
})
const options = { historySize: 100, historyTtlSeconds: 3600, archiveDays: 30 }
const payload = JSON.stringify('x'.repeat(98))
const rooms = Array.from({ length: roomCount }, (_, i) => `bench-${i}`)

print(`${new Date().toISOString()}  load ${loadavg().map((l) => l.toFixed(2)).join(' ')}  ${rate}/s for ${seconds} s over ${roomCount} rooms`)
let issued = 0
let published = 0
let failed = 0
const total = rate * seconds
const started = Date.now()
const inFlight = new Set<Promise<void>>()
// Paced by the clock: every 10 ms, what the rate owes by then is sent without waiting for replies.
while (issued < total) {
  const owed = Math.min(total, Math.floor((Date.now() - started) * rate / 1000))
  for (; issued < owed; issued++) {
    const room = rooms[issued % roomCount] ?? 'bench-0'
    const p: Promise<void> = engine.broker.publish(room, { kind: 'json', payload, from: { id: 'bench' }, ts: Date.now() }, options)
      .then(() => { published++ }, () => { failed++ })
      .finally(() => { inFlight.delete(p) })
    inFlight.add(p)
  }
  await new Promise(resolve => setTimeout(resolve, 10))
}
await Promise.all(inFlight)
const deadline = Date.now() + 60_000
while (lags.length < published && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
const elapsed = (Date.now() - started) / 1000

const sorted = [...lags].sort((a, b) => a - b)
const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
print(`published ${published} (${failed} failed) in ${elapsed.toFixed(1)} s; archived ${lags.length}`)
print(`archive lag ms: p50 ${at(0.5).toFixed(0)}  p90 ${at(0.9).toFixed(0)}  p99 ${at(0.99).toFixed(0)}  max ${(sorted[sorted.length - 1] ?? NaN).toFixed(0)}`)
print(`load after ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)

await engine.close()
await store.close()
await deleteRedisKeys(redisUrl, keyPrefix).catch(() => {})
await dropSchema(databaseUrl, schema)
