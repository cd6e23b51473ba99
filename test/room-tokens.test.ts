import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { TestContext } from 'node:test'
import { build, skipUnlessRedis, TEST_REDIS_URL, wsConnect, type TestApp } from './helper.js'
import { deleteRedisKeys } from '../support/redis.js'
import { assertCommandError, assertErrorBody, assertReply } from './ws-support.js'
import { idpKey, idpToken, jwksEnv, jwksServer, roomToken, ROOM_SECRET } from './idp-support.js'
import { clients, recorder, waitFor } from './client-support.js'
import type { EndReason } from '@switchboard/client'

/**
 * Room tokens (docs/integration.md, "Room tokens for a private game room"): the application's
 * backend grants operations in rooms to one user without a membership row. Every test runs on
 * real sockets; what the engine does (live delivery, presence, the expiry of a subscription)
 * runs on the in-memory engine and on Redis.
 */

type Engine = 'memory' | 'redis'
const ENGINES: Engine[] = ['memory', 'redis']

/** A server on `engine` with ROOM_TOKEN_SECRET; null (the test skipped) when Redis is not there. */
async function server (t: TestContext, engine: Engine, env: Record<string, string> = {}): Promise<TestApp | null> {
  if (engine === 'redis') {
    const skip = await skipUnlessRedis()
    if (skip !== false) {
      t.skip(skip)
      return null
    }
    const prefix = `sbroomtok:${randomBytes(6).toString('hex')}:`
    t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
    env = { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix, ...env }
  }
  // No clock tolerance: a subscription ends at its token's `exp` exactly (to within the sweep).
  return await build(t, { env: { ROOM_TOKEN_SECRET: ROOM_SECRET, JWT_CLOCK_TOLERANCE: '0', ...env } })
}

/** alice owns the private room `game:42:chat`; bob is nobody's member. */
async function gameRoom (srv: TestApp): Promise<{ alice: string, bob: string }> {
  const [alice, bob] = await Promise.all([srv.userToken('alice'), srv.userToken('bob')])
  const created = await srv.request('POST', '/rooms', { token: alice, body: { id: 'game:42:chat', visibility: 'private' } })
  assert.equal(created.status, 201, created.text)
  return { alice, bob }
}

const grant = (sub: string, rooms: string[], ops: string[], expiresIn = 300): Promise<string> =>
  roomToken(ROOM_SECRET, { claims: { sub, rooms, ops }, expiresIn })

for (const engine of ENGINES) {
  describe(`room tokens (${engine} engine)`, () => {
    it('a token grants its ops in a private room to one user without a membership; without it the room stays hidden', async (t) => {
      const srv = await server(t, engine)
      if (srv === null) return
      const { alice, bob } = await gameRoom(srv)
      const ws = await wsConnect(t, srv, { token: bob })

      // Without a token the private room does not exist for bob.
      assertCommandError(await ws.command({ type: 'subscribe', room: 'game:42:chat' }), 'not_found')

      const token = await grant('bob', ['game:42:*'], ['subscribe', 'publish', 'history', 'presence'])
      const subscribed = assertReply(await ws.command({ type: 'subscribe', room: 'game:42:chat', token }))
      assert.equal(subscribed.room, 'game:42:chat')
      const published = assertReply(await ws.command({ type: 'publish', room: 'game:42:chat', data: { move: 'e4' }, token }))
      const message = await ws.next(f => f.type === 'message' && f.offset === published.offset)
      assert.deepEqual(message.data, { move: 'e4' })
      assert.deepEqual(message.from, { id: 'bob' })
      const history = assertReply(await ws.command({ type: 'history', room: 'game:42:chat', token }))
      assert.deepEqual((history.publications as Array<{ data: unknown }>).map(p => p.data), [{ move: 'e4' }])
      const presence = assertReply(await ws.command({ type: 'presence', room: 'game:42:chat', token }))
      assert.deepEqual(presence.users, ['bob'])
      // The token is not a membership: without it, publishing is still refused.
      assertCommandError(await ws.command({ type: 'publish', room: 'game:42:chat', data: 1 }), 'not_found')
      const members = await srv.request('GET', '/rooms/game:42:chat/members', { token: alice })
      assert.deepEqual((members.body.items as Array<{ userId: string }>).map(m => m.userId), ['alice'])

      // The same over HTTP with X-Room-Token.
      const headers = { 'x-room-token': token }
      const posted = await srv.request('POST', '/rooms/game:42:chat/messages', { token: bob, headers, body: { data: { move: 'e5' } } })
      assert.equal(posted.status, 201, posted.text)
      await ws.next(f => f.type === 'message' && f.offset === posted.body.offset)
      const read = await srv.request('GET', '/rooms/game:42:chat/messages', { token: bob, headers })
      assert.equal(read.status, 200, read.text)
      assert.equal(read.body.publications.length, 2)
      const who = await srv.request('GET', '/rooms/game:42:chat/presence', { token: bob, headers })
      assert.deepEqual(who.body.users, ['bob'])
      assert.equal((await srv.request('GET', '/rooms/game:42:chat/messages', { token: bob })).status, 404)
    })

    it('a token grants only its ops, its rooms, existing rooms; a ban wins, also over a live subscription', async (t) => {
      const srv = await server(t, engine)
      if (srv === null) return
      const { alice, bob } = await gameRoom(srv)
      const ws = await wsConnect(t, srv, { token: bob })
      const readOnly = await grant('bob', ['game:42:chat'], ['subscribe'])

      assertCommandError(await ws.command({ type: 'publish', room: 'game:42:chat', data: 1, token: readOnly }), 'forbidden')
      assertCommandError(await ws.command({ type: 'history', room: 'game:42:chat', token: readOnly }), 'forbidden')
      const http = await srv.request('POST', '/rooms/game:42:chat/messages', { token: bob, headers: { 'x-room-token': readOnly }, body: { data: 1 } })
      assertErrorBody(http.body, 403, 'SB_ERR_FORBIDDEN')
      // A room the token does not name, and a room it names that does not exist.
      assert.equal((await srv.request('POST', '/rooms', { token: alice, body: { id: 'game:43:chat', visibility: 'private' } })).status, 201)
      assertCommandError(await ws.command({ type: 'subscribe', room: 'game:43:chat', token: readOnly }), 'forbidden')
      assertCommandError(await ws.command({ type: 'subscribe', room: 'game:42:gone', token: await grant('bob', ['game:42:*'], ['subscribe']) }), 'not_found')

      // Live, then banned: the subscription ends with `banned`, and the token no longer opens it.
      assertReply(await ws.command({ type: 'subscribe', room: 'game:42:chat', token: readOnly }))
      assert.equal((await srv.request('PUT', '/rooms/game:42:chat/bans/bob', { token: alice, body: {} })).status, 201)
      const ended = await ws.next(f => f.type === 'unsubscribed')
      assert.deepEqual(ended, { type: 'unsubscribed', room: 'game:42:chat', reason: 'banned' })
      assertCommandError(await ws.command({ type: 'subscribe', room: 'game:42:chat', token: readOnly }), 'forbidden')
    })

    it('a subscription made with a token ends with token_expired at its exp, unless a room_token command renewed it', async (t) => {
      const srv = await server(t, engine)
      if (srv === null) return
      const { bob } = await gameRoom(srv)
      const carol = await srv.userToken('carol')
      const renewing = await wsConnect(t, srv, { token: bob })
      const expiring = await wsConnect(t, srv, { token: carol })

      // Both tokens expire in two seconds, bob's minted first (so no later than carol's); bob
      // renews his, carol does not.
      const short = [await grant('bob', ['game:42:chat'], ['subscribe'], 2), await grant('carol', ['game:42:chat'], ['subscribe'], 2)]
      assertReply(await renewing.command({ type: 'subscribe', room: 'game:42:chat', token: short[0] }))
      assertReply(await expiring.command({ type: 'subscribe', room: 'game:42:chat', token: short[1] }))
      const fresh = await grant('bob', ['game:42:chat'], ['subscribe'], 600)
      const renewed = assertReply(await renewing.command({ type: 'room_token', room: 'game:42:chat', token: fresh }))
      const exp = (JSON.parse(Buffer.from(fresh.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp
      assert.deepEqual(renewed, { tokenExpiresAt: exp * 1000 })

      const ended = await expiring.next(f => f.type === 'unsubscribed', 15_000)
      assert.deepEqual(ended, { type: 'unsubscribed', room: 'game:42:chat', reason: 'token_expired' })
      // Carol's expiry was seen by the same sweep as bob's old one: a publication now reaches
      // bob, whose subscription lives on, and not carol.
      const published = await srv.request('POST', '/rooms/game:42:chat/messages', { token: carol, headers: { 'x-room-token': await grant('carol', ['game:42:chat'], ['publish']) }, body: { data: 'after' } })
      assert.equal(published.status, 201, published.text)
      await renewing.next(f => f.type === 'message' && f.data === 'after')
      assert.equal(renewing.frames.filter(f => f.type === 'unsubscribed').length, 0)
      assertReply(await expiring.command({ type: 'ping' }))
      assert.equal(expiring.frames.filter(f => f.type === 'message').length, 0)
      // The connection itself lives on: carol subscribes again with a fresh token.
      assertReply(await expiring.command({ type: 'subscribe', room: 'game:42:chat', token: await grant('carol', ['game:42:chat'], ['subscribe']) }))

      // room_token needs a live subscription made with a token, for the same user and room.
      assertCommandError(await renewing.command({ type: 'room_token', room: 'game:43:chat', token: fresh }), 'conflict')
      assertCommandError(await renewing.command({ type: 'room_token', room: 'game:42:chat', token: await grant('carol', ['game:42:chat'], ['subscribe']) }), 'forbidden')
      assertCommandError(await renewing.command({ type: 'room_token', room: 'game:42:chat', token: await grant('bob', ['game:42:chat'], ['subscribe'], -60) }), 'forbidden')
    })
  })
}

describe('room tokens: live rules', () => {
  it('a room made private keeps its token subscribers; a member\'s own subscription needs no token and never expires with one', async (t) => {
    const srv = await build(t, { env: { ROOM_TOKEN_SECRET: ROOM_SECRET } })
    const [alice, bob] = await Promise.all([srv.userToken('alice'), srv.userToken('bob')])
    assert.equal((await srv.request('POST', '/rooms', { token: alice, body: { id: 'arena' } })).status, 201)
    const guest = await wsConnect(t, srv, { token: bob })
    assertReply(await guest.command({ type: 'subscribe', room: 'arena', token: await grant('bob', ['arena'], ['subscribe']) }))
    const outsider = await wsConnect(t, srv, { token: await srv.userToken('carol') })
    assertReply(await outsider.command({ type: 'subscribe', room: 'arena' }))
    assert.equal((await srv.request('PATCH', '/rooms/arena', { token: alice, body: { visibility: 'private' } })).status, 200)
    await outsider.next(f => f.type === 'unsubscribed' && f.reason === 'forbidden')
    const owner = await wsConnect(t, srv, { token: alice })
    const published = assertReply(await owner.command({ type: 'publish', room: 'arena', data: 'still here' }))
    await guest.next(f => f.type === 'message' && f.offset === published.offset)
    assert.equal(guest.frames.filter(f => f.type === 'unsubscribed').length, 0)
    // A subscription on standing has nothing to renew.
    assertReply(await owner.command({ type: 'subscribe', room: 'arena' }))
    assertCommandError(await owner.command({ type: 'room_token', room: 'arena', token: await grant('alice', ['arena'], ['subscribe']) }), 'conflict')
  })

  it('the identity provider signs room tokens for its own users, with its issuer and audience', async (t) => {
    const key = await idpKey('ES256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks) })
    const owner = await idpToken(key, 'owner')
    assert.equal((await srv.request('POST', '/rooms', { token: owner, body: { id: 'game:7:chat', visibility: 'private' } })).status, 201)
    const ws = await wsConnect(t, srv, { token: await idpToken(key, 'guest') })
    const token = await roomToken(key, { claims: { sub: 'ext:guest', rooms: ['game:7:*'], ops: ['subscribe', 'publish'] } })
    assertReply(await ws.command({ type: 'subscribe', room: 'game:7:chat', token }))
    assertReply(await ws.command({ type: 'publish', room: 'game:7:chat', data: 'hi', token }))
    // Without ROOM_TOKEN_SECRET, a token signed with any secret is refused.
    assertCommandError(await ws.command({ type: 'publish', room: 'game:7:chat', data: 'hi', token: await grant('ext:guest', ['game:7:chat'], ['publish']) }), 'forbidden')
  })
})

describe('room tokens: the SDK', () => {
  it('getRoomToken: subscribes with a token, renews it with room_token before it expires, and is asked only for its rooms', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: { ROOM_TOKEN_SECRET: ROOM_SECRET, JWT_CLOCK_TOLERANCE: '0' } })
    const { alice, bob } = await gameRoom(srv)
    assert.equal((await srv.request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })).status, 201)
    const asked: string[] = []
    // Tokens of four seconds: renewed at half their remaining life, again and again.
    const { client: sdk, errors } = client({
      url: srv.url,
      token: bob,
      getRoomToken: async (room) => {
        asked.push(room)
        return room.startsWith('game:') ? await grant('bob', [room], ['subscribe'], 4) : null
      }
    })
    const game = recorder()
    const subscription = await sdk.subscribe('game:42:chat', game.handler)
    let subscribed = 0
    subscription.on('subscribed', () => { subscribed++ })
    const ends: EndReason[] = []
    subscription.on('end', (event) => { ends.push(event.reason) })
    await sdk.subscribe('lobby', () => {})
    assert.deepEqual(asked, ['game:42:chat', 'lobby'])

    // Three renewals: past the first token's expiry, with no token_expired on the way.
    await waitFor(() => `renewals: ${JSON.stringify(asked)}`, () => asked.filter(room => room === 'game:42:chat').length >= 4)
    const owner = await wsConnect(t, srv, { token: alice })
    const published = assertReply(await owner.command({ type: 'publish', room: 'game:42:chat', data: 'still live' }))
    await waitFor('the publication', () => game.messages().some(m => m.offset === published.offset))
    assert.equal(subscribed, 0, 'never subscribed again')
    assert.deepEqual(ends, [])
    assert.deepEqual(errors, [])
    assert.equal(asked.filter(room => room === 'lobby').length, 1, 'a room without a token is asked about once')
  })

  it('a room token given to subscribe without getRoomToken ends with token_expired', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: { ROOM_TOKEN_SECRET: ROOM_SECRET, JWT_CLOCK_TOLERANCE: '0' } })
    const { bob } = await gameRoom(srv)
    const { client: sdk } = client({ url: srv.url, token: bob })
    const subscription = await sdk.subscribe('game:42:chat', () => {}, { roomToken: await grant('bob', ['game:42:chat'], ['subscribe', 'history'], 1) })
    const ended = await new Promise<EndReason>(resolve => subscription.on('end', event => resolve(event.reason)))
    assert.equal(ended, 'token_expired')
    assert.equal(subscription.state, 'ended')
    // The per-call tokens of history and presence.
    const page = await sdk.history('game:42:chat', { roomToken: await grant('bob', ['game:42:chat'], ['history']) })
    assert.equal(page.publications.length, 0)
    const who = await sdk.presence('game:42:chat', { roomToken: await grant('bob', ['game:42:chat'], ['presence']) })
    assert.deepEqual(who.users, [])
  })
})
