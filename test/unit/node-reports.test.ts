import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { NodeReport } from '../../src/realtime/engine.js'
import { CLUSTER_HISTORY_SAMPLES, MAX_REPORTED_NODES, NodeReports, REPORT_EXPIRY_INTERVALS } from '../../src/realtime/node-reports.js'
import { ConnectionSearch, MAX_ANSWER_BYTES, MAX_CONNECTIONS_LISTED, type ConnectionSearchMessage } from '../../src/realtime/connection-search.js'
import type { ConnectionDescription } from '../../src/realtime/engine.js'
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
    assert.deepEqual(reports.peers(), ['other'])

    now += INTERVAL * REPORT_EXPIRY_INTERVALS
    assert.deepEqual(reports.peers(), ['other'], 'still within the expiry')
    now += 1
    reports.tick()
    assert.deepEqual(reports.list().map(n => n.id), ['self'], 'the silent node is dropped; this one never is')
    assert.deepEqual(reports.peers(), [])
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

describe('cluster history', () => {
  it('keeps the cluster\'s totals at each tick, the last CLUSTER_HISTORY_SAMPLES, the oldest first', () => {
    let now = 0
    let connections = 0
    const reports = new NodeReports({ nodeId: 'self', intervalMs: INTERVAL, figures: () => ({ ...figures('x'), messagesInPerSecond: 1.5, connections }), log: silent, now: () => now })
    reports.receive({ ...reportOf('other'), connections: 10, messagesOutPerSecond: 4 })
    reports.tick()
    assert.deepEqual(reports.history(), [{ at: 0, nodes: 2, connections: 10, messagesInPerSecond: 1.5, messagesOutPerSecond: 4 }])
    for (let i = 1; i <= CLUSTER_HISTORY_SAMPLES + 5; i++) {
      now += INTERVAL
      connections = i
      reports.tick()
    }
    const history = reports.history()
    assert.equal(history.length, CLUSTER_HISTORY_SAMPLES)
    assert.deepEqual(history.map(s => s.at), Array.from({ length: CLUSTER_HISTORY_SAMPLES }, (_, i) => (i + 6) * INTERVAL))
    assert.equal(history.at(-1)!.nodes, 1, 'the other node expired')
    assert.equal(history.at(-1)!.connections, CLUSTER_HISTORY_SAMPLES + 5)
  })
})

describe('connection search', () => {
  const conn = (id: string, connectedAt: number, rooms: string[] = []): ConnectionDescription =>
    ({ id, principal: 'alice', kind: 'user', ip: '127.0.0.1', userAgent: null, rooms, connectedAt })

  it('merges every node\'s connections (oldest first, at most the limit) and names the nodes that did not answer', async () => {
    const sent: ConnectionSearchMessage[] = []
    const filters: unknown[] = []
    const search = new ConnectionSearch({
      nodeId: 'self',
      local: (filter) => { filters.push(filter); return [conn('mine', 5)] },
      send: async (m) => { sent.push(m); return true },
      peers: () => ['n1', 'n2'],
      timeoutMs: 50
    })
    const listing = search.list({ user: 'alice' }, 2)
    await new Promise(resolve => setImmediate(resolve))
    const query = sent[0]
    assert.ok(query?.type === 'connections_query')
    assert.deepEqual([query.user, query.room, query.limit], ['alice', undefined, 2])
    search.answer({ type: 'connections_answer', id: query.id, to: 'self', items: [conn('b1', 1), conn('b2', 9)], truncated: false }, 'n1')
    const result = await listing
    assert.deepEqual(result.items.map(c => [c.id, c.node]), [['b1', 'n1'], ['mine', 'self']])
    assert.deepEqual(result.nodesAnswered, ['self', 'n1'])
    assert.deepEqual(result.nodesMissing, ['n2'])
    assert.equal(result.truncated, true, 'three matched, two listed')
    assert.deepEqual(filters, [{ user: 'alice' }])
  })

  it('answers another node with at most the limit and MAX_ANSWER_BYTES of connections', () => {
    const sent: ConnectionSearchMessage[] = []
    const rooms = Array.from({ length: 100 }, (_, i) => `room-with-a-long-name-${i}`)
    const many = Array.from({ length: MAX_CONNECTIONS_LISTED + 10 }, (_, i) => conn(`c${i}`, i, rooms))
    const search = new ConnectionSearch({ nodeId: 'self', local: () => [...many], send: async (m) => { sent.push(m); return true }, peers: () => [] })
    search.query({ type: 'connections_query', id: 'q1', room: 'x', limit: 3 }, 'asker')
    search.query({ type: 'connections_query', id: 'q2', limit: 100_000 }, 'asker')
    const [few, bounded] = sent
    assert.ok(few?.type === 'connections_answer' && bounded?.type === 'connections_answer')
    assert.deepEqual([few.to, few.items.length, few.truncated], ['asker', 3, true])
    assert.ok(bounded.items.length < MAX_CONNECTIONS_LISTED, 'the byte bound cut it first')
    assert.ok(JSON.stringify(bounded.items).length <= MAX_ANSWER_BYTES + bounded.items.length + 2)
    assert.equal(bounded.truncated, true)
  })

  it('counts a node\'s answer once, and a node that started after the question was asked too', async () => {
    const sent: ConnectionSearchMessage[] = []
    const search = new ConnectionSearch({ nodeId: 'self', local: () => [], send: async (m) => { sent.push(m); return true }, peers: () => ['n1', 'n2'], timeoutMs: 50 })
    const listing = search.list({}, 10)
    await new Promise(resolve => setImmediate(resolve))
    const query = sent[0]
    assert.ok(query?.type === 'connections_query')
    const answer = { type: 'connections_answer' as const, id: query.id, to: 'self', items: [conn('x', 1)], truncated: false }
    search.answer(answer, 'n1')
    search.answer(answer, 'n1')
    search.answer({ ...answer, items: [conn('y', 2)] }, 'newcomer')
    const result = await listing
    assert.deepEqual(result.items.map(c => c.id), ['x', 'y'], 'n1 once')
    assert.deepEqual([result.nodesAnswered, result.nodesMissing], [['self', 'n1', 'newcomer'], ['n2']])
  })

  it('on a single node lists its own connections without asking anyone', async () => {
    let asked = false
    const search = new ConnectionSearch({ nodeId: 'self', local: () => [conn('a', 1)], send: async () => { asked = true; return true }, peers: () => [] })
    const result = await search.list({}, 10)
    assert.deepEqual([result.items.length, result.nodesAnswered, result.nodesMissing, result.truncated, asked], [1, ['self'], [], false, false])
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
      peers: () => ['n1', 'n2'],
      timeoutMs: 50
    })
    const gathering = census.gather('')
    await new Promise(resolve => setImmediate(resolve))
    const query = sent[0]
    assert.ok(query?.type === 'rooms_query')
    census.answer({ type: 'rooms_answer', id: query.id, to: 'self', rooms: [['b', 5], ['c', 1]], truncated: false }, 'n1')
    census.answer({ type: 'rooms_answer', id: query.id, to: 'someone-else', rooms: [['z', 9]], truncated: false }, 'n2')
    const result = await gathering
    assert.deepEqual(result.rooms, [{ room: 'b', subscribers: 6 }, { room: 'a', subscribers: 2 }, { room: 'c', subscribers: 1 }])
    assert.equal(result.nodesAnswered, 2)
    assert.equal(result.nodesKnown, 3)
    assert.equal(result.partial, true)
    // A late answer finds nothing waiting.
    census.answer({ type: 'rooms_answer', id: query.id, to: 'self', rooms: [['late', 1]], truncated: false }, 'n2')
  })

  it('refuses a census beyond the bound in flight (rate_limited), and close ends the waiting ones', async () => {
    const census = new RoomCensus({ nodeId: 'self', local: () => [], send: async () => true, peers: () => ['n1'], timeoutMs: 60_000 })
    const waiting = Array.from({ length: 32 }, async () => await census.gather(''))
    await new Promise(resolve => setImmediate(resolve))
    await assert.rejects(census.gather(''), (err: Error & { protocolCode?: string }) => err.protocolCode === 'rate_limited')
    census.close()
    for (const result of await Promise.all(waiting)) assert.equal(result.partial, true)
  })

  it('answers another node\'s query with its own rooms under the prefix, the busiest MAX_ROOMS_PER_ANSWER', () => {
    const sent: Sent[] = []
    const local: Array<[string, number]> = Array.from({ length: MAX_ROOMS_PER_ANSWER + 1 }, (_, i) => [`r${i}`, i])
    const census = new RoomCensus({ nodeId: 'self', local: () => local, send: async (m) => { sent.push(m); return true }, peers: () => [] })
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
