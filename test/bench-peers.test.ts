import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { build, skipUnlessRedis, tempDir } from './helper.js'
import { runCli, type CliRun } from './process.js'
import type { LoadReport } from '../src/cli/load/report.js'
import { cleanRun } from '../bench/scenarios.js'
import { ADAPTERS, startTarget, type Peer } from '../bench/servers.js'

/**
 * The benchmark suite's peers and adapters, driven by the real load generator at a tiny size,
 * so they cannot rot between benchmark runs. Functional only: every message delivered once,
 * nothing refused; how fast is the benchmark's business (npm run bench), never a test's. The
 * summary, targets, chart and profile grouping need no server: test/unit/bench-summary.test.ts.
 */

const PEERS: Array<Exclude<Peer, 'switchboard'>> = ['ws-framed', 'ws-naive', 'socketio']

function report (run: CliRun): LoadReport {
  assert.equal(run.code, 0, `exit ${run.code}\nstderr:\n${run.stderr}\nstdout:\n${run.stdout}`)
  return JSON.parse(run.stdout) as LoadReport
}

/** Every expected delivery arrived once; cleanRun is the suite's own rule for a run that counts. */
function assertComplete (r: LoadReport, expected: number): void {
  assert.equal(r.deliveries.expected, expected)
  assert.equal(r.deliveries.delivered, expected)
  assert.ok(cleanRun(r), JSON.stringify({ deliveries: r.deliveries, messages: r.messages, closed: r.closed, warnings: r.warnings }))
}

describe('benchmark peers through their adapters', () => {
  for (const peer of PEERS) {
    it(`${peer}: burst and rate runs deliver every message once, to its room only`, async (t) => {
      const target = await startTarget(peer, { rooms: [], env: {}, pin: false })
      t.after(() => target.stop())
      const config = join(tempDir(t), 'none.json')
      const common = ['load', '--target', ADAPTERS[peer], '--url', target.url, '--server-pid', String(target.pid), '--json']
      // 6 subscribers in 2 rooms, 2 publishers: each message reaches the 3 subscribers of its room.
      const burst = report(await runCli(config, [...common, '--subscribers', '6', '--rooms', '2', '--publishers', '2', '--burst', '--messages', '10']))
      assertComplete(burst, 10 * 3)
      assert.equal(burst.latencyMs.count, 30)
      assert.ok(burst.server !== null && burst.server.pid === target.pid)
      const rate = report(await runCli(config, [...common, '--subscribers', '5', '--publishers', '1', '--rate', '20', '--duration', '0.5']))
      assertComplete(rate, 10 * 5)
      // Connect only (the handshake scenario): no messages, every connection opened.
      const connect = report(await runCli(config, [...common, '--subscribers', '0', '--publishers', '20', '--messages', '0', '--batch', '5']))
      assert.equal(connect.connect.connections, 20)
      assert.equal(connect.messages.planned, 0)
      assert.deepEqual(connect.closed, [])
    })
  }
})

describe('benchmark peers carrying bytes (the binary fan-out)', () => {
  // Envelope bytes per delivery of a 1 KiB payload in room load-0, WebSocket header included:
  // the hubs' binary msg (2 + room), Socket.IO's placeholder packet beside its binary frame.
  const envelope: Record<Exclude<Peer, 'switchboard'>, [number, number]> = { 'ws-framed': [4 + 2 + 6, 4 + 2 + 6], 'ws-naive': [4 + 2 + 6, 4 + 2 + 6], socketio: [40, 80] }
  for (const peer of PEERS) {
    it(`${peer}: every byte of every 1 KiB payload delivered once, bytes on the wire counted`, async (t) => {
      const target = await startTarget(peer, { rooms: [], env: {}, pin: false })
      t.after(() => target.stop())
      const config = join(tempDir(t), 'none.json')
      const r = report(await runCli(config, ['load', '--target', ADAPTERS[peer], '--url', target.url, '--json',
        '--subscribers', '6', '--rooms', '2', '--publishers', '2', '--burst', '--messages', '20', '--size', '1024', '--binary']))
      // The generator checks each delivered payload byte for byte: a changed one is unexpected.
      assertComplete(r, 20 * 3)
      assert.equal(r.config.binary, true)
      const [least, most] = envelope[peer]
      assert.ok(r.wire !== null && r.wire.bytesPerDelivery! >= 1024 + least && r.wire.bytesPerDelivery! <= 1024 + most, JSON.stringify(r.wire))
    })
  }
})

describe('the frame-once hub verifying a JWT (the handshake reference)', () => {
  it('upgrades a handshake with the token the runner signed, refuses one without or with a forged one', async (t) => {
    const target = await startTarget('ws-framed-jwt', { rooms: [], env: {}, pin: false })
    t.after(() => target.stop())
    assert.ok(target.token !== undefined)
    const config = join(tempDir(t), 'none.json')
    const common = ['load', '--target', ADAPTERS['ws-framed-jwt'], '--url', target.url, '--json', '--subscribers', '0', '--publishers', '5', '--messages', '0']
    const accepted = report(await runCli(config, [...common, '--token', target.token]))
    assert.equal(accepted.connect.connections, 5)
    const [header, payload] = target.token.split('.')
    for (const token of [undefined, `${header}.${payload}.${'A'.repeat(43)}`]) {
      const refused = await runCli(config, [...common, ...(token === undefined ? [] : ['--token', token])])
      assert.notEqual(refused.code, 0, 'a handshake without a valid token was upgraded')
      assert.match(refused.stderr, /401/)
    }
  })
})

describe('the frame-once hub on two processes through Redis (scenario 6\'s reference)', async () => {
  it('delivers what a publisher on the second process sends to the subscribers on the first, once each', { skip: await skipUnlessRedis() }, async (t) => {
    const target = await startTarget('ws-framed-2-nodes', { rooms: [], env: {}, pin: false })
    t.after(() => target.stop())
    assert.ok(target.publisherUrl !== undefined && target.publisherUrl !== target.url)
    const config = join(tempDir(t), 'none.json')
    const common = ['load', '--target', ADAPTERS['ws-framed-2-nodes'], '--url', target.url, '--publisher-url', target.publisherUrl, '--json']
    assertComplete(report(await runCli(config, [...common, '--subscribers', '4', '--publishers', '1', '--burst', '--messages', '20'])), 20 * 4)
    assertComplete(report(await runCli(config, [...common, '--subscribers', '3', '--publishers', '1', '--rate', '20', '--duration', '0.5'])), 10 * 3)
    // The publisher really is elsewhere: sent to a hub of its own (no relay), nothing arrives.
    const alone = await startTarget('ws-framed', { rooms: [], env: {}, pin: false })
    t.after(() => alone.stop())
    const apart = await runCli(config, ['load', '--target', ADAPTERS['ws-framed'], '--url', target.url, '--publisher-url', alone.url, '--json',
      '--subscribers', '2', '--publishers', '1', '--burst', '--messages', '3', '--drain-ms', '200'])
    assert.equal((JSON.parse(apart.stdout) as LoadReport).deliveries.delivered, 0, apart.stderr)
  })
})

describe('switchboard load --publisher-url', () => {
  it('sends publishers to the other server', async (t) => {
    const subscribersNode = await build(t)
    const publishersNode = await build(t)
    const token = await subscribersNode.userToken('loader')
    await publishersNode.createUser('loader')
    // The same secret signs both nodes' tokens and both know the user, but only the first has
    // the room: a publisher that went to the second is refused with not_found.
    const run = await runCli(join(tempDir(t), 'none.json'), [
      'load', '--url', subscribersNode.url, '--publisher-url', publishersNode.url, '--token', token, '--create-rooms',
      '--subscribers', '2', '--publishers', '1', '--burst', '--messages', '3', '--drain-ms', '200', '--json'
    ])
    assert.equal(run.code, 1, run.stderr)
    const r = JSON.parse(run.stdout) as LoadReport
    assert.deepEqual(r.messages.refused, { not_found: 3 })
    const remote = await runCli(join(tempDir(t), 'none.json'), ['load', '--url', subscribersNode.url, '--publisher-url', 'http://192.0.2.1:3000', '--token', token])
    assert.equal(remote.code, 2)
    assert.match(remote.stderr, /not a loopback address/)
  })
})
