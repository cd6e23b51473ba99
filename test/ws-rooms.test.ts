import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { WebSocketServer } from 'ws'
import type { UserPrincipal } from '../src/auth/principal.js'
import type { Engine } from '../src/realtime/engine.js'
import { RealtimeError } from '../src/realtime/errors.js'
import type { Logger } from '../src/realtime/logger.js'
import { createMemoryEngine } from '../src/realtime/memory-engine.js'
import { noopMetrics } from '../src/realtime/metrics.js'
import { createRealtimeNode, type RealtimeNode } from '../src/realtime/node.js'
import type { Authorizer, RoomGrant } from '../src/realtime/authorizer.js'
import { attachWsEvents, wsTransport } from '../src/realtime/ws-transport.js'
import { prepareWsFrame } from '../src/realtime/ws-frames.js'
import { build, wsConnect, type TestApp, type WsClient, type WsFrame } from './helper.js'
import { msgpackConnect } from './ws-support.js'

/*
 * Room semantics over real sockets: fan-out, authorization per operation, personal rooms,
 * presence, history and idempotency, recovery (with property tests), live revocation and the
 * admin connection API.
 *
 * "Nothing arrived" is never a sleep. It rests on two facts of this server: a publish is
 * acknowledged (publish reply, HTTP 201) only after the embedded engine has written the
 * publication to every local subscriber's socket, and one socket delivers frames in order.
 * So once a client gets the reply to a `ping` sent after an acknowledged publish, any frame
 * that publish produced for that client is already in its `frames`.
 */

/** Rate and connection caps out of the way: these tests are about room semantics, not limits. */
const ENV = {
  WS_MESSAGES_PER_SECOND: '100000',
  WS_MESSAGES_BURST: '100000',
  WS_MAX_CONNECTIONS_PER_USER: '1000'
}

async function setup (t: TestContext, env: Record<string, string> = {}): Promise<TestApp> {
  return await build(t, { env: { ...ENV, ...env } })
}

async function createRoom (srv: TestApp, token: string, body: Record<string, unknown>): Promise<void> {
  const res = await srv.request('POST', '/rooms', { token, body })
  assert.equal(res.status, 201, res.text)
}

async function addMember (srv: TestApp, token: string, room: string, userId: string, role = 'member'): Promise<void> {
  const res = await srv.request('PUT', `/rooms/${room}/members/${userId}`, { token, body: { role } })
  assert.ok(res.status === 201 || res.status === 200, res.text)
}

async function createApiKey (srv: TestApp, adminToken: string, name: string, scopes: string[]): Promise<string> {
  const res = await srv.request('POST', '/api-keys', { token: adminToken, body: { name, scopes } })
  assert.equal(res.status, 201, res.text)
  return res.body.key as string
}

interface Position { epoch: string, offset: number }

async function subscribe (c: WsClient, room: string, since?: Position): Promise<WsFrame> {
  const reply = await c.command({ type: 'subscribe', room, ...(since === undefined ? {} : { since }) })
  assert.equal(reply.type, 'reply', `subscribe ${room}: ${JSON.stringify(reply)}`)
  return reply.result as WsFrame
}

async function publish (c: WsClient, room: string, data: unknown, idempotencyKey?: string): Promise<Position> {
  const reply = await c.command({ type: 'publish', room, data, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) })
  assert.equal(reply.type, 'reply', `publish ${room}: ${JSON.stringify(reply)}`)
  return reply.result as Position
}

async function httpPublish (srv: TestApp, room: string, data: unknown, auth: { token?: string, apiKey?: string }): Promise<Position> {
  const res = await srv.request('POST', `/rooms/${room}/messages`, { ...auth, body: { data } })
  assert.equal(res.status, 201, res.text)
  return res.body as Position
}

async function expectError (c: WsClient, frame: Record<string, unknown>, code: string): Promise<void> {
  const reply = await c.command(frame)
  assert.equal(reply.type, 'error', `${JSON.stringify(frame)} should fail with ${code}: ${JSON.stringify(reply)}`)
  assert.equal(reply.error.code, code, `${JSON.stringify(frame)}: ${JSON.stringify(reply)}`)
}

/** Round trip on this socket: every frame the server wrote to it before now has been received. */
async function settle (c: WsClient): Promise<void> {
  const reply = await c.command({ type: 'ping' })
  assert.equal(reply.type, 'reply')
}

function messagesIn (c: WsClient, room: string): WsFrame[] {
  return c.frames.filter(f => f.type === 'message' && f.room === room)
}

function offsetsIn (c: WsClient, room: string): number[] {
  return messagesIn(c, room).map(f => f.offset as number)
}

function range (from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
}

/** Polls a condition with a generous bound (for server state seen over HTTP). */
async function waitFor (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

async function closeClient (c: WsClient): Promise<{ code: number, reason: string }> {
  c.close()
  return await c.closed
}

// ---------------------------------------------------------------------------------------

describe('ws rooms: fan-out', () => {
  it('every subscriber gets every publication once, in offset order; other rooms get nothing', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const carol = await srv.userToken('carol')
    const dave = await srv.userToken('dave')
    await createRoom(srv, alice, { id: 'lobby' })
    await createRoom(srv, dave, { id: 'other' })

    const a = await wsConnect(t, srv, { token: alice })
    const b = await wsConnect(t, srv, { token: bob })
    const c = await wsConnect(t, srv, { token: carol })
    const d = await wsConnect(t, srv, { token: dave })
    const subs = [await subscribe(a, 'lobby'), await subscribe(b, 'lobby'), await subscribe(c, 'lobby')]
    await subscribe(d, 'other')
    const epoch = subs[0]!.epoch as string
    for (const sub of subs) assert.deepEqual({ epoch: sub.epoch, offset: sub.offset, recovered: sub.recovered, publications: sub.publications }, { epoch, offset: 0, recovered: false, publications: [] })

    const before = Date.now()
    const acks: Position[] = []
    for (let i = 1; i <= 6; i++) acks.push(await publish(a, 'lobby', { n: i }))
    const after = Date.now()
    assert.deepEqual(acks, range(1, 6).map(offset => ({ epoch, offset })))

    for (const client of [a, b, c]) {
      await client.next(f => f.type === 'message' && f.offset === 6)
      await settle(client)
      assert.deepEqual(offsetsIn(client, 'lobby'), range(1, 6), 'each publication once, in order (the publisher included)')
      for (const [i, m] of messagesIn(client, 'lobby').entries()) {
        assert.deepEqual(Object.keys(m).sort(), ['data', 'epoch', 'from', 'offset', 'room', 'ts', 'type'])
        assert.equal(m.room, 'lobby')
        assert.equal(m.epoch, epoch)
        assert.deepEqual(m.data, { n: i + 1 })
        assert.deepEqual(m.from, { id: 'alice' })
        assert.ok(Number.isInteger(m.ts) && m.ts >= before && m.ts <= after, `ts ${m.ts as number} within the publish window`)
      }
    }
    await settle(d)
    assert.deepEqual(d.frames.filter(f => f.type === 'message'), [], 'a subscriber of another room gets nothing')
  })
})

describe('ws rooms: authorization per operation', () => {
  it('private rooms are invisible to non-members; publish policy and public rooms are enforced', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const carol = await srv.userToken('carol')
    await createRoom(srv, alice, { id: 'secret', visibility: 'private' })
    await createRoom(srv, alice, { id: 'announce', publish: 'moderators' })
    await createRoom(srv, alice, { id: 'lobby' })
    await addMember(srv, alice, 'announce', 'bob')
    await addMember(srv, alice, 'announce', 'carol', 'moderator')

    const b = await wsConnect(t, srv, { token: bob })
    const c = await wsConnect(t, srv, { token: carol })
    // A private room the caller may not see: not_found for every operation, as if it did not exist.
    await expectError(b, { type: 'subscribe', room: 'secret' }, 'not_found')
    await expectError(b, { type: 'publish', room: 'secret', data: 1 }, 'not_found')
    await expectError(b, { type: 'history', room: 'secret' }, 'not_found')
    await expectError(b, { type: 'presence', room: 'secret' }, 'not_found')
    // Publish policy `moderators`: a plain member may read but not publish; a moderator publishes.
    await subscribe(b, 'announce')
    await expectError(b, { type: 'publish', room: 'announce', data: 1 }, 'forbidden')
    assert.equal((await publish(c, 'announce', 'from a moderator')).offset, 1)
    // A public room: a non-member reads (subscribe, history, presence) but does not publish.
    await subscribe(b, 'lobby')
    assert.equal((await b.command({ type: 'history', room: 'lobby' })).type, 'reply')
    assert.equal((await b.command({ type: 'presence', room: 'lobby' })).type, 'reply')
    await expectError(b, { type: 'publish', room: 'lobby', data: 1 }, 'forbidden')
    assert.equal((await b.command({ type: 'history', room: 'lobby' })).result.offset, 0, 'the refused publish left no trace')
  })

  it('API keys act by scope, whatever the room visibility and publish policy', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'sensors.kitchen', visibility: 'private', publish: 'moderators' })
    await createRoom(srv, alice, { id: 'lobby' })
    const reader = await createApiKey(srv, root, 'reader', ['subscribe:sensors.*'])
    const writer = await createApiKey(srv, root, 'writer', ['publish:sensors.*'])

    const r = await wsConnect(t, srv, { apiKey: reader })
    const w = await wsConnect(t, srv, { apiKey: writer })
    assert.deepEqual(r.welcome.user, { id: 'key:reader', role: 'apiKey' })
    await subscribe(r, 'sensors.kitchen')
    await expectError(r, { type: 'publish', room: 'sensors.kitchen', data: 1 }, 'forbidden')
    await expectError(r, { type: 'history', room: 'sensors.kitchen' }, 'forbidden')
    await expectError(r, { type: 'subscribe', room: 'lobby' }, 'not_found')
    await expectError(w, { type: 'subscribe', room: 'sensors.kitchen' }, 'forbidden')
    await expectError(w, { type: 'publish', room: 'lobby', data: 1 }, 'not_found')

    assert.equal((await publish(w, 'sensors.kitchen', { celsius: 21 })).offset, 1)
    const m = await r.next(f => f.type === 'message')
    assert.deepEqual({ room: m.room, offset: m.offset, data: m.data, from: m.from }, { room: 'sensors.kitchen', offset: 1, data: { celsius: 21 }, from: { id: 'key:writer' } })
  })

  it('BAR 7: zero messages reach a non-member of a private room while members chat', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const carol = await srv.userToken('carol')
    const mallory = await srv.userToken('mallory')
    await createRoom(srv, alice, { id: 'secret', visibility: 'private' })
    await addMember(srv, alice, 'secret', 'carol')

    const a = await wsConnect(t, srv, { token: alice })
    const c = await wsConnect(t, srv, { token: carol })
    const m = await wsConnect(t, srv, { token: mallory })
    await subscribe(a, 'secret')
    await subscribe(c, 'secret')
    await expectError(m, { type: 'subscribe', room: 'secret' }, 'not_found')
    await expectError(m, { type: 'subscribe', room: 'secret', since: { epoch: 'guess', offset: 0 } }, 'not_found')

    for (let i = 0; i < 10; i++) {
      await publish(i % 2 === 0 ? a : c, 'secret', `psst ${i}`)
      if (i === 4) await expectError(m, { type: 'subscribe', room: 'secret' }, 'not_found')
    }
    await httpPublish(srv, 'secret', 'over http', { token: alice })
    await c.next(f => f.type === 'message' && f.offset === 11)
    await settle(m)
    assert.deepEqual(offsetsIn(c, 'secret'), range(1, 11))
    assert.deepEqual(m.frames.filter(f => f.type !== 'welcome' && f.type !== 'reply' && f.type !== 'error'), [], 'the non-member got no message and no presence event')
    assert.equal(m.frames.filter(f => f.room === 'secret').length, 0)
    const presence = await srv.request('GET', '/rooms/secret/presence', { token: alice })
    assert.deepEqual(presence.body, { users: ['alice', 'carol'], connections: 2 })
  })
})

describe('ws rooms: personal rooms user:<id>', () => {
  it('membership events: added, removed, left, banned and deleted reach the user\'s personal room, from who did it', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const b = await wsConnect(t, srv, { token: bob })
    await subscribe(b, 'user:bob')
    await createRoom(srv, alice, { id: 'ops', name: 'Ops', visibility: 'private' })
    await createRoom(srv, alice, { id: 'hall', visibility: 'public' })

    await addMember(srv, alice, 'ops', 'bob')
    // Pushed live, before the PUT answered.
    const added = await b.next(f => f.type === 'message' && f.room === 'user:bob')
    assert.deepEqual([added.data, added.from.id], [{ type: 'room.added', room: { id: 'ops', name: 'Ops', visibility: 'private' }, role: 'member' }, 'alice'])
    // A role change is no membership change: nothing is published for it.
    await addMember(srv, alice, 'ops', 'bob', 'moderator')
    assert.equal((await srv.request('DELETE', '/rooms/ops/members/bob', { token: alice })).status, 204)
    await addMember(srv, bob, 'hall', 'bob')
    assert.equal((await srv.request('DELETE', '/rooms/hall/members/bob', { token: bob })).status, 204)
    await addMember(srv, alice, 'ops', 'bob')
    assert.equal((await srv.request('PUT', '/rooms/ops/bans/bob', { token: alice, body: {} })).status, 201)
    assert.equal((await srv.request('DELETE', '/rooms/ops/bans/bob', { token: alice })).status, 204)
    await addMember(srv, alice, 'ops', 'bob')
    assert.equal((await srv.request('DELETE', '/rooms/ops', { token: alice })).status, 204)

    const history = await srv.request('GET', '/rooms/user:bob/messages', { token: bob })
    assert.equal(history.status, 200, history.text)
    const seen = (history.body.publications as Array<{ data: { type: string, room: { id: string }, role?: string, reason?: string }, from: { id: string } }>)
      .map(p => [p.data.type, p.data.room.id, p.data.role ?? p.data.reason, p.from.id])
    assert.deepEqual(seen, [
      ['room.added', 'ops', 'member', 'alice'],
      ['room.removed', 'ops', 'removed', 'alice'],
      ['room.added', 'hall', 'member', 'bob'],
      ['room.removed', 'hall', 'left', 'bob'],
      ['room.added', 'ops', 'member', 'alice'],
      ['room.removed', 'ops', 'banned', 'alice'],
      ['room.added', 'ops', 'member', 'alice'],
      ['room.removed', 'ops', 'deleted', 'alice']
    ])
    // Alice's own list changed too (her other tabs and devices): she created both rooms and deleted one.
    const aliceHistory = await srv.request('GET', '/rooms/user:alice/messages', { token: alice })
    assert.deepEqual((aliceHistory.body.publications as Array<{ data: { type: string, room: { id: string }, role?: string, reason?: string } }>)
      .map(p => [p.data.type, p.data.room.id, p.data.role ?? p.data.reason]), [['room.added', 'ops', 'owner'], ['room.added', 'hall', 'owner'], ['room.removed', 'ops', 'deleted']])
  })

  it('only the owner and admins read it; admins and publish:user:* keys write to every connection of the owner', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const notifier = await createApiKey(srv, root, 'notifier', ['publish:user:*'])

    const a1 = await wsConnect(t, srv, { token: alice })
    const a2 = await wsConnect(t, srv, { token: alice })
    const b = await wsConnect(t, srv, { token: bob })
    const r = await wsConnect(t, srv, { token: root })
    const k = await wsConnect(t, srv, { apiKey: notifier })

    const sub = await subscribe(a1, 'user:alice')
    await subscribe(a2, 'user:alice')
    await expectError(a1, { type: 'subscribe', room: 'user:bob' }, 'forbidden')
    await expectError(a1, { type: 'history', room: 'user:bob' }, 'forbidden')
    await subscribe(r, 'user:bob')
    await subscribe(r, 'user:alice')

    assert.deepEqual(await publish(r, 'user:alice', 'from an admin'), { epoch: sub.epoch, offset: 1 })
    assert.deepEqual(await publish(k, 'user:alice', 'from a service'), { epoch: sub.epoch, offset: 2 })
    await expectError(a1, { type: 'publish', room: 'user:bob', data: 'hi' }, 'forbidden')
    await expectError(b, { type: 'publish', room: 'user:bob', data: 'to myself' }, 'forbidden')
    await expectError(k, { type: 'subscribe', room: 'user:alice' }, 'forbidden')
    const refused = await srv.request('POST', '/rooms/user:alice/messages', { token: bob, body: { data: 'hi' } })
    assert.equal(refused.status, 403, refused.text)

    for (const client of [a1, a2, r]) {
      await client.next(f => f.type === 'message' && f.offset === 2)
      await settle(client)
      assert.deepEqual(messagesIn(client, 'user:alice').map(m => [m.offset, m.data, m.from.id]), [[1, 'from an admin', 'root'], [2, 'from a service', 'key:notifier']])
    }
    await settle(b)
    assert.deepEqual(b.frames.filter(f => f.type === 'message'), [])

    // History and recovery work for personal rooms too.
    const history = await a1.command({ type: 'history', room: 'user:alice' })
    assert.deepEqual(history.result.publications.map((p: { offset: number }) => p.offset), [1, 2])
    const overHttp = await srv.request('GET', '/rooms/user:alice/messages', { token: alice })
    assert.equal(overHttp.status, 200, overHttp.text)
    assert.deepEqual(overHttp.body.publications.map((p: { offset: number }) => p.offset), [1, 2])
    assert.equal((await srv.request('GET', '/rooms/user:alice/messages', { token: bob })).status, 403)

    await closeClient(a2)
    assert.equal((await httpPublish(srv, 'user:alice', 'while away', { apiKey: notifier })).offset, 3)
    const a3 = await wsConnect(t, srv, { token: alice })
    const recovered = await subscribe(a3, 'user:alice', { epoch: sub.epoch as string, offset: 2 })
    assert.equal(recovered.recovered, true)
    assert.deepEqual(recovered.publications.map((p: { offset: number, data: unknown }) => [p.offset, p.data]), [[3, 'while away']])
  })

  it('POST /rooms refuses the user: namespace', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const root = await srv.userToken('root', 'admin')
    for (const token of [alice, root]) {
      const res = await srv.request('POST', '/rooms', { token, body: { id: 'user:x' } })
      assert.equal(res.status, 403, res.text)
    }
  })
})

describe('ws rooms: presence', () => {
  it('join on a user\'s first connection, leave on the last; users deduplicated with a connection count', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const carol = await srv.userToken('carol')
    await createRoom(srv, alice, { id: 'lobby' })

    const b = await wsConnect(t, srv, { token: bob })
    await subscribe(b, 'lobby')
    const presenceOf = (user: string, type: string): WsFrame[] => b.frames.filter(f => f.type === type && f.room === 'lobby' && f.user?.id === user)

    const a1 = await wsConnect(t, srv, { token: alice })
    await subscribe(a1, 'lobby')
    const join = await b.next(f => f.type === 'join' && f.user?.id === 'alice')
    assert.deepEqual(join, { type: 'join', room: 'lobby', user: { id: 'alice' } })

    const a2 = await wsConnect(t, srv, { token: alice })
    await subscribe(a2, 'lobby')
    await settle(a2) // its presence update is done before this reply
    await settle(b)
    assert.equal(presenceOf('alice', 'join').length, 1, 'no join for a second connection')

    const info = await b.command({ type: 'presence', room: 'lobby' })
    assert.deepEqual(info.result, { users: ['alice', 'bob'], connections: 3 })
    const overHttp = await srv.request('GET', '/rooms/lobby/presence', { token: carol })
    assert.deepEqual(overHttp.body, { users: ['alice', 'bob'], connections: 3 })

    // Not the last connection: no leave.
    assert.equal((await a1.command({ type: 'unsubscribe', room: 'lobby' })).type, 'reply')
    await settle(a1)
    await settle(b)
    assert.equal(presenceOf('alice', 'leave').length, 0)
    assert.deepEqual((await b.command({ type: 'presence', room: 'lobby' })).result, { users: ['alice', 'bob'], connections: 2 })

    // The last one leaves by closing its socket.
    await closeClient(a2)
    const leave = await b.next(f => f.type === 'leave' && f.user?.id === 'alice')
    assert.deepEqual(leave, { type: 'leave', room: 'lobby', user: { id: 'alice' } })
    assert.deepEqual((await b.command({ type: 'presence', room: 'lobby' })).result, { users: ['bob'], connections: 1 })

    // And by unsubscribing.
    const c = await wsConnect(t, srv, { token: carol })
    await subscribe(c, 'lobby')
    await b.next(f => f.type === 'join' && f.user?.id === 'carol')
    await c.command({ type: 'unsubscribe', room: 'lobby' })
    await b.next(f => f.type === 'leave' && f.user?.id === 'carol')
    await settle(b)
    assert.equal(presenceOf('alice', 'join').length, 1)
    assert.equal(presenceOf('alice', 'leave').length, 1)
    assert.deepEqual((await srv.request('GET', '/rooms/lobby/presence', { token: alice })).body, { users: ['bob'], connections: 1 })
  })
})

describe('ws rooms: presenceEvents off (a broadcast room)', () => {
  it('joins and leaves still count in presence but push nothing; a live PATCH turns them back on for later joins and leaves', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const carol = await srv.userToken('carol')
    const dave = await srv.userToken('dave')
    await createRoom(srv, alice, { id: 'stage', presenceEvents: false })
    const setEvents = async (presenceEvents: boolean): Promise<void> => {
      const res = await srv.request('PATCH', '/rooms/stage', { token: alice, body: { presenceEvents } })
      assert.equal(res.status, 200, res.text)
      assert.equal(res.body.presenceEvents, presenceEvents)
    }
    const presenceNow = async (): Promise<unknown> => (await srv.request('GET', '/rooms/stage/presence', { token: alice })).body
    const watcher = await wsConnect(t, srv, { token: bob })
    await subscribe(watcher, 'stage')
    const pushesOf = (user: string): WsFrame[] => watcher.frames.filter(f => (f.type === 'join' || f.type === 'leave') && f.room === 'stage' && f.user?.id === user)

    // Off: alice's join is counted (over WebSocket and HTTP) but not pushed.
    const a = await wsConnect(t, srv, { token: alice })
    await subscribe(a, 'stage')
    await settle(a) // her presence update is done before this reply
    assert.deepEqual((await watcher.command({ type: 'presence', room: 'stage' })).result, { users: ['alice', 'bob'], connections: 2 })
    assert.deepEqual(await presenceNow(), { users: ['alice', 'bob'], connections: 2 })
    // Her leave by closing the socket, and carol's join and leave by unsubscribing: counted, not pushed.
    await closeClient(a)
    await waitFor(async () => JSON.stringify(await presenceNow()) === JSON.stringify({ users: ['bob'], connections: 1 }), 'alice out of presence')
    const c = await wsConnect(t, srv, { token: carol })
    await subscribe(c, 'stage')
    await settle(c)
    assert.deepEqual(await presenceNow(), { users: ['bob', 'carol'], connections: 2 })

    // Turned on while carol is subscribed: her leave follows the setting in force when she
    // leaves, so it is pushed although her subscription was made with pushes off.
    await setEvents(true)
    assert.equal((await c.command({ type: 'unsubscribe', room: 'stage' })).type, 'reply')
    await watcher.next(f => f.type === 'leave' && f.user?.id === 'carol')
    const d = await wsConnect(t, srv, { token: dave })
    await subscribe(d, 'stage')
    await watcher.next(f => f.type === 'join' && f.user?.id === 'dave')
    // Barrier: the engine delivers a room's events in order, so a wrong push for alice or
    // carol's join would have arrived before dave's join.
    assert.deepEqual(pushesOf('alice'), [], 'alice: no join, no leave while pushes were off')
    assert.deepEqual(pushesOf('carol').map(f => f.type), ['leave'])

    // Turned off again while dave is subscribed (his join was pushed): his leave is not.
    await setEvents(false)
    assert.equal((await d.command({ type: 'unsubscribe', room: 'stage' })).type, 'reply')
    await waitFor(async () => JSON.stringify(await presenceNow()) === JSON.stringify({ users: ['bob'], connections: 1 }), 'dave out of presence')
    await setEvents(true)
    const c2 = await wsConnect(t, srv, { token: carol })
    await subscribe(c2, 'stage')
    await watcher.next(f => f.type === 'join' && f.user?.id === 'carol')
    await settle(watcher)
    assert.deepEqual(pushesOf('dave').map(f => f.type), ['join'], 'dave left with pushes off: no leave')
    assert.deepEqual(pushesOf('alice'), [])
  })

  it('the default room pushes joins and leaves as before; a personal room keeps pushing them', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const root = await srv.userToken('root', 'admin')
    await createRoom(srv, alice, { id: 'plain' })
    const watcher = await wsConnect(t, srv, { token: root })
    await subscribe(watcher, 'plain')
    await subscribe(watcher, 'user:alice')
    const a = await wsConnect(t, srv, { token: alice })
    await subscribe(a, 'plain')
    await watcher.next(f => f.type === 'join' && f.room === 'plain' && f.user?.id === 'alice')
    await subscribe(a, 'user:alice')
    await watcher.next(f => f.type === 'join' && f.room === 'user:alice' && f.user?.id === 'alice')
    await closeClient(a)
    await watcher.next(f => f.type === 'leave' && f.room === 'plain' && f.user?.id === 'alice')
    await watcher.next(f => f.type === 'leave' && f.room === 'user:alice' && f.user?.id === 'alice')
  })
})

describe('ws rooms: presence answers shared for a second', () => {
  it('asks of a room\'s presence share one engine call; a join or a leave seen by the node drops the shared answer', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'lobby' })
    const a = await wsConnect(t, srv, { token: alice })
    await subscribe(a, 'lobby')
    await settle(a)
    const presence = srv.app.realtimeEngine.presence
    const get = presence.get.bind(presence)
    let engineCalls = 0
    presence.get = async (room: string) => { engineCalls++; return await get(room) }
    const ask = async (): Promise<unknown> => (await a.command({ type: 'presence', room: 'lobby' })).result

    // Ten asks at once and one more after them, over WebSocket and HTTP: one engine call.
    const answers = await Promise.all([...Array.from({ length: 9 }, ask), srv.request('GET', '/rooms/lobby/presence', { token: bob }).then(r => r.body)])
    for (const answer of [...answers, await ask()]) assert.deepEqual(answer, { users: ['alice'], connections: 1 })
    assert.equal(engineCalls, 1)

    // A second connection of alice's: no join event (not her first), but the count changes.
    const a2 = await wsConnect(t, srv, { token: alice })
    await subscribe(a2, 'lobby')
    await settle(a2)
    assert.deepEqual(await ask(), { users: ['alice'], connections: 2 })
    assert.equal(engineCalls, 2)
    // A join drops it: the next ask sees bob.
    const b = await wsConnect(t, srv, { token: bob })
    await subscribe(b, 'lobby')
    await settle(b)
    assert.deepEqual(await ask(), { users: ['alice', 'bob'], connections: 3 })
    assert.equal(engineCalls, 3)
    // And a leave.
    assert.equal((await b.command({ type: 'unsubscribe', room: 'lobby' })).type, 'reply')
    await a.next(f => f.type === 'leave' && f.user?.id === 'bob')
    assert.deepEqual(await ask(), { users: ['alice'], connections: 2 })
    assert.equal(engineCalls, 4)
    // A second later the answer is asked for again: asks until the engine is asked (a bounded
    // poll, no sleep past the lifetime; its exact end is tested on an injected clock in
    // test/unit/shared-answers.test.ts).
    await waitFor(async () => {
      assert.deepEqual(await ask(), { users: ['alice'], connections: 2 })
      return engineCalls > 4
    }, 'an engine call once the shared answer expired')
    assert.equal(engineCalls, 5)
  })
})

describe('ws rooms: history and idempotency', () => {
  it('history command with and without since and limit; an idempotency key publishes once', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'log' })
    const a = await wsConnect(t, srv, { token: alice })
    const b = await wsConnect(t, srv, { token: bob })
    const { epoch } = await subscribe(b, 'log') as unknown as Position
    for (let i = 1; i <= 5; i++) await publish(a, 'log', i)

    const history = async (extra: Record<string, unknown>): Promise<{ offsets: number[], complete: boolean, offset: number }> => {
      const reply = await a.command({ type: 'history', room: 'log', ...extra })
      assert.equal(reply.type, 'reply', JSON.stringify(reply))
      assert.equal(reply.result.epoch, epoch)
      return { offsets: reply.result.publications.map((p: { offset: number }) => p.offset), complete: reply.result.complete, offset: reply.result.offset }
    }
    assert.deepEqual(await history({}), { offsets: [1, 2, 3, 4, 5], complete: true, offset: 5 })
    assert.deepEqual(await history({ limit: 2 }), { offsets: [4, 5], complete: true, offset: 5 }, 'without since: the newest')
    assert.deepEqual(await history({ since: { epoch, offset: 2 } }), { offsets: [3, 4, 5], complete: true, offset: 5 })
    assert.deepEqual(await history({ since: { epoch, offset: 2 }, limit: 2 }), { offsets: [3, 4], complete: false, offset: 5 }, 'with since: the oldest, incomplete')
    assert.deepEqual(await history({ since: { epoch, offset: 5 } }), { offsets: [], complete: true, offset: 5 })
    assert.deepEqual(await history({ since: { epoch: 'not-this-one', offset: 2 } }), { offsets: [], complete: false, offset: 5 })
    await expectError(a, { type: 'history', room: 'log', limit: 0 }, 'bad_request')

    const first = await publish(a, 'log', 'once', 'k1')
    const again = await publish(a, 'log', 'twice?', 'k1')
    assert.deepEqual(first, { epoch, offset: 6 })
    assert.deepEqual(again, first, 'the same key answers the first position')
    assert.equal((await publish(a, 'log', 'next')).offset, 7, 'no offset was spent on the duplicate')
    await b.next(f => f.type === 'message' && f.offset === 7)
    await settle(b)
    assert.deepEqual(offsetsIn(b, 'log'), range(1, 7))
    assert.equal(messagesIn(b, 'log').find(m => m.offset === 6)?.data, 'once')
  })

  it('POST /rooms/:id/messages: 201, idempotency, size and depth bounds, authorization, API keys', async (t) => {
    const srv = await setup(t, { WS_MAX_MESSAGE_BYTES: '1024' })
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'log' })
    await createRoom(srv, alice, { id: 'secret', visibility: 'private' })
    const key = await createApiKey(srv, root, 'ingest', ['publish:log'])
    const b = await wsConnect(t, srv, { token: bob })
    const { epoch } = await subscribe(b, 'log') as unknown as Position

    const post = (body: unknown, auth: { token?: string, apiKey?: string } = { token: alice }, room = 'log') => srv.request('POST', `/rooms/${room}/messages`, { ...auth, body })
    let res = await post({ data: { hello: 'world' } })
    assert.equal(res.status, 201, res.text)
    assert.deepEqual(res.body, { epoch, offset: 1 })
    res = await post({ data: 'x', idempotencyKey: 'order-42' })
    assert.deepEqual([res.status, res.body], [201, { epoch, offset: 2 }])
    res = await post({ data: 'y', idempotencyKey: 'order-42' })
    assert.deepEqual([res.status, res.body], [201, { epoch, offset: 2 }], 'a retried POST answers the first position')

    res = await post({ data: 'z'.repeat(2000) })
    assert.equal(res.status, 413, res.text)
    let deep: unknown = 'bottom'
    for (let i = 0; i < 40; i++) deep = [deep]
    res = await post({ data: deep })
    assert.equal(res.status, 400, res.text)
    res = await post({ nodata: 1 })
    assert.equal(res.status, 400, res.text)
    assert.equal((await post({ data: 1 }, {})).status, 401)
    res = await post({ data: 1 }, { token: alice }, 'secret')
    assert.equal(res.status, 201, res.text)
    res = await post({ data: 1 }, { token: bob }, 'secret')
    assert.deepEqual([res.status, res.body.code], [404, 'SB_ERR_ROOM_NOT_FOUND'])
    res = await post({ data: 1 }, { token: bob })
    assert.deepEqual([res.status, res.body.code], [403, 'SB_ERR_FORBIDDEN'])
    res = await post({ data: 'from a key' }, { apiKey: key })
    assert.deepEqual([res.status, res.body], [201, { epoch, offset: 3 }])
    res = await post({ data: 1 }, { apiKey: key }, 'secret')
    assert.equal(res.status, 404, 'a room outside the key\'s scopes is hidden')

    await b.next(f => f.type === 'message' && f.offset === 3)
    await settle(b)
    assert.deepEqual(messagesIn(b, 'log').map(m => [m.offset, m.data, m.from.id]), [[1, { hello: 'world' }, 'alice'], [2, 'x', 'alice'], [3, 'from a key', 'key:ingest']])
  })

  it('GET /rooms/:id/messages with since, epoch and limit', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'log' })
    await createRoom(srv, alice, { id: 'secret', visibility: 'private' })
    let epoch = ''
    for (let i = 1; i <= 5; i++) epoch = (await httpPublish(srv, 'log', i, { token: alice })).epoch

    const get = async (query: string, token = bob): Promise<{ status: number, offsets?: number[], complete?: boolean }> => {
      const res = await srv.request('GET', `/rooms/log/messages${query}`, { token })
      if (res.status !== 200) return { status: res.status }
      assert.equal(res.body.epoch, epoch)
      assert.equal(res.body.offset, 5)
      return { status: 200, offsets: res.body.publications.map((p: { offset: number }) => p.offset), complete: res.body.complete }
    }
    assert.deepEqual(await get(''), { status: 200, offsets: [1, 2, 3, 4, 5], complete: true })
    assert.deepEqual(await get('?limit=2'), { status: 200, offsets: [4, 5], complete: true })
    assert.deepEqual(await get(`?since=3&epoch=${epoch}`), { status: 200, offsets: [4, 5], complete: true })
    assert.deepEqual(await get(`?since=1&epoch=${epoch}&limit=2`), { status: 200, offsets: [2, 3], complete: false })
    assert.deepEqual(await get('?since=1&epoch=stale'), { status: 200, offsets: [], complete: false })
    assert.equal((await get('?since=3')).status, 400)
    assert.equal((await get(`?epoch=${epoch}`)).status, 400)
    assert.equal((await get('?limit=0')).status, 400)
    assert.equal((await srv.request('GET', '/rooms/secret/messages', { token: bob })).status, 404)
    assert.equal((await srv.request('GET', '/rooms/nowhere/messages', { token: bob })).status, 404)
  })
})

// ---------------------------------------------------------------------------------------
// REST: raw bytes

/** Bytes no UTF-8 decoder leaves intact: NUL, 0xFF, a lone continuation byte, a truncated sequence. */
const NOT_UTF8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3, 0x00, 0xe2, 0x82])
/** Every byte value once. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

/** POST /rooms/:id/messages with an application/octet-stream body (fetch sends its Content-Length). */
async function postBytes (srv: TestApp, room: string, bytes: Buffer, headers: Record<string, string>): Promise<{ status: number, body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON answers read loosely
  const res = await fetch(`${srv.url}/rooms/${room}/messages`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', ...headers }, body: new Uint8Array(bytes) })
  const text = await res.text()
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
}

/** The same with a chunked body (no Content-Length): the limit is enforced on what arrives. */
async function postChunked (srv: TestApp, room: string, chunks: Buffer[], token: string): Promise<{ status: number, body: any, connection: string | undefined }> { // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON answers read loosely
  return await new Promise((resolve, reject) => {
    const req = http.request(`${srv.url}/rooms/${room}/messages`, {
      method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${token}`, 'transfer-encoding': 'chunked' }
    }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), connection: res.headers.connection }))
    })
    // The server may answer (413) and close before every chunk is written.
    req.on('error', reject)
    for (const chunk of chunks) req.write(chunk)
    req.end()
  })
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

describe('REST messages: raw bytes', () => {
  it('an application/octet-stream body is published as its bytes: GET answers base64 with encoding, JSON subscribers get base64, MessagePack ones bin, recovery too', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'files' })
    const json = await wsConnect(t, srv, { token: bob })
    const packed = await msgpackConnect(t, srv, bob)
    const { epoch } = await subscribe(json, 'files') as unknown as Position
    assert.equal((await packed.command({ type: 'subscribe', room: 'files' })).type, 'reply')

    const sent = [NOT_UTF8, ALL_BYTES, Buffer.alloc(0)]
    for (const [i, bytes] of sent.entries()) {
      const res = await postBytes(srv, 'files', bytes, bearer(alice))
      assert.deepEqual([res.status, res.body], [201, { epoch, offset: i + 1 }])
    }
    // A JSON body with base64 publishes bytes the same way.
    const viaJson = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: NOT_UTF8.toString('base64'), encoding: 'base64' } })
    assert.deepEqual([viaJson.status, viaJson.body], [201, { epoch, offset: 4 }])
    const expected = [...sent, NOT_UTF8]

    const history = await srv.request('GET', '/rooms/files/messages', { token: bob })
    assert.equal(history.status, 200, history.text)
    assert.deepEqual(history.body.publications.map((p: WsFrame) => [p.offset, p.data, p.encoding, p.from.id]),
      expected.map((bytes, i) => [i + 1, bytes.toString('base64'), 'base64', 'alice']))

    await json.next(f => f.type === 'message' && f.offset === 4)
    await settle(json)
    assert.deepEqual(messagesIn(json, 'files').map(m => [m.offset, m.data, m.encoding]), expected.map((bytes, i) => [i + 1, bytes.toString('base64'), 'base64']))

    await packed.next(f => f.type === 'message' && f.offset === 4)
    const binary = packed.frames.filter(f => f.type === 'message' && f.room === 'files')
    assert.deepEqual(binary.map(m => [m.offset, Buffer.isBuffer(m.data), Buffer.from(m.data as Uint8Array).equals(expected[m.offset - 1]!), 'encoding' in m]),
      expected.map((_, i) => [i + 1, true, true, false]))

    // Recovered over both codecs, as bytes.
    const jsonAgain = await wsConnect(t, srv, { token: bob })
    const recovered = await subscribe(jsonAgain, 'files', { epoch, offset: 1 })
    assert.equal(recovered.recovered, true)
    assert.deepEqual((recovered.publications as WsFrame[]).map(p => [p.data, p.encoding]), expected.slice(1).map(bytes => [bytes.toString('base64'), 'base64']))
    const packedAgain = await msgpackConnect(t, srv, bob)
    const reply = await packedAgain.command({ type: 'subscribe', room: 'files', since: { epoch, offset: 0 } })
    assert.equal(reply.type, 'reply')
    assert.deepEqual((reply.result.publications as WsFrame[]).map(p => Buffer.from(p.data as Uint8Array).equals(expected[p.offset - 1]!)), [true, true, true, true])
  })

  it('Idempotency-Key: a retried upload answers the first position and publishes once; bad keys are refused', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'files' })
    const first = await postBytes(srv, 'files', ALL_BYTES, { ...bearer(alice), 'idempotency-key': 'upload-7' })
    assert.equal(first.status, 201, JSON.stringify(first.body))
    const again = await postBytes(srv, 'files', NOT_UTF8, { ...bearer(alice), 'idempotency-key': 'upload-7' })
    assert.deepEqual([again.status, again.body], [201, first.body], 'the first result, whatever the retry carried')
    // The header works for a JSON body too, and the body's key is the same key.
    const json = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: 'x' }, headers: { 'idempotency-key': 'upload-7' } })
    assert.deepEqual([json.status, json.body], [201, first.body])
    const both = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: 'x', idempotencyKey: 'upload-7' }, headers: { 'idempotency-key': 'upload-7' } })
    assert.deepEqual([both.status, both.body], [201, first.body])

    for (const key of ['', 'k'.repeat(129)]) {
      const refused = await postBytes(srv, 'files', NOT_UTF8, { ...bearer(alice), 'idempotency-key': key })
      assert.deepEqual([refused.status, refused.body.code], [400, 'SB_ERR_VALIDATION'], JSON.stringify(refused.body))
      assert.match(refused.body.message, /idempotency-key/)
    }
    const disagree = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: 'x', idempotencyKey: 'a' }, headers: { 'idempotency-key': 'b' } })
    assert.deepEqual([disagree.status, disagree.body.code], [400, 'SB_ERR_VALIDATION'])
    assert.ok(await postBytes(srv, 'files', NOT_UTF8, { ...bearer(alice), 'idempotency-key': 'k'.repeat(128) }).then(r => r.status === 201), '128 characters is allowed')

    const history = await srv.request('GET', '/rooms/files/messages', { token: alice })
    assert.deepEqual(history.body.publications.map((p: WsFrame) => [p.offset, p.data]), [[1, ALL_BYTES.toString('base64')], [2, NOT_UTF8.toString('base64')]])
  })

  it('bytes over WS_MAX_MESSAGE_BYTES: 413 SB_ERR_PAYLOAD_TOO_LARGE, by Content-Length, chunked and as base64; exactly the limit is published', async (t) => {
    const srv = await setup(t, { WS_MAX_MESSAGE_BYTES: '1024' })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'files' })
    const tooLarge = (res: { status: number, body: { code?: string } }, what: string): void => {
      assert.deepEqual([res.status, res.body.code], [413, 'SB_ERR_PAYLOAD_TOO_LARGE'], `${what}: ${JSON.stringify(res.body)}`)
    }
    tooLarge(await postBytes(srv, 'files', Buffer.alloc(1025, 0xff), bearer(alice)), 'octet-stream')
    tooLarge(await postBytes(srv, 'files', Buffer.alloc(1024 * 1024, 0xff), bearer(alice)), 'a megabyte')
    const chunked = await postChunked(srv, 'files', [Buffer.alloc(1000, 1), Buffer.alloc(1000, 2)], alice)
    tooLarge(chunked, 'chunked')
    assert.equal(chunked.connection, 'close', 'the rest of a refused body is not read')
    tooLarge(await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: Buffer.alloc(1025).toString('base64'), encoding: 'base64' } }), 'base64')

    const atLimit = await postBytes(srv, 'files', Buffer.alloc(1024, 0xff), bearer(alice))
    assert.equal(atLimit.status, 201, JSON.stringify(atLimit.body))
    const asBase64 = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: Buffer.alloc(1024, 0xfe).toString('base64'), encoding: 'base64' } })
    assert.equal(asBase64.status, 201, asBase64.text)
    const chunkedFits = await postChunked(srv, 'files', [Buffer.alloc(500, 1), Buffer.alloc(524, 2)], alice)
    assert.equal(chunkedFits.status, 201, JSON.stringify(chunkedFits.body))
    const history = await srv.request('GET', '/rooms/files/messages', { token: alice })
    assert.deepEqual(history.body.publications.map((p: WsFrame) => Buffer.from(p.data as string, 'base64').length), [1024, 1024, 1024])
  })

  it('a limit above 256 KiB: a JSON body holding a payload at the limit as base64 still fits', async (t) => {
    const srv = await setup(t, { WS_MAX_MESSAGE_BYTES: '300000' })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'files' })
    const atLimit = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: randomBytes(300_000).toString('base64'), encoding: 'base64' } })
    assert.equal(atLimit.status, 201, atLimit.text)
    const over = await srv.request('POST', '/rooms/files/messages', { token: alice, body: { data: randomBytes(300_001).toString('base64'), encoding: 'base64' } })
    assert.deepEqual([over.status, over.body.code], [413, 'SB_ERR_PAYLOAD_TOO_LARGE'])
  })

  it('bad JSON bodies for bytes: invalid base64, encoding beside a non-string, an unknown encoding — 400 naming body/data; nothing is published', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'files' })
    const refused = async (body: unknown, field: RegExp): Promise<void> => {
      const res = await srv.request('POST', '/rooms/files/messages', { token: alice, body })
      assert.deepEqual([res.status, res.body.code], [400, 'SB_ERR_VALIDATION'], `${JSON.stringify(body)}: ${res.text}`)
      assert.match(res.body.message, field, res.text)
    }
    for (const data of ['not base64!', 'YQ', 'YQ=', 'YWJj\n', 'ab-_', '====']) await refused({ data, encoding: 'base64' }, /^body\/data/)
    for (const data of [42, null, true, ['YQ=='], { b: 'YQ==' }]) await refused({ data, encoding: 'base64' }, /^body\/data/)
    await refused({ data: 'YQ==', encoding: 'hex' }, /body\/encoding/)
    await refused({ data: 'YQ==', encoding: null }, /body\/encoding/)
    // Without a body at all, neither JSON nor bytes.
    const empty = await fetch(`${srv.url}/rooms/files/messages`, { method: 'POST', headers: bearer(alice) })
    assert.equal(empty.status, 400)
    // A content type the route does not read.
    const text = await fetch(`${srv.url}/rooms/files/messages`, { method: 'POST', headers: { ...bearer(alice), 'content-type': 'text/plain' }, body: 'hello' })
    assert.equal(text.status, 415)
    assert.equal((await srv.request('GET', '/rooms/files/messages', { token: alice })).body.offset, 0)
  })

  it('OpenAPI documents both request bodies (octet-stream as binary), the Idempotency-Key header, and encoding in history', async (t) => {
    const srv = await setup(t)
    const res = await srv.request('GET', '/docs/json')
    assert.equal(res.status, 200)
    const post = res.body.paths['/rooms/{id}/messages'].post
    assert.deepEqual(Object.keys(post.requestBody.content).sort(), ['application/json', 'application/octet-stream'])
    assert.deepEqual([post.requestBody.content['application/octet-stream'].schema.type, post.requestBody.content['application/octet-stream'].schema.format], ['string', 'binary'])
    assert.deepEqual(post.requestBody.content['application/json'].schema.properties.encoding.enum, ['base64'])
    const header = post.parameters.find((p: { in: string, name: string }) => p.in === 'header' && p.name === 'idempotency-key')
    assert.ok(header !== undefined, JSON.stringify(post.parameters))
    assert.deepEqual([header.schema.minLength, header.schema.maxLength], [1, 128])
    assert.ok(post.responses['413'] !== undefined)
    // A History (the window) or, with before/after, a page through the archive: both list publications.
    const answer = res.body.paths['/rooms/{id}/messages'].get.responses['200'].content['application/json'].schema
    const shapes = (answer.anyOf ?? [answer]) as Array<{ properties: { publications: { items: { properties: { encoding: { enum: string[] } } } } } }>
    assert.equal(shapes.length, 2)
    for (const shape of shapes) assert.deepEqual(shape.properties.publications.items.properties.encoding.enum, ['base64'])
  })
})

// ---------------------------------------------------------------------------------------
// Recovery

describe('ws rooms: recovery', () => {
  it('a reconnecting client gets exactly what it missed, then live messages continue with no gap and no duplicate', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'lobby' })
    const a = await wsConnect(t, srv, { token: alice })
    const b1 = await wsConnect(t, srv, { token: bob })
    await subscribe(b1, 'lobby')
    await publish(a, 'lobby', 'm1')
    await publish(a, 'lobby', 'm2')
    const last = await b1.next(f => f.type === 'message' && f.offset === 2)
    await closeClient(b1)

    for (let i = 3; i <= 5; i++) await publish(a, 'lobby', `m${i}`)
    const b2 = await wsConnect(t, srv, { token: bob })
    const reply = await subscribe(b2, 'lobby', { epoch: last.epoch as string, offset: last.offset as number })
    assert.equal(reply.recovered, true)
    assert.equal(reply.epoch, last.epoch)
    assert.equal(reply.offset, 5)
    assert.deepEqual(reply.publications.map((p: { offset: number, data: unknown, from: { id: string } }) => [p.offset, p.data, p.from.id]), [[3, 'm3', 'alice'], [4, 'm4', 'alice'], [5, 'm5', 'alice']])
    for (const p of reply.publications) assert.ok(Number.isInteger(p.ts))

    await publish(a, 'lobby', 'm6')
    await b2.next(f => f.type === 'message' && f.offset === 6)
    await settle(b2)
    assert.deepEqual(offsetsIn(b2, 'lobby'), [6], 'live continues at the next offset, nothing replayed')
  })

  it('nothing missed: recovered with no publications', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'lobby' })
    const a = await wsConnect(t, srv, { token: alice })
    const { epoch } = await publish(a, 'lobby', 'm1')
    const b = await wsConnect(t, srv, { token: alice })
    const reply = await subscribe(b, 'lobby', { epoch, offset: 1 })
    assert.deepEqual({ ...reply }, { room: 'lobby', epoch, offset: 1, recovered: true, publications: [] })
  })

  it('a wrong epoch: not recovered, with the current position and no publications', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'lobby' })
    const a = await wsConnect(t, srv, { token: alice })
    await publish(a, 'lobby', 'm1')
    const { epoch } = await publish(a, 'lobby', 'm2')
    const b = await wsConnect(t, srv, { token: alice })
    const reply = await subscribe(b, 'lobby', { epoch: 'another-epoch', offset: 1 })
    assert.deepEqual({ ...reply }, { room: 'lobby', epoch, offset: 2, recovered: false, publications: [] })
    await publish(a, 'lobby', 'm3')
    await b.next(f => f.type === 'message' && f.offset === 3)
    await settle(b)
    assert.deepEqual(offsetsIn(b, 'lobby'), [3], 'live from the current position')
  })

  it('more missed than historySize: not recovered', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'small', historySize: 3 })
    const a = await wsConnect(t, srv, { token: alice })
    const { epoch } = await publish(a, 'small', 'm1')
    for (let i = 2; i <= 6; i++) await publish(a, 'small', `m${i}`)
    const b = await wsConnect(t, srv, { token: alice })
    const lost = await subscribe(b, 'small', { epoch, offset: 1 })
    assert.deepEqual({ ...lost }, { room: 'small', epoch, offset: 6, recovered: false, publications: [] })
    // Within the window it still recovers: the limit is the history, not the epoch.
    const c = await wsConnect(t, srv, { token: alice })
    const kept = await subscribe(c, 'small', { epoch, offset: 3 })
    assert.equal(kept.recovered, true)
    assert.deepEqual(kept.publications.map((p: { offset: number }) => p.offset), [4, 5, 6])
  })

  it('expired history (historyTtlSeconds: 1): not recovered', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, { id: 'brief', historyTtlSeconds: 1 })
    const a = await wsConnect(t, srv, { token: alice })
    const { epoch } = await publish(a, 'brief', 'm1')
    await publish(a, 'brief', 'm2')
    // Waits on the server's own view (the history emptying), not on a fixed sleep.
    await waitFor(async () => (await srv.request('GET', '/rooms/brief/messages', { token: alice })).body.publications.length === 0, 'history to expire', 10_000)
    const b = await wsConnect(t, srv, { token: alice })
    const reply = await subscribe(b, 'brief', { epoch, offset: 1 })
    assert.deepEqual({ ...reply }, { room: 'brief', epoch, offset: 2, recovered: false, publications: [] })
  })
})

/**
 * A subscriber that closes its socket and resubscribes on a new one with the last position it
 * saw, recording every offset it received (recovered, then live) across all its sessions.
 */
class Resubscriber {
  private readonly sessions: Array<{ client: WsClient, reply: WsFrame }> = []
  private connected = false

  constructor (private readonly open: () => Promise<WsClient>, private readonly room: string) {}

  /** Offsets of one session in arrival order: the subscribe reply's publications, then live messages. */
  private static offsetsOf (session: { client: WsClient, reply: WsFrame }, room: string): number[] {
    const replyAt = session.client.frames.indexOf(session.reply)
    const live = session.client.frames.filter(f => f.type === 'message' && f.room === room)
    for (const m of live) assert.ok(session.client.frames.indexOf(m) > replyAt, 'no message before the subscribe reply')
    return [...session.reply.result.publications.map((p: { offset: number }) => p.offset), ...live.map(m => m.offset as number)]
  }

  received (): number[] {
    return this.sessions.flatMap(s => Resubscriber.offsetsOf(s, this.room))
  }

  private position (): Position | undefined {
    const last = this.sessions[this.sessions.length - 1]
    if (last === undefined) return undefined
    const offsets = Resubscriber.offsetsOf(last, this.room)
    return { epoch: last.reply.result.epoch as string, offset: offsets[offsets.length - 1] ?? last.reply.result.offset as number }
  }

  async connect (): Promise<void> {
    const since = this.position()
    const client = await this.open()
    const reply = await client.command({ type: 'subscribe', room: this.room, ...(since === undefined ? {} : { since }) })
    assert.equal(reply.type, 'reply', JSON.stringify(reply))
    if (since !== undefined) {
      assert.equal(reply.result.recovered, true, `recovery from ${JSON.stringify(since)}: ${JSON.stringify(reply.result)}`)
      const last = reply.result.publications[reply.result.publications.length - 1]
      assert.equal(reply.result.offset, last?.offset ?? since.offset)
    }
    this.sessions.push({ client, reply })
    this.connected = true
  }

  async disconnect (): Promise<void> {
    const last = this.sessions[this.sessions.length - 1]
    assert.ok(last !== undefined && this.connected)
    this.connected = false
    await closeClient(last.client)
  }

  async toggle (): Promise<void> {
    if (this.connected) await this.disconnect()
    else await this.connect()
  }

  /** Reconnects if needed and waits until offset `n` has arrived. */
  async finish (n: number): Promise<number[]> {
    if (!this.connected) await this.connect()
    await waitFor(() => this.received().includes(n), `offset ${n} to arrive`, 5000)
    await settle(this.sessions[this.sessions.length - 1]!.client)
    for (const { client } of this.sessions) {
      assert.deepEqual(client.frames.filter(f => f.type === 'unsubscribed'), [], 'continuity kept: no resubscribe request')
    }
    return this.received()
  }
}

describe('ws rooms: recovery property', () => {
  it('across random disconnects, a subscriber receives exactly 1..N, each once, in order', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const pub = await wsConnect(t, srv, { token: alice })
    let run = 0

    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: 30 }).chain(n => fc.record({
        n: fc.constant(n),
        // Before publishing message i (i = n: after the last) the subscriber toggles: it
        // disconnects if connected, reconnects with its last position if not.
        toggles: fc.uniqueArray(fc.integer({ min: 0, max: n }), { maxLength: 6 })
      })),
      async ({ n, toggles }) => {
        const room = `seq-${++run}`
        await createRoom(srv, alice, { id: room })
        const sub = new Resubscriber(() => wsConnect(t, srv, { token: bob }), room)
        await sub.connect()
        for (let i = 0; i <= n; i++) {
          if (toggles.includes(i)) await sub.toggle()
          if (i < n) assert.equal((await publish(pub, room, i + 1)).offset, i + 1)
        }
        assert.deepEqual(await sub.finish(n), range(1, n))
      }
    ), { numRuns: 25 })
  })

  it('with two concurrent publishers while the subscriber reconnects, nothing is lost or repeated', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const pubA = await wsConnect(t, srv, { token: alice })
    // A second socket of the room's owner: publishing needs membership in a public room.
    const pubB = await wsConnect(t, srv, { token: alice })
    let run = 0

    await fc.assert(fc.asyncProperty(concurrentPlan, async (plan) => {
      const room = `par-${++run}`
      await createRoom(srv, alice, { id: room })
      await concurrentRun(plan, {
        subscriber: new Resubscriber(() => wsConnect(t, srv, { token: bob }), room),
        publishA: async (data) => { await publish(pubA, room, data) },
        publishB: async (data) => {
          if (plan.viaHttp) await httpPublish(srv, room, data, { token: alice })
          else await publish(pubB, room, data)
        }
      })
    }), { numRuns: 20 })
  })

  it('the live buffer of a recovering subscription merges with history (core with a slow history read)', async (t) => {
    // With the embedded engine a history read takes only microtasks, so over the full server
    // no publication ever lands in the recovery buffer. Here the same core runs behind a real
    // ws server with a history that yields to the event loop before and after reading: a
    // publication may then be in both the history answer and the buffer (merged away) or only
    // in the buffer (delivered after the reply).
    const stats = { reading: 0, overlapped: 0 }
    const { url } = await coreServer(t, { engine: slowHistory(createMemoryEngine(), stats) })
    const pubA = await wsConnect(t, { url }, { query: '?user=alice' })
    const pubB = await wsConnect(t, { url }, { query: '?user=carol' })
    let run = 0

    // The plan's viaHttp does not apply here: this server has no HTTP API.
    await fc.assert(fc.asyncProperty(concurrentPlan, async (plan) => {
      const room = `buf-${++run}`
      await concurrentRun(plan, {
        subscriber: new Resubscriber(() => wsConnect(t, { url }, { query: '?user=bob' }), room),
        publishA: async (data) => { await publish(pubA, room, data) },
        publishB: async (data) => { await publish(pubB, room, data) }
      })
    }), { numRuns: 25 })
    assert.ok(stats.overlapped > 0, 'some publications happened while a subscription was recovering')
  })
})

const concurrentPlan = fc.record({
  a: fc.integer({ min: 1, max: 15 }),
  b: fc.integer({ min: 1, max: 15 }),
  // After this many acknowledged publications the subscriber drops and resubscribes at once.
  bounces: fc.uniqueArray(fc.integer({ min: 0, max: 30 }), { maxLength: 4 }),
  viaHttp: fc.boolean()
})

/** Two publishers race each other while the subscriber drops and resubscribes at the planned points. */
async function concurrentRun (
  plan: { a: number, b: number, bounces: number[] },
  io: { subscriber: Resubscriber, publishA: (data: string) => Promise<void>, publishB: (data: string) => Promise<void> }
): Promise<void> {
  const n = plan.a + plan.b
  let acked = 0
  const waiters: Array<{ at: number, resolve: () => void }> = []
  const ack = (): void => {
    acked++
    for (const w of [...waiters]) {
      if (acked >= w.at) { waiters.splice(waiters.indexOf(w), 1); w.resolve() }
    }
  }
  const whenAcked = (at: number): Promise<void> => acked >= at ? Promise.resolve() : new Promise(resolve => waiters.push({ at, resolve }))
  const sub = io.subscriber
  await sub.connect()
  const publisher = async (count: number, name: string, send: (data: string) => Promise<void>): Promise<void> => {
    for (let i = 0; i < count; i++) { await send(`${name}${i}`); ack() }
  }
  const resubscriber = async (): Promise<void> => {
    for (const at of [...plan.bounces].sort((x, y) => x - y).filter(x => x <= n)) {
      await whenAcked(at)
      await sub.disconnect()
      await sub.connect()
    }
  }
  await Promise.all([publisher(plan.a, 'a', io.publishA), publisher(plan.b, 'b', io.publishB), resubscriber()])
  assert.deepEqual(await sub.finish(n), range(1, n))
}

/** Yields to the event loop (a few timer turns) so socket I/O can run in between. */
function yieldToIo (): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, Math.floor(Math.random() * 3)))
}

/** The memory engine with history reads that let the event loop run before and after reading. */
function slowHistory (inner: Engine, stats: { reading: number, overlapped: number }): Engine {
  const slow = <A extends unknown[], R>(read: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
    stats.reading++
    try {
      await yieldToIo()
      const result = await read(...args)
      await yieldToIo()
      return result
    } finally {
      stats.reading--
    }
  }
  return {
    kind: inner.kind,
    broker: {
      ...inner.broker,
      publish: async (room, request, options) => {
        if (stats.reading > 0) stats.overlapped++
        return await inner.broker.publish(room, request, options)
      }
    },
    history: { ...inner.history, history: slow(inner.history.history), position: slow(inner.history.position) },
    presence: inner.presence,
    close: () => inner.close()
  }
}

const OPEN_ROOM: RoomGrant = { stream: { historySize: 1000, historyTtlSeconds: 3600 }, presenceEvents: true }

/**
 * The real-time core behind a bare ws server (no Fastify, no store): `?user=<id>` names the
 * connecting user; every room is open to everyone unless the test brings its own authorizer.
 */
async function coreServer (t: TestContext, options: { engine?: Engine, authorize?: Authorizer, log?: Logger } = {}): Promise<{ url: string, node: RealtimeNode }> {
  const silent: Logger = { debug () {}, info () {}, warn () {}, error () {}, child: () => silent }
  const engine = options.engine ?? createMemoryEngine()
  const node = createRealtimeNode({
    engine,
    authorize: options.authorize ?? (async () => OPEN_ROOM),
    verifyToken: () => { throw new Error('no refresh here') },
    prepareFrame: prepareWsFrame,
    limits: {
      maxMessageBytes: 65_536,
      messagesPerSecond: 100_000,
      messagesBurst: 100_000,
      maxSubscriptions: 100,
      maxBufferedBytes: 1_048_576,
      heartbeatMs: 25_000,
      idleTimeoutMs: 60_000,
      tokenClockToleranceMs: 0,
      maxConnectionsPerUser: 1000,
      maxConnectionsPerIp: 10_000,
      maxRecoveryPublications: 1000,
      historyPageBytes: 1_048_576
    },
    metrics: noopMetrics,
    log: options.log ?? silent
  })
  const server = http.createServer()
  const wss = new WebSocketServer({ server, perMessageDeflate: false })
  wss.on('connection', (socket, request) => {
    const userId = new URL(request.url ?? '/', 'http://x').searchParams.get('user') ?? 'anonymous'
    const principal: UserPrincipal = { kind: 'user', userId, role: 'user', tokenId: 't', expiresAt: Math.floor(Date.now() / 1000) + 3600, sessionId: 's' }
    const connection = node.connect(wsTransport(socket), principal, { ip: '127.0.0.1' })
    attachWsEvents(socket, connection)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    node.close()
    await engine.close()
    wss.close()
    await new Promise(resolve => server.close(resolve))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return { url: `http://127.0.0.1:${address.port}`, node }
}

/** A promise with its resolver, for holding a step of the core at a chosen point. */
function gate (): { promise: Promise<void>, open: () => void } {
  let open!: () => void
  const promise = new Promise<void>(resolve => { open = resolve })
  return { promise, open }
}

// ---------------------------------------------------------------------------------------
// Live revocation

describe('ws rooms: live revocation', () => {
  it('removing a member of a private room ends their subscriptions before the 204; nothing reaches them after', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'secret', visibility: 'private' })
    await createRoom(srv, alice, { id: 'barrier' })
    await addMember(srv, alice, 'secret', 'bob')
    await addMember(srv, alice, 'secret', 'root')

    const a = await wsConnect(t, srv, { token: alice })
    const b1 = await wsConnect(t, srv, { token: bob })
    const b2 = await wsConnect(t, srv, { token: bob })
    const r = await wsConnect(t, srv, { token: root })
    for (const c of [a, b1, b2, r]) await subscribe(c, 'secret')
    await subscribe(b1, 'barrier')
    await subscribe(b2, 'barrier')
    await publish(a, 'secret', 'before')
    for (const c of [b1, b2]) await c.next(f => f.type === 'message' && f.room === 'secret' && f.offset === 1)

    const removed = await srv.request('DELETE', '/rooms/secret/members/bob', { token: alice })
    assert.equal(removed.status, 204, removed.text)
    // Server state right after the 204: no connection of bob is in the room any more.
    const conns = await srv.request('GET', '/admin/connections?user=bob', { token: root })
    assert.equal(conns.body.items.length, 2)
    for (const c of conns.body.items) assert.deepEqual(c.rooms, ['barrier'])
    assert.deepEqual((await srv.request('GET', '/admin/connections?room=secret', { token: root })).body.items.map((c: { principal: string }) => c.principal).sort(), ['alice', 'root'])

    for (let i = 0; i < 3; i++) await httpPublish(srv, 'secret', `after ${i}`, { token: alice })
    await publish(a, 'secret', 'after ws')
    await httpPublish(srv, 'barrier', 'marker', { token: alice })
    for (const c of [b1, b2]) {
      await c.next(f => f.type === 'message' && f.room === 'barrier')
      await settle(c)
      assert.deepEqual(c.frames.filter(f => f.type === 'unsubscribed'), [{ type: 'unsubscribed', room: 'secret', reason: 'removed' }])
      assert.deepEqual(offsetsIn(c, 'secret'), [1], 'nothing published after the 204 reached bob')
      const unsubscribedAt = c.frames.findIndex(f => f.type === 'unsubscribed')
      assert.ok(c.frames.findIndex(f => f.type === 'message' && f.room === 'secret') < unsubscribedAt)
      await expectError(c, { type: 'subscribe', room: 'secret' }, 'not_found')
    }
    // Admins are not revoked, even when removed.
    assert.equal((await srv.request('DELETE', '/rooms/secret/members/root', { token: alice })).status, 204)
    await publish(a, 'secret', 'admins still read')
    await r.next(f => f.type === 'message' && f.offset === 6)
    await settle(r)
    assert.deepEqual(offsetsIn(r, 'secret'), range(1, 6))
    assert.equal(r.frames.filter(f => f.type === 'unsubscribed').length, 0)
  })

  it('a ban ends the subscription with reason banned, in private and public rooms', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const carol = await srv.userToken('carol')
    await createRoom(srv, alice, { id: 'secret', visibility: 'private' })
    await createRoom(srv, alice, { id: 'lobby' })
    await addMember(srv, alice, 'secret', 'bob')

    const b = await wsConnect(t, srv, { token: bob })
    const c = await wsConnect(t, srv, { token: carol })
    const r = await wsConnect(t, srv, { token: root })
    await subscribe(b, 'secret')
    await subscribe(c, 'lobby') // a non-member reader of a public room
    await subscribe(r, 'lobby')

    assert.equal((await srv.request('PUT', '/rooms/secret/bans/bob', { token: alice, body: {} })).status, 201)
    assert.equal((await srv.request('PUT', '/rooms/lobby/bans/carol', { token: alice, body: {} })).status, 201)
    assert.equal((await srv.request('PUT', '/rooms/lobby/bans/root', { token: alice, body: {} })).status, 201)
    await httpPublish(srv, 'secret', 'after the ban', { token: alice })
    await httpPublish(srv, 'lobby', 'after the ban', { token: alice })

    await settle(b)
    await settle(c)
    assert.deepEqual(b.frames.filter(f => f.type === 'unsubscribed'), [{ type: 'unsubscribed', room: 'secret', reason: 'banned' }])
    assert.deepEqual(c.frames.filter(f => f.type === 'unsubscribed'), [{ type: 'unsubscribed', room: 'lobby', reason: 'banned' }])
    assert.deepEqual(b.frames.filter(f => f.type === 'message'), [])
    assert.deepEqual(c.frames.filter(f => f.type === 'message'), [])
    await expectError(b, { type: 'subscribe', room: 'secret' }, 'not_found')
    await expectError(c, { type: 'subscribe', room: 'lobby' }, 'forbidden')
    // An admin's ban is recorded but does not limit them.
    await r.next(f => f.type === 'message' && f.room === 'lobby' && f.offset === 1)
    assert.equal(r.frames.filter(f => f.type === 'unsubscribed').length, 0)
  })

  it('deleting a room ends every subscription with room_deleted; a new room with the same id starts a new epoch', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'lobby' })
    const clients = [await wsConnect(t, srv, { token: alice }), await wsConnect(t, srv, { token: bob }), await wsConnect(t, srv, { token: root })]
    for (const c of clients) await subscribe(c, 'lobby')
    const old = await httpPublish(srv, 'lobby', 'm1', { token: alice })
    await httpPublish(srv, 'lobby', 'm2', { token: alice })

    assert.equal((await srv.request('DELETE', '/rooms/lobby', { token: alice })).status, 204)
    assert.deepEqual((await srv.request('GET', '/admin/connections?room=lobby', { token: root })).body.items, [])
    for (const c of clients) {
      await settle(c)
      assert.deepEqual(c.frames.filter(f => f.type === 'unsubscribed'), [{ type: 'unsubscribed', room: 'lobby', reason: 'room_deleted' }])
      await expectError(c, { type: 'subscribe', room: 'lobby' }, 'not_found')
    }

    await createRoom(srv, bob, { id: 'lobby' })
    const b = clients[1]!
    const fresh = await subscribe(b, 'lobby', { epoch: old.epoch, offset: 2 })
    assert.equal(fresh.recovered, false)
    assert.notEqual(fresh.epoch, old.epoch)
    assert.equal(fresh.offset, 0)
    assert.deepEqual(await httpPublish(srv, 'lobby', 'new', { token: bob }), { epoch: fresh.epoch, offset: 1 })
    await b.next(f => f.type === 'message' && f.room === 'lobby' && f.epoch === fresh.epoch && f.offset === 1)
  })

  it('a public room turned private drops non-member subscribers with forbidden; members and admins keep receiving', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const carol = await srv.userToken('carol')
    await createRoom(srv, alice, { id: 'lobby' })
    await addMember(srv, alice, 'lobby', 'bob')
    const [a, b, c, r] = [await wsConnect(t, srv, { token: alice }), await wsConnect(t, srv, { token: bob }), await wsConnect(t, srv, { token: carol }), await wsConnect(t, srv, { token: root })]
    for (const x of [a, b, c, r]) await subscribe(x, 'lobby')
    await httpPublish(srv, 'lobby', 'm1', { token: alice })

    const patched = await srv.request('PATCH', '/rooms/lobby', { token: alice, body: { visibility: 'private' } })
    assert.equal(patched.status, 200, patched.text)
    await httpPublish(srv, 'lobby', 'm2', { token: alice })
    await httpPublish(srv, 'lobby', 'm3', { token: bob })

    await settle(c)
    assert.deepEqual(c.frames.filter(f => f.type === 'unsubscribed'), [{ type: 'unsubscribed', room: 'lobby', reason: 'forbidden' }])
    assert.deepEqual(offsetsIn(c, 'lobby'), [1])
    await expectError(c, { type: 'subscribe', room: 'lobby' }, 'not_found')
    for (const x of [a, b, r]) {
      await x.next(f => f.type === 'message' && f.offset === 3)
      await settle(x)
      assert.deepEqual(offsetsIn(x, 'lobby'), [1, 2, 3])
      assert.equal(x.frames.filter(f => f.type === 'unsubscribed').length, 0)
    }
  })

  it('removing a member of a public room keeps their subscription: they still read as a non-member', async (t) => {
    const srv = await setup(t)
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'lobby' })
    await addMember(srv, alice, 'lobby', 'bob')
    const b = await wsConnect(t, srv, { token: bob })
    await subscribe(b, 'lobby')
    await publish(b, 'lobby', 'as a member')

    assert.equal((await srv.request('DELETE', '/rooms/lobby/members/bob', { token: alice })).status, 204)
    await httpPublish(srv, 'lobby', 'after removal', { token: alice })
    await b.next(f => f.type === 'message' && f.offset === 2)
    await settle(b)
    assert.equal(b.frames.filter(f => f.type === 'unsubscribed').length, 0)
    await expectError(b, { type: 'publish', room: 'lobby', data: 'no longer' }, 'forbidden')
  })
})

describe('ws rooms: revocation racing a subscribe (core behind a real ws server)', () => {
  it('a removal acknowledged while a subscribe is being authorized: nothing reaches the removed user', async (t) => {
    // With PostgreSQL the store answers over the network, so a subscribe can read the
    // membership just before a removal commits and resume just after that removal's
    // revocation ran and found no subscription. The gate below holds exactly that point.
    const members = new Set(['alice', 'bob'])
    const held = gate()
    const reached = gate()
    let holdNext = true
    const authorize: Authorizer = async (principal, _room, operation) => {
      const allowed = principal.kind === 'user' && members.has(principal.userId) // the store read
      if (holdNext && principal.kind === 'user' && principal.userId === 'bob' && operation === 'subscribe') {
        holdNext = false
        reached.open()
        await held.promise
      }
      if (!allowed) throw new RealtimeError('not_found', 'No such room')
      return OPEN_ROOM
    }
    const { url, node } = await coreServer(t, { authorize })
    const a = await wsConnect(t, { url }, { query: '?user=alice' })
    const b = await wsConnect(t, { url }, { query: '?user=bob' })
    await subscribe(a, 'secret')

    const subscribing = b.command({ type: 'subscribe', room: 'secret' })
    await reached.promise
    members.delete('bob')
    await node.applyRoomChange({ type: 'member_removed', room: { id: 'secret', visibility: 'private' }, userId: 'bob' })
    // The removal is acknowledged here; the subscribe's authorization resumes afterwards.
    held.open()
    const answer = await subscribing
    await publish(a, 'secret', 'after the removal')
    await a.next(f => f.type === 'message' && f.offset === 1)
    await settle(b)
    assert.deepEqual(b.frames.filter(f => f.type === 'message'), [], `nothing after the removal reached bob (subscribe answered ${JSON.stringify(answer)})`)
    assert.deepEqual(node.listConnections({ room: 'secret' }).map(c => c.principal), ['alice'])
  })

  it('a subscription revoked while it recovers still answers its subscribe command', async (t) => {
    const stats = { reading: 0, overlapped: 0 }
    const inner = createMemoryEngine()
    const held = gate()
    const reached = gate()
    const slow = slowHistory(inner, stats)
    const engine: Engine = {
      ...slow,
      history: {
        ...slow.history,
        history: async (room, query, options) => {
          reached.open()
          await held.promise
          return await inner.history.history(room, query, options)
        }
      }
    }
    const { url, node } = await coreServer(t, { engine })
    const a = await wsConnect(t, { url }, { query: '?user=alice' })
    const { epoch } = await publish(a, 'lobby', 'm1')
    const b = await wsConnect(t, { url }, { query: '?user=bob' })

    b.send({ type: 'subscribe', id: 'recovering', room: 'lobby', since: { epoch, offset: 0 } })
    await reached.promise
    await node.applyRoomChange({ type: 'room_deleted', room: { id: 'lobby', visibility: 'public' } })
    held.open()
    const answer = await b.next(f => f.id === 'recovering', 5000)
    assert.equal(answer.type, 'error', JSON.stringify(answer))
    const unsubscribed = b.frames.findIndex(f => f.type === 'unsubscribed' && f.room === 'lobby' && f.reason === 'room_deleted')
    assert.ok(unsubscribed !== -1 && unsubscribed < b.frames.indexOf(answer), 'told why first, then the command answered')
    await publish(a, 'lobby', 'later')
    await settle(b)
    assert.deepEqual(b.frames.filter(f => f.type === 'message'), [])
  })
})

// ---------------------------------------------------------------------------------------
// Admin

describe('access re-check after a private room update', () => {
  it('a check that fails with a bug revokes the subscription (fails closed) and logs it at error; an unavailable store keeps it, with a warning', async (t) => {
    const errors: string[] = []
    const warnings: string[] = []
    const log: Logger = { debug () {}, info () {}, warn (_o, m) { warnings.push(m ?? '') }, error (_o, m) { errors.push(m ?? '') }, child: () => log }
    let failure: Error | null = null
    const authorize: Authorizer = async () => {
      if (failure !== null) throw failure
      return OPEN_ROOM
    }
    const { url, node } = await coreServer(t, { authorize, log })
    const room = { id: 'team', visibility: 'private' as const }
    const bob = await wsConnect(t, { url }, { query: '?user=bob' })
    await subscribe(bob, 'team')

    failure = new RealtimeError('unavailable', 'store down')
    await node.applyRoomChange({ type: 'room_updated', room })
    assert.deepEqual(node.listConnections({ room: 'team' }).map(c => c.principal), ['bob'], 'kept while the store cannot say')
    assert.ok(warnings.some(m => m.includes('store unavailable')))

    failure = new TypeError('a bug in the check')
    await node.applyRoomChange({ type: 'room_updated', room })
    await bob.next(f => f.type === 'unsubscribed' && f.room === 'team')
    assert.deepEqual(node.listConnections({ room: 'team' }), [])
    assert.ok(errors.some(m => m.includes('access re-check after a room update failed')))
  })
})

describe('connection logging', () => {
  /** A logger that counts the children made and keeps the debug lines, with debug on or off. */
  function countingLogger (debugOn: boolean): { log: Logger, children: () => number, debugLines: string[] } {
    let children = 0
    const debugLines: string[] = []
    const log: Logger = {
      debug (_obj, msg) { debugLines.push(msg ?? '') },
      info () {},
      warn () {},
      error () {},
      child () { children++; return log },
      isLevelEnabled: level => debugOn || level !== 'debug'
    }
    return { log, children: () => children, debugLines }
  }

  it('a connection that opens and closes builds no logger unless a level it logs at is enabled', async (t) => {
    for (const debugOn of [false, true]) {
      const logger = countingLogger(debugOn)
      const { url, node } = await coreServer(t, { log: logger.log })
      const client = await wsConnect(t, { url }, { query: '?user=alice' })
      client.close()
      await waitFor(() => node.stats().connections === 0, 'the close to be handled')
      if (debugOn) {
        assert.equal(logger.children(), 1, 'debug on: the connection logs its close through its own logger')
        assert.ok(logger.debugLines.includes('connection closed'))
      } else {
        assert.equal(logger.children(), 0, 'debug off: no logger was built for the close line')
      }
    }
  })
})

describe('ws rooms: admin connections API', () => {
  it('lists connections with filters, kicks one or all of a user\'s with 4503; presence follows', async (t) => {
    const srv = await setup(t)
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, { id: 'lobby' })
    const key = await createApiKey(srv, root, 'svc', ['subscribe:*'])

    const before = Date.now()
    const a1 = await wsConnect(t, srv, { token: alice })
    const a2 = await wsConnect(t, srv, { token: alice })
    const a3 = await wsConnect(t, srv, { token: alice })
    const b = await wsConnect(t, srv, { token: bob })
    const k = await wsConnect(t, srv, { apiKey: key })
    await subscribe(a1, 'lobby')
    await subscribe(a2, 'lobby')
    await subscribe(b, 'lobby')
    await subscribe(k, 'lobby')

    const list = async (query = ''): Promise<Array<Record<string, unknown>>> => {
      const res = await srv.request('GET', `/admin/connections${query}`, { token: root })
      assert.equal(res.status, 200, res.text)
      return res.body.items
    }
    const all = await list()
    assert.equal(all.length, 5)
    const first = all.find(c => c.id === a1.welcome.connectionId)
    assert.ok(first !== undefined)
    assert.deepEqual(Object.keys(first).sort(), ['connectedAt', 'id', 'ip', 'kind', 'node', 'principal', 'rooms', 'userAgent'])
    assert.deepEqual({ principal: first.principal, kind: first.kind, ip: first.ip, rooms: first.rooms }, { principal: 'alice', kind: 'user', ip: '127.0.0.1', rooms: ['lobby'] })
    assert.ok(typeof first.connectedAt === 'number' && first.connectedAt >= before && first.connectedAt <= Date.now())
    const ofKey = all.find(c => c.id === k.welcome.connectionId)
    assert.deepEqual([ofKey?.principal, ofKey?.kind], ['key:svc', 'apiKey'])

    const ids = (items: Array<Record<string, unknown>>): string[] => items.map(c => c.id as string).sort()
    assert.deepEqual(ids(await list('?user=alice')), [a1, a2, a3].map(c => c.welcome.connectionId as string).sort())
    assert.deepEqual(ids(await list('?room=lobby')), [a1, a2, b, k].map(c => c.welcome.connectionId as string).sort())
    assert.deepEqual(ids(await list('?user=alice&room=lobby')), [a1, a2].map(c => c.welcome.connectionId as string).sort())
    assert.deepEqual(await list('?user=nobody'), [])
    assert.equal((await srv.request('GET', '/admin/connections', { token: alice })).status, 403)
    assert.equal((await srv.request('GET', '/admin/connections')).status, 401)
    assert.equal((await srv.request('DELETE', `/admin/connections/${a1.welcome.connectionId as string}`, { token: alice })).status, 403)
    assert.equal((await srv.request('DELETE', '/admin/users/alice/connections', { token: alice })).status, 403)

    // One connection.
    const kicked = await srv.request('DELETE', `/admin/connections/${b.welcome.connectionId as string}`, { token: root })
    assert.equal(kicked.status, 204, kicked.text)
    assert.equal((await b.closed).code, 4503)
    await a1.next(f => f.type === 'leave' && f.user?.id === 'bob')
    assert.equal((await srv.request('DELETE', `/admin/connections/${b.welcome.connectionId as string}`, { token: root })).status, 404)
    assert.equal((await srv.request('DELETE', '/admin/connections/no-such-connection', { token: root })).status, 404)

    // Every connection of a user.
    const all3 = await srv.request('DELETE', '/admin/users/alice/connections', { token: root })
    assert.deepEqual([all3.status, all3.body], [200, { closed: 3 }])
    for (const c of [a1, a2, a3]) assert.equal((await c.closed).code, 4503)
    const watcher = await wsConnect(t, srv, { token: root })
    await subscribe(watcher, 'lobby')
    await waitFor(async () => (await list('?user=alice')).length === 0, 'alice\'s connections to be gone')
    assert.deepEqual((await watcher.command({ type: 'presence', room: 'lobby' })).result, { users: ['root'], connections: 1 })
    await k.next(f => f.type === 'leave' && f.user?.id === 'alice')
    assert.deepEqual((await srv.request('DELETE', '/admin/users/alice/connections', { token: root })).body, { closed: 0 })
    await settle(k)
  })
})
