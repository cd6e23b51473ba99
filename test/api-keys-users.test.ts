import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { build, skipUnlessStore, STORE_KINDS, wsConnect } from './helper.js'

for (const kind of STORE_KINDS) {
  describe(`api keys (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    it('an admin creates a key (shown once), lists and revokes it; the key authenticates until revoked', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const admin = await userToken('root', 'admin')
      const created = await request('POST', '/api-keys', { token: admin, body: { name: 'thermometers', scopes: ['publish:sensors.*', 'subscribe:*'] } })
      assert.equal(created.status, 201)
      assert.match(created.body.key, /^sbk_[\w-]{43}$/)
      assert.equal(created.body.apiKey.name, 'thermometers')
      assert.ok(created.body.key.startsWith(created.body.apiKey.prefix))
      assert.equal(created.body.apiKey.createdBy, 'root')

      const list = await request('GET', '/api-keys', { token: admin })
      assert.equal(list.status, 200)
      assert.equal(list.body.items.length, 1)
      assert.equal(list.body.items[0].id, created.body.apiKey.id)
      assert.ok(!list.text.includes(created.body.key), 'the key itself is never listed')
      assert.equal(list.body.items[0].keyHash, undefined)

      assert.equal((await request('GET', '/auth/me', { apiKey: created.body.key })).status, 200)
      assert.equal((await request('DELETE', `/api-keys/${created.body.apiKey.id}`, { token: admin })).status, 204)
      assert.equal((await request('GET', '/auth/me', { apiKey: created.body.key })).status, 401)
      const again = await request('DELETE', `/api-keys/${created.body.apiKey.id}`, { token: admin })
      assert.equal(again.status, 404)
      assert.equal(again.body.code, 'SB_ERR_API_KEY_NOT_FOUND')
      assert.equal((await request('DELETE', '/api-keys/not-a-uuid', { token: admin })).status, 400)
    })

    it('only admins manage keys; keys cannot manage keys; scopes are validated', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const admin = await userToken('root', 'admin')
      const alice = await userToken('alice')
      assert.equal((await request('POST', '/api-keys', { token: alice, body: { name: 'k', scopes: ['subscribe:*'] } })).status, 403)
      assert.equal((await request('GET', '/api-keys', { token: alice })).status, 403)
      assert.equal((await request('GET', '/api-keys')).status, 401)
      const { body } = await request('POST', '/api-keys', { token: admin, body: { name: 'k', scopes: ['subscribe:*'] } })
      assert.equal((await request('GET', '/api-keys', { apiKey: body.key })).status, 403)
      for (const scopes of [[], ['write:*'], ['publish'], ['publish:Lobby'], ['publish:*x'], ['publish:a', 'publish:a'], Array.from({ length: 51 }, (_, i) => `publish:r${i}`)]) {
        const res = await request('POST', '/api-keys', { token: admin, body: { name: 'k', scopes } })
        assert.equal(res.status, 400, JSON.stringify(scopes))
      }
      assert.equal((await request('POST', '/api-keys', { token: admin, body: { name: '', scopes: ['subscribe:*'] } })).status, 400)
    })

    it('a key reads only rooms its scopes touch and never manages rooms', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const admin = await userToken('root', 'admin')
      await request('POST', '/rooms', { token: admin, body: { id: 'sensors.kitchen', visibility: 'private' } })
      await request('POST', '/rooms', { token: admin, body: { id: 'lobby' } })
      const { body } = await request('POST', '/api-keys', { token: admin, body: { name: 'k', scopes: ['publish:sensors.*'] } })
      assert.equal((await request('GET', '/rooms/sensors.kitchen', { apiKey: body.key })).status, 200)
      assert.equal((await request('GET', '/rooms/lobby', { apiKey: body.key })).status, 404)
      assert.equal((await request('POST', '/rooms', { apiKey: body.key, body: { id: 'sensors.x' } })).status, 403)
      assert.equal((await request('DELETE', '/rooms/sensors.kitchen', { apiKey: body.key })).status, 403)
      assert.equal((await request('GET', '/rooms', { apiKey: body.key })).status, 403)
    })
  })

  describe(`api key revocation is live (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    it('deleting a key closes the WebSockets opened with it (4503) and refuses new ones', async (t) => {
      const server = await build(t, { store: kind })
      const admin = await server.userToken('root', 'admin')
      const { body } = await server.request('POST', '/api-keys', { token: admin, body: { name: 'device', scopes: ['subscribe:*'] } })
      const socket = await wsConnect(t, server, { apiKey: body.key })
      assert.equal(socket.welcome.user.role, 'apiKey')
      assert.equal((await server.request('DELETE', `/api-keys/${body.apiKey.id}`, { token: admin })).status, 204)
      assert.equal((await socket.closed).code, 4503)
      await assert.rejects(wsConnect(t, server, { apiKey: body.key }), { statusCode: 401 })
    })
  })

  describe(`users directory (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    it('admins search users by prefix with pagination; others are refused', async (t) => {
      const { request, userToken, createUser } = await build(t, { store: kind })
      const admin = await userToken('root', 'admin')
      for (const id of ['alice', 'albert', 'alfred', 'bob', 'al_x']) await createUser(id)
      const al = await request('GET', '/users?q=al', { token: admin })
      assert.equal(al.status, 200)
      assert.deepEqual(al.body.items.map((u: { id: string }) => u.id), ['al_x', 'albert', 'alfred', 'alice'].sort())
      assert.equal(al.body.items[0].passwordHash, undefined)
      // `_` is a literal here, not a LIKE wildcard.
      const underscore = await request('GET', '/users?q=al_', { token: admin })
      assert.deepEqual(underscore.body.items.map((u: { id: string }) => u.id), ['al_x'])
      const page1 = await request('GET', '/users?limit=2', { token: admin })
      assert.equal(page1.body.items.length, 2)
      const page2 = await request('GET', `/users?limit=2&after=${page1.body.nextCursor}`, { token: admin })
      assert.ok(page2.body.items[0].id > page1.body.items[1].id)
      const alice = await request('POST', '/auth/login', { body: { username: 'alice', password: 'correct horse battery' } })
      assert.equal((await request('GET', '/users', { token: alice.body.accessToken })).status, 403)
      assert.equal((await request('GET', '/users')).status, 401)
      assert.equal((await request('GET', `/users?q=${'x'.repeat(33)}`, { token: admin })).status, 400)
    })
  })
}

describe('bootstrap admin', () => {
  it('is created on first start from ADMIN_USERNAME/ADMIN_PASSWORD and can sign in', async (t) => {
    const { request } = await build(t, { env: { ADMIN_USERNAME: 'boss', ADMIN_PASSWORD: 'boss-password-1' } })
    const res = await request('POST', '/auth/login', { body: { username: 'boss', password: 'boss-password-1' } })
    assert.equal(res.status, 200)
    assert.equal(res.body.user.role, 'admin')
  })
})
