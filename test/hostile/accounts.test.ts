import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { EnvSchema } from '../../src/config.js'
import { build, PASSWORD, type TestApp, type TestResponse } from '../helper.js'

/*
 * Issue 25, accounts, attacked: a non-admin (or an API key) calling the admin routes, a stolen
 * access token used to guess the password at POST /auth/password, resurrecting a deleted
 * username, and bodies that do not fit. Every refusal is a clear 4xx, never a 500.
 */

/** Every admin route of account administration, as [method, path, body]. */
const ADMIN_ROUTES: Array<[string, string, unknown]> = [
  ['GET', '/users', undefined],
  ['POST', '/users', { username: 'sneaky', password: 'attacker chosen password', role: 'admin' }],
  ['GET', '/users/alice', undefined],
  ['PATCH', '/users/alice', { disabled: true }],
  ['PATCH', '/users/alice', { role: 'admin' }],
  ['DELETE', '/users/alice', undefined],
  ['POST', '/users/alice/password', { password: 'attacker chosen password' }],
  ['POST', '/users/alice/logout-all', undefined]
]

function changePassword (srv: TestApp, token: string, currentPassword: string, address: string): Promise<TestResponse> {
  return srv.request('POST', '/auth/password', { token, body: { currentPassword, newPassword: 'attacker chosen password' }, headers: { 'x-forwarded-for': address } })
}

describe('hostile: account administration', () => {
  it('users, API keys and anonymous callers cannot reach the admin routes; the target is untouched', async (t) => {
    const srv = await build(t)
    const admin = await srv.userToken('root', 'admin')
    const mallory = await srv.userToken('mallory')
    await srv.createUser('alice')
    const key = await srv.request('POST', '/api-keys', { token: admin, body: { name: 'k', scopes: ['publish:*', 'subscribe:*'] } })
    for (const [method, path, body] of ADMIN_ROUTES) {
      const asUser = await srv.request(method, path, { token: mallory, ...(body === undefined ? {} : { body }) })
      assert.equal(asUser.status, 403, `user: ${method} ${path}: ${asUser.text}`)
      assert.equal(asUser.body.code, 'SB_ERR_FORBIDDEN')
      const asKey = await srv.request(method, path, { apiKey: key.body.key as string, ...(body === undefined ? {} : { body }) })
      assert.equal(asKey.status, 403, `api key: ${method} ${path}`)
      const anonymous = await srv.request(method, path, body === undefined ? {} : { body })
      assert.equal(anonymous.status, 401, `anonymous: ${method} ${path}`)
    }
    // Nor can a user make itself an admin, or act on itself through the admin routes.
    assert.equal((await srv.request('PATCH', '/users/mallory', { token: mallory, body: { role: 'admin' } })).status, 403)
    const alice = await srv.request('GET', '/users/alice', { token: admin })
    assert.deepEqual([alice.body.role, alice.body.disabled], ['user', false])
    await srv.login('alice')
    // API keys have no password and no sessions of their own.
    assert.equal((await srv.request('POST', '/auth/password', { apiKey: key.body.key as string, body: { currentPassword: PASSWORD, newPassword: 'whatever12' } })).status, 403)
    assert.equal((await srv.request('POST', '/auth/logout-all', { apiKey: key.body.key as string })).status, 403)
  })

  it('a stolen access token cannot guess the password: wrong current passwords are throttled like sign-ins, and only for that address', async (t) => {
    const failuresBeforeDelay = EnvSchema.properties.LOGIN_FAILURES_BEFORE_DELAY.default
    const srv = await build(t, { env: { TRUST_PROXY: 'loopback', LOGIN_FAILURES_BEFORE_DELAY: String(failuresBeforeDelay) } })
    await srv.createUser('alice')
    const stolen = await srv.login('alice')
    for (let i = 0; i < failuresBeforeDelay; i++) {
      const wrong = await changePassword(srv, stolen, `guess number ${i}`, '203.0.113.9')
      assert.equal(wrong.status, 403, wrong.text)
      assert.equal(wrong.body.code, 'SB_ERR_WRONG_PASSWORD')
    }
    const throttled = await changePassword(srv, stolen, 'one more guess', '203.0.113.9')
    assert.equal(throttled.status, 429, throttled.text)
    assert.equal(throttled.body.code, 'SB_ERR_TOO_MANY_LOGIN_ATTEMPTS')
    assert.ok(Number(throttled.headers.get('retry-after')) >= 1)
    // The same counter as sign-in: the guesser's address cannot switch to /auth/login for alice.
    const login = await srv.request('POST', '/auth/login', { body: { username: 'alice', password: 'and another' }, headers: { 'x-forwarded-for': '203.0.113.9' } })
    assert.equal(login.status, 429)

    // The real user, from elsewhere, is not locked out, and the password was never changed.
    const own = await srv.request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD }, headers: { 'x-forwarded-for': '198.51.100.7' } })
    assert.equal(own.status, 200, own.text)
    const mine = own.body.accessToken as string
    const changed = await srv.request('POST', '/auth/password', { token: mine, body: { currentPassword: PASSWORD, newPassword: 'a brand new passphrase' }, headers: { 'x-forwarded-for': '198.51.100.7' } })
    assert.equal(changed.status, 204, changed.text)
    assert.equal((await srv.request('GET', '/auth/me', { token: stolen })).status, 401, 'the thief\'s session ended with the change')
    assert.ok(!srv.logText().includes('guess number'), 'no guessed password in the logs')
  })

  it('a deleted username cannot be brought back: registration, the bootstrap admin and admin actions all refuse it', async (t) => {
    const srv = await build(t)
    const admin = await srv.userToken('root', 'admin')
    await srv.createUser('ghost')
    assert.equal((await srv.request('DELETE', '/users/ghost', { token: admin })).status, 204)
    for (let i = 0; i < 2; i++) {
      const res = await srv.request('POST', '/auth/register', { body: { username: 'ghost', password: PASSWORD } })
      assert.equal(res.status, 409)
      assert.equal(res.body.code, 'SB_ERR_USERNAME_RETIRED')
    }
    assert.equal((await srv.request('POST', '/auth/register', { body: { username: 'Ghost', password: PASSWORD } })).status, 400, 'no case variant')
    assert.equal(await srv.app.auth.ensureAdmin('ghost', PASSWORD), false, 'ADMIN_USERNAME naming a deleted account creates nothing')
    const login = await srv.request('POST', '/auth/login', { body: { username: 'ghost', password: PASSWORD } })
    assert.equal(login.status, 401)
    assert.equal(login.body.code, 'SB_ERR_INVALID_CREDENTIALS')
    for (const [method, path, body] of ADMIN_ROUTES.slice(2)) {
      const res = await srv.request(method, path.replace('alice', 'ghost'), { token: admin, ...(body === undefined ? {} : { body }) })
      assert.equal(res.status, 404, `${method} ${path}: ${res.text}`)
      assert.equal(res.body.code, 'SB_ERR_USER_NOT_FOUND')
    }
    assert.deepEqual((await srv.request('GET', '/users?q=gh', { token: admin })).body.items, [])
    assert.equal((await srv.request('PUT', '/rooms/x/members/ghost', { token: admin, body: { role: 'member' } })).status, 404)
  })

  it('bodies that do not fit are refused with the property named, never a 500', async (t) => {
    const srv = await build(t)
    const admin = await srv.userToken('root', 'admin')
    await srv.createUser('alice')
    const alice = await srv.login('alice')
    const cases: Array<[string, string, string, unknown]> = [
      [admin, 'PATCH', '/users/alice', {}],
      [admin, 'PATCH', '/users/alice', { disabled: 'yes' }],
      [admin, 'PATCH', '/users/alice', { role: 'root' }],
      [admin, 'PATCH', '/users/alice', { disabled: true, password: 'sneaky extra' }],
      [admin, 'POST', '/users/alice/password', { password: 'short' }],
      [admin, 'POST', '/users/alice/password', { password: 'x'.repeat(129) }],
      [admin, 'PATCH', '/users/..%2Fadmin', { disabled: true }],
      [alice, 'POST', '/auth/password', { currentPassword: PASSWORD, newPassword: 'short' }],
      [alice, 'POST', '/auth/password', { currentPassword: 'x'.repeat(100_000), newPassword: 'long enough' }],
      [alice, 'POST', '/auth/password', { newPassword: 'long enough' }],
      [alice, 'POST', '/auth/password', [PASSWORD]]
    ]
    for (const [token, method, path, body] of cases) {
      const res = await srv.request(method, path, { token, body })
      assert.equal(res.status, 400, `${method} ${path} ${JSON.stringify(body).slice(0, 80)}: ${res.text}`)
      assert.equal(res.body.code, 'SB_ERR_VALIDATION')
    }
    assert.equal((await srv.request('GET', '/auth/me', { token: alice })).status, 200)
    const after = await srv.request('GET', '/users/alice', { token: admin })
    assert.deepEqual([after.body.role, after.body.disabled], ['user', false])
  })
})
