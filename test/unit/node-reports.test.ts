import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { NodeReport } from '../../src/realtime/engine.js'
import { MAX_REPORTED_NODES, NodeReports, REPORT_EXPIRY_INTERVALS } from '../../src/realtime/node-reports.js'
import { MAX_ROOMS_PER_ANSWER, RoomCensus, type CensusMessage } from '../../src/realtime/room-census.js'
import { scopeAllows, ScopeSchema } from '../../src/auth/scopes.js'
import { TypeCompiler } from '@sinclair/typebox/compiler'

const silent = { debug () {}, info () {}, warn () {}, error () {}, child () { return silent } }
const INTERVAL = 1000

function figures (address: string): Omit<NodeReport, 'id' | 'reportedAt' | 'eventLoopDelayMs'> {
  return { address, hostname: 'h', version: '1', startedAt: 0, connections: 0, rooms: 0, messagesInPerSecond: 0, messagesOutPerSecond: 0, rssBytes: 1, heapUsedBytes: 1 }
}

function reportOf (id: string, address = id): NodeReport {
  return { ...figures(address), id, reportedAt: 0, eventLoopDelayMs: 0 }
}

describe('node reports', () => {
  it('keeps its own report and others\' until they miss REPORT_EXPIRY_INTERVALS intervals (injected clock)', () => {
    let now = 10_000
    const sent: NodeReport[] = []
    const reports = new NodeReports({ nodeId: 'self', intervalMs: INTERVAL, figures: () => figures('b:1'), publish: async (r) => { sent.push(r) }, log: silent, now: () => now })
    reports.tick()
    assert.equal(sent.length, 1)
    assert.equal(sent[0]!.id, 'self')
    reports.receive(reportOf('other', 'a:1'))
    assert.deepEqual(reports.list().map(n => [n.id, n.self]), [['self', true], ['other', false]])
    assert.equal(reports.peers(), 1)

    now += INTERVAL * REPORT_EXPIRY_INTERVALS
    assert.equal(reports.peers(), 1, 'still within the expiry')
    now += 1
    reports.tick()
    assert.deepEqual(reports.list().map(n => n.id), ['self'], 'the silent node is dropped; this one never is')
    assert.equal(reports.peers(), 0)
  })

  it('measures the loop delay as the report timer\'s lateness, and ignores its own echo', () => {
    let now = 0
    const reports = new NodeReports({ nodeId: 'self', intervalMs: INTERVAL, figures: () => figures('x'), log: silent, now: () => now })
    reports.tick()
    now += INTERVAL + 250
    reports.tick()
    assert.equal(reports.list()[0]!.eventLoopDelayMs, 250)
    reports.receive({ ...reportOf('self'), address: 'forged' })
    assert.equal(reports.list()[0]!.address, 'x')
  })

  it('remembers at most MAX_REPORTED_NODES nodes', () => {
    const reports = new NodeReports({ nodeId: 'self', intervalMs: INTERVAL, figures: () => figures('x'), log: silent, now: () => 0 })
    for (let i = 0; i < MAX_REPORTED_NODES + 50; i++) reports.receive(reportOf(`n${i}`))
    assert.equal(reports.list().length, MAX_REPORTED_NODES)
  })
})

describe('room census', () => {
  type Sent = CensusMessage

  it('merges every node\'s answer, and answers with what came when a node is silent', async () => {
    const sent: Sent[] = []
    const census = new RoomCensus({
      nodeId: 'self',
      local: () => [['a', 2], ['b', 1]],
      send: async (m) => { sent.push(m); return true },
      peers: () => 2,
      timeoutMs: 50
    })
    const gathering = census.gather('')
    await new Promise(resolve => setImmediate(resolve))
    const query = sent[0]
    assert.ok(query?.type === 'rooms_query')
    census.answer({ type: 'rooms_answer', id: query.id, to: 'self', rooms: [['b', 5], ['c', 1]], truncated: false })
    census.answer({ type: 'rooms_answer', id: query.id, to: 'someone-else', rooms: [['z', 9]], truncated: false })
    const result = await gathering
    assert.deepEqual(result.rooms, [{ room: 'b', subscribers: 6 }, { room: 'a', subscribers: 2 }, { room: 'c', subscribers: 1 }])
    assert.equal(result.nodesAnswered, 2)
    assert.equal(result.nodesKnown, 3)
    assert.equal(result.partial, true)
    // A late answer finds nothing waiting.
    census.answer({ type: 'rooms_answer', id: query.id, to: 'self', rooms: [['late', 1]], truncated: false })
  })

  it('refuses a census beyond the bound in flight (rate_limited), and close ends the waiting ones', async () => {
    const census = new RoomCensus({ nodeId: 'self', local: () => [], send: async () => true, peers: () => 1, timeoutMs: 60_000 })
    const waiting = Array.from({ length: 32 }, async () => await census.gather(''))
    await new Promise(resolve => setImmediate(resolve))
    await assert.rejects(census.gather(''), (err: Error & { protocolCode?: string }) => err.protocolCode === 'rate_limited')
    census.close()
    for (const result of await Promise.all(waiting)) assert.equal(result.partial, true)
  })

  it('answers another node\'s query with its own rooms under the prefix, the busiest MAX_ROOMS_PER_ANSWER', () => {
    const sent: Sent[] = []
    const local: Array<[string, number]> = Array.from({ length: MAX_ROOMS_PER_ANSWER + 1 }, (_, i) => [`r${i}`, i])
    const census = new RoomCensus({ nodeId: 'self', local: () => local, send: async (m) => { sent.push(m); return true }, peers: () => 0 })
    census.query({ type: 'rooms_query', id: 'q1', prefix: 'r1' }, 'asker')
    census.query({ type: 'rooms_query', id: 'q2', prefix: '' }, 'asker')
    const [filtered, all] = sent
    assert.ok(filtered?.type === 'rooms_answer' && all?.type === 'rooms_answer')
    assert.equal(filtered.to, 'asker')
    assert.ok(filtered.rooms.every(([room]) => room.startsWith('r1')))
    assert.equal(filtered.truncated, false)
    assert.equal(all.rooms.length, MAX_ROOMS_PER_ANSWER)
    assert.equal(all.truncated, true)
    assert.ok(!all.rooms.some(([room]) => room === 'r0'), 'the emptiest room is the one left out')
  })
})

describe('the admin scope', () => {
  const check = TypeCompiler.Compile(ScopeSchema)
  it('is `admin` alone, and grants no room operation', () => {
    assert.equal(check.Check('admin'), true)
    for (const bad of ['admin:*', 'admin:lobby', 'administrator', 'ADMIN']) assert.equal(check.Check(bad), false, bad)
    for (const action of ['publish', 'subscribe', 'history', 'presence'] as const) assert.equal(scopeAllows(['admin'], action, 'lobby'), false)
  })
})
