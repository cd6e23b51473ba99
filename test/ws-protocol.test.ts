import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { build, wsConnect } from './helper.js'
import {
  nowSeconds, signedToken, portOf, refusal, assertErrorBody, assertErrorFrame, assertReply, within, waitFor, rawUpgradeResponse, attempt, commandFixture, createApiKey
} from './ws-support.js'

// ---------------------------------------------------------------------------------------

describe('ws handshake', () => {
  it('accepts every credential form and sends a complete welcome', async (t) => {
    const srv = await build(t, { env: { WS_HEARTBEAT_MS: '5000' } })
    const alice = await srv.userToken('alice')
    const { key, name } = await createApiKey(srv, ['subscribe:*'])

    const header = await wsConnect(t, srv, { token: alice })
    const w = header.welcome
    assert.equal(w.protocol, 'switchboard.v1')
    assert.equal(typeof w.connectionId, 'string')
    assert.ok(w.connectionId.length > 0)
    assert.deepEqual(w.user, { id: 'alice', role: 'user' })
    assert.equal(w.heartbeatMs, 5000)
    const { ws } = srv.config
    assert.deepEqual(w.limits, {
      maxMessageBytes: ws.maxMessageBytes,
      messagesPerSecond: ws.messagesPerSecond,
      messagesBurst: ws.messagesBurst,
      maxSubscriptions: ws.maxSubscriptions,
      maxBufferedBytes: ws.maxBufferedBytes,
      idleTimeoutMs: ws.idleTimeoutMs
    })
    const claims = JSON.parse(Buffer.from(alice.split('.')[1]!, 'base64url').toString()) as { exp: number }
    assert.equal(w.tokenExpiresAt, claims.exp * 1000)

    const viaProtocol = await wsConnect(t, srv, { protocols: ['switchboard.v1', `bearer.${alice}`] })
    assert.equal(viaProtocol.welcome.user.id, 'alice')
    assert.equal(viaProtocol.socket.protocol, 'switchboard.v1')
    // The server must select exactly our protocol and never echo the bearer entry back.
    const upgrade = await rawUpgradeResponse(srv, { 'sec-websocket-protocol': `switchboard.v1, bearer.${alice}` })
    assert.equal(upgrade.status, 101)
    assert.equal(upgrade.headers['sec-websocket-protocol'], 'switchboard.v1')
    assert.ok(!upgrade.rawHeaders.join('\n').includes(alice.split('.')[2]!), 'the token was echoed in the response headers')

    const viaQuery = await wsConnect(t, srv, { query: `?token=${alice}` })
    assert.equal(viaQuery.welcome.user.id, 'alice')

    for (const client of [await wsConnect(t, srv, { apiKey: key }), await wsConnect(t, srv, { query: `?api_key=${encodeURIComponent(key)}` })]) {
      assert.deepEqual(client.welcome.user, { id: `key:${name}`, role: 'apiKey' })
      assert.equal(client.welcome.tokenExpiresAt, null)
      assertReply(await client.command({ type: 'ping' }))
    }

    // The upgrade request was logged, with its credentials censored.
    const log = srv.logText()
    assert.ok(log.includes('/ws?token=[REDACTED]'), 'the ?token= handshake was not logged at all')
    assert.ok(log.includes('/ws?api_key=[REDACTED]'), 'the ?api_key= handshake was not logged at all')
    assert.ok(!log.includes(alice), 'a token reached the log')
    assert.ok(!log.includes(alice.split('.')[2]!), 'a token signature reached the log')
    assert.ok(!log.includes(key), 'an API key reached the log')
  })

  it('refuses bad credentials with 401 before the upgrade', async (t) => {
    const srv = await build(t)
    await srv.createUser('alice')
    const claims = { sub: 'alice', role: 'user', jti: 'j1', sid: 's1', iss: 'switchboard' }
    const expired = signedToken({ ...claims, iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 })
    // The same claims with a future exp are accepted: the expired token fails for its exp alone.
    await wsConnect(t, srv, { token: signedToken({ ...claims, iat: nowSeconds(), exp: nowSeconds() + 600 }) })
    const cases: Array<[string, Parameters<typeof wsConnect>[2], string]> = [
      ['no credentials', {}, 'SB_ERR_UNAUTHORIZED'],
      ['garbage bearer', { token: 'garbage' }, 'SB_ERR_INVALID_TOKEN'],
      ['not a bearer scheme', { headers: { authorization: 'Basic YWxpY2U6eA==' } }, 'SB_ERR_INVALID_TOKEN'],
      ['expired bearer', { token: expired }, 'SB_ERR_INVALID_TOKEN'],
      ['expired token in the protocol header', { protocols: ['switchboard.v1', `bearer.${expired}`] }, 'SB_ERR_INVALID_TOKEN'],
      ['garbage ?token=', { query: '?token=nope' }, 'SB_ERR_INVALID_TOKEN'],
      ['unknown X-API-Key', { apiKey: 'sbk_0000000000000000000000000000' }, 'SB_ERR_INVALID_TOKEN'],
      ['unknown ?api_key=', { query: '?api_key=nope' }, 'SB_ERR_INVALID_TOKEN'],
      ['oversized API key', { apiKey: 'k'.repeat(300) }, 'SB_ERR_INVALID_TOKEN']
    ]
    for (const [what, options, code] of cases) {
      const { status, body } = await refusal(t, srv, options)
      assert.equal(status, 401, what)
      assertErrorBody(body, 401, code)
    }
    assert.equal(srv.app.realtime.stats().connections, 1)
  })

  it('checks Origin: foreign 403, none or same-origin allowed', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const foreign = await refusal(t, srv, { token: alice, headers: { origin: 'https://evil.example' } })
    assert.equal(foreign.status, 403)
    assertErrorBody(foreign.body, 403, 'SB_ERR_ORIGIN_NOT_ALLOWED')
    // Same scheme and host, other port: still another origin.
    const otherPort = await refusal(t, srv, { token: alice, headers: { origin: `http://127.0.0.1:${portOf(srv) + 1}` } })
    assert.equal(otherPort.status, 403)
    assert.equal((await refusal(t, srv, { token: alice, headers: { origin: 'null' } })).status, 403)
    // An origin check comes before credentials: a foreign page learns nothing about the token.
    assert.equal((await refusal(t, srv, { headers: { origin: 'https://evil.example' } })).status, 403)

    await wsConnect(t, srv, { token: alice })
    await wsConnect(t, srv, { token: alice, headers: { origin: srv.url } })
  })

  it('WS_ALLOWED_ORIGINS: only the listed origins, or any with *', async (t) => {
    const listed = await build(t, { env: { WS_ALLOWED_ORIGINS: 'https://app.example, https://admin.example' } })
    const alice = await listed.userToken('alice')
    await wsConnect(t, listed, { token: alice, headers: { origin: 'https://app.example' } })
    await wsConnect(t, listed, { token: alice, headers: { origin: 'https://admin.example' } })
    assert.equal((await refusal(t, listed, { token: alice, headers: { origin: 'https://evil.example' } })).status, 403)
    // A list replaces the same-origin default.
    assert.equal((await refusal(t, listed, { token: alice, headers: { origin: listed.url } })).status, 403)

    const any = await build(t, { env: { WS_ALLOWED_ORIGINS: '*' } })
    const bob = await any.userToken('bob')
    await wsConnect(t, any, { token: bob, headers: { origin: 'https://evil.example' } })
  })

  it('limits handshakes per address with 429, spoofed X-Forwarded-For included', async (t) => {
    const srv = await build(t, { env: { WS_HANDSHAKES_PER_IP_PER_MINUTE: '2' } })
    const alice = await srv.userToken('alice')
    await wsConnect(t, srv, { token: alice })
    await wsConnect(t, srv, { token: alice })
    const third = await refusal(t, srv, { token: alice })
    assert.equal(third.status, 429)
    assertErrorBody(third.body, 429, 'SB_ERR_RATE_LIMITED')
    // TRUST_PROXY is off: the header buys no fresh budget.
    const spoofed = await refusal(t, srv, { token: alice, headers: { 'x-forwarded-for': '203.0.113.9' } })
    assert.equal(spoofed.status, 429)
  })

  it('TRUST_PROXY: the handshake budget is per forwarded address, as REST sees it', async (t) => {
    const srv = await build(t, { env: { WS_HANDSHAKES_PER_IP_PER_MINUTE: '1', TRUST_PROXY: 'loopback' } })
    const alice = await srv.userToken('alice')
    await wsConnect(t, srv, { token: alice, headers: { 'x-forwarded-for': '203.0.113.9' } })
    const again = await refusal(t, srv, { token: alice, headers: { 'x-forwarded-for': '203.0.113.9' } })
    assert.equal(again.status, 429)
    assert.ok(srv.logs().some(l => l.msg === 'websocket handshake refused' && l.ip === '203.0.113.9'), 'the refusal names the forwarded address')
    const other = await wsConnect(t, srv, { token: alice, headers: { 'x-forwarded-for': '203.0.113.10' } })
    const connections = srv.app.realtime.listConnections()
    assert.deepEqual(connections.map(c => c.ip).sort(), ['203.0.113.10', '203.0.113.9'])
    other.close()
  })

  it('refuses a URL with two tokens, and counts the handshake refused by its budget', async (t) => {
    const srv = await build(t, { env: { WS_HANDSHAKES_PER_IP_PER_MINUTE: '2' } })
    const alice = await srv.userToken('alice')
    const twice = await refusal(t, srv, { query: `?token=${alice}&token=${alice}` })
    assertErrorBody(twice.body, 401, 'SB_ERR_INVALID_TOKEN')
    await wsConnect(t, srv, { query: `?token=${alice}` })
    const over = await refusal(t, srv, { token: alice })
    assert.equal(over.status, 429)
    const metrics = await srv.request('GET', '/metrics')
    assert.match(metrics.text, /switchboard_rate_limited_total\{scope="handshakes"\} 1/)
  })

  it('answers GET /ws without an upgrade with 426; other upgrade paths and malformed upgrades as before', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const plain = await srv.request('GET', '/ws')
    assert.equal(plain.status, 426)
    assert.equal(plain.body.code, 'SB_ERR_UPGRADE_REQUIRED')
    assert.equal((await rawUpgradeResponse(srv, { authorization: `Bearer ${alice}` }, '/nowhere')).status, 404)
    // ws itself refuses a malformed upgrade (here a version it does not speak) with 400.
    assert.equal((await rawUpgradeResponse(srv, { authorization: `Bearer ${alice}`, 'sec-websocket-version': '7' })).status, 400)
    await wsConnect(t, srv, { token: alice })
    assert.equal(srv.app.realtime.stats().connections, 1)
  })

  it('caps connections per user and per address with 429, and admits again after a close', async (t) => {
    const srv = await build(t, { env: { WS_MAX_CONNECTIONS_PER_USER: '2', WS_MAX_CONNECTIONS_PER_IP: '3' } })
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    const first = await wsConnect(t, srv, { token: alice })
    await wsConnect(t, srv, { token: alice })
    const third = await refusal(t, srv, { token: alice })
    assert.equal(third.status, 429)
    assertErrorBody(third.body, 429, 'SB_ERR_TOO_MANY_CONNECTIONS')
    assert.match(third.body.message as string, /user/)

    first.close()
    await within(first.closed, 'the close')
    await waitFor(() => srv.app.realtime.stats().connections === 1, 'the server to forget the closed connection')
    await wsConnect(t, srv, { token: alice })

    // alice 2 + bob 1 = 3 from 127.0.0.1: bob is under his own cap but the address is full.
    await wsConnect(t, srv, { token: bob })
    const perIp = await refusal(t, srv, { token: bob })
    assert.equal(perIp.status, 429)
    assertErrorBody(perIp.body, 429, 'SB_ERR_TOO_MANY_CONNECTIONS')
    assert.match(perIp.body.message as string, /address/)
  })

  it('holds the per-user cap when handshakes race', async (t) => {
    const srv = await build(t, { env: { WS_MAX_CONNECTIONS_PER_USER: '2' } })
    const alice = await srv.userToken('alice')
    // Upgrades deferred a little (as a slow hook or a remote rate-limit store would): all six
    // pass admission before any of them exists, so only the check after the upgrade can hold the cap.
    const wss = srv.app.websocketServer as { handleUpgrade: (...args: unknown[]) => void }
    const handleUpgrade = wss.handleUpgrade
    wss.handleUpgrade = function (...args) { setTimeout(() => handleUpgrade.apply(this, args), 50) }
    t.after(() => { wss.handleUpgrade = handleUpgrade })
    const outcomes = await within(Promise.all(Array.from({ length: 6 }, () => attempt(t, srv, { authorization: `Bearer ${alice}` }))), 'six handshakes')
    assert.equal(outcomes.filter(o => o.welcome).length, 2, JSON.stringify(outcomes))
    // The others were refused before the upgrade (429) or, having passed it together, right after (4029).
    for (const o of outcomes.filter(o => !o.welcome)) assert.ok(o.status === 429 || o.code === 4029, JSON.stringify(o))
    assert.equal(srv.app.realtime.stats().connections, 2)
  })

  it('a handshake that passed admission just before a drain is told to reconnect (1012)', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    // The drain starts between admission (onRequest) and the upgrade.
    const wss = srv.app.websocketServer as { handleUpgrade: (...args: unknown[]) => void }
    const handleUpgrade = wss.handleUpgrade
    wss.handleUpgrade = function (...args) {
      void srv.app.realtime.drain(100)
      handleUpgrade.apply(this, args)
    }
    t.after(() => { wss.handleUpgrade = handleUpgrade })
    const outcome = await within(attempt(t, srv, { authorization: `Bearer ${alice}` }), 'the handshake')
    assert.deepEqual(outcome, { welcome: false, code: 1012 })
  })

  it('refuses upgrades with 503 while shutting down', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    await wsConnect(t, srv, { token: alice })
    srv.app.lifecycle.beginShutdown()
    const refused = await refusal(t, srv, { token: alice })
    assert.equal(refused.status, 503)
    assertErrorBody(refused.body, 503, 'SB_ERR_SHUTTING_DOWN')
  })
})

describe('ws commands', () => {
  it('subscribe: reply shape, conflict, not_found, forbidden (banned), subscription limit', async (t) => {
    const { srv, alice, bob, carol } = await commandFixture(t, { WS_MAX_SUBSCRIPTIONS: '2' })
    const a = await wsConnect(t, srv, { token: alice })
    const sub = assertReply(await a.command({ type: 'subscribe', room: 'lobby' }))
    assert.deepEqual(Object.keys(sub).sort(), ['epoch', 'offset', 'publications', 'recovered', 'room'])
    assert.equal(sub.room, 'lobby')
    assert.equal(typeof sub.epoch, 'string')
    assert.equal(sub.offset, 0)
    assert.equal(sub.recovered, false)
    assert.deepEqual(sub.publications, [])

    const again = await a.command({ type: 'subscribe', room: 'lobby' })
    assertErrorFrame(again, 'conflict', again.id)
    const missing = await a.command({ type: 'subscribe', room: 'nope' })
    assertErrorFrame(missing, 'not_found', missing.id)

    // Limit 2: the third is refused before the room is even looked at, and a slot frees on unsubscribe.
    assertReply(await a.command({ type: 'subscribe', room: 'news' }))
    const third = await a.command({ type: 'subscribe', room: 'secret' })
    assertErrorFrame(third, 'forbidden', third.id)
    assert.match(third.error.message as string, /limit/i)
    assertReply(await a.command({ type: 'unsubscribe', room: 'news' }))
    assert.equal(assertReply(await a.command({ type: 'subscribe', room: 'secret' })).room, 'secret')

    const b = await wsConnect(t, srv, { token: bob })
    const hidden = await b.command({ type: 'subscribe', room: 'secret' })
    assertErrorFrame(hidden, 'not_found', hidden.id)
    assertReply(await b.command({ type: 'subscribe', room: 'lobby' }))

    const c = await wsConnect(t, srv, { token: carol })
    const banned = await c.command({ type: 'subscribe', room: 'lobby' })
    assertErrorFrame(banned, 'forbidden', banned.id)
    // Personal rooms: your own yes, someone else's no.
    assertReply(await c.command({ type: 'subscribe', room: 'user:carol' }))
    const other = await c.command({ type: 'subscribe', room: 'user:alice' })
    assertErrorFrame(other, 'forbidden', other.id)
  })

  it('unsubscribe is idempotent and stops delivery', async (t) => {
    const { srv, alice } = await commandFixture(t)
    const a = await wsConnect(t, srv, { token: alice })
    assertReply(await a.command({ type: 'subscribe', room: 'lobby' }))
    assert.deepEqual(assertReply(await a.command({ type: 'unsubscribe', room: 'lobby' })), {})
    assert.deepEqual(assertReply(await a.command({ type: 'unsubscribe', room: 'lobby' })), {})
    assert.deepEqual(assertReply(await a.command({ type: 'unsubscribe', room: 'never' })), {})
    assertReply(await a.command({ type: 'publish', room: 'lobby', data: 'after' }))
    // The ping's reply comes after anything the publish could have pushed to us.
    assertReply(await a.command({ type: 'ping' }))
    assert.equal(a.frames.filter(f => f.type === 'message').length, 0)
  })

  it('publish: {epoch, offset}; forbidden for non-members and under policy moderators', async (t) => {
    const { srv, alice, bob, dave } = await commandFixture(t)
    const a = await wsConnect(t, srv, { token: alice })
    const first = assertReply(await a.command({ type: 'publish', room: 'lobby', data: { n: 1 } }))
    assert.deepEqual(Object.keys(first).sort(), ['epoch', 'offset'])
    assert.equal(first.offset, 1)
    const second = assertReply(await a.command({ type: 'publish', room: 'lobby', data: { n: 2 } }))
    assert.equal(second.offset, 2)
    assert.equal(second.epoch, first.epoch)
    assert.equal(assertReply(await a.command({ type: 'publish', room: 'news', data: 'owner may' })).offset, 1)

    const b = await wsConnect(t, srv, { token: bob })
    const outsider = await b.command({ type: 'publish', room: 'lobby', data: 'x' })
    assertErrorFrame(outsider, 'forbidden', outsider.id)
    const hidden = await b.command({ type: 'publish', room: 'secret', data: 'x' })
    assertErrorFrame(hidden, 'not_found', hidden.id)
    const missing = await b.command({ type: 'publish', room: 'nope', data: 'x' })
    assertErrorFrame(missing, 'not_found', missing.id)

    const d = await wsConnect(t, srv, { token: dave })
    const member = await d.command({ type: 'publish', room: 'news', data: 'x' })
    assertErrorFrame(member, 'forbidden', member.id)
    assert.equal(assertReply(await a.command({ type: 'history', room: 'news' })).offset, 1, 'a refused publish was stored')
  })

  it('history (limit, since) and presence', async (t) => {
    const { srv, alice, bob } = await commandFixture(t)
    const a = await wsConnect(t, srv, { token: alice })
    let epoch = ''
    for (const n of [1, 2, 3]) epoch = assertReply(await a.command({ type: 'publish', room: 'lobby', data: n })).epoch as string

    const offsets = (result: Record<string, unknown>): number[] => (result.publications as Array<{ offset: number }>).map(p => p.offset)
    const all = assertReply(await a.command({ type: 'history', room: 'lobby' }))
    assert.deepEqual(Object.keys(all).sort(), ['complete', 'epoch', 'offset', 'publications'])
    assert.deepEqual(offsets(all), [1, 2, 3])
    assert.equal(all.epoch, epoch)
    assert.equal(all.offset, 3)
    const pub = (all.publications as Array<Record<string, unknown>>)[0]!
    assert.deepEqual(pub.data, 1)
    assert.deepEqual(pub.from, { id: 'alice' })
    assert.equal(typeof pub.ts, 'number')
    assert.deepEqual(offsets(assertReply(await a.command({ type: 'history', room: 'lobby', limit: 2 }))), [2, 3])
    const since = assertReply(await a.command({ type: 'history', room: 'lobby', since: { epoch, offset: 1 } }))
    assert.deepEqual(offsets(since), [2, 3])
    assert.equal(since.complete, true)
    assert.deepEqual(offsets(assertReply(await a.command({ type: 'history', room: 'lobby', since: { epoch, offset: 1 }, limit: 1 }))), [2])
    const hidden = await (await wsConnect(t, srv, { token: bob })).command({ type: 'history', room: 'secret' })
    assertErrorFrame(hidden, 'not_found', hidden.id)

    assert.deepEqual(assertReply(await a.command({ type: 'presence', room: 'lobby' })), { users: [], connections: 0 })
    assertReply(await a.command({ type: 'subscribe', room: 'lobby' }))
    assert.deepEqual(assertReply(await a.command({ type: 'presence', room: 'lobby' })), { users: ['alice'], connections: 1 })
    const missing = await a.command({ type: 'presence', room: 'nope' })
    assertErrorFrame(missing, 'not_found', missing.id)
  })

  it('ping and refresh', async (t) => {
    const { srv, alice, bob } = await commandFixture(t)
    const a = await wsConnect(t, srv, { token: alice })
    const ping = await a.command({ type: 'ping' })
    assert.deepEqual(ping, { type: 'reply', id: ping.id, result: {} })
    const numericId = 42
    a.send({ type: 'ping', id: numericId })
    assert.deepEqual(await a.next(f => f.id === numericId), { type: 'reply', id: numericId, result: {} })

    const fresh = await srv.login('alice')
    const refreshed = assertReply(await a.command({ type: 'refresh', token: fresh }))
    const claims = JSON.parse(Buffer.from(fresh.split('.')[1]!, 'base64url').toString()) as { exp: number }
    assert.deepEqual(refreshed, { tokenExpiresAt: claims.exp * 1000 })
    const foreign = await a.command({ type: 'refresh', token: bob })
    assertErrorFrame(foreign, 'forbidden', foreign.id)
    const garbage = await a.command({ type: 'refresh', token: 'garbage' })
    assertErrorFrame(garbage, 'unauthorized', garbage.id)
    const expired = await a.command({ type: 'refresh', token: signedToken({ sub: 'alice', role: 'user', jti: 'j9', iss: 'switchboard', iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 }) })
    assertErrorFrame(expired, 'unauthorized', expired.id)
    assertReply(await a.command({ type: 'ping' }))

    const { key } = await createApiKey(srv, ['subscribe:*'])
    const k = await wsConnect(t, srv, { apiKey: key })
    const keyRefresh = await k.command({ type: 'refresh', token: fresh })
    assertErrorFrame(keyRefresh, 'bad_request', keyRefresh.id)
  })
})

describe('handshake budget', () => {
  it('refused handshakes (bad tokens) spend the per-address handshake budget too', async (t) => {
    const server = await build(t, { env: { WS_HANDSHAKES_PER_IP_PER_MINUTE: '3' } })
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) {
      const error = await wsConnect(t, server, { token: 'not-a-token' }).then(() => null, (err: { statusCode?: number }) => err)
      statuses.push(error?.statusCode ?? 101)
    }
    assert.deepEqual(statuses, [401, 401, 401, 429, 429])
  })
})
