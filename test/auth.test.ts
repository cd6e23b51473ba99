import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac, generateKeyPairSync, createSign } from 'node:crypto'
import { build, PASSWORD, skipUnlessStore, STORE_KINDS, TEST_JWT_SECRET, wsConnect } from './helper.js'

const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
const now = (): number => Math.floor(Date.now() / 1000)

/** Hand-made JWTs, so the matrix can produce exactly the malformed token each case needs. */
function hs (payload: object, { alg = 'HS256', secret = TEST_JWT_SECRET, header = {} as object } = {}): string {
  const head = b64({ alg, typ: 'JWT', ...header })
  const body = b64(payload)
  const hashName = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg] ?? 'sha256'
  const sig = createHmac(hashName, secret).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

const goodClaims = () => ({ sub: 'alice', role: 'user', jti: 'j1', sid: 's1', iss: 'switchboard', iat: now(), exp: now() + 600 })

for (const kind of STORE_KINDS) {
  describe(`auth (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    it('registers, rejects a taken name, enforces the password policy and the username pattern', async (t) => {
      const { request } = await build(t, { store: kind })
      const created = await request('POST', '/auth/register', { body: { username: 'alice', password: PASSWORD } })
      assert.equal(created.status, 201)
      assert.equal(created.body.user.id, 'alice')
      assert.equal(created.body.user.role, 'user')
      assert.equal(created.body.user.passwordHash, undefined)

      const taken = await request('POST', '/auth/register', { body: { username: 'alice', password: PASSWORD } })
      assert.equal(taken.status, 409)
      assert.equal(taken.body.code, 'SB_ERR_USERNAME_TAKEN')

      for (const body of [
        { username: 'bob', password: 'short' },
        { username: 'bob', password: 'x'.repeat(129) },
        { username: 'Bob', password: PASSWORD },
        { username: 'b', password: PASSWORD },
        { username: 'bob', password: PASSWORD, role: 'admin' },
        { username: 'bob' }
      ]) {
        const res = await request('POST', '/auth/register', { body })
        assert.equal(res.status, 400, JSON.stringify(body))
        assert.equal(res.body.code, 'SB_ERR_VALIDATION')
        assert.deepEqual(Object.keys(res.body).sort(), ['code', 'error', 'message', 'statusCode'])
      }
      // Registration says what the password rule is, and names a property that is not allowed.
      const short = await request('POST', '/auth/register', { body: { username: 'bob', password: 'short' } })
      assert.equal(short.body.message, 'body/password must NOT have fewer than 8 characters')
      const extra = await request('POST', '/auth/register', { body: { username: 'bob', password: PASSWORD, role: 'admin' } })
      assert.equal(extra.body.message, 'body has an unknown property "role"')
    })

    it('refuses registration when ALLOW_REGISTRATION=false', async (t) => {
      const { request } = await build(t, { store: kind, env: { ALLOW_REGISTRATION: 'false' } })
      const res = await request('POST', '/auth/register', { body: { username: 'alice', password: PASSWORD } })
      assert.equal(res.status, 403)
      assert.equal(res.body.code, 'SB_ERR_REGISTRATION_CLOSED')
    })

    it('logs in, and fails the same way for a wrong password and an unknown user', async (t) => {
      const { request, createUser } = await build(t, { store: kind })
      await createUser('alice')
      const ok = await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })
      assert.equal(ok.status, 200)
      assert.equal(ok.body.tokenType, 'Bearer')
      assert.equal(ok.body.expiresIn, 900)
      assert.equal(ok.body.user.id, 'alice')
      assert.match(ok.body.accessToken, /^[\w-]+\.[\w-]+\.[\w-]+$/)
      const claims = JSON.parse(Buffer.from(ok.body.accessToken.split('.')[1], 'base64url').toString())
      assert.equal(claims.sub, 'alice')
      assert.equal(claims.role, 'user')
      assert.equal(claims.iss, 'switchboard')
      assert.equal(typeof claims.jti, 'string')
      assert.equal(claims.exp - claims.iat, 900)
      const header = JSON.parse(Buffer.from(ok.body.accessToken.split('.')[0], 'base64url').toString())
      assert.equal(header.alg, 'HS256')

      const wrong = await request('POST', '/auth/login', { body: { username: 'alice', password: 'wrong password' } })
      const unknown = await request('POST', '/auth/login', { body: { username: 'nobody', password: 'wrong password' } })
      assert.equal(wrong.status, 401)
      assert.equal(unknown.status, 401)
      assert.deepEqual(wrong.body, unknown.body)
      // Shorter than the registration rule is just another wrong password: no 400 naming the rule.
      const short = await request('POST', '/auth/login', { body: { username: 'alice', password: 'short' } })
      assert.equal(short.status, 401)
      assert.deepEqual(short.body, wrong.body)
      assert.match(short.body.message, /invalid username or password/i)
    })

    it('GET /auth/me returns the caller, for a user and for an API key', async (t) => {
      const srv = await build(t, { store: kind })
      const { request, userToken } = srv
      const token = await userToken('alice')
      const me = await request('GET', '/auth/me', { token })
      assert.equal(me.status, 200)
      assert.equal(me.body.kind, 'user')
      assert.equal(me.body.user.id, 'alice')
      // Epoch milliseconds, as in the welcome frame: the same instant by both routes.
      const exp = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).exp as number
      assert.equal(me.body.tokenExpiresAt, exp * 1000)
      const socket = await wsConnect(t, srv, { token })
      assert.equal(socket.welcome.tokenExpiresAt, me.body.tokenExpiresAt)

      const admin = await userToken('root', 'admin')
      const key = await request('POST', '/api-keys', { token: admin, body: { name: 'sensor', scopes: ['publish:sensors.*'] } })
      const viaKey = await request('GET', '/auth/me', { apiKey: key.body.key })
      assert.equal(viaKey.status, 200)
      assert.deepEqual(viaKey.body, { kind: 'apiKey', apiKey: { id: key.body.apiKey.id, name: 'sensor', scopes: ['publish:sensors.*'] } })

      assert.equal((await request('GET', '/auth/me')).status, 401)
      assert.equal((await request('GET', '/auth/me', { apiKey: 'sbk_not-a-real-key' })).status, 401)
    })

    it('rotates refresh tokens, and reuse of a rotated token revokes the whole family', async (t) => {
      const { request, createUser } = await build(t, { store: kind })
      await createUser('alice')
      const first = (await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).body
      const second = await request('POST', '/auth/refresh', { body: { refreshToken: first.refreshToken } })
      assert.equal(second.status, 200)
      assert.notEqual(second.body.refreshToken, first.refreshToken)
      assert.equal((await request('GET', '/auth/me', { token: second.body.accessToken })).status, 200)

      // The first token was copied by an attacker and used again: everyone in the family is out.
      const reuse = await request('POST', '/auth/refresh', { body: { refreshToken: first.refreshToken } })
      assert.equal(reuse.status, 401)
      assert.equal(reuse.body.code, 'SB_ERR_INVALID_REFRESH_TOKEN')
      const afterReuse = await request('POST', '/auth/refresh', { body: { refreshToken: second.body.refreshToken } })
      assert.equal(afterReuse.status, 401)

      // Another login is another family and is unaffected.
      const other = (await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).body
      assert.equal((await request('POST', '/auth/refresh', { body: { refreshToken: other.refreshToken } })).status, 200)

      assert.equal((await request('POST', '/auth/refresh', { body: { refreshToken: 'garbage' } })).status, 401)
      assert.equal((await request('POST', '/auth/refresh', { body: { refreshToken: 'x'.repeat(300) } })).status, 400)
    })

    it('two concurrent refreshes with one token: at most one succeeds', async (t) => {
      const { request, createUser } = await build(t, { store: kind })
      await createUser('alice')
      const { refreshToken } = (await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).body
      const results = await Promise.all([1, 2, 3].map(() => request('POST', '/auth/refresh', { body: { refreshToken } })))
      assert.ok(results.filter(r => r.status === 200).length <= 1)
      assert.ok(results.every(r => r.status === 200 || r.status === 401))
    })

    it('logout ends the session; logging out twice is fine', async (t) => {
      const { request, createUser } = await build(t, { store: kind })
      await createUser('alice')
      const { refreshToken } = (await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).body
      assert.equal((await request('POST', '/auth/logout', { body: { refreshToken } })).status, 204)
      assert.equal((await request('POST', '/auth/logout', { body: { refreshToken } })).status, 204)
      assert.equal((await request('POST', '/auth/refresh', { body: { refreshToken } })).status, 401)
    })

    it('refresh tokens expire with REFRESH_TOKEN_TTL', async (t) => {
      const { request, createUser, app } = await build(t, { store: kind })
      await createUser('alice')
      const { refreshToken } = (await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).body
      // Age the token in the store rather than waiting for it.
      const { digest } = await import('../src/auth/secrets.js')
      const record = await app.store.getRefreshTokenByHash(digest(refreshToken))
      assert.ok(record)
      await app.store.insertRefreshToken({ ...record, id: record.id + '-old', tokenHash: digest('expired-token'), expiresAt: Date.now() - 1 })
      assert.equal((await request('POST', '/auth/refresh', { body: { refreshToken: 'expired-token' } })).status, 401)
    })
  })
}

describe('login throttling', () => {
  it('limits attempts per IP with 429 and Retry-After', async (t) => {
    const { request, createUser } = await build(t, { env: { LOGIN_RATE_LIMIT: '3' } })
    await createUser('alice')
    const statuses: number[] = []
    let last
    for (let i = 0; i < 5; i++) {
      last = await request('POST', '/auth/login', { body: { username: 'alice', password: 'wrong password' } })
      statuses.push(last.status)
    }
    assert.deepEqual(statuses, [401, 401, 401, 429, 429])
    assert.ok(Number(last!.headers.get('retry-after')) > 0)
    assert.equal(last!.body.code, 'SB_ERR_RATE_LIMITED')
    assert.equal(last!.body.statusCode, 429)
  })

  it('slows failures per address and username; a success resets them; others are unaffected', async (t) => {
    const { request, createUser } = await build(t, { env: { LOGIN_FAILURES_BEFORE_DELAY: '3', LOGIN_MAX_DELAY: '1h' } })
    await createUser('alice')
    await createUser('bob')
    for (let i = 0; i < 2; i++) assert.equal((await request('POST', '/auth/login', { body: { username: 'bob', password: 'wrong password' } })).status, 401)
    assert.equal((await request('POST', '/auth/login', { body: { username: 'bob', password: PASSWORD } })).status, 200)
    // Past the free failures the waits double; a long cap keeps this from depending on the clock.
    const statuses: number[] = []
    let refused
    for (let i = 0; i < 20 && refused === undefined; i++) {
      const res = await request('POST', '/auth/login', { body: { username: 'alice', password: 'wrong password' } })
      if (res.status === 401) statuses.push(res.status)
      else refused = res
    }
    assert.ok(statuses.length >= 3, `the first three failures are answered at once (${statuses.length} before the wait)`)
    assert.ok(refused !== undefined, 'refused once the waits grew')
    assert.equal(refused.status, 429)
    assert.equal(refused.body.code, 'SB_ERR_TOO_MANY_LOGIN_ATTEMPTS')
    assert.ok(Number(refused.headers.get('retry-after')) > 0)
    // Waiting, even with the right password: the guesser learns nothing from the answer.
    assert.equal((await request('POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })).status, 429)
    // Another user from the same address is not this pair.
    assert.equal((await request('POST', '/auth/login', { body: { username: 'bob', password: PASSWORD } })).status, 200)
  })

  it('a spoofed X-Forwarded-For does not buy a fresh budget when no proxy is trusted', async (t) => {
    const { request, createUser } = await build(t, { env: { LOGIN_RATE_LIMIT: '2' } })
    await createUser('alice')
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await request('POST', '/auth/login', { body: { username: 'alice', password: 'wrong password' }, headers: { 'x-forwarded-for': `10.0.0.${i}` } })
      statuses.push(res.status)
    }
    assert.deepEqual(statuses, [401, 401, 429, 429])
  })
})

describe('access token verification (BAR item 5: every failure is 401, never 500)', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const rs256 = (() => {
    const head = b64({ alg: 'RS256', typ: 'JWT' })
    const body = b64(goodClaims())
    const sig = createSign('RSA-SHA256').update(`${head}.${body}`).sign(privateKey).toString('base64url')
    return `${head}.${body}.${sig}`
  })()
  const { exp: _exp, ...noExp } = goodClaims()

  const cases: Array<[string, () => Record<string, string>]> = [
    ['no credentials', () => ({})],
    ['Bearer with nothing after it', () => ({ authorization: 'Bearer ' })],
    ['another scheme', () => ({ authorization: `Basic ${b64('alice:pw')}` })],
    ['alg: none', () => ({ authorization: `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${b64(goodClaims())}.` })],
    ['alg: none with a signature', () => ({ authorization: `Bearer ${b64({ alg: 'none' })}.${b64(goodClaims())}.${b64('sig')}` })],
    ['HS512 with the right secret (algorithm not pinned)', () => ({ authorization: `Bearer ${hs(goodClaims(), { alg: 'HS512' })}` })],
    ['RS256 (algorithm confusion)', () => ({ authorization: `Bearer ${rs256}` })],
    ['wrong secret', () => ({ authorization: `Bearer ${hs(goodClaims(), { secret: 'another-secret-another-secret-another-secret' })}` })],
    ['missing exp', () => ({ authorization: `Bearer ${hs(noExp)}` })],
    ['expired', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), iat: now() - 7200, exp: now() - 3600 })}` })],
    ['nbf in the future', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), nbf: now() + 3600 })}` })],
    ['wrong issuer', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), iss: 'evil' })}` })],
    ['no issuer', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), iss: undefined })}` })],
    ['no session claim (sid)', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), sid: undefined })}` })],
    ['sid that is not a string', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), sid: 42 })}` })],
    ['unknown role claim', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), role: 'root' })}` })],
    ['sub that is not a username', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), sub: '../../etc' })}` })],
    ['exp as a string', () => ({ authorization: `Bearer ${hs({ ...goodClaims(), exp: String(now() + 600) })}` })],
    ['garbage', () => ({ authorization: 'Bearer !!!.###.$$$' })],
    ['two segments', () => ({ authorization: `Bearer ${b64({ alg: 'HS256' })}.${b64(goodClaims())}` })],
    ['header is not JSON', () => ({ authorization: `Bearer ${b64('nope')}.${b64(goodClaims())}.${b64('x')}` })],
    ['payload is an array', () => ({ authorization: `Bearer ${hs([1, 2, 3] as unknown as object)}` })],
    ['a 9 KB token', () => ({ authorization: `Bearer ${'a'.repeat(9 * 1024)}` })],
    ['an empty X-API-Key', () => ({ 'x-api-key': '' })],
    ['an oversized X-API-Key', () => ({ 'x-api-key': 'k'.repeat(5000) })]
  ]

  for (const [name, headers] of cases) {
    it(`${name} → 401`, async (t) => {
      const { request, createUser } = await build(t)
      // The token's user exists: a refusal comes from the token, not from the account check.
      await createUser('alice')
      const res = await request('GET', '/rooms', { headers: headers() })
      assert.equal(res.status, 401, res.text)
      assert.match(res.body.code, /^SB_ERR_(UNAUTHORIZED|INVALID_TOKEN)$/)
    })
  }

  it('a well-formed token is accepted (the matrix above is not failing for another reason)', async (t) => {
    const { request, createUser } = await build(t)
    await createUser('alice')
    const res = await request('GET', '/rooms', { headers: { authorization: `Bearer ${hs(goodClaims())}` } })
    assert.equal(res.status, 200)
  })

  it('a token within the clock tolerance is still accepted', async (t) => {
    const { request, createUser } = await build(t, { env: { JWT_CLOCK_TOLERANCE: '30s' } })
    await createUser('alice')
    const res = await request('GET', '/rooms', { headers: { authorization: `Bearer ${hs({ ...goodClaims(), exp: now() - 5 })}` } })
    assert.equal(res.status, 200)
  })

  it('a 200 KB token is refused before any handler runs (431 from the HTTP parser), never 5xx', async (t) => {
    const { url, app } = await build(t)
    const res = await fetch(`${url}/rooms`, { headers: { authorization: `Bearer ${'a'.repeat(200 * 1024)}` } }).catch(() => null)
    // Node answers 431 or drops the connection; either way the server keeps serving.
    if (res !== null) assert.ok(res.status >= 400 && res.status < 500, String(res.status))
    assert.equal((await fetch(`${url}/health/live`)).status, 200)
    assert.ok(app.server.listening)
  })
})
