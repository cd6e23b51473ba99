import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import pino from 'pino'
import { Redis } from 'ioredis'
import { createRateLimiter } from '../src/limits/rate-limiter.js'
import { createRedisEngine } from '../src/realtime/redis-engine/index.js'
import type { Publication } from '../src/realtime/engine.js'
import { deleteRedisKeys } from '../support/redis.js'
import { scenarioLimits, scenarios } from './scenarios.js'
import { clusterServices, generate, REDIS_URL, roomNames, startTarget, type Variant } from './servers.js'

/**
 * Where scenario 6's Redis hop goes (docs/performance.md, "Two nodes"). Two parts:
 *
 * 1. The Redis calls on a cross-node publish's path, one at a time, 20 ms apart (a light load,
 *    the way a steady publisher leaves Redis idle in between), from this process: a PING, the
 *    per-user publish budget (what PUBLISH_RATE_PER_USER costs with Redis), the publish
 *    script, and the time from calling publish to the publication reaching a second engine's
 *    subscriber.
 * 2. Scenario 2's shape with a few subscribers (default 10) on one node and on two nodes,
 *    alternating, and the same for the frame-once hub relaying through Redis PUBLISH: the
 *    hop without node A's fan-out competing for the core, beside the least a hop through
 *    this Redis costs. With
 *    `--no-publish-limit` the nodes run with PUBLISH_RATE_PER_USER=0, which shows that
 *    budget's share.
 *
 *   node --import tsx bench/hop-profile.ts [--subscribers 10] [--runs 5] [--no-publish-limit]
 */

const PACE_MS = 20
const CALLS = 300

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const elapsedMs = (since: bigint): number => Number(process.hrtime.bigint() - since) / 1e6
function quantile (values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
}

async function redisCalls (): Promise<Record<string, number[]>> {
  const log = pino({ level: 'warn' })
  const prefix = `sb-hop-${randomBytes(5).toString('hex')}:`
  const publisher = await createRedisEngine({ url: REDIS_URL, keyPrefix: prefix, log })
  const subscriber = await createRedisEngine({ url: REDIS_URL, keyPrefix: prefix, log })
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 0 })
  // leaseMs 0: one round trip per call, the budget's script itself (leases answer most calls
  // of a busy user without Redis; this row times the call they save).
  const budget = createRateLimiter({ ratePerSecond: 1000, burst: 1000, leaseMs: 0, redis, prefix: `${prefix}publish-rate:`, log, what: 'publish rate' })
  const times: Record<string, number[]> = { 'PING': [], 'publish budget (rate limiter)': [], 'publish script': [], 'publish called → delivered on the other engine': [] }
  let publishedAt = 0n
  subscriber.broker.setHandler({
    onPublication: (_room: string, _epoch: string, _publication: Publication) => { times['publish called → delivered on the other engine']!.push(elapsedMs(publishedAt)) },
    onEvent: () => {},
    onReset: () => {}
  })
  try {
    await subscriber.broker.subscribe('hop')
    for (let i = 0; i < CALLS; i++) {
      await sleep(PACE_MS)
      let at = process.hrtime.bigint()
      await redis.ping()
      times.PING!.push(elapsedMs(at))
      await sleep(PACE_MS)
      at = process.hrtime.bigint()
      await budget.take('user')
      times['publish budget (rate limiter)']!.push(elapsedMs(at))
      await sleep(PACE_MS)
      publishedAt = process.hrtime.bigint()
      await publisher.broker.publish('hop', { payload: JSON.stringify({ i }), kind: 'json', from: { id: 'user' }, ts: Date.now() }, { historySize: 100, historyTtlSeconds: 300 })
      times['publish script']!.push(elapsedMs(publishedAt))
    }
    await sleep(100)
  } finally {
    await Promise.all([publisher.close(), subscriber.close()])
    await redis.quit()
    await deleteRedisKeys(REDIS_URL, prefix)
  }
  return times
}

async function lightHop (subscribers: number, runs: number, noPublishLimit: boolean): Promise<Record<string, number[]>> {
  const scenario = scenarios('full').find(s => s.id === 'two-nodes')!
  const args = ['--subscribers', String(subscribers), '--rooms', '1', '--publishers', '1', '--rate', '50', '--duration', '5', '--size', '100']
  const env = { ...scenarioLimits({ ...scenario, connections: subscribers + 1 }), ...(noPublishLimit ? { PUBLISH_RATE_PER_USER: '0' } : {}) }
  const variants: Variant[] = ['switchboard', 'switchboard-2-nodes', 'ws-framed', 'ws-framed-2-nodes']
  const p50s: Record<string, number[]> = Object.fromEntries(variants.map(v => [v, []]))
  for (let run = 0; run < runs; run++) {
    const order = run % 2 === 0 ? variants : [...variants].reverse()
    for (const variant of order) {
      const target = await startTarget(variant, { rooms: roomNames(1), env })
      try {
        const { report, stderr } = await generate(target, args, tmpdir())
        if (report === undefined || report.latencyMs.p50 === null) throw new Error(`${variant}: no latency measured\n${stderr}`)
        p50s[variant]!.push(report.latencyMs.p50)
        process.stderr.write(`${variant}: p50 ${report.latencyMs.p50} ms\n`)
      } finally {
        await target.stop()
      }
    }
  }
  return p50s
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, ''))) {
  const { values } = parseArgs({ options: { subscribers: { type: 'string', default: '10' }, runs: { type: 'string', default: '5' }, 'no-publish-limit': { type: 'boolean', default: false } } })
  const missing = await clusterServices()
  if (missing !== undefined) throw new Error(missing)
  const calls = await redisCalls()
  process.stdout.write(`Redis calls, one every ${PACE_MS} ms, ${CALLS} each (ms)\n${'call'.padEnd(50)}       p50       p90\n`)
  for (const [name, values] of Object.entries(calls)) process.stdout.write(`${name.padEnd(50)}${quantile(values, 0.5).toFixed(3).padStart(10)}${quantile(values, 0.9).toFixed(3).padStart(10)}\n`)
  const subscribers = Number(values.subscribers)
  const p50s = await lightHop(subscribers, Number(values.runs), values['no-publish-limit'])
  process.stdout.write(`\nScenario 2 with ${subscribers} subscribers${values['no-publish-limit'] ? ', PUBLISH_RATE_PER_USER=0' : ''}, median of ${values.runs} runs' p50:\n`)
  for (const [name, one, two] of [['Switchboard', 'switchboard', 'switchboard-2-nodes'], ['frame-once hub', 'ws-framed', 'ws-framed-2-nodes']] as const) {
    const [a, b] = [quantile(p50s[one]!, 0.5), quantile(p50s[two]!, 0.5)]
    process.stdout.write(`${name.padEnd(16)} one process ${a.toFixed(3)} ms, two ${b.toFixed(3)} ms, hop ${(b - a).toFixed(3)} ms\n`)
  }
}
