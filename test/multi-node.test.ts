import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import { WebSocket } from 'ws'
import { SwitchboardClient } from '@switchboard/client'
import { hashTag } from '../src/redis.js'
import { oneShotRequest, type Reply } from '../support/http.js'
import {
  PASSWORD, skipUnlessRedis, skipUnlessStore, wsConnect, type WsClient, type WsFrame
} from './helper.js'
import { ADMIN, type ServerProcess } from './process.js'
import { sharedRedis, startProcessCluster, type RedisTarget } from './process-cluster.js'
import { privateRedis, skipUnlessRedisServer } from './redis-server.js'
import { skipUnlessRedisCluster, startRedisCluster } from '../support/redis-cluster.js'
import { msgpackConnect } from './ws-support.js'

/*
 * Several real server processes (src/server.ts) on different ports, sharing one Redis (a key
 * prefix of their own per test) and one PostgreSQL database (a schema of their own per test):
 * what a client sees when the load balancer sends it to any node. Waits are bounded generously
 * and never asserted on.
 */

const PRESENCE_TTL_SECONDS = 2
const WAIT_MS = 10_000

const skipRedis = await skipUnlessRedis()
const skipPostgres = await skipUnlessStore('postgres')
const skip = skipRedis !== false ? skipRedis : skipPostgres
// Only the Redis restart test runs a private redis-server of its own.
const skipRedisServer = skip !== false ? skip : skipUnlessRedisServer()

interface Node {
  server: ServerProcess
  url: string
  request: (method: string, path: string, options?: { token?: string, body?: unknown }) => Promise<Reply>
}

interface Cluster {
  redis: RedisTarget
  nodes: Node[]
  /** The nodes' REDIS_KEY_PREFIX. */
  keyPrefix: string
  adminToken: string
  /** Registers a user (through the first node) and returns its id and an access token. */
  user: (name: string) => Promise<{ id: string, token: string }>
}

function asNode (server: ServerProcess): Node {
  const url = `http://127.0.0.1:${server.port}`
  return { server, url, request: async (method, path, options = {}) => await oneShotRequest(url, method, path, options) }
}

/**
 * `count` nodes on a fresh key prefix and a fresh schema; killed, and both removed, when the
 * test ends. The first node starts alone (it runs the migrations and creates the bootstrap
 * admin), the others together.
 */
async function startCluster (t: TestContext, redis: RedisTarget, count: number, env: Record<string, string> = {}): Promise<Cluster> {
  const { servers, keyPrefix } = await startProcessCluster(t, count, {
    LOG_LEVEL: 'warn',
    PRESENCE_TTL_SECONDS: String(PRESENCE_TTL_SECONDS),
    WS_MESSAGES_PER_SECOND: '100000',
    WS_MESSAGES_BURST: '100000',
    WS_MAX_CONNECTIONS_PER_USER: '1000',
    ...env
  }, redis)
  const nodes = servers.map(asNode)
  const first = nodes[0]!
  const login = await first.request('POST', '/auth/login', { body: { username: ADMIN.username, password: ADMIN.password } })
  assert.equal(login.status, 200, JSON.stringify(login.body))
  return {
    redis,
    nodes,
    keyPrefix,
    adminToken: login.body.accessToken as string,
    user: async (name) => {
      const registered = await first.request('POST', '/auth/register', { body: { username: name, password: PASSWORD } })
      assert.equal(registered.status, 201, JSON.stringify(registered.body))
      const loggedIn = await first.request('POST', '/auth/login', { body: { username: name, password: PASSWORD } })
      assert.equal(loggedIn.status, 200, JSON.stringify(loggedIn.body))
      return { id: registered.body.user.id as string, token: loggedIn.body.accessToken as string }
    }
  }
}

/** When a connection's presence entry in a room expires (Redis's clock, ms), as the Redis engine stored it. */
async function presenceExpiry (c: Cluster, room: string, connectionId: string): Promise<number> {
  const score = await c.redis.call('ZSCORE', `${c.keyPrefix}{${hashTag(room)}}:pres:expiry`, connectionId)
  assert.ok(score !== null, `no presence entry for ${connectionId} in ${room}`)
  return Number(score)
}

function node (c: Cluster, index: number): Node {
  const n = c.nodes[index]
  assert.ok(n !== undefined, `node ${index}`)
  return n
}

async function createRoom (n: Node, token: string, body: Record<string, unknown>): Promise<void> {
  const res = await n.request('POST', '/rooms', { token, body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
}

interface Position { epoch: string, offset: number }

async function subscribe (c: WsClient, room: string, since?: Position): Promise<WsFrame> {
  const reply = await c.command({ type: 'subscribe', room, ...(since === undefined ? {} : { since }) })
  assert.equal(reply.type, 'reply', `subscribe ${room}: ${JSON.stringify(reply)}`)
  return reply.result as WsFrame
}

async function httpPublish (n: Node, token: string, room: string, data: unknown): Promise<Position> {
  const res = await n.request('POST', `/rooms/${room}/messages`, { token, body: { data } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body as Position
}

function offsetsIn (c: WsClient, room: string): number[] {
  return c.frames.filter(f => f.type === 'message' && f.room === room).map(f => f.offset as number)
}

function range (from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
}

async function waitFor (check: () => boolean | Promise<boolean>, what: string, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** Round trip on this socket: every frame the server wrote to it before now has been received. */
async function settle (c: WsClient): Promise<void> {
  assert.equal((await c.command({ type: 'ping' })).type, 'reply')
}

async function refused (t: TestContext, n: Node, token: string): Promise<number | undefined> {
  try {
    await wsConnect(t, n, { token })
    return undefined
  } catch (err) {
    return (err as { statusCode?: number }).statusCode
  }
}

multiNodeSuite('one Redis', () => sharedRedis, skip, { oneRedis: true })

// The same suite on a private Redis Cluster (three primaries, three replicas), started once for
// this file: every guarantee the nodes give on one Redis, they give on a cluster.
const skipCluster = skip !== false ? skip : skipUnlessRedisCluster()
const redisCluster = skipCluster === false ? await startRedisCluster() : null
after(async () => { await redisCluster?.stop() })
multiNodeSuite('Redis Cluster', () => {
  assert.ok(redisCluster !== null)
  return {
    env: { REDIS_CLUSTER_NODES: redisCluster.seeds },
    call: async (...args) => await redisCluster.command(...args),
    deleteKeys: async (prefix) => { await redisCluster.deleteKeys(prefix) }
  }
}, skipCluster, { oneRedis: false })

/** The suite against one kind of Redis; `oneRedis` adds the test that kills and restarts one Redis. */
function multiNodeSuite (name: string, target: () => RedisTarget, skip: string | false, { oneRedis }: { oneRedis: boolean }): void {
  describe(`multi-node: several processes, ${name}, one PostgreSQL`, { skip, concurrency: false }, () => {
    const cluster = async (t: TestContext, count: number, env: Record<string, string> = {}): Promise<Cluster> => await startCluster(t, target(), count, env)

    it('a publication on one node reaches a subscriber on another, in order', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const sub = await wsConnect(t, b, { token: bob.token })
      const position = await subscribe(sub, 'lobby')
      assert.equal(position.offset, 0)
      const publisher = await wsConnect(t, a, { token: c.adminToken })
      const N = 40
      for (let i = 1; i <= N; i++) {
        const reply = await publisher.command({ type: 'publish', room: 'lobby', data: { i } })
        assert.equal(reply.type, 'reply', JSON.stringify(reply))
        assert.deepEqual(reply.result, { epoch: position.epoch, offset: i })
      }
      await waitFor(() => offsetsIn(sub, 'lobby').length >= N, `${N} messages on node B`)
      await settle(sub)
      assert.deepEqual(offsetsIn(sub, 'lobby'), range(1, N))
      assert.deepEqual(sub.frames.filter(f => f.type === 'message').map(f => f.data.i as number), range(1, N))
    })

    it('bytes published on node B reach node A\'s subscribers: MessagePack as bin, JSON as base64; history and recovery on node A too', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'files' })
      const packed = await msgpackConnect(t, a, bob.token)
      const subscribed = await packed.command({ type: 'subscribe', room: 'files' })
      assert.equal(subscribed.type, 'reply', JSON.stringify(subscribed))
      const json = await wsConnect(t, a, { token: bob.token })
      const start = await subscribe(json, 'files')

      const notUtf8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3, 0x00, 0xe2, 0x82])
      const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
      // From node B: a MessagePack publisher's bin, then an HTTP upload of raw bytes.
      const publisher = await msgpackConnect(t, b, c.adminToken)
      const published = await publisher.command({ type: 'publish', room: 'files', data: notUtf8 })
      assert.deepEqual(published.result, { epoch: start.epoch, offset: 1 })
      const upload = await fetch(`${b.url}/rooms/files/messages`, { method: 'POST', headers: { authorization: `Bearer ${c.adminToken}`, 'content-type': 'application/octet-stream' }, body: new Uint8Array(allBytes) })
      assert.equal(upload.status, 201, await upload.text())
      const sent = [notUtf8, allBytes]

      await packed.next(f => f.type === 'message' && f.offset === 2)
      const bins = packed.frames.filter(f => f.type === 'message' && f.room === 'files')
      assert.deepEqual(bins.map(m => [m.offset, Buffer.isBuffer(m.data), 'encoding' in m]), [[1, true, false], [2, true, false]])
      assert.ok(bins.every(m => Buffer.from(m.data as Uint8Array).equals(sent[m.offset - 1]!)), 'the bytes as sent')

      await json.next(f => f.type === 'message' && f.offset === 2)
      await settle(json)
      assert.deepEqual(json.frames.filter(f => f.type === 'message').map(m => [m.offset, m.data, m.encoding]),
        sent.map((bytes, i) => [i + 1, bytes.toString('base64'), 'base64']))

      const history = await a.request('GET', '/rooms/files/messages', { token: bob.token })
      assert.deepEqual(history.body.publications.map((p: WsFrame) => [p.offset, p.data, p.encoding]), sent.map((bytes, i) => [i + 1, bytes.toString('base64'), 'base64']))
      const again = await msgpackConnect(t, a, bob.token)
      const recovered = await again.command({ type: 'subscribe', room: 'files', since: { epoch: start.epoch, offset: 0 } })
      assert.equal(recovered.result.recovered, true)
      assert.ok((recovered.result.publications as WsFrame[]).every(p => Buffer.from(p.data as Uint8Array).equals(sent[p.offset - 1]!)))
      assert.equal((recovered.result.publications as WsFrame[]).length, 2)
    })

    it('presence spans nodes: one join per user across nodes, counts of every connection, leave after the last', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const alice = await c.user('alice')
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const watcher = await wsConnect(t, a, { token: c.adminToken })
      await subscribe(watcher, 'lobby')
      const joinsOf = (id: string) => watcher.frames.filter(f => f.type === 'join' && f.room === 'lobby' && f.user.id === id)
      const leavesOf = (id: string) => watcher.frames.filter(f => f.type === 'leave' && f.room === 'lobby' && f.user.id === id)

      const onB = await wsConnect(t, b, { token: alice.token })
      await subscribe(onB, 'lobby')
      await watcher.next(f => f.type === 'join' && f.user.id === alice.id)
      const onA = await wsConnect(t, a, { token: alice.token })
      await subscribe(onA, 'lobby')

      const presence = await watcher.command({ type: 'presence', room: 'lobby' })
      assert.equal(presence.type, 'reply', JSON.stringify(presence))
      assert.equal(presence.result.connections, 3)
      assert.deepEqual([...presence.result.users as string[]].sort(), [alice.id, watcher.welcome.user.id as string].sort())
      const fromB = await onB.command({ type: 'presence', room: 'lobby' })
      assert.deepEqual(fromB.result, presence.result, 'every node answers the same')

      onA.close()
      await onA.closed
      // The user is still present through node B: no leave (give a wrong one time to arrive).
      await httpPublish(b, c.adminToken, 'lobby', 'sentinel')
      await watcher.next(f => f.type === 'message' && f.data === 'sentinel')
      assert.equal(leavesOf(alice.id).length, 0)
      onB.close()
      await watcher.next(f => f.type === 'leave' && f.user.id === alice.id)
      await settle(watcher)
      assert.equal(joinsOf(alice.id).length, 1, 'one join for two connections on two nodes')
      assert.equal(leavesOf(alice.id).length, 1)
      const after = await watcher.command({ type: 'presence', room: 'lobby' })
      assert.deepEqual(after.result, { users: [watcher.welcome.user.id], connections: 1 })
    })

    it('presenceEvents off: joins and leaves on another node are counted, never pushed; a PATCH through one node turns them on for the other', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const [alice, bob, carol] = [await c.user('alice'), await c.user('bob'), await c.user('carol')]
      await createRoom(a, c.adminToken, { id: 'stage', presenceEvents: false })
      const setEvents = async (presenceEvents: boolean): Promise<void> => {
        const res = await a.request('PATCH', '/rooms/stage', { token: c.adminToken, body: { presenceEvents } })
        assert.equal(res.status, 200, JSON.stringify(res.body))
      }
      const watcher = await wsConnect(t, a, { token: c.adminToken })
      await subscribe(watcher, 'stage')
      const watcherId = watcher.welcome.user.id as string
      const pushesOf = (id: string) => watcher.frames.filter(f => (f.type === 'join' || f.type === 'leave') && f.room === 'stage' && f.user.id === id).map(f => f.type as string)
      // Node A's answer may be up to a second old: no event tells it of node B's joins.
      const presenceIs = async (users: string[], connections: number): Promise<void> => {
        await waitFor(async () => {
          const reply = await watcher.command({ type: 'presence', room: 'stage' })
          return reply.type === 'reply' && reply.result.connections === connections && JSON.stringify([...reply.result.users as string[]].sort()) === JSON.stringify([...users].sort())
        }, `presence ${users.join(',')} / ${connections}`)
      }

      // Off: alice joins and leaves on node B; node A counts her, its subscriber sees no push.
      const onB = await wsConnect(t, b, { token: alice.token })
      await subscribe(onB, 'stage')
      await presenceIs([watcherId, alice.id], 2)
      onB.close()
      await onB.closed
      await presenceIs([watcherId], 1)

      // Bob subscribes on node B with pushes off; the PATCH goes through node A. Node B learns
      // it from the control channel: bob's leave and carol's join there are pushed.
      const bobOnB = await wsConnect(t, b, { token: bob.token })
      await subscribe(bobOnB, 'stage')
      await presenceIs([watcherId, bob.id], 2)
      await setEvents(true)
      await waitFor(async () => {
        // The control message reaches node B shortly after the PATCH answers: until then a new
        // subscription there may still be made under the old setting, so carol re-subscribes
        // until her join is pushed.
        const carolOnB = await wsConnect(t, b, { token: carol.token })
        await subscribe(carolOnB, 'stage')
        await settle(watcher)
        carolOnB.close()
        await carolOnB.closed
        return pushesOf(carol.id).includes('join')
      }, 'carol\'s join on node B pushed after the PATCH')
      assert.equal((await bobOnB.command({ type: 'unsubscribe', room: 'stage' })).type, 'reply')
      await watcher.next(f => f.type === 'leave' && f.user.id === bob.id)
      // Alice's join and leave on node B would have come before bob's leave from the same node.
      assert.deepEqual(pushesOf(alice.id), [], 'no join or leave pushed while the room had them off')
      assert.deepEqual(pushesOf(bob.id), ['leave'], 'bob subscribed with pushes off, left with them on')
    })

    it('recovery after switching node: exactly the missed publications, recovered: true', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const first = await wsConnect(t, a, { token: bob.token })
      const start = await subscribe(first, 'lobby')
      for (let i = 1; i <= 3; i++) await httpPublish(b, c.adminToken, 'lobby', i)
      await waitFor(() => offsetsIn(first, 'lobby').length === 3, 'the first three')
      first.close()
      await first.closed
      for (let i = 4; i <= 8; i++) await httpPublish(a, c.adminToken, 'lobby', i)

      const second = await wsConnect(t, b, { token: bob.token })
      const resumed = await subscribe(second, 'lobby', { epoch: start.epoch as string, offset: 3 })
      assert.equal(resumed.recovered, true)
      assert.equal(resumed.epoch, start.epoch)
      assert.equal(resumed.offset, 8)
      assert.deepEqual((resumed.publications as WsFrame[]).map(p => [p.offset, p.data]), range(4, 8).map(i => [i, i]))
      await httpPublish(a, c.adminToken, 'lobby', 9)
      await waitFor(() => offsetsIn(second, 'lobby').includes(9), 'live after recovery')
      await settle(second)
      assert.deepEqual(offsetsIn(second, 'lobby'), [9], 'nothing recovered twice')
    })

    it('kicks cross nodes: a user, a connection id, and an API key revoked on another node (4503)', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      const bobOnB = await wsConnect(t, b, { token: bob.token })
      const kickUser = await a.request('DELETE', `/admin/users/${bob.id}/connections`, { token: c.adminToken })
      assert.equal(kickUser.status, 200, JSON.stringify(kickUser.body))
      assert.equal((await bobOnB.closed).code, 4503)

      const again = await wsConnect(t, b, { token: bob.token })
      const kickOne = await a.request('DELETE', `/admin/connections/${again.welcome.connectionId as string}`, { token: c.adminToken })
      assert.equal(kickOne.status, 204, 'an id on another node is forwarded')
      assert.equal((await again.closed).code, 4503)

      const key = await a.request('POST', '/api-keys', { token: c.adminToken, body: { name: 'sensor', scopes: ['subscribe:*'] } })
      assert.equal(key.status, 201, JSON.stringify(key.body))
      const device = await wsConnect(t, b, { apiKey: key.body.key as string })
      const revoked = await a.request('DELETE', `/api-keys/${key.body.apiKey.id as string}`, { token: c.adminToken })
      assert.equal(revoked.status, 204)
      assert.equal((await device.closed).code, 4503)
    })

    it('admin connections across processes: A lists B\'s by user and room, unsubscribes and kicks one on B; a stopped node is named missing', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const nodeIds = (await a.request('GET', '/admin/nodes', { token: c.adminToken })).body.items as Array<{ id: string, self: boolean }>
      // B started after A: A heard B's first report.
      assert.equal(nodeIds.length, 2)
      const [idA, idB] = [nodeIds.find(n => n.self)!.id, nodeIds.find(n => !n.self)!.id]
      const bobOnA = await wsConnect(t, a, { token: bob.token })
      const bobOnB = await wsConnect(t, b, { token: bob.token })
      await subscribe(bobOnA, 'lobby')
      await subscribe(bobOnB, 'lobby')
      await subscribe(bobOnB, `user:${bob.id}`)
  
      const list = async (query: string): Promise<{ items: Array<{ id: string, node: string, rooms: string[] }>, nodesAnswered: string[], nodesMissing: string[] }> => {
        const res = await a.request('GET', `/admin/connections${query}`, { token: c.adminToken })
        assert.equal(res.status, 200, JSON.stringify(res.body))
        return res.body
      }
      const byUser = await list(`?user=${bob.id}`)
      assert.deepEqual(byUser.items.map(i => [i.id, i.node]).sort(), [[bobOnA.welcome.connectionId, idA], [bobOnB.welcome.connectionId, idB]].sort())
      assert.deepEqual([byUser.nodesAnswered, byUser.nodesMissing], [[idA, idB], []])
      assert.deepEqual((await list(`?room=user:${bob.id}`)).items.map(i => i.id), [bobOnB.welcome.connectionId])
  
      // Unsubscribe one connection on B from lobby, through A: B applies it, the socket stays open.
      const idOnB = bobOnB.welcome.connectionId as string
      const ended = await a.request('DELETE', `/admin/connections/${idOnB}/rooms/lobby`, { token: c.adminToken })
      assert.equal(ended.status, 204, 'forwarded to the node holding it')
      const frame = await bobOnB.next(f => f.type === 'unsubscribed')
      assert.deepEqual([frame.room, frame.reason], ['lobby', 'server'])
      assert.deepEqual((await list('?room=lobby')).items.map(i => i.id), [bobOnA.welcome.connectionId])
      assert.deepEqual((await list(`?user=${bob.id}`)).items.find(i => i.id === idOnB)?.rooms, [`user:${bob.id}`])
  
      const kicked = await a.request('DELETE', `/admin/connections/${idOnB}`, { token: c.adminToken })
      assert.equal(kicked.status, 204)
      assert.equal((await bobOnB.closed).code, 4503)
  
      // A node that stops answering (SIGSTOP) but has not expired from the reports yet: the
      // listing waits for it, then names it missing and lists the rest.
      const again = await wsConnect(t, b, { token: bob.token })
      await waitFor(async () => (await list(`?user=${bob.id}`)).items.some(i => i.id === again.welcome.connectionId), 'the new connection on B listed')
      b.server.child.kill('SIGSTOP')
      t.after(() => { b.server.child.kill('SIGCONT') })
      const partial = await list(`?user=${bob.id}`)
      assert.deepEqual([partial.nodesAnswered, partial.nodesMissing], [[idA], [idB]])
      assert.deepEqual(partial.items.map(i => i.id), [bobOnA.welcome.connectionId])
      b.server.child.kill('SIGCONT')
      await waitFor(async () => (await list(`?user=${bob.id}`)).nodesMissing.length === 0, 'B answers again')
    })

    it('disabling an account through node A closes its socket on node B (4504) and node B refuses it at once; re-enabled, it connects again', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      // Node B has answered for bob once, so its account cache holds a good answer to forget.
      assert.equal((await b.request('GET', '/auth/me', { token: bob.token })).status, 200)
      const bobOnB = await wsConnect(t, b, { token: bob.token })
      const disabled = await a.request('PATCH', `/users/${bob.id}`, { token: c.adminToken, body: { disabled: true } })
      assert.equal(disabled.status, 200, JSON.stringify(disabled.body))
      assert.equal((await bobOnB.closed).code, 4504)
      assert.equal((await b.request('GET', '/auth/me', { token: bob.token })).status, 401)
      assert.equal(await refused(t, b, bob.token), 401)
      const login = await b.request('POST', '/auth/login', { body: { username: bob.id, password: PASSWORD } })
      assert.equal(login.body.code, 'SB_ERR_ACCOUNT_DISABLED')

      assert.equal((await a.request('PATCH', `/users/${bob.id}`, { token: c.adminToken, body: { disabled: false } })).status, 200)
      const again = await b.request('POST', '/auth/login', { body: { username: bob.id, password: PASSWORD } })
      assert.equal(again.status, 200, JSON.stringify(again.body))
      await wsConnect(t, b, { token: again.body.accessToken as string })
    })

    it('server API across processes: node reports name both nodes, a broadcast through A reaches B, A counts B\'s rooms; a killed node expires', async (t) => {
      const c = await cluster(t, 2, { NODE_REPORT_INTERVAL_MS: '200' })
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const nodesOf = async (n: Node): Promise<Array<{ address: string, self: boolean }>> => (await n.request('GET', '/admin/nodes', { token: c.adminToken })).body.items
      await waitFor(async () => (await nodesOf(a)).length === 2, 'node A hears node B\'s reports')
      assert.deepEqual((await nodesOf(a)).map(r => [r.address, r.self]), [[`127.0.0.1:${a.server.port}`, true], [`127.0.0.1:${b.server.port}`, false]])

      const bobOnB = await wsConnect(t, b, { token: bob.token })
      await subscribe(bobOnB, 'lobby')
      await subscribe(bobOnB, `user:${bob.id}`)
      const sent = await a.request('POST', '/broadcast', { token: c.adminToken, body: { rooms: ['lobby', `user:${bob.id}`], data: { n: 1 } } })
      assert.equal(sent.status, 200, JSON.stringify(sent.body))
      for (const result of sent.body.results as Array<{ room: string, epoch: string, offset: number }>) {
        const frame = await bobOnB.next(f => f.type === 'message' && f.room === result.room)
        assert.deepEqual([frame.epoch, frame.offset], [result.epoch, result.offset])
      }
      const rooms = await a.request('GET', '/admin/rooms', { token: c.adminToken })
      assert.deepEqual(rooms.body.items, [{ room: 'lobby', subscribers: 1 }, { room: `user:${bob.id}`, subscribers: 1 }])
      assert.equal(rooms.body.nodesAnswered, 2)

      b.server.child.kill('SIGKILL')
      await b.server.exited
      await waitFor(async () => (await nodesOf(a)).length === 1, 'node B\'s report expires on node A')
    })

    it('revocation crosses nodes: a member removed through node A is unsubscribed on node B and gets nothing after', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'secret', visibility: 'private' })
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const member = await a.request('PUT', `/rooms/secret/members/${bob.id}`, { token: c.adminToken, body: { role: 'member' } })
      assert.ok(member.status === 201 || member.status === 200, JSON.stringify(member.body))
      const sub = await wsConnect(t, b, { token: bob.token })
      await subscribe(sub, 'secret')
      await subscribe(sub, 'lobby')
      await httpPublish(a, c.adminToken, 'secret', 'before')
      await waitFor(() => offsetsIn(sub, 'secret').length === 1, 'the message before')

      const removed = await a.request('DELETE', `/rooms/secret/members/${bob.id}`, { token: c.adminToken })
      assert.equal(removed.status, 204)
      // Published after the removal answered: node B applied the revocation before this arrives.
      await httpPublish(a, c.adminToken, 'secret', 'after')
      await httpPublish(a, c.adminToken, 'lobby', 'sentinel')
      await sub.next(f => f.type === 'message' && f.room === 'lobby' && f.data === 'sentinel')
      const unsubscribed = await sub.next(f => f.type === 'unsubscribed' && f.room === 'secret')
      assert.equal(unsubscribed.reason, 'removed')
      await settle(sub)
      assert.deepEqual(sub.frames.filter(f => f.type === 'message' && f.room === 'secret').map(f => f.data), ['before'])
      const retry = await sub.command({ type: 'subscribe', room: 'secret' })
      assert.equal(retry.type, 'error')
    })

    it('membership events cross nodes: bob, subscribed to his personal room on node B, hears of a room added and removed through node A', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      const sub = await wsConnect(t, b, { token: bob.token })
      await subscribe(sub, `user:${bob.id}`)
      await createRoom(a, c.adminToken, { id: 'ops', name: 'Ops', visibility: 'private' })
      const member = await a.request('PUT', `/rooms/ops/members/${bob.id}`, { token: c.adminToken, body: { role: 'member' } })
      assert.equal(member.status, 201, JSON.stringify(member.body))
      const added = await sub.next(f => f.type === 'message' && f.room === `user:${bob.id}`)
      assert.deepEqual([added.data, added.from.id], [{ type: 'room.added', room: { id: 'ops', name: 'Ops', visibility: 'private' }, role: 'member' }, ADMIN.username])
      assert.equal((await a.request('DELETE', '/rooms/ops', { token: c.adminToken })).status, 204)
      const removed = await sub.next(f => f.type === 'message' && f.room === `user:${bob.id}` && f.offset > added.offset)
      assert.deepEqual(removed.data, { type: 'room.removed', room: { id: 'ops', name: 'Ops', visibility: 'private' }, reason: 'deleted' })
    })

    it('the per-user connection cap holds across nodes (429), and a closed connection frees its place', async (t) => {
      const c = await cluster(t, 2, { WS_MAX_CONNECTIONS_PER_USER: '2' })
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      const onA = await wsConnect(t, a, { token: bob.token })
      await wsConnect(t, b, { token: bob.token })
      assert.equal(await refused(t, a, bob.token), 429)
      assert.equal(await refused(t, b, bob.token), 429)
      onA.close()
      await onA.closed
      // The close is released asynchronously (one Redis call): allow it a moment.
      let admitted: WsClient | undefined
      await waitFor(async () => {
        try {
          admitted = await wsConnect(t, b, { token: bob.token })
          return true
        } catch {
          return false
        }
      }, 'a place after a close')
      assert.ok(admitted !== undefined)
      assert.equal(await refused(t, a, bob.token), 429)
    })

    it('a node killed with SIGKILL: its client resumes on another node with nothing lost and no duplicate; its presence entry expires within the TTL and its leave is pushed', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(a, c.adminToken, { id: 'lobby' })
      const watcher = await wsConnect(t, b, { token: c.adminToken })
      await subscribe(watcher, 'lobby')
      const client = await wsConnect(t, a, { token: bob.token })
      const start = await subscribe(client, 'lobby')
      await watcher.next(f => f.type === 'join' && f.user.id === bob.id)

      const acknowledged: number[] = []
      for (let i = 1; i <= 5; i++) acknowledged.push((await httpPublish(b, c.adminToken, 'lobby', i)).offset)
      await waitFor(() => offsetsIn(client, 'lobby').length === 5, 'five messages through node A')

      a.server.child.kill('SIGKILL')
      await a.server.exited
      const goneAt = Date.now()
      // Nobody refreshes node A's entries any more: a sweeper on node B removes them once they
      // expire and pushes the leave. "Within the TTL" is read from what Redis holds, not from a
      // stopwatch: the entry expires one entry lifetime (3/4 of the TTL, see redis-engine/index.ts)
      // after node A's last refresh, which came before it was gone. Read at once: the entry
      // lives at least a lifetime less a refresh interval (1/3 of the TTL) past the kill.
      const expiresAt = await presenceExpiry(c, 'lobby', client.welcome.connectionId as string)
      assert.ok(expiresAt <= goneAt + PRESENCE_TTL_SECONDS * 1000 * 3 / 4, `the dead connection's entry expires ${expiresAt - goneAt} ms after node A was gone`)
      assert.equal((await client.closed).code, 1006)
      const received = offsetsIn(client, 'lobby')
      const last = received[received.length - 1] ?? 0
      for (let i = 6; i <= 10; i++) acknowledged.push((await httpPublish(b, c.adminToken, 'lobby', i)).offset)

      await watcher.next(f => f.type === 'leave' && f.user.id === bob.id, WAIT_MS)
      // Redis stamps expiries with its clock, the same as this process's: not removed early.
      assert.ok(Date.now() >= expiresAt, 'the leave came from the entry expiring')

      const resumed = await wsConnect(t, b, { token: bob.token })
      const recovery = await subscribe(resumed, 'lobby', { epoch: start.epoch as string, offset: last })
      assert.equal(recovery.recovered, true)
      for (let i = 11; i <= 12; i++) acknowledged.push((await httpPublish(b, c.adminToken, 'lobby', i)).offset)
      await waitFor(() => offsetsIn(resumed, 'lobby').includes(12), 'live after the move')
      await settle(resumed)
      const all = [...received, ...(recovery.publications as WsFrame[]).map(p => p.offset as number), ...offsetsIn(resumed, 'lobby')]
      assert.deepEqual(all, acknowledged, 'every acknowledged publication once, in order')
      const presence = await watcher.command({ type: 'presence', room: 'lobby' })
      assert.equal(presence.result.connections, 2, 'the dead node\'s entry is gone, the new one counted')
    })

    it('presenceEvents off: the leave a sweeper announces for a killed node\'s users is not pushed, while presence drops them', async (t) => {
      const c = await cluster(t, 2)
      const [a, b] = [node(c, 0), node(c, 1)]
      const bob = await c.user('bob')
      await createRoom(b, c.adminToken, { id: 'stage', presenceEvents: false })
      await createRoom(b, c.adminToken, { id: 'lobby' })
      const watcher = await wsConnect(t, b, { token: c.adminToken })
      await subscribe(watcher, 'stage')
      await subscribe(watcher, 'lobby')
      const client = await wsConnect(t, a, { token: bob.token })
      await subscribe(client, 'stage')
      await subscribe(client, 'lobby')
      // The room with pushes on is the barrier: bob's leave from it is announced by the same sweep.
      await watcher.next(f => f.type === 'join' && f.room === 'lobby' && f.user.id === bob.id)
      a.server.child.kill('SIGKILL')
      await a.server.exited
      await watcher.next(f => f.type === 'leave' && f.room === 'lobby' && f.user.id === bob.id, WAIT_MS)
      await waitFor(async () => (await watcher.command({ type: 'presence', room: 'stage' })).result?.connections === 1, 'bob swept from the stage\'s presence')
      await httpPublish(b, c.adminToken, 'stage', 'sentinel')
      await watcher.next(f => f.type === 'message' && f.room === 'stage' && f.data === 'sentinel')
      assert.deepEqual(watcher.frames.filter(f => (f.type === 'join' || f.type === 'leave') && f.room === 'stage').map(f => `${f.type as string} ${f.user.id as string}`), [])
    })

    // One Redis of the test's own; a cluster's faults (a primary killed, a slot moved) are tested apart.
    if (oneRedis) it('Redis killed and restarted mid-stream: nodes stay up, readiness turns 503, a publish fails with 503; after the restart the subscriber has every acknowledged publication once, in order', { skip: skipRedisServer }, async (t) => {
      // A private, persistent redis-server (append-only file, fsync per write): the machine's
      // shared Redis is never stopped, and a Redis that must lose nothing runs like this.
      const redis = await privateRedis(t, { persist: true })
      // The HTTP rate limit (600 a minute by default) out of the way: a node whose publishes never
      // recover must fail at the loop's deadline below, with its message, not on a 429.
      const c = await startCluster(t, { ...sharedRedis, env: { REDIS_URL: redis.url } }, 2, { RATE_LIMIT_MAX: '100000' })
      const [a, b] = [node(c, 0), node(c, 1)]
      await createRoom(a, c.adminToken, { id: 'lobby' })

      const client = new SwitchboardClient({ url: a.url, token: c.adminToken, WebSocket, reconnect: { baseMs: 50, capMs: 500 } })
      t.after(() => client.close())
      const received: unknown[] = []
      const gaps: unknown[] = []
      await client.subscribe('lobby', (event) => {
        if (event.type === 'gap') gaps.push(event)
        else received.push(event.data)
      })

      const acknowledged: number[] = []
      let n = 0
      const publishOne = async (): Promise<number> => {
        const res = await b.request('POST', '/rooms/lobby/messages', { token: c.adminToken, body: { data: ++n } })
        if (res.status === 201) acknowledged.push(n)
        else assert.equal(res.status, 503, `a publish either succeeds or fails with 503: ${JSON.stringify(res.body)}`)
        return res.status
      }
      for (let i = 0; i < 5; i++) assert.equal(await publishOne(), 201)
      await waitFor(() => received.length === 5, 'five messages live across the nodes')

      await redis.kill()
      // Readiness turns 503, liveness stays 200, the processes stay up. How soon readiness turns
      // is not asserted (no wall-clock bounds in tests): the wait is only a generous deadline so
      // that a node which never notices the outage fails the test instead of hanging it.
      for (const n of [a, b]) {
        await waitFor(async () => (await n.request('GET', '/health/ready')).status === 503, `readiness 503 on node ${n.url} after Redis was killed`, 20_000)
        assert.equal((await n.request('GET', '/health/live')).status, 200)
      }
      const during = await b.request('POST', '/rooms/lobby/messages', { token: c.adminToken, body: { data: 'lost' } })
      assert.equal(during.status, 503, JSON.stringify(during.body))
      assert.equal(during.body.code, 'SB_ERR_UNAVAILABLE')

      await redis.start()
      for (const n of [a, b]) await waitFor(async () => (await n.request('GET', '/health/ready')).status === 200, `node ${n.url} ready again`, 20_000)
      // Publish through the recovery window: some may still fail while the connections come back.
      // Bounded: a node whose publishes never recover fails here with the count so far instead of
      // looping until the runner's timeout.
      const publishDeadline = Date.now() + 20_000
      while (acknowledged.length < 15) {
        if (Date.now() > publishDeadline) assert.fail(`publishes did not recover after the Redis restart: ${acknowledged.length - 5} of 10 acknowledged in 20 s (${n - 5} attempts)`)
        await publishOne()
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      await waitFor(() => received.length >= acknowledged.length, `all ${acknowledged.length} acknowledged publications at the subscriber (got ${received.length})`, 20_000)
      await client.ping()
      assert.deepEqual(received, acknowledged, 'every acknowledged publication once, in order')
      assert.deepEqual(gaps, [], 'the persistent Redis kept the stream: nothing to report lost')
      for (const n of [a, b]) assert.equal(n.server.child.exitCode, null, 'the node is still running')
    })
  })
}
