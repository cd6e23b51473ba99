import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import { deleteRedisKeys } from '../support/redis.js'
import { build, skipUnlessRedis, tempDir, TEST_REDIS_URL, wsConnect, type TestApp, type WsClient, type WsFrame } from './helper.js'
import { assertErrorBody, createApiKey, waitFor, within } from './ws-support.js'

/*
 * The server API for backends (docs/api.md, "Server API for backends"): POST /broadcast and the
 * /admin routes, called with an API key holding the `admin` scope, over real sockets, on the
 * in-memory engine and on Redis with two nodes (two apps in this process sharing one Redis
 * prefix and one SQLite file, as a cluster shares its database).
 */

const skipRedis = await skipUnlessRedis()

interface Fixture {
  srv: TestApp
  /** An API key with the `admin` scope, and its name (publications come `from` `key:<name>`). */
  admin: { key: string, name: string }
  /** Tokens of two ordinary users. */
  alice: string
  bob: string
}

/** An app with rooms `news` and `sport` (public) and `vault` (private), owned by the admin `root`. */
async function fixture (t: TestContext, env: Record<string, string> = {}, srv?: TestApp): Promise<Fixture> {
  const app = srv ?? await build(t, { env })
  const admin = await createApiKey(app, ['admin'])
  const root = await app.login('root')
  for (const room of [{ id: 'news' }, { id: 'sport' }, { id: 'vault', visibility: 'private' }]) {
    const res = await app.request('POST', '/rooms', { token: root, body: room })
    assert.equal(res.status, 201, res.text)
  }
  const [alice, bob] = await Promise.all([app.userToken('alice'), app.userToken('bob')])
  return { srv: app, admin, alice: alice!, bob: bob! }
}

async function subscribed (t: TestContext, srv: TestApp, token: string, ...rooms: string[]): Promise<WsClient> {
  const client = await wsConnect(t, srv, { token })
  for (const room of rooms) {
    const reply = await client.command({ type: 'subscribe', room })
    assert.equal(reply.type, 'reply', `subscribe ${room}: ${JSON.stringify(reply)}`)
  }
  return client
}

const message = (room: string, offset: number) => (f: WsFrame): boolean => f.type === 'message' && f.room === room && f.offset === offset

describe('server API on the in-memory engine', () => {
  it('POST /broadcast reaches the subscribers of every room, with each room\'s position; a missing room is its own error', async (t) => {
    const { srv, admin, alice, bob } = await fixture(t)
    const a = await subscribed(t, srv, alice, 'news', 'sport')
    const b = await subscribed(t, srv, bob, 'sport', 'user:bob')

    const res = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news', 'nowhere', 'sport', 'user:bob'], data: { headline: 'hello' } } })
    assert.equal(res.status, 200, res.text)
    assert.equal(res.body.published, 3)
    assert.equal(res.body.failed, 1)
    const [news, nowhere, sport, personal] = res.body.results
    assert.equal(news.room, 'news')
    assert.equal(news.offset, 1)
    assert.equal(typeof news.epoch, 'string')
    assert.deepEqual(nowhere, { room: 'nowhere', error: { statusCode: 404, code: 'SB_ERR_ROOM_NOT_FOUND', message: 'Room not found', temporary: false } })
    assert.equal(sport.offset, 1)
    assert.equal(personal.room, 'user:bob')

    for (const [client, room, position] of [[a, 'news', news], [a, 'sport', sport], [b, 'sport', sport], [b, 'user:bob', personal]] as const) {
      const frame = await client.next(message(room, position.offset))
      assert.equal(frame.epoch, position.epoch)
      assert.deepEqual(frame.data, { headline: 'hello' })
      assert.equal(frame.from.id, `key:${admin.name}`)
    }
    // The private room needs no membership of the key: the server API acts for the server.
    const vault = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['vault'], data: 1 } })
    assert.equal(vault.body.results[0].offset, 1)
  })

  it('broadcasts bytes as base64, and a retry with the same idempotency key publishes nothing twice', async (t) => {
    const { srv, admin, alice } = await fixture(t)
    const a = await subscribed(t, srv, alice, 'news', 'sport')
    const bytes = randomBytes(32).toString('base64')
    const body = { rooms: ['news', 'sport'], data: bytes, encoding: 'base64', idempotencyKey: 'order-42' }
    const first = await srv.request('POST', '/broadcast', { apiKey: admin.key, body })
    assert.equal(first.status, 200, first.text)
    const frame = await a.next(message('news', 1))
    assert.equal(frame.encoding, 'base64')
    assert.equal(frame.data, bytes)

    const again = await srv.request('POST', '/broadcast', { apiKey: admin.key, headers: { 'idempotency-key': 'order-42' }, body: { rooms: ['news', 'sport'], data: bytes, encoding: 'base64' } })
    assert.deepEqual(again.body, first.body)
    // Barrier: a new publication is offset 2, so nothing was published in between.
    const next = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news'], data: 'after' } })
    assert.equal(next.body.results[0].offset, 2)
    await a.next(message('news', 2))
    assert.equal(a.frames.filter(f => f.type === 'message' && f.room === 'news').length, 2)

    const clash = await srv.request('POST', '/broadcast', { apiKey: admin.key, headers: { 'idempotency-key': 'a' }, body: { rooms: ['news'], data: 1, idempotencyKey: 'b' } })
    assertErrorBody(clash.body, 400, 'SB_ERR_VALIDATION')
  })

  it('refuses more rooms than BROADCAST_MAX_ROOMS, a room twice, and data over the message limit', async (t) => {
    const { srv, admin } = await fixture(t, { BROADCAST_MAX_ROOMS: '2', WS_MAX_MESSAGE_BYTES: '1024' })
    const tooMany = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news', 'sport', 'vault'], data: 1 } })
    assertErrorBody(tooMany.body, 400, 'SB_ERR_VALIDATION')
    assert.match(tooMany.body.message, /rooms/)
    const twice = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news', 'news'], data: 1 } })
    assertErrorBody(twice.body, 400, 'SB_ERR_VALIDATION')
    const large = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news'], data: 'x'.repeat(2000) } })
    assertErrorBody(large.body, 413, 'SB_ERR_PAYLOAD_TOO_LARGE')
    // Nothing of the refused calls was published.
    const ok = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news'], data: 1 } })
    assert.equal(ok.body.results[0].offset, 1)
  })

  it('unsubscribes a user from a room (`unsubscribed`, reason server), disconnects a user, and counts presence', async (t) => {
    const { srv, admin, alice, bob } = await fixture(t)
    const bob1 = await subscribed(t, srv, bob, 'news', 'sport')
    const bob2 = await subscribed(t, srv, bob, 'news')
    const a = await subscribed(t, srv, alice, 'news')

    const stats = await srv.request('GET', '/admin/rooms/news/stats', { apiKey: admin.key })
    assert.equal(stats.status, 200, stats.text)
    assert.deepEqual(stats.body, { room: 'news', connections: 3, users: 2 })
    assert.equal((await srv.request('GET', '/admin/rooms/nowhere/stats', { apiKey: admin.key })).status, 404)

    const res = await srv.request('DELETE', '/admin/rooms/news/subscriptions/bob', { apiKey: admin.key })
    assert.equal(res.status, 200, res.text)
    assert.deepEqual(res.body, { unsubscribed: 2 })
    for (const client of [bob1, bob2]) {
      assert.equal((await client.next(f => f.type === 'unsubscribed')).reason, 'server')
    }
    // The connections stay open and keep their other rooms; alice keeps hers.
    await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news', 'sport'], data: 'x' } })
    await bob1.next(message('sport', 1))
    await a.next(message('news', 1))
    assert.equal(bob1.frames.some(message('news', 1)), false)
    assert.deepEqual((await srv.request('GET', '/admin/rooms/news/stats', { apiKey: admin.key })).body, { room: 'news', connections: 1, users: 1 })

    const kicked = await srv.request('DELETE', '/admin/users/bob/connections', { apiKey: admin.key })
    assert.deepEqual(kicked.body, { closed: 2 })
    assert.equal((await within(bob1.closed, 'bob kicked')).code, CloseCodes.KICKED)
    assert.equal((await within(bob2.closed, 'bob kicked')).code, CloseCodes.KICKED)
  })

  it('lists the active rooms with subscriber counts, by prefix, and this node as the one node', async (t) => {
    const { srv, admin, alice, bob } = await fixture(t, { NODE_REPORT_INTERVAL_MS: '200' })
    await subscribed(t, srv, alice, 'news', 'sport')
    await subscribed(t, srv, bob, 'news')

    const rooms = await srv.request('GET', '/admin/rooms', { apiKey: admin.key })
    assert.equal(rooms.status, 200, rooms.text)
    assert.deepEqual(rooms.body, { items: [{ room: 'news', subscribers: 2 }, { room: 'sport', subscribers: 1 }], total: 2, nodesAnswered: 1, nodesKnown: 1, partial: false })
    const some = await srv.request('GET', '/admin/rooms?prefix=spo&limit=5', { apiKey: admin.key })
    assert.deepEqual(some.body.items, [{ room: 'sport', subscribers: 1 }])
    const first = await srv.request('GET', '/admin/rooms?limit=1', { apiKey: admin.key })
    assert.equal(first.body.items.length, 1)
    assert.equal(first.body.total, 2)

    const nodes = await srv.request('GET', '/admin/nodes', { apiKey: admin.key })
    assert.equal(nodes.status, 200, nodes.text)
    assert.equal(nodes.body.items.length, 1)
    const [self] = nodes.body.items
    assert.equal(self.self, true)
    assert.equal(self.version, '0.1.0')
    assert.ok(self.rssBytes > 0)
    // The report is refreshed every interval: it catches up with the connections.
    await waitFor(async () => (await srv.request('GET', '/admin/nodes', { apiKey: admin.key })).body.items[0].connections === 2, 'the report to count 2 connections')
  })

  it('lists connections with the node they are on and a limit; ends one connection\'s subscription; keeps the cluster\'s history', async (t) => {
    const { srv, admin, alice, bob } = await fixture(t, { NODE_REPORT_INTERVAL_MS: '200' })
    const a = await subscribed(t, srv, alice, 'news', 'sport')
    const b = await subscribed(t, srv, bob, 'news')
    const listing = await srv.request('GET', '/admin/connections?room=news', { apiKey: admin.key })
    assert.equal(listing.status, 200, listing.text)
    const self = srv.app.realtime.nodeId
    assert.deepEqual(listing.body.items.map((c: { id: string, node: string }) => [c.id, c.node]), [[a.welcome.connectionId, self], [b.welcome.connectionId, self]], 'the oldest first')
    assert.deepEqual([listing.body.nodesAnswered, listing.body.nodesMissing, listing.body.truncated], [[self], [], false])
    const one = await srv.request('GET', '/admin/connections?limit=1', { apiKey: admin.key })
    assert.deepEqual([one.body.items.length, one.body.truncated], [1, true])
    for (const bad of ['?limit=0', '?limit=501', `?room=${'x'.repeat(65)}`, '?user=', '?other=1']) {
      assert.equal((await srv.request('GET', `/admin/connections${bad}`, { apiKey: admin.key })).status, 400, bad)
    }

    const path = `/admin/connections/${a.welcome.connectionId as string}/rooms/news`
    assert.equal((await srv.request('DELETE', path, { token: alice })).status, 403)
    const ended = await srv.request('DELETE', path, { apiKey: admin.key })
    assert.equal(ended.status, 204, ended.text)
    const frame = await a.next(f => f.type === 'unsubscribed')
    assert.deepEqual([frame.room, frame.reason], ['news', 'server'])
    // The connection stays open, in its other room; bob keeps his subscription.
    await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news', 'sport'], data: 'x' } })
    await a.next(message('sport', 1))
    await b.next(message('news', 1))
    assert.equal(a.frames.some(message('news', 1)), false)
    assertErrorBody((await srv.request('DELETE', path, { apiKey: admin.key })).body, 404, 'SB_ERR_SUBSCRIPTION_NOT_FOUND')
    assertErrorBody((await srv.request('DELETE', '/admin/connections/nobody/rooms/news', { apiKey: admin.key })).body, 404, 'SB_ERR_CONNECTION_NOT_FOUND')
    assert.equal((await srv.request('DELETE', `/admin/connections/${a.welcome.connectionId as string}/rooms/Not%20A%20Room`, { apiKey: admin.key })).status, 400)

    // The ring of cluster samples: one per report, with this node's connections.
    await waitFor(async () => (await srv.request('GET', '/admin/nodes/history', { apiKey: admin.key })).body.samples.some((s: { connections: number }) => s.connections === 2), 'a sample counting both connections')
    const history = await srv.request('GET', '/admin/nodes/history', { apiKey: admin.key })
    assert.deepEqual([history.body.intervalMs, history.body.capacity], [200, 120])
    const samples = history.body.samples as Array<{ at: number, nodes: number }>
    assert.ok(samples.every((s, i) => s.nodes === 1 && (i === 0 || s.at >= samples[i - 1]!.at)), 'one node, the oldest first')
    assert.equal((await srv.request('GET', '/admin/nodes/history', { token: alice })).status, 403)

    const doc = (await srv.request('GET', '/docs/json')).body
    for (const [path, method, status] of [['/admin/connections', 'get', '200'], ['/admin/connections/{id}/rooms/{room}', 'delete', '204'], ['/admin/nodes/history', 'get', '200']] as const) {
      const operation = doc.paths[path]?.[method]
      assert.ok(operation?.responses[status] !== undefined, `${method} ${path} documented with its ${status}`)
    }
    assert.ok(doc.paths['/admin/connections'].get.responses['200'].content['application/json'].schema.properties.nodesMissing !== undefined)
  })

  it('takes an admin\'s token too; refuses ordinary users and keys without the admin scope; an admin key cannot make keys', async (t) => {
    const { srv, admin, alice } = await fixture(t)
    const root = await srv.login('root')
    const made = await srv.request('POST', '/api-keys', { token: root, body: { name: 'publisher', scopes: ['publish:*', 'presence:*'] } })
    const publisher = { key: made.body.key as string }
    const routes: Array<[string, string, unknown?]> = [
      ['POST', '/broadcast', { rooms: ['news'], data: 1 }],
      ['GET', '/admin/nodes'],
      ['GET', '/admin/rooms'],
      ['GET', '/admin/rooms/news/stats'],
      ['DELETE', '/admin/rooms/news/subscriptions/bob'],
      ['DELETE', '/admin/users/bob/connections']
    ]
    for (const [method, path, body] of routes) {
      const opts = body === undefined ? {} : { body }
      assert.equal((await srv.request(method, path, { ...opts, apiKey: admin.key })).status, 200, `${method} ${path} with the admin scope`)
      assert.equal((await srv.request(method, path, { ...opts, token: root })).status, 200, `${method} ${path} as an admin`)
      assertErrorBody((await srv.request(method, path, { ...opts, apiKey: publisher.key })).body, 403, 'SB_ERR_FORBIDDEN')
      assertErrorBody((await srv.request(method, path, { ...opts, token: alice })).body, 403, 'SB_ERR_FORBIDDEN')
      assertErrorBody((await srv.request(method, path, opts)).body, 401, 'SB_ERR_UNAUTHORIZED')
    }
    // The admin scope is the server API, not key management: a leaked key cannot mint another.
    const mint = await srv.request('POST', '/api-keys', { apiKey: admin.key, body: { name: 'more', scopes: ['admin'] } })
    assertErrorBody(mint.body, 403, 'SB_ERR_FORBIDDEN')
    // Nor is it a room grant: publishing one room at a time needs a publish scope.
    assertErrorBody((await srv.request('POST', '/rooms/news/messages', { apiKey: admin.key, body: { data: 1 } })).body, 404, 'SB_ERR_ROOM_NOT_FOUND')
    // Scopes are checked when made: `admin` alone, nothing like it.
    for (const scope of ['admin:*', 'admins', 'Admin', ' admin', 'admin\n']) {
      const res = await srv.request('POST', '/api-keys', { token: root, body: { name: 'x', scopes: [scope] } })
      assertErrorBody(res.body, 400, 'SB_ERR_VALIDATION')
    }
  })

  it('OpenAPI documents the server API under its tag, with the admin scope in the security', async (t) => {
    const { srv } = await fixture(t)
    const doc = (await srv.request('GET', '/docs/json')).body
    assert.ok(doc.tags.some((tag: { name: string }) => tag.name === 'server-api'))
    for (const [path, method] of [['/broadcast', 'post'], ['/admin/nodes', 'get'], ['/admin/rooms', 'get'], ['/admin/rooms/{id}/stats', 'get'], ['/admin/rooms/{id}/subscriptions/{userId}', 'delete'], ['/admin/users/{id}/connections', 'delete']] as const) {
      const operation = doc.paths[path]?.[method]
      assert.ok(operation !== undefined, `${method} ${path} documented`)
      assert.ok(operation.tags.includes('server-api'), `${method} ${path} tagged`)
      assert.ok(operation.summary.length > 0)
      assert.ok(operation.security.some((s: Record<string, unknown>) => 'apiKey' in s), `${method} ${path} takes an API key`)
      assert.ok(operation.responses['200'] !== undefined)
    }
  })
})

describe('server API on Redis, two nodes', { skip: skipRedis }, () => {
  async function twoNodes (t: TestContext): Promise<[Fixture, TestApp]> {
    const keyPrefix = `sbsa:${randomBytes(6).toString('hex')}:`
    t.after(async () => { await deleteRedisKeys(TEST_REDIS_URL, keyPrefix) })
    const env = {
      REDIS_URL: TEST_REDIS_URL,
      REDIS_KEY_PREFIX: keyPrefix,
      DATABASE_URL: `sqlite:${join(tempDir(t), 'cluster.db')}`,
      NODE_REPORT_INTERVAL_MS: '200'
    }
    const nodeA = await build(t, { env })
    const nodeB = await build(t, { env })
    const a = await fixture(t, {}, nodeA)
    // Each node knows the other from its reports before the test goes on.
    for (const node of [nodeA, nodeB]) {
      await waitFor(async () => (await node.request('GET', '/admin/nodes', { apiKey: a.admin.key })).body.items.length === 2, 'both nodes reported')
    }
    return [a, nodeB]
  }

  it('a broadcast on node A reaches subscribers on node B; stats and active rooms count both nodes', async (t) => {
    const [{ srv: nodeA, admin, alice, bob }, nodeB] = await twoNodes(t)
    const onA = await subscribed(t, nodeA, alice, 'news')
    const onB = await subscribed(t, nodeB, bob, 'news', 'sport')
    const alsoB = await subscribed(t, nodeB, alice, 'sport')

    const res = await nodeA.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['news', 'sport', 'nowhere'], data: { n: 1 } } })
    assert.equal(res.status, 200, res.text)
    const [news, sport, nowhere] = res.body.results
    assert.equal(nowhere.error.code, 'SB_ERR_ROOM_NOT_FOUND')
    for (const [client, room, position] of [[onA, 'news', news], [onB, 'news', news], [onB, 'sport', sport], [alsoB, 'sport', sport]] as const) {
      assert.equal((await client.next(message(room, position.offset))).epoch, position.epoch)
    }

    assert.deepEqual((await nodeA.request('GET', '/admin/rooms/sport/stats', { apiKey: admin.key })).body, { room: 'sport', connections: 2, users: 2 })
    assert.deepEqual((await nodeA.request('GET', '/admin/rooms/news/stats', { apiKey: admin.key })).body, { room: 'news', connections: 2, users: 2 })
    const rooms = await nodeA.request('GET', '/admin/rooms', { apiKey: admin.key })
    assert.deepEqual(rooms.body, { items: [{ room: 'news', subscribers: 2 }, { room: 'sport', subscribers: 2 }], total: 2, nodesAnswered: 2, nodesKnown: 2, partial: false })

    const nodes = (await nodeB.request('GET', '/admin/nodes', { apiKey: admin.key })).body.items
    assert.equal(nodes[0].self, true)
    assert.equal(nodes[0].id, nodeB.app.realtime.nodeId)
    assert.equal(nodes[1].id, nodeA.app.realtime.nodeId)
  })

  it('unsubscribe and disconnect on node A act on node B', async (t) => {
    const [{ srv: nodeA, admin, bob }, nodeB] = await twoNodes(t)
    const onB = await subscribed(t, nodeB, bob, 'news', 'sport')
    const res = await nodeA.request('DELETE', '/admin/rooms/news/subscriptions/bob', { apiKey: admin.key })
    assert.deepEqual(res.body, { unsubscribed: 0 }, 'none on node A itself')
    const frame = await onB.next(f => f.type === 'unsubscribed')
    assert.deepEqual([frame.room, frame.reason], ['news', 'server'])

    await nodeA.request('DELETE', '/admin/users/bob/connections', { apiKey: admin.key })
    assert.equal((await within(onB.closed, 'bob kicked on node B')).code, CloseCodes.KICKED)
  })

  it('a node that stops reporting is dropped from the others\' lists', async (t) => {
    const [{ srv: nodeA, admin }, nodeB] = await twoNodes(t)
    const gone = nodeB.app.realtime.nodeId
    await nodeB.app.close()
    await waitFor(async () => {
      const items = (await nodeA.request('GET', '/admin/nodes', { apiKey: admin.key })).body.items as Array<{ id: string }>
      return items.length === 1 && items.every(n => n.id !== gone)
    }, 'node B expired from node A\'s list')
    // The census then waits for nobody: this node's rooms, complete.
    const rooms = await nodeA.request('GET', '/admin/rooms', { apiKey: admin.key })
    assert.equal(rooms.body.nodesKnown, 1)
    assert.equal(rooms.body.partial, false)
  })
})
