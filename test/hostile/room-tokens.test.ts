import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { build, TEST_JWT_SECRET, wsConnect } from '../helper.js'
import { assertCommandError, assertErrorBody, assertReply, b64, createApiKey, nowSeconds, refusal } from '../ws-support.js'
import { hmacToken, idpKey, idpToken, jwksEnv, jwksServer, roomToken, ROOM_SECRET } from '../idp-support.js'

/*
 * Room tokens, attacked (issue 22, "Room tokens"): a token for someone else, a token of one
 * kind passed as the other (room token as access token and back, for both signers), the
 * algorithm attacks (`none`, HMAC keyed with the provider's public key, an unpinned HMAC),
 * patterns that try to grant more than a room, oversized tokens, expired and over-long ones,
 * an op the token does not list, and a banned user holding a valid token. Every one is refused
 * with a clear error; the connection, and the server, keep working.
 */

const ROOM = 'game:42:chat'
const ALL_OPS = ['subscribe', 'publish', 'history', 'presence']

describe('hostile: room tokens', () => {
  it('refuses forged, confused, over-broad, expired and oversized room tokens on every path', async (t) => {
    const rsa = await idpKey('RS256', 'rsa-1')
    const jwks = await jwksServer(t, [rsa.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_ALGORITHMS: 'RS256', ROOM_TOKEN_SECRET: ROOM_SECRET, ROOM_TOKEN_MAX_TTL: '1h', LOG_LEVEL: 'debug' }) })
    const [alice, bob] = await Promise.all([srv.userToken('alice'), srv.userToken('bob')])
    assert.equal((await srv.request('POST', '/rooms', { token: alice, body: { id: ROOM, visibility: 'private' } })).status, 201)
    const ws = await wsConnect(t, srv, { token: bob })
    const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ sub: 'bob', rooms: [ROOM], ops: ALL_OPS, ...extra })
    const secret = (extra: Record<string, unknown> = {}, expiresIn?: number): Promise<string> =>
      roomToken(ROOM_SECRET, { claims: claims(extra), ...(expiresIn === undefined ? {} : { expiresIn }) })
    const good = await secret()
    assertReply(await ws.command({ type: 'history', room: ROOM, token: good }))

    const now = nowSeconds()
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ typ: 'room', ...claims(), exp: now + 60 })}.`
    // Every one of these is not a usable room token at all: SB_ERR_INVALID_ROOM_TOKEN.
    const invalid: Record<string, string> = {
      'bob\'s access token': bob,
      'no typ': await roomToken(ROOM_SECRET, { claims: { typ: undefined, ...claims() } }),
      'typ access': await secret({ typ: 'access' }),
      'typ ROOM': await secret({ typ: 'ROOM' }),
      'alg none': unsigned,
      'alg none, a signature kept': unsigned + good.split('.')[2]!,
      'HS512 with the room secret (HS256 is pinned)': await roomToken(ROOM_SECRET, { claims: claims(), alg: 'HS512' }),
      'signed with JWT_SECRET': await roomToken(TEST_JWT_SECRET, { claims: claims() }),
      'HS256 keyed with the provider\'s PEM, its issuer': await hmacToken(rsa.publicPem, 'ext:bob', { claims: { typ: 'room', rooms: [ROOM], ops: ALL_OPS } }),
      'HS256 keyed with the provider\'s PEM, no issuer': await roomToken(rsa.publicPem, { claims: claims() }),
      expired: await secret({}, -60),
      'exp past ROOM_TOKEN_MAX_TTL': await secret({}, 2 * 3600),
      'no exp': await new SignJWT({ typ: 'room', ...claims() }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(ROOM_SECRET)),
      'a bare *': await secret({ rooms: ['*'] }),
      '* inside a segment': await secret({ rooms: ['game:4*'] }),
      '* first': await secret({ rooms: ['*:chat'] }),
      'two stars': await secret({ rooms: ['game:42:**'] }),
      'every personal room': await secret({ rooms: ['user:*'] }),
      'a personal room': await secret({ rooms: ['user:alice'] }),
      'rooms a string': await secret({ rooms: ROOM }),
      'rooms empty': await secret({ rooms: [] }),
      'rooms not strings': await secret({ rooms: [{ $ne: null }] }),
      '17 rooms': await secret({ rooms: Array.from({ length: 17 }, (_, i) => `game:${i}:chat`) }),
      'a room name of 65 characters': await secret({ rooms: ['g'.repeat(65)] }),
      'an unknown op': await secret({ ops: ['subscribe', 'delete'] }),
      'ops empty': await secret({ ops: [] }),
      'an op twice': await secret({ ops: ['subscribe', 'subscribe'] }),
      'ops a string': await secret({ ops: 'subscribe' }),
      'sub a number': await secret({ sub: 42 }),
      'sub with a newline': await secret({ sub: 'bob\nadmin' })
    }
    // A valid room token that does not grant this: SB_ERR_FORBIDDEN.
    const notGranted: Record<string, string> = {
      'alice\'s token': await secret({ sub: 'alice' }),
      'a token of the provider\'s user of the same name': await roomToken(rsa, { claims: claims({ sub: 'ext:bob' }) }),
      'another game\'s pattern': await secret({ rooms: ['game:4:*'] }),
      'a pattern of the room as a prefix': await secret({ rooms: ['game:42:chat:*'] }),
      'another op': await secret({ ops: ['subscribe'] })
    }
    const httpPaths = [['POST', `/rooms/${ROOM}/messages`], ['GET', `/rooms/${ROOM}/messages`], ['GET', `/rooms/${ROOM}/presence`]] as const
    for (const [cases, code] of [[invalid, 'SB_ERR_INVALID_ROOM_TOKEN'], [notGranted, 'SB_ERR_FORBIDDEN']] as const) {
      for (const [attack, token] of Object.entries(cases)) {
        const op = attack === 'another op' ? 'publish' : 'subscribe'
        const command = op === 'publish' ? { type: 'publish', room: ROOM, data: 1, token } : { type: 'subscribe', room: ROOM, token }
        assertCommandError(await ws.command(command), 'forbidden')
        for (const [method, path] of attack === 'another op' ? [httpPaths[0]] : httpPaths) {
          const res = await srv.request(method, path, { token: bob, headers: { 'x-room-token': token }, ...(method === 'POST' ? { body: { data: 1 } } : {}) })
          assert.equal(res.status, 403, `${attack} ${method} ${path}: ${res.text}`)
          assertErrorBody(res.body, 403, code)
        }
      }
    }
    // The provider's room token for its own user works; for a built-in user it is refused.
    const external = await wsConnect(t, srv, { token: await idpToken(rsa, 'bob') })
    assertReply(await external.command({ type: 'history', room: ROOM, token: await roomToken(rsa, { claims: claims({ sub: 'ext:bob' }) }) }))
    assertCommandError(await ws.command({ type: 'history', room: ROOM, token: await roomToken(rsa, { claims: claims({ sub: 'bob' }) }) }), 'forbidden')
    // The provider's access token is no room token either.
    assertCommandError(await external.command({ type: 'history', room: ROOM, token: await idpToken(rsa, 'bob') }), 'forbidden')

    // Oversized: refused by the schema, unread.
    assertCommandError(await ws.command({ type: 'subscribe', room: ROOM, token: 'x'.repeat(4097) }), 'bad_request')
    assertCommandError(await ws.command({ type: 'room_token', room: ROOM, token: 'x'.repeat(4097) }), 'bad_request')
    const huge = await srv.request('GET', `/rooms/${ROOM}/messages`, { token: bob, headers: { 'x-room-token': 'x'.repeat(5000) } })
    assertErrorBody(huge.body, 400, 'SB_ERR_VALIDATION')
    // An API key acts by its scopes, never by a room token.
    const { key } = await createApiKey(srv, ['subscribe:*', 'history:*'])
    const byKey = await srv.request('GET', `/rooms/${ROOM}/messages`, { apiKey: key, headers: { 'x-room-token': good } })
    assertErrorBody(byKey.body, 403, 'SB_ERR_FORBIDDEN')

    // Still serving, the good token still works, and no token reached the log.
    assertReply(await ws.command({ type: 'subscribe', room: ROOM, token: good }))
    assert.equal((await srv.request('GET', `/rooms/${ROOM}/messages`, { token: bob, headers: { 'x-room-token': good } })).status, 200)
    const log = srv.logText()
    for (const token of [good, ...Object.values(invalid), ...Object.values(notGranted)]) assert.ok(!log.includes(token), 'no token in the logs')
    assert.ok(srv.logs().some(l => l.msg === 'room token refused'), 'why is in the debug log')
  })

  it('a room token is never an access token, whoever signed it', async (t) => {
    const rsa = await idpKey('RS256', 'rsa-1')
    const jwks = await jwksServer(t, [rsa.publicJwk])
    const srv = await build(t, { env: jwksEnv(jwks, { IDP_ALGORITHMS: 'RS256', ROOM_TOKEN_SECRET: ROOM_SECRET }) })
    const live = await wsConnect(t, srv, { token: await srv.userToken('bob') })
    const access = { role: 'admin', jti: 'j', sid: 's' }
    const tokens: Record<string, string> = {
      'signed with ROOM_TOKEN_SECRET': await roomToken(ROOM_SECRET, { claims: { sub: 'bob', rooms: [ROOM], ops: ALL_OPS } }),
      'with Switchboard\'s access claims, signed with ROOM_TOKEN_SECRET': await roomToken(ROOM_SECRET, { claims: { iss: 'switchboard', sub: 'bob', rooms: [ROOM], ops: ALL_OPS, ...access } }),
      // Were JWT_SECRET ever to leak into a backend's hands, `typ` still tells the two apart.
      'with Switchboard\'s access claims, signed with JWT_SECRET': await roomToken(TEST_JWT_SECRET, { claims: { iss: 'switchboard', sub: 'bob', rooms: [ROOM], ops: ALL_OPS, ...access } }),
      'signed by the identity provider': await roomToken(rsa, { claims: { sub: 'ext:bob', rooms: [ROOM], ops: ALL_OPS } })
    }
    for (const [what, token] of Object.entries(tokens)) {
      const res = await srv.request('GET', '/auth/me', { token })
      assertErrorBody(res.body, 401, 'SB_ERR_INVALID_TOKEN')
      assert.equal((await refusal(t, srv, { token })).status, 401, what)
      assertCommandError(await live.command({ type: 'refresh', token }), 'unauthorized')
    }
    assertReply(await live.command({ type: 'ping' }))
  })

  it('a banned user\'s valid room token opens nothing', async (t) => {
    const srv = await build(t, { env: { ROOM_TOKEN_SECRET: ROOM_SECRET } })
    const [alice, carol] = await Promise.all([srv.userToken('alice'), srv.userToken('carol')])
    for (const visibility of ['private', 'public']) {
      const room = `game:${visibility}:chat`
      assert.equal((await srv.request('POST', '/rooms', { token: alice, body: { id: room, visibility } })).status, 201)
      assert.equal((await srv.request('PUT', `/rooms/${room}/bans/carol`, { token: alice, body: {} })).status, 201)
      const token = await roomToken(ROOM_SECRET, { claims: { sub: 'carol', rooms: [`game:${visibility}:*`], ops: ALL_OPS } })
      const ws = await wsConnect(t, srv, { token: carol })
      for (const command of [{ type: 'subscribe' }, { type: 'publish', data: 1 }, { type: 'history' }, { type: 'presence' }]) {
        assertCommandError(await ws.command({ ...command, room, token }), 'forbidden')
      }
      const res = await srv.request('POST', `/rooms/${room}/messages`, { token: carol, headers: { 'x-room-token': token }, body: { data: 1 } })
      // The real-time core answers with its protocol code's row (as for any ban on this route).
      assertErrorBody(res.body, 403, 'SB_ERR_FORBIDDEN')
      assert.equal(res.body.message, 'You are banned from this room')
    }
  })
})
