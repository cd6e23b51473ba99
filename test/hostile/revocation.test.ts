import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import { deleteRedisKeys } from '../../support/redis.js'
import {
  build, PASSWORD, skipUnlessRedis, skipUnlessStore, STORE_KINDS, tempDir, TEST_REDIS_URL, wsConnect, type StoreKind, type TestApp, type WsClient
} from '../helper.js'

/*
 * Issue 19, findings 6 and 8: revocation that bites. After a logout or a detected refresh-token
 * reuse the session's access tokens stop working at once, on REST, on new handshakes and on
 * the sockets already open (closed with 4001); an account removed from the store gets 401
 * everywhere (never a 500) and its sockets are closed with the terminal 4504. Every wait is
 * for an event (a close frame, a reply) with a generous bound; nothing asserts on timing.
 */

const CLOSE_WAIT_MS = 15_000
const skipRedis = await skipUnlessRedis()
const skipStore: Record<StoreKind, false | string> = { sqlite: false, postgres: await skipUnlessStore('postgres') }

interface Session { accessToken: string, refreshToken: string }

async function signIn (srv: TestApp, user: string): Promise<Session> {
  const res = await srv.request('POST', '/auth/login', { body: { username: user, password: PASSWORD } })
  assert.equal(res.status, 200, res.text)
  return { accessToken: res.body.accessToken as string, refreshToken: res.body.refreshToken as string }
}

async function closedWith (client: WsClient): Promise<number> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`socket not closed within ${CLOSE_WAIT_MS} ms`)), CLOSE_WAIT_MS)
  })
  try {
    return (await Promise.race([client.closed, timeout])).code
  } finally {
    clearTimeout(timer)
  }
}

/** A handshake with this token is refused before the upgrade; resolves with the HTTP status. */
async function handshakeStatus (t: TestContext, srv: { url: string }, token: string): Promise<number> {
  try {
    const client = await wsConnect(t, srv, { token })
    client.close()
    return 101
  } catch (err) {
    return (err as { statusCode?: number }).statusCode ?? 0
  }
}

/** The socket still serves commands: a barrier after which a close that was coming has come. */
async function stillOpen (client: WsClient): Promise<void> {
  const reply = await client.command({ type: 'ping' })
  assert.equal(reply.type, 'reply')
}

describe('hostile: revocation (issue 19, findings 6 and 8)', () => {
  it('logout ends the session\'s access token on REST, handshakes and its open sockets; other sessions live', async (t) => {
    const srv = await build(t)
    await srv.createUser('alice')
    const phone = await signIn(srv, 'alice')
    const laptop = await signIn(srv, 'alice')
    const phoneSocket = await wsConnect(t, srv, { token: phone.accessToken })
    const laptopSocket = await wsConnect(t, srv, { token: laptop.accessToken })

    const logout = await srv.request('POST', '/auth/logout', { body: { refreshToken: phone.refreshToken } })
    assert.equal(logout.status, 204)

    assert.equal(await closedWith(phoneSocket), CloseCodes.TOKEN_EXPIRED)
    const me = await srv.request('GET', '/auth/me', { token: phone.accessToken })
    assert.equal(me.status, 401)
    assert.equal(me.body.code, 'SB_ERR_INVALID_TOKEN')
    assert.equal(await handshakeStatus(t, srv, phone.accessToken), 401)

    await stillOpen(laptopSocket)
    // Nor can another socket take the revoked token in-band.
    const refresh = await laptopSocket.command({ type: 'refresh', token: phone.accessToken })
    assert.equal(refresh.type, 'error')
    assert.equal(refresh.error.code, 'unauthorized')
    assert.equal((await srv.request('GET', '/auth/me', { token: laptop.accessToken })).status, 200)
    assert.equal(await handshakeStatus(t, srv, laptop.accessToken), 101)
    assert.equal((await srv.request('GET', '/health/live')).status, 200)
  })

  it('an access token refreshed in-band on a socket ties that socket to its session', async (t) => {
    const srv = await build(t)
    await srv.createUser('alice')
    const first = await signIn(srv, 'alice')
    const second = await signIn(srv, 'alice')
    // Connected with the first session's token, then refreshed with the second's: the socket
    // now lives on the second session and must die with it.
    const socket = await wsConnect(t, srv, { token: first.accessToken })
    const refreshed = await socket.command({ type: 'refresh', token: second.accessToken })
    assert.equal(refreshed.type, 'reply', JSON.stringify(refreshed))

    assert.equal((await srv.request('POST', '/auth/logout', { body: { refreshToken: second.refreshToken } })).status, 204)
    assert.equal(await closedWith(socket), CloseCodes.TOKEN_EXPIRED)
    assert.equal((await srv.request('GET', '/auth/me', { token: first.accessToken })).status, 200)
  })

  it('refresh-token reuse kills the access tokens of the thief and of the victim, and their sockets', async (t) => {
    const srv = await build(t)
    await srv.createUser('alice')
    const victim = await signIn(srv, 'alice')
    const victimSocket = await wsConnect(t, srv, { token: victim.accessToken })
    // The thief exchanges the stolen refresh token first…
    const stolen = await srv.request('POST', '/auth/refresh', { body: { refreshToken: victim.refreshToken } })
    assert.equal(stolen.status, 200, stolen.text)
    const thiefToken = stolen.body.accessToken as string
    const thiefSocket = await wsConnect(t, srv, { token: thiefToken })
    // …then the victim presents it again: reuse, the whole family is revoked.
    const reuse = await srv.request('POST', '/auth/refresh', { body: { refreshToken: victim.refreshToken } })
    assert.equal(reuse.status, 401)

    assert.equal(await closedWith(victimSocket), CloseCodes.TOKEN_EXPIRED)
    assert.equal(await closedWith(thiefSocket), CloseCodes.TOKEN_EXPIRED)
    for (const token of [victim.accessToken, thiefToken]) {
      assert.equal((await srv.request('GET', '/auth/me', { token })).status, 401)
      assert.equal(await handshakeStatus(t, srv, token), 401)
    }
    const renewed = await srv.request('POST', '/auth/refresh', { body: { refreshToken: stolen.body.refreshToken as string } })
    assert.equal(renewed.status, 401)
  })

  for (const store of STORE_KINDS) {
    it(`a user removed from the store gets 401 (never 500) on REST and handshakes; its socket is closed with 4504 (${store})`, { skip: skipStore[store] }, async (t) => {
      // A short account cache, so that the periodic check of connected users comes soon.
      const srv = await build(t, { store, env: { ACCOUNT_CACHE_MS: '200' } })
      await srv.createUser('mallory')
      await srv.createUser('bob')
      const { accessToken } = await signIn(srv, 'mallory')
      assert.equal((await srv.request('POST', '/rooms', { token: accessToken, body: { id: 'before' } })).status, 201)
      const socket = await wsConnect(t, srv, { token: accessToken })
      assert.equal((await socket.command({ type: 'subscribe', room: 'before' })).type, 'reply')
      const bystander = await wsConnect(t, srv, { token: (await signIn(srv, 'bob')).accessToken })

      assert.equal((await srv.app.store.deleteUser('mallory')).ok, true)
      // At once, whatever the cache still says: the room insert must not surface a foreign key error.
      const room = await srv.request('POST', '/rooms', { token: accessToken, body: { id: 'after' } })
      assert.equal(room.status, 401, room.text)
      assert.equal(room.body.code, 'SB_ERR_INVALID_TOKEN')

      assert.equal(await closedWith(socket), CloseCodes.ACCOUNT_CLOSED)
      for (const [method, path] of [['GET', '/auth/me'], ['GET', '/rooms'], ['POST', '/rooms']] as const) {
        const res = await srv.request(method, path, { token: accessToken, ...(method === 'POST' ? { body: { id: 'later' } } : {}) })
        assert.equal(res.status, 401, `${method} ${path}: ${res.text}`)
      }
      assert.equal(await handshakeStatus(t, srv, accessToken), 401)
      await stillOpen(bystander)
    })
  }

  it('the account service closes a removed account everywhere at once', async (t) => {
    const srv = await build(t)
    await srv.createUser('mallory')
    const { accessToken } = await signIn(srv, 'mallory')
    const socket = await wsConnect(t, srv, { token: accessToken })
    assert.equal(await srv.app.auth.deleteUser('mallory'), true)
    assert.equal(await closedWith(socket), CloseCodes.ACCOUNT_CLOSED)
    assert.equal((await srv.request('GET', '/auth/me', { token: accessToken })).status, 401)
    assert.equal(await handshakeStatus(t, srv, accessToken), 401)
  })

  it('signing a user out everywhere ends every session, and a new sign-in works', async (t) => {
    const srv = await build(t)
    await srv.createUser('alice')
    const sessions = [await signIn(srv, 'alice'), await signIn(srv, 'alice')]
    const sockets = await Promise.all(sessions.map(async s => await wsConnect(t, srv, { token: s.accessToken })))
    await srv.app.auth.revokeUserSessions('alice')
    for (const socket of sockets) assert.equal(await closedWith(socket), CloseCodes.TOKEN_EXPIRED)
    for (const s of sessions) {
      assert.equal((await srv.request('GET', '/auth/me', { token: s.accessToken })).status, 401)
      assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: s.refreshToken } })).status, 401)
    }
    const again = await signIn(srv, 'alice')
    assert.equal((await srv.request('GET', '/auth/me', { token: again.accessToken })).status, 200)
  })

  describe('with Redis: every node', { skip: skipRedis }, () => {
    it('a logout on node A closes the session\'s socket on node B; B and a node started later refuse the token', async (t) => {
      const keyPrefix = `sbrv:${randomBytes(6).toString('hex')}:`
      t.after(async () => { await deleteRedisKeys(TEST_REDIS_URL, keyPrefix) })
      // One SQLite file for both nodes, so they share users and sessions as a cluster shares its database.
      const env = { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: keyPrefix, DATABASE_URL: `sqlite:${join(tempDir(t), 'cluster.db')}` }
      const nodeA = await build(t, { env })
      const nodeB = await build(t, { env })
      await nodeA.createUser('alice')
      const session = await signIn(nodeA, 'alice')
      const other = await signIn(nodeA, 'alice')
      const onB = await wsConnect(t, nodeB, { token: session.accessToken })
      const otherOnB = await wsConnect(t, nodeB, { token: other.accessToken })

      assert.equal((await nodeA.request('POST', '/auth/logout', { body: { refreshToken: session.refreshToken } })).status, 204)
      assert.equal(await closedWith(onB), CloseCodes.TOKEN_EXPIRED)
      assert.equal((await nodeB.request('GET', '/auth/me', { token: session.accessToken })).status, 401)
      assert.equal(await handshakeStatus(t, nodeB, session.accessToken), 401)
      await stillOpen(otherOnB)

      const nodeC = await build(t, { env })
      assert.equal((await nodeC.request('GET', '/auth/me', { token: session.accessToken })).status, 401)
      assert.equal(await handshakeStatus(t, nodeC, session.accessToken), 401)
      assert.equal((await nodeC.request('GET', '/auth/me', { token: other.accessToken })).status, 200)
    })
  })
})
