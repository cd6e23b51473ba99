import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import { build, PASSWORD, skipUnlessStore, STORE_KINDS, wsConnect, type TestApp, type WsClient } from './helper.js'
import { idpKey, idpToken, jwksEnv, jwksServer } from './idp-support.js'

/*
 * Issue 25, accounts: a user changes their password and signs out everywhere; an admin
 * disables, re-enables, demotes, resets and deletes accounts, and each takes effect at once on
 * REST, on handshakes and on open sockets. Over real HTTP and real sockets, on both stores.
 * Refusals of hostile callers are test/hostile/accounts.test.ts.
 */

const NEW_PASSWORD = 'a brand new passphrase'

interface Session { accessToken: string, refreshToken: string }

async function signIn (srv: TestApp, username: string, password = PASSWORD): Promise<Session> {
  const res = await srv.request('POST', '/auth/login', { body: { username, password } })
  assert.equal(res.status, 200, res.text)
  return { accessToken: res.body.accessToken as string, refreshToken: res.body.refreshToken as string }
}

/** A round trip on the socket: a close the server sent before now has arrived by then. */
async function stillOpen (client: WsClient): Promise<void> {
  assert.equal((await client.command({ type: 'ping' })).type, 'reply')
}

async function status (srv: TestApp, token: string): Promise<number> {
  return (await srv.request('GET', '/auth/me', { token })).status
}

for (const kind of STORE_KINDS) {
  describe(`accounts (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    it('a user changes their password: other sessions end at once, this one stays; the old password stops working', async (t) => {
      const srv = await build(t, { store: kind })
      await srv.createUser('alice')
      const here = await signIn(srv, 'alice')
      const elsewhere = await signIn(srv, 'alice')
      const hereSocket = await wsConnect(t, srv, { token: here.accessToken })
      const elsewhereSocket = await wsConnect(t, srv, { token: elsewhere.accessToken })

      const changed = await srv.request('POST', '/auth/password', { token: here.accessToken, body: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD } })
      assert.equal(changed.status, 204, changed.text)

      assert.equal((await elsewhereSocket.closed).code, CloseCodes.TOKEN_EXPIRED)
      assert.equal(await status(srv, elsewhere.accessToken), 401)
      assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: elsewhere.refreshToken } })).status, 401)
      await stillOpen(hereSocket)
      assert.equal(await status(srv, here.accessToken), 200)
      assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: here.refreshToken } })).status, 200, 'this session keeps its refresh token')

      const old = await srv.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })
      assert.equal(old.status, 401)
      assert.equal(old.body.code, 'SB_ERR_INVALID_CREDENTIALS')
      await signIn(srv, 'alice', NEW_PASSWORD)
      assert.ok(!srv.logText().includes(NEW_PASSWORD), 'no password in the logs')
    })

    it('sign out everywhere ends every session of the caller, this one included', async (t) => {
      const srv = await build(t, { store: kind })
      await srv.createUser('alice')
      const sessions = [await signIn(srv, 'alice'), await signIn(srv, 'alice')]
      const sockets = await Promise.all(sessions.map(async s => await wsConnect(t, srv, { token: s.accessToken })))
      assert.equal((await srv.request('POST', '/auth/logout-all', { token: sessions[0]!.accessToken })).status, 204)
      for (const socket of sockets) assert.equal((await socket.closed).code, CloseCodes.TOKEN_EXPIRED)
      for (const s of sessions) {
        assert.equal(await status(srv, s.accessToken), 401)
        assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: s.refreshToken } })).status, 401)
      }
      await signIn(srv, 'alice')
    })

    it('an admin disables a user: tokens and sockets stop at once, sign-in says so; re-enabled, it signs in again', async (t) => {
      const srv = await build(t, { store: kind })
      const admin = await srv.userToken('root', 'admin')
      await srv.createUser('mallory')
      await srv.createUser('bob')
      const session = await signIn(srv, 'mallory')
      const socket = await wsConnect(t, srv, { token: session.accessToken })
      const bystander = await wsConnect(t, srv, { token: await srv.login('bob') })

      const disabled = await srv.request('PATCH', '/users/mallory', { token: admin, body: { disabled: true } })
      assert.equal(disabled.status, 200, disabled.text)
      assert.equal(disabled.body.disabled, true)
      assert.equal(disabled.body.role, 'user')

      assert.equal((await socket.closed).code, CloseCodes.ACCOUNT_CLOSED)
      assert.equal(await status(srv, session.accessToken), 401)
      await assert.rejects(wsConnect(t, srv, { token: session.accessToken }), { statusCode: 401 })
      assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: session.refreshToken } })).status, 401)
      const login = await srv.request('POST', '/auth/login', { body: { username: 'mallory', password: PASSWORD } })
      assert.equal(login.status, 403)
      assert.equal(login.body.code, 'SB_ERR_ACCOUNT_DISABLED')
      const wrong = await srv.request('POST', '/auth/login', { body: { username: 'mallory', password: 'not the password' } })
      assert.equal(wrong.status, 401, 'without the password, a disabled account looks like any other')
      assert.equal(wrong.body.code, 'SB_ERR_INVALID_CREDENTIALS')
      await stillOpen(bystander)

      const listed = await srv.request('GET', '/users?q=mal', { token: admin })
      assert.deepEqual(listed.body.items.map((u: { id: string, disabled: boolean }) => [u.id, u.disabled]), [['mallory', true]])
      assert.equal((await srv.request('GET', '/users/mallory', { token: admin })).body.disabled, true)

      const enabled = await srv.request('PATCH', '/users/mallory', { token: admin, body: { disabled: false } })
      assert.equal(enabled.status, 200)
      assert.equal(enabled.body.disabled, false)
      assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: session.refreshToken } })).status, 401, 'sessions from before stay revoked')
      const again = await signIn(srv, 'mallory')
      await wsConnect(t, srv, { token: again.accessToken })
    })

    it('roles: a granted admin role is in the next token; a removed one signs the user out everywhere', async (t) => {
      const srv = await build(t, { store: kind })
      const root = await srv.userToken('root', 'admin')
      await srv.createUser('alice')
      const before = await signIn(srv, 'alice')
      const promoted = await srv.request('PATCH', '/users/alice', { token: root, body: { role: 'admin' } })
      assert.equal(promoted.status, 200)
      assert.equal(promoted.body.role, 'admin')
      assert.equal((await srv.request('GET', '/users', { token: before.accessToken })).status, 403, 'the old token still says user')
      const refreshed = await srv.request('POST', '/auth/refresh', { body: { refreshToken: before.refreshToken } })
      assert.equal(refreshed.body.user.role, 'admin')
      const asAdmin = refreshed.body.accessToken as string
      assert.equal((await srv.request('GET', '/users', { token: asAdmin })).status, 200)
      const adminSocket = await wsConnect(t, srv, { token: asAdmin })

      const demoted = await srv.request('PATCH', '/users/alice', { token: root, body: { role: 'user' } })
      assert.equal(demoted.status, 200)
      assert.equal((await adminSocket.closed).code, CloseCodes.TOKEN_EXPIRED)
      assert.equal((await srv.request('GET', '/users', { token: asAdmin })).status, 401, 'the admin token is dead, not merely downgraded')
      const after = await signIn(srv, 'alice')
      assert.equal((await srv.request('GET', '/users', { token: after.accessToken })).status, 403)
    })

    it('an admin resets a password and signs a user out everywhere', async (t) => {
      const srv = await build(t, { store: kind })
      const root = await srv.userToken('root', 'admin')
      await srv.createUser('alice')
      const first = await signIn(srv, 'alice')
      const socket = await wsConnect(t, srv, { token: first.accessToken })
      assert.equal((await srv.request('POST', '/users/alice/password', { token: root, body: { password: NEW_PASSWORD } })).status, 204)
      assert.equal((await socket.closed).code, CloseCodes.TOKEN_EXPIRED)
      assert.equal(await status(srv, first.accessToken), 401)
      assert.equal((await srv.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).status, 401)
      const second = await signIn(srv, 'alice', NEW_PASSWORD)

      const second2 = await wsConnect(t, srv, { token: second.accessToken })
      assert.equal((await srv.request('POST', '/users/alice/logout-all', { token: root })).status, 204)
      assert.equal((await second2.closed).code, CloseCodes.TOKEN_EXPIRED)
      assert.equal(await status(srv, second.accessToken), 401)
      assert.equal((await srv.request('POST', '/users/nobody/logout-all', { token: root })).status, 404)
      assert.equal((await srv.request('POST', '/users/nobody/password', { token: root, body: { password: NEW_PASSWORD } })).status, 404)
      assert.ok(!srv.logText().includes(NEW_PASSWORD), 'no password in the logs')
    })

    it('deleting a user: memberships, keys and sessions go, publications stay attributed, the name is never reused', async (t) => {
      const srv = await build(t, { store: kind })
      const root = await srv.userToken('root', 'admin')
      await srv.createUser('helper', 'admin')
      const helper = await signIn(srv, 'helper')
      assert.equal((await srv.request('POST', '/rooms', { token: root, body: { id: 'lobby' } })).status, 201)
      assert.equal((await srv.request('PUT', '/rooms/lobby/members/helper', { token: root, body: { role: 'member' } })).status, 201)
      const published = await srv.request('POST', '/rooms/lobby/messages', { token: helper.accessToken, body: { data: { text: 'hello' } } })
      assert.equal(published.status, 201, published.text)
      const key = await srv.request('POST', '/api-keys', { token: helper.accessToken, body: { name: 'k', scopes: ['subscribe:*'] } })
      assert.equal(key.status, 201)
      const keySocket = await wsConnect(t, srv, { apiKey: key.body.key as string })
      const userSocket = await wsConnect(t, srv, { token: helper.accessToken })

      assert.equal((await srv.request('DELETE', '/users/helper', { token: root })).status, 204)
      assert.equal((await userSocket.closed).code, CloseCodes.ACCOUNT_CLOSED)
      assert.equal((await keySocket.closed).code, CloseCodes.KICKED)
      assert.equal(await status(srv, helper.accessToken), 401)
      assert.equal((await srv.request('GET', '/auth/me', { apiKey: key.body.key as string })).status, 401)
      assert.equal((await srv.request('POST', '/auth/refresh', { body: { refreshToken: helper.refreshToken } })).status, 401)
      assert.equal((await srv.request('GET', '/users/helper', { token: root })).status, 404)
      const members = await srv.request('GET', '/rooms/lobby/members', { token: root })
      assert.deepEqual(members.body.items.map((m: { userId: string }) => m.userId), ['root'])
      const history = await srv.request('GET', '/rooms/lobby/messages', { token: root })
      assert.equal(history.status, 200, history.text)
      assert.deepEqual(history.body.publications.map((p: { from: { id: string } }) => p.from.id), ['helper'])

      const reused = await srv.request('POST', '/auth/register', { body: { username: 'helper', password: PASSWORD } })
      assert.equal(reused.status, 409)
      assert.equal(reused.body.code, 'SB_ERR_USERNAME_RETIRED')
      assert.equal((await srv.request('DELETE', '/users/helper', { token: root })).status, 404)
    })

    it('admins create accounts with registration closed; users cannot', async (t) => {
      const srv = await build(t, { store: kind, env: { ALLOW_REGISTRATION: 'false' } })
      const root = await srv.userToken('root', 'admin')
      const alice = await srv.userToken('alice')
      assert.equal((await srv.request('POST', '/auth/register', { body: { username: 'carol', password: PASSWORD } })).status, 403)
      const created = await srv.request('POST', '/users', { token: root, body: { username: 'carol', password: PASSWORD, role: 'admin' } })
      assert.equal(created.status, 201, created.text)
      assert.deepEqual([created.body.user.id, created.body.user.role, created.body.user.disabled], ['carol', 'admin', false])
      await signIn(srv, 'carol')
      assert.equal((await srv.request('POST', '/users', { token: root, body: { username: 'carol', password: PASSWORD } })).body.code, 'SB_ERR_USERNAME_TAKEN')
      assert.equal((await srv.request('POST', '/users', { token: alice, body: { username: 'dave', password: PASSWORD } })).status, 403)
    })

    it('the last enabled admin cannot demote, disable or delete itself; with a second admin it can step down', async (t) => {
      const srv = await build(t, { store: kind })
      const root = await srv.userToken('root', 'admin')
      for (const [method, body] of [['PATCH', { role: 'user' }], ['PATCH', { disabled: true }], ['DELETE', undefined]] as const) {
        const res = await srv.request(method, '/users/root', { token: root, ...(body === undefined ? {} : { body }) })
        assert.equal(res.status, 409, `${method} ${JSON.stringify(body)}`)
        assert.equal(res.body.code, 'SB_ERR_LAST_ADMIN')
      }
      await srv.createUser('second', 'admin')
      const stepDown = await srv.request('PATCH', '/users/root', { token: root, body: { role: 'user' } })
      assert.equal(stepDown.status, 200)
      const second = await srv.login('second')
      assert.equal((await srv.request('DELETE', '/users/second', { token: second })).body.code, 'SB_ERR_LAST_ADMIN')
    })
  })
}

describe('accounts: users of the identity provider', () => {
  it('can be disabled (recorded here) and re-enabled; their password, role and sessions are the provider\'s', async (t) => {
    const key = await idpKey('RS256', 'rsa-1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks) })
    const root = await srv.userToken('root', 'admin')
    const token = await idpToken(key, 'auth0|42')
    const me = await srv.request('GET', '/auth/me', { token })
    assert.equal(me.status, 200, me.text)
    const id = me.body.user.id as string
    const socket = await wsConnect(t, srv, { token })

    const disabled = await srv.request('PATCH', `/users/${encodeURIComponent(id)}`, { token: root, body: { disabled: true } })
    assert.equal(disabled.status, 200, disabled.text)
    assert.equal((await socket.closed).code, CloseCodes.ACCOUNT_CLOSED)
    assert.equal(await status(srv, token), 401)
    assert.equal(await status(srv, await idpToken(key, 'auth0|42')), 401, 'a fresh token from the provider is refused too')
    await assert.rejects(wsConnect(t, srv, { token }), { statusCode: 401 })

    for (const [method, path, body] of [
      ['PATCH', '', { role: 'admin' }], ['POST', '/password', { password: NEW_PASSWORD }], ['POST', '/logout-all', undefined]
    ] as const) {
      const res = await srv.request(method, `/users/${encodeURIComponent(id)}${path}`, { token: root, ...(body === undefined ? {} : { body }) })
      assert.equal(res.status, 409, `${method} ${path}`)
      assert.equal(res.body.code, 'SB_ERR_EXTERNAL_USER')
    }

    assert.equal((await srv.request('PATCH', `/users/${encodeURIComponent(id)}`, { token: root, body: { disabled: false } })).status, 200)
    assert.equal(await status(srv, token), 200)
    const own = await srv.request('POST', '/auth/password', { token, body: { currentPassword: 'x', newPassword: NEW_PASSWORD } })
    assert.equal(own.body.code, 'SB_ERR_EXTERNAL_USER')
    assert.equal((await srv.request('POST', '/auth/logout-all', { token })).body.code, 'SB_ERR_EXTERNAL_USER')

    // Deleted: its row goes, and with it the record of being disabled; the provider decides who exists.
    assert.equal((await srv.request('DELETE', `/users/${encodeURIComponent(id)}`, { token: root })).status, 204)
    assert.equal(await status(srv, token), 200)
    // An unknown id under another prefix is nobody's.
    assert.equal((await srv.request('PATCH', '/users/other:abc', { token: root, body: { disabled: true } })).status, 404)
  })
})
