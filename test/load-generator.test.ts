import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { oneShotRequest } from '../support/http.js'
import { build, PASSWORD, tempDir } from './helper.js'
import { ADMIN, baseEnv, runCli as cli, startServer, waitUntilReady, type CliRun as Run } from './process.js'
import { parseRssBytes, parseStatTicks, sampleProcess } from '../src/cli/load/proc.js'
import type { LoadReport } from '../src/cli/load/report.js'

/** The limits docs/load-generator.md tells operators to run the server under load with. */
const RAISED = {
  WS_MAX_CONNECTIONS_PER_USER: '100000',
  WS_MAX_CONNECTIONS_PER_IP: '100000',
  WS_HANDSHAKES_PER_IP_PER_MINUTE: '1000000',
  HTTP_MAX_CONNECTIONS_PER_IP: '0',
  WS_MESSAGES_PER_SECOND: '100000',
  WS_MESSAGES_BURST: '100000',
  PUBLISH_RATE_PER_USER: '0'
}

function report (run: Run): LoadReport {
  assert.equal(run.code, 0, `exit ${run.code}\nstderr:\n${run.stderr}\nstdout:\n${run.stdout}`)
  return JSON.parse(run.stdout) as LoadReport
}

function assertOrdered (p: LoadReport['latencyMs'], count: number): void {
  assert.equal(p.count, count)
  for (const key of ['p50', 'p90', 'p99', 'p99_9', 'max', 'mean'] as const) assert.equal(typeof p[key], 'number', key)
  assert.ok(p.p50! > 0)
  assert.ok(p.p50! <= p.p90!, JSON.stringify(p))
  assert.ok(p.p90! <= p.p99!, JSON.stringify(p))
  assert.ok(p.p99! <= p.p99_9!, JSON.stringify(p))
  assert.ok(p.p99_9! <= p.max!, JSON.stringify(p))
}

/** Every expected delivery came, once; `timed` of them (those after a warm-up) have latencies. */
function assertComplete (r: LoadReport, expected: number, timed = expected): void {
  assert.equal(r.deliveries.expected, expected)
  assert.equal(r.deliveries.delivered, expected)
  assert.equal(r.deliveries.lost, 0)
  assert.equal(r.deliveries.duplicates, 0)
  assert.equal(r.deliveries.unexpected, 0)
  assert.deepEqual(r.messages.refused, {})
  assert.equal(r.messages.unsent, 0)
  assert.deepEqual(r.closed, [])
  assert.deepEqual(r.warnings, [])
  assertOrdered(r.latencyMs, timed)
}

describe('switchboard load against a real server', () => {
  it('rate mode: every delivery is accounted for, latency percentiles are ordered', async (t) => {
    const server = await build(t, { env: RAISED })
    const token = await server.userToken('loader')
    const run = await cli(join(tempDir(t), 'none.json'), [
      'load', '--url', server.url, '--token', token, '--create-rooms',
      '--subscribers', '50', '--rooms', '2', '--publishers', '2', '--rate', '200', '--duration', '2', '--size', '120', '--json'
    ])
    const r = report(run)
    assert.equal(r.target, 'switchboard')
    assert.equal(r.mode, 'rate')
    assert.equal(r.messages.planned, 400)
    assert.equal(r.messages.published, 400)
    // 400 messages over 2 rooms of 25 subscribers each.
    assertComplete(r, 400 * 25)
    assert.equal(r.connect.connections, 52)
    assert.ok(r.connect.p50Ms! <= r.connect.p99Ms! && r.connect.p99Ms! <= r.connect.maxMs!, JSON.stringify(r.connect))
    assert.ok(r.connect.totalMs > 0)
    assert.equal(r.sendLagMs?.count, 400)
    assert.ok(r.deliveries.perSecond! > 0)
    assert.equal(r.server, null)
    assert.match(run.stderr, /connecting: 50\/50 subscribers, 2\/2 publishers/)
    // The rooms were created public, by the token's user.
    const rooms = await server.request('GET', '/rooms', { token })
    assert.deepEqual(rooms.body.items.map((room: { id: string }) => room.id).sort(), ['load-0', 'load-1'])
  })

  it('--warmup: its messages are published and delivered like the rest, their latencies are not recorded', async (t) => {
    const server = await build(t, { env: RAISED })
    const token = await server.userToken('loader')
    const run = await cli(join(tempDir(t), 'none.json'), [
      'load', '--url', server.url, '--token', token, '--create-rooms',
      '--subscribers', '10', '--publishers', '1', '--rate', '200', '--duration', '1', '--warmup', '0.5', '--json'
    ])
    const r = report(run)
    assert.equal(r.config.warmupS, 0.5)
    assert.equal(r.messages.planned, 300)
    assert.equal(r.messages.warmup, 100)
    // Only the deliveries of messages after the warm-up are timed.
    assertComplete(r, 300 * 10, 200 * 10)
    assert.equal(r.sendLagMs?.count, 200)
  })

  it('burst mode with the stored CLI session delivers everything, and the table reads', async (t) => {
    const server = await build(t, { env: RAISED })
    await server.createUser('loader')
    const config = join(tempDir(t), 'config.json')
    const login = await cli(config, ['login', '--url', server.url, '--username', 'loader', '--password-stdin'], { stdin: PASSWORD + '\n' })
    assert.equal(login.code, 0, login.stderr)
    const r = report(await cli(config, [
      'load', '--create-rooms', '--burst', '--messages', '300', '--subscribers', '30', '--publishers', '2', '--json'
    ]))
    assert.equal(r.mode, 'burst')
    assert.equal(r.url, server.url)
    assert.equal(r.sendLagMs, null)
    assertComplete(r, 300 * 30)

    const table = await cli(config, ['load', '--burst', '--messages', '20', '--subscribers', '4', '--rooms', '1'])
    assert.equal(table.code, 0, table.stderr)
    assert.match(table.stdout, /^deliveries\s+80 of 80 expected/m)
    assert.match(table.stdout, /^LOST\s+0$/m)
    assert.match(table.stdout, /^DUPLICATE\s+0$/m)
    assert.match(table.stdout, /^latency ms\s+p50 [\d.]+ +p90 [\d.]+ +p99 [\d.]+ +p99\.9 [\d.]+ +max [\d.]+/m)
  })

  it('authenticates with an API key (subscribe and publish scopes)', async (t) => {
    const server = await build(t, { env: RAISED })
    const admin = await server.userToken('root', 'admin')
    for (const id of ['keyed-0', 'keyed-1']) assert.equal((await server.request('POST', '/rooms', { token: admin, body: { id } })).status, 201)
    const created = await server.request('POST', '/api-keys', { token: admin, body: { name: 'loader', scopes: ['subscribe:keyed-*', 'publish:keyed-*'] } })
    assert.equal(created.status, 201, created.text)
    const r = report(await cli(join(tempDir(t), 'none.json'), [
      'load', '--url', server.url, '--api-key', created.body.key as string, '--room-prefix', 'keyed-', '--rooms', '2',
      '--subscribers', '10', '--publishers', '2', '--burst', '--messages', '100', '--json'
    ]))
    assertComplete(r, 100 * 5)
  })

  it('--binary on both codecs: every byte of every payload delivered once; MessagePack puts fewer bytes on the wire than base64', async (t) => {
    const server = await build(t, { env: RAISED })
    const token = await server.userToken('loader')
    const config = join(tempDir(t), 'none.json')
    const common = ['load', '--url', server.url, '--token', token, '--create-rooms', '--subscribers', '10', '--rooms', '2', '--publishers', '2', '--burst', '--messages', '40', '--json']
    // The generator checks each delivered payload byte for byte: a changed one is unexpected.
    const json = report(await cli(config, [...common, '--size', '1024', '--binary', '--codec', 'json']))
    const msgpack = report(await cli(config, [...common, '--size', '1024', '--binary', '--codec', 'msgpack']))
    for (const r of [json, msgpack]) {
      assertComplete(r, 40 * 5)
      assert.equal(r.config.binary, true)
    }
    // base64 is a third more bytes than the payload; bin is the payload.
    const [jsonBytes, msgpackBytes] = [json.wire!.bytesPerDelivery!, msgpack.wire!.bytesPerDelivery!]
    assert.ok(jsonBytes > 1024 * 4 / 3 && msgpackBytes > 1024 && msgpackBytes < 1024 * 4 / 3, JSON.stringify({ jsonBytes, msgpackBytes }))
    // Text payloads on MessagePack: strings both ways.
    assertComplete(report(await cli(config, [...common, '--codec', 'msgpack'])), 40 * 5)
  })

  it('--server-pid reports the server process CPU seconds and RSS', async (t) => {
    const server = await startServer(t, { ...baseEnv(tempDir(t)), ...RAISED })
    await waitUntilReady(server)
    const url = `http://127.0.0.1:${server.port}`
    const login = await oneShotRequest(url, 'POST', '/auth/login', { body: { username: ADMIN.username, password: ADMIN.password } })
    assert.equal(login.status, 200)
    const pid = server.child.pid!
    const r = report(await cli(join(tempDir(t), 'none.json'), [
      'load', '--url', url, '--token', login.body.accessToken as string, '--create-rooms',
      '--subscribers', '20', '--publishers', '1', '--burst', '--messages', '200', '--server-pid', String(pid), '--json'
    ]))
    assertComplete(r, 200 * 20)
    assert.ok(r.server !== null)
    assert.equal(r.server.pid, pid)
    assert.ok(r.server.clkTck > 0)
    assert.ok(r.server.cpuSeconds.run >= 0)
    assert.ok(r.server.cpuSeconds.connect >= 0)
    assert.ok(r.server.rssBytes.before > 0)
    assert.ok(r.server.rssBytes.afterConnect > 0)
    assert.ok(r.server.rssBytes.after > 0)
    assert.ok(r.server.deliveriesPerCpuSecond === null || r.server.deliveriesPerCpuSecond > 0)
  })

  it('refuses a target that is not loopback unless --allow-remote', async (t) => {
    const config = join(tempDir(t), 'none.json')
    for (const url of ['http://192.0.2.10:3000', 'http://example.com', 'http://[2001:db8::1]:3000', 'http://10.0.0.1']) {
      const run = await cli(config, ['load', '--url', url, '--token', 'x'])
      assert.equal(run.code, 2, `${url}: ${run.stderr}`)
      assert.match(run.stderr, /not a loopback address\. Load tests only ever target machines you own; .*--allow-remote/)
    }
    // Loopback passes the check (and then finds nothing listening).
    const local = await cli(config, ['load', '--url', 'http://127.0.0.2:1', '--token', 'x', '--subscribers', '1', '--publishers', '0'])
    assert.equal(local.code, 1)
    assert.match(local.stderr, /cannot reach the server at http:\/\/127\.0\.0\.2:1/)
  })

  it('a refused handshake stops the run with the setting to raise', async (t) => {
    const server = await build(t, { env: { WS_MAX_CONNECTIONS_PER_USER: '2' } })
    const token = await server.userToken('loader')
    const run = await cli(join(tempDir(t), 'none.json'), ['load', '--url', server.url, '--token', token, '--create-rooms', '--subscribers', '5', '--publishers', '1', '--json'])
    assert.equal(run.code, 1, run.stderr)
    assert.equal(run.stdout, '')
    assert.match(run.stderr, /switchboard: connection \d+ (refused by the server: HTTP 429 SB_ERR_TOO_MANY_CONNECTIONS|closed at once with 4029).*raise WS_MAX_CONNECTIONS_PER_USER/)
  })

  it('rate-limited publishes are reported, with the settings to raise, and exit 1', async (t) => {
    // Default message limits: 50/s, burst 100 per connection.
    const server = await build(t)
    const token = await server.userToken('loader')
    const run = await cli(join(tempDir(t), 'none.json'), ['load', '--url', server.url, '--token', token, '--create-rooms', '--subscribers', '2', '--burst', '--messages', '400', '--drain-ms', '500', '--json'])
    assert.equal(run.code, 1, run.stderr)
    const r = JSON.parse(run.stdout) as LoadReport
    assert.ok((r.messages.refused.rate_limited ?? 0) > 0, JSON.stringify(r.messages))
    assert.match(run.stderr, /publishes were refused: rate_limited: .*raise WS_MESSAGES_PER_SECOND and WS_MESSAGES_BURST/)
    assert.match(run.stderr, /the server allows 50 messages\/s per connection/)
    // What was published still arrived, exactly once.
    assert.equal(r.deliveries.delivered, r.deliveries.expected)
    assert.equal(r.deliveries.expected, r.messages.published * 2)
    assert.equal(r.deliveries.duplicates, 0)
  })

  it('missing rooms: says to pass --create-rooms; usage errors exit 2', async (t) => {
    const server = await build(t, { env: RAISED })
    const token = await server.userToken('loader')
    const config = join(tempDir(t), 'none.json')
    const run = await cli(config, ['load', '--url', server.url, '--token', token, '--subscribers', '2', '--publishers', '0'])
    assert.equal(run.code, 1)
    assert.match(run.stderr, /room "load-0" does not exist.*--create-rooms/)
    const notLoggedIn = await cli(config, ['load', '--url', server.url, '--subscribers', '1'])
    assert.equal(notLoggedIn.code, 1)
    assert.match(notLoggedIn.stderr, /not logged in: run `switchboard login`, or pass --token or --api-key/)
    for (const args of [['--rate', '10', '--burst'], ['--size', '10'], ['--duration', '601'], ['--warmup', '61'], ['--burst', '--warmup', '1'], ['--subscribers', 'many'], ['--target', 'nope'], ['--codec', 'xml'], ['--nope']]) {
      const bad = await cli(config, ['load', '--url', server.url, '--token', token, ...args])
      assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`)
    }
    const help = await cli(config, ['load', '--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--subscribers N/)
    assert.match(help.stdout, /--allow-remote/)
  })

  it('drives another server through an adapter module given as --target', async (t) => {
    const dir = tempDir(t)
    const module = join(dir, 'hub-adapter.mjs')
    writeFileSync(module, `
      const rooms = new Map()
      export default () => ({
        name: 'memory-hub',
        async connect () {
          let handler = () => {}
          const conn = {
            bufferedAmount: 0,
            async subscribe (room) { if (!rooms.has(room)) rooms.set(room, new Set()); rooms.get(room).add(conn) },
            async publish (room, payload) { for (const c of rooms.get(room) ?? []) setImmediate(() => c.deliver(room, payload)) },
            onMessage (h) { handler = h },
            onClose () {},
            deliver (room, payload) { handler(room, payload) },
            async close () { for (const set of rooms.values()) set.delete(conn) }
          }
          return conn
        }
      })
    `)
    const r = report(await cli(join(dir, 'none.json'), ['load', '--target', module, '--url', 'http://localhost:9', '--subscribers', '6', '--rooms', '3', '--publishers', '2', '--burst', '--messages', '90', '--json']))
    assert.equal(r.target, 'memory-hub')
    assertComplete(r, 90 * 2)
  })
})

describe('switchboard load internals', () => {
  // Runs getconf once (a process): the rest of these internals are in test/unit/load-generator.test.ts.
  it('reads CPU ticks and RSS from /proc', () => {
    assert.equal(parseStatTicks('123 (node (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 1000 200'), 300)
    assert.equal(parseRssBytes('Name:\tnode\nVmRSS:\t   2048 kB\nVmData:\t1 kB\n'), 2048 * 1024)
    const own = sampleProcess(process.pid)
    assert.ok(own.cpuSeconds > 0)
    assert.ok(own.rssBytes > 0)
    assert.throws(() => sampleProcess(2 ** 22 + 1), /no such process/)
  })
})
