import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { WebSocket } from 'ws'
import { randomBytes } from 'node:crypto'
import { build, PASSWORD, skipUnlessRedis, skipUnlessStore, STORE_KINDS, tempDir, TEST_REDIS_URL, wsConnect } from './helper.js'
import { deleteRedisKeys } from '../support/redis.js'
import { assertCommandError, assertErrorBody, assertReply, nowSeconds, refusal, signedToken, waitFor } from './ws-support.js'
import { runCli as cli } from './process.js'
import { SwitchboardClient } from '@switchboard/client'
import { createRemoteKeySet } from '../src/auth/remote-key-set.js'
import { AUDIENCE, hmacToken, idpKey, idpToken, ISSUER, jwksEnv, jwksServer } from './idp-support.js'

const HMAC_SECRET = 'the-backend-signs-with-this-secret-0123456789'

describe('external identity: tokens of the application\'s identity provider (JWKS)', () => {
  it('RS256, ES256 and EdDSA tokens work on REST, every handshake source and refresh; /auth/me shows the prefixed id', async (t) => {
    const keys = await Promise.all([idpKey('RS256', 'rsa-1'), idpKey('ES256', 'ec-1'), idpKey('EdDSA', 'ed-1')])
    const jwks = await jwksServer(t, keys.map(k => k.publicJwk))
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_NAME_CLAIM: 'name' }) })

    for (const key of keys) {
      const token = await idpToken(key, 'auth0|5f7c8ec7', { claims: { name: 'Ada Lovelace' } })
      const me = await srv.request('GET', '/auth/me', { token })
      assert.equal(me.status, 200, `${key.alg}: ${me.text}`)
      assert.equal(me.body.kind, 'user')
      assert.equal(me.body.source, 'external')
      assert.equal(me.body.name, 'Ada Lovelace')
      assert.equal(me.body.user.id, 'ext:auth0|5f7c8ec7')
      assert.equal(me.body.user.role, 'user')

      for (const options of [{ token }, { protocols: ['switchboard.v1', `bearer.${token}`] }, { query: `?token=${encodeURIComponent(token)}` }]) {
        const ws = await wsConnect(t, srv, options)
        assert.deepEqual(ws.welcome.user, { id: 'ext:auth0|5f7c8ec7', role: 'user' }, `${key.alg} ${JSON.stringify(Object.keys(options))}`)
        ws.close()
      }
    }

    // refresh on a live connection: a fresh token of the same user is taken, another user's is not.
    const ws = await wsConnect(t, srv, { token: await idpToken(keys[0]!, 'auth0|5f7c8ec7', { expiresIn: 60 }) })
    const fresh = await idpToken(keys[1]!, 'auth0|5f7c8ec7', { expiresIn: 600 })
    const refreshed = assertReply(await ws.command({ type: 'refresh', token: fresh }))
    const exp = (JSON.parse(Buffer.from(fresh.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp
    assert.deepEqual(refreshed, { tokenExpiresAt: exp * 1000 })
    assertCommandError(await ws.command({ type: 'refresh', token: await idpToken(keys[0]!, 'auth0|someone-else') }), 'forbidden')
    assertCommandError(await ws.command({ type: 'refresh', token: await idpToken(keys[0]!, 'auth0|5f7c8ec7', { expiresIn: -60 }) }), 'unauthorized')
    // A built-in user named like the external id's subject is someone else.
    const builtin = await srv.userToken('auth0')
    assertCommandError(await ws.command({ type: 'refresh', token: builtin }), 'forbidden')
    assertReply(await ws.command({ type: 'ping' }))
  })

  it('refuses wrong issuer, wrong audience, expired, unpinned algorithm and bad user claims with 401, on REST and the handshake', async (t) => {
    const [rsa, ec, ed] = await Promise.all([idpKey('RS256', 'rsa-1'), idpKey('ES256', 'ec-1'), idpKey('EdDSA', 'ed-1')])
    const jwks = await jwksServer(t, [rsa.publicJwk, ec.publicJwk, ed.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_ALGORITHMS: 'RS256,ES256', LOG_LEVEL: 'debug' }) })
    const good = await idpToken(rsa, 'user-1')
    assert.equal((await srv.request('GET', '/auth/me', { token: good })).status, 200)

    const bad: Record<string, string> = {
      'wrong issuer': await idpToken(rsa, 'user-1', { issuer: 'https://evil.test/' }),
      'wrong audience': await idpToken(rsa, 'user-1', { audience: 'another-api' }),
      expired: await idpToken(rsa, 'user-1', { expiresIn: -60 }),
      'algorithm not pinned (EdDSA)': await idpToken(ed, 'user-1'),
      'user claim with a space': await idpToken(rsa, 'user 1'),
      'user claim too long': await idpToken(rsa, 'u'.repeat(129)),
      'signed by a key the provider does not publish': await idpToken(await idpKey('RS256', 'rsa-1'), 'user-1'),
      'HS256 with the identity provider\'s issuer (no IDP_HMAC_SECRET)': await hmacToken(HMAC_SECRET, 'user-1')
    }
    for (const [what, token] of Object.entries(bad)) {
      const res = await srv.request('GET', '/auth/me', { token })
      assert.equal(res.status, 401, what)
      assertErrorBody(res.body, 401, 'SB_ERR_INVALID_TOKEN')
      const refused = await refusal(t, srv, { token })
      assert.equal(refused.status, 401, what)
      assertErrorBody(refused.body, 401, 'SB_ERR_INVALID_TOKEN')
    }
    // Why is in the debug log (never the token).
    const reasons = srv.logs().filter(l => l.msg === 'identity provider token refused').map(l => l.reason)
    for (const reason of ['ERR_JWT_CLAIM_VALIDATION_FAILED', 'ERR_JWT_EXPIRED', 'ERR_JOSE_ALG_NOT_ALLOWED', 'user_claim', 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED']) {
      assert.ok(reasons.includes(reason), `${reason} in ${JSON.stringify(reasons)}`)
    }
    for (const token of Object.values(bad)) assert.ok(!srv.logText().includes(token), 'no token in the logs')
  })

  it('an unknown kid refetches the JWKS once, a flood of unknown kids does not flood the provider, rotation is picked up, and the cached keys outlive the provider', async (t) => {
    const first = await idpKey('ES256', 'key-2026-01')
    const jwks = await jwksServer(t, [first.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_JWKS_COOLDOWN: '10m', IDP_JWKS_MAX_AGE: '1h', IDP_JWKS_MAX_STALE: '2h' }) })
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(first, 'ada') })).status, 200)
    assert.equal(jwks.requests(), 1, 'fetched once (at boot), shared by the first token')

    // The provider rotates: a token with the new kid makes one refetch, and works.
    const second = await idpKey('ES256', 'key-2026-02')
    jwks.keys = [first.publicJwk, second.publicJwk]
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(second, 'ada') })).status, 200)
    assert.equal(jwks.requests(), 2, 'one refetch for the unknown kid')

    // A flood of made-up kids: 401 each, and no request to the provider within the cooldown.
    const forger = await idpKey('ES256', 'unused')
    const flood = await Promise.all(Array.from({ length: 50 }, async () => {
      const token = await idpToken(forger, 'mallory', { kid: randomUUID() })
      return (await srv.request('GET', '/auth/me', { token })).status
    }))
    assert.deepEqual([...new Set(flood)], [401])
    assert.equal(jwks.requests(), 2, 'the flood cost the provider nothing')

    // The provider goes away: the cached keys keep answering.
    await jwks.stop()
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(first, 'ada') })).status, 200)
    const ws = await wsConnect(t, srv, { token: await idpToken(second, 'ada') })
    assert.equal(ws.welcome.user.id, 'ext:ada')
  })

  it('the key set serves stale keys while the provider is down, then answers 503 past IDP_JWKS_MAX_STALE; failed fetches are rate bound', async (t) => {
    const key = await idpKey('RS256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    let clock = 1_000_000
    const warnings: string[] = []
    const keySet = createRemoteKeySet({ url: jwks.url, maxAgeMs: 60_000, cooldownMs: 10_000, maxStaleMs: 600_000, now: () => clock, log: { warn: (_obj, msg) => { warnings.push(msg) } } })
    const header = { alg: 'RS256', kid: 'k1' }
    const token = { payload: '', signature: '', protected: '' }
    assert.equal((await keySet.key(header, token)).type, 'public')
    assert.equal(jwks.requests(), 1)
    assert.equal((await keySet.key(header, token)).type, 'public')
    assert.equal(jwks.requests(), 1, 'served from the cache')

    await jwks.stop()
    clock += 120_000 // past the max age: a background refetch, which fails; the cached key answers.
    assert.equal((await keySet.key(header, token)).type, 'public')
    await new Promise(resolve => setImmediate(resolve))
    await waitFor(() => warnings.length === 1, 'the failed refresh logged')
    assert.match(warnings[0]!, /refresh failed; the cached keys keep answering/)
    // Within the cooldown no further attempt is made.
    assert.equal((await keySet.key(header, token)).type, 'public')
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(warnings.length, 1)

    clock += 600_000 // past the max staleness: a temporary error, not a verdict on the token.
    await assert.rejects(keySet.key(header, token), (err: Error & { code?: string }) => err.code === 'SB_ERR_UNAVAILABLE')
  })

  it('with no keys fetched yet and the provider down, tokens are answered 503 (temporary), not 401', async (t) => {
    const key = await idpKey('RS256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    await jwks.stop()
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_JWKS_COOLDOWN: '1s' }) })
    const res = await srv.request('GET', '/auth/me', { token: await idpToken(key, 'ada') })
    assertErrorBody(res.body, 503, 'SB_ERR_UNAVAILABLE')
    const refused = await refusal(t, srv, { token: await idpToken(key, 'ada') })
    assert.equal(refused.status, 503)
  })
})

describe('external identity: a PEM key file and an HMAC secret', () => {
  it('IDP_PUBLIC_KEY_FILE verifies tokens of that key only', async (t) => {
    const key = await idpKey('PS256', 'ignored')
    const file = join(tempDir(t), 'idp.pem')
    writeFileSync(file, key.publicPem)
    const srv = await build(t, { env: { IDP_PUBLIC_KEY_FILE: file, IDP_ISSUER: ISSUER, IDP_AUDIENCE: AUDIENCE, IDP_ALGORITHMS: 'PS256' } })
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(key, 'pem-user') })).body.user.id, 'ext:pem-user')
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(await idpKey('PS256', 'x'), 'pem-user') })).status, 401)
    const ws = await wsConnect(t, srv, { token: await idpToken(key, 'pem-user') })
    assert.equal(ws.welcome.user.id, 'ext:pem-user')
    // An id that fits a room name has a personal room, as built-in users do.
    assertReply(await ws.command({ type: 'subscribe', room: 'user:ext:pem-user' }))
    assertCommandError(await ws.command({ type: 'subscribe', room: 'user:alice' }), 'forbidden')
  })

  it('IDP_HMAC_SECRET verifies HS256/384/512 tokens of the backend; Switchboard\'s own tokens keep working beside them', async (t) => {
    const srv = await build(t, { env: { IDP_HMAC_SECRET: HMAC_SECRET, IDP_ISSUER: 'backend', IDP_AUDIENCE: 'realtime', IDP_USER_PREFIX: 'app:', IDP_ADMIN_CLAIM: 'roles', IDP_ADMIN_VALUE: 'admin' } })
    for (const alg of ['HS256', 'HS384', 'HS512'] as const) {
      const me = await srv.request('GET', '/auth/me', { token: await hmacToken(HMAC_SECRET, '42', { alg, issuer: 'backend', audience: 'realtime' }) })
      assert.equal(me.body.user.id, 'app:42', alg)
    }
    assert.equal((await srv.request('GET', '/auth/me', { token: await hmacToken('another-secret-that-is-long-enough-000', '42', { issuer: 'backend', audience: 'realtime' }) })).status, 401)
    // The admin claim makes an admin: admin routes open, and the welcome says so.
    const admin = await hmacToken(HMAC_SECRET, 'ops-1', { issuer: 'backend', audience: 'realtime', claims: { roles: ['user', 'admin'] } })
    assert.equal((await srv.request('GET', '/auth/me', { token: admin })).body.user.role, 'admin')
    assert.equal((await srv.request('DELETE', '/admin/users/app:42/connections', { token: admin })).status, 200)
    assert.equal((await wsConnect(t, srv, { token: admin })).welcome.user.role, 'admin')
    // Switchboard's own accounts beside them (AUTH_ACCOUNTS=both by default).
    const alice = await srv.userToken('alice')
    const me = await srv.request('GET', '/auth/me', { token: alice })
    assert.deepEqual([me.body.user.id, me.body.source], ['alice', 'builtin'])
  })
})

describe('external identity: rooms and accounts', () => {
  for (const kind of STORE_KINDS) {
    it(`an external user is recorded when it becomes an owner or a member, and a ban applies (${kind})`, async (t) => {
      const skip = await skipUnlessStore(kind)
      if (skip !== false) return t.skip(skip)
      const key = await idpKey('RS256', 'k1')
      const jwks = await jwksServer(t, [key.publicJwk])
      const srv = await build(t, { store: kind, env: jwksEnv(jwks) })
      const owner = await idpToken(key, 'auth0|owner')
      const guest = await idpToken(key, 'auth0|guest')

      // Connecting records nothing.
      await wsConnect(t, srv, { token: guest })
      assert.equal(await srv.app.store.getUser('ext:auth0|guest'), undefined)

      // Creating a room makes the creator its owner: recorded.
      const created = await srv.request('POST', '/rooms', { token: owner, body: { id: 'game-42', visibility: 'private' } })
      assert.equal(created.status, 201, created.text)
      assert.equal((await srv.app.store.getUser('ext:auth0|owner'))?.role, 'user')
      // A private room stays hidden from an external non-member, as from anyone.
      assert.equal((await srv.request('GET', '/rooms/game-42', { token: guest })).status, 404)

      // Adding a member who never connected records them too (ids URL-encoded in the path).
      const guestPath = `/rooms/game-42/members/${encodeURIComponent('ext:auth0|guest')}`
      const added = await srv.request('PUT', guestPath, { token: owner, body: { role: 'member' } })
      assert.equal(added.status, 201, added.text)
      assert.equal(added.body.userId, 'ext:auth0|guest')
      const ws = await wsConnect(t, srv, { token: guest })
      assertReply(await ws.command({ type: 'subscribe', room: 'game-42' }))
      assertReply(await ws.command({ type: 'publish', room: 'game-42', data: { move: 'e4' } }))
      const members = await srv.request('GET', '/rooms/game-42/members', { token: guest })
      assert.deepEqual(members.body.items.map((m: { userId: string, role: string }) => [m.userId, m.role]).sort(), [['ext:auth0|guest', 'member'], ['ext:auth0|owner', 'owner']])

      // A ban applies unchanged: the live subscription ends, the member row goes, access is refused.
      const banned = await srv.request('PUT', `/rooms/game-42/bans/${encodeURIComponent('ext:auth0|guest')}`, { token: owner, body: { reason: 'cheating' } })
      assert.equal(banned.status, 201, banned.text)
      const unsubscribed = await ws.next(f => f.type === 'unsubscribed')
      assert.equal(unsubscribed.reason, 'banned')
      assert.equal((await srv.request('GET', '/rooms/game-42', { token: guest })).status, 404)
      assertCommandError(await ws.command({ type: 'subscribe', room: 'game-42' }), 'not_found')
      const readd = await srv.request('PUT', guestPath, { token: owner, body: { role: 'member' } })
      assertErrorBody(readd.body, 409, 'SB_ERR_USER_BANNED')

      // Banning someone who never connected records them, so the ban is waiting for them.
      const stranger = await srv.request('PUT', `/rooms/game-42/bans/${encodeURIComponent('ext:auth0|stranger')}`, { token: owner, body: {} })
      assert.equal(stranger.status, 201, stranger.text)
      // An id under another prefix is nobody's.
      const foreign = await srv.request('PUT', `/rooms/game-42/members/${encodeURIComponent('kc:someone')}`, { token: owner, body: { role: 'member' } })
      assertErrorBody(foreign.body, 404, 'SB_ERR_USER_NOT_FOUND')

      // No password ever signs an external user in.
      const login = await srv.request('POST', '/auth/login', { body: { username: 'ext:auth0|owner', password: PASSWORD } })
      assert.equal(login.status, 400)
    })
  }

  it('the periodic account check of connected users closes a deleted built-in account, never an external user without a row', async (t) => {
    const key = await idpKey('RS256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { ACCOUNT_CACHE_MS: '100' }) })
    const external = await wsConnect(t, srv, { token: await idpToken(key, 'no-row') })
    const carol = await wsConnect(t, srv, { token: await srv.userToken('carol') })
    // Deleted behind the auth service's back: only the periodic check notices. Its closing
    // carol is the barrier: the same pass asked about every connected user.
    assert.equal((await srv.app.store.deleteUser('carol')).ok, true)
    assert.equal((await carol.closed).code, 4504)
    assertReply(await external.command({ type: 'ping' }))
  })

  it('AUTH_ACCOUNTS=external refuses registration, password sign-in, refresh tokens and Switchboard\'s own tokens', async (t) => {
    const key = await idpKey('EdDSA', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { AUTH_ACCOUNTS: 'external' }) })
    await srv.createUser('alice')
    for (const [path, body] of [['/auth/register', { username: 'bob', password: PASSWORD }], ['/auth/login', { username: 'alice', password: PASSWORD }], ['/auth/refresh', { refreshToken: 'x'.repeat(43) }]] as const) {
      const res = await srv.request('POST', path, { body })
      assertErrorBody(res.body, 403, 'SB_ERR_EXTERNAL_ACCOUNTS_ONLY')
    }
    const own = signedToken({ sub: 'alice', role: 'user', jti: 'j1', sid: 's1', iss: 'switchboard', iat: nowSeconds(), exp: nowSeconds() + 600 })
    assert.equal((await srv.request('GET', '/auth/me', { token: own })).status, 401)
    assert.equal((await refusal(t, srv, { token: own })).status, 401)
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(key, 'ada') })).body.user.id, 'ext:ada')
  })

  it('AUTH_ACCOUNTS=builtin refuses the provider\'s tokens, configured or not', async (t) => {
    const key = await idpKey('EdDSA', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { AUTH_ACCOUNTS: 'builtin' }) })
    assert.equal((await srv.request('GET', '/auth/me', { token: await idpToken(key, 'ada') })).status, 401)
    assert.equal((await srv.request('GET', '/auth/me', { token: await srv.userToken('alice') })).body.user.id, 'alice')
    assert.equal(jwks.requests(), 0, 'the provider is never asked')
  })
})

describe('external identity: two nodes on the Redis engine', () => {
  it('an external user\'s publications, presence and kick cross nodes under its prefixed id', async (t) => {
    const skip = await skipUnlessRedis()
    if (skip !== false) return t.skip(skip)
    const key = await idpKey('ES256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const prefix = `sbidp:${randomBytes(6).toString('hex')}:`
    t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
    // Two nodes of one deployment: one store (a shared SQLite file), one Redis key prefix.
    const env = jwksEnv(jwks, { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix, DATABASE_URL: `sqlite:${join(tempDir(t), 'shared.db')}`, IDP_ADMIN_CLAIM: 'roles', IDP_ADMIN_VALUE: 'ops' })
    const a = await build(t, { env })
    const b = await build(t, { env })
    const owner = await idpToken(key, 'auth0|owner')
    assert.equal((await a.request('POST', '/rooms', { token: owner, body: { id: 'arena' } })).status, 201)

    const guest = await wsConnect(t, a, { token: await idpToken(key, 'auth0|guest') })
    assertReply(await guest.command({ type: 'subscribe', room: 'arena' }))
    const publisher = await wsConnect(t, b, { token: owner })
    assertReply(await publisher.command({ type: 'subscribe', room: 'arena' }))
    assertReply(await publisher.command({ type: 'publish', room: 'arena', data: { move: 'e4' } }))
    const message = await guest.next(f => f.type === 'message')
    assert.deepEqual([message.from.id, message.data], ['ext:auth0|owner', { move: 'e4' }])
    const presence = assertReply(await publisher.command({ type: 'presence', room: 'arena' }))
    assert.ok(JSON.stringify(presence).includes('ext:auth0|guest'), JSON.stringify(presence))

    // An admin by the token's claim kicks the guest through node b; node a closes its socket.
    const ops = await idpToken(key, 'auth0|ops', { claims: { roles: ['ops'] } })
    const kicked = await b.request('DELETE', `/admin/users/${encodeURIComponent('ext:auth0|guest')}/connections`, { token: ops })
    assert.equal(kicked.status, 200, kicked.text)
    assert.equal((await guest.closed).code, 4503)
  })
})

describe('external identity: the SDK and the CLI', () => {
  it('the SDK connects and refreshes with getToken returning the provider\'s tokens', async (t) => {
    const key = await idpKey('ES256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_CLOCK_TOLERANCE: '0s', JWT_CLOCK_TOLERANCE: '0s' }) })
    let issued = 0
    const client = new SwitchboardClient({ url: srv.url, WebSocket, getToken: async () => { issued++; return await idpToken(key, 'sdk-user', { expiresIn: 3 }) } })
    t.after(() => client.close())
    const welcome = await client.ready()
    assert.deepEqual(welcome.user, { id: 'ext:sdk-user', role: 'user' })
    // The client renews its token on the open connection before it expires.
    await waitFor(() => issued >= 2, 'a second token asked for', 15_000)
    await waitFor(() => Date.now() > (welcome.tokenExpiresAt ?? 0) + 1000, 'past the first token\'s expiry', 15_000)
    assert.equal(client.state, 'open')
    assert.equal(client.welcome?.connectionId, welcome.connectionId)
    assert.equal(typeof await client.ping(), 'number')
  })

  it('switchboard load --token takes the provider\'s token (and creates rooms as that user)', async (t) => {
    const key = await idpKey('RS256', 'k1')
    const jwks = await jwksServer(t, [key.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { WS_MAX_CONNECTIONS_PER_USER: '1000' }) })
    const token = await idpToken(key, 'loader')
    const run = await cli(join(tempDir(t), 'none.json'), ['load', '--url', srv.url, '--token', token, '--create-rooms', '--burst', '--messages', '20', '--subscribers', '4', '--rooms', '1', '--json'])
    assert.equal(run.code, 0, run.stderr)
    const report = JSON.parse(run.stdout) as { deliveries: { delivered: number, lost: number } }
    assert.deepEqual([report.deliveries.delivered, report.deliveries.lost], [80, 0])
    assert.equal((await srv.app.store.getUser('ext:loader'))?.id, 'ext:loader', 'the room\'s owner was recorded')
  })
})
