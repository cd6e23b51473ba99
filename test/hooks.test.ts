import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { build, sample, skipUnlessRedis, tempDir, TEST_REDIS_URL, wsConnect, type TestApp } from './helper.js'
import { deleteRedisKeys } from '../support/redis.js'
import { assertCommandError, assertErrorBody, assertReply, commandFixture, refusal, waitFor } from './ws-support.js'
import { closedPort, HOOKS_SECRET, hooksEnv, startBackend } from './hook-backend.js'

const ALL = 'connect,subscribe,publish,published,join,leave,disconnect'

async function metric (srv: TestApp, series: string): Promise<number> {
  return sample(await srv.app.metrics.scrape(), series) ?? 0
}

/** Waits until a metric reaches `value` (the event queue works in the background). */
async function metricReaches (srv: TestApp, series: string, value: number): Promise<void> {
  let last = 0
  const deadline = Date.now() + 10_000
  while ((last = await metric(srv, series)) < value) {
    if (Date.now() > deadline) assert.fail(`${series} stayed at ${last}, expected ${value}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('hooks to the application backend', () => {
  it('signs every call; connect attaches info shown in the welcome; each hook tells the backend who, where and what', async (t) => {
    const backend = await startBackend(t, call => call.hook !== 'connect' ? {} : call.body.user.id === 'alice' ? { info: { plan: 'pro', name: 'Alice A.' } } : { info: null })
    const { srv, alice, bob } = await commandFixture(t, hooksEnv(backend.url, ALL))
    // bob watches the lobby: alice's join reaches him with her info.
    const watcher = await wsConnect(t, srv, { token: bob })
    assert.deepEqual(watcher.welcome.user, { id: 'bob', role: 'user' }, 'info null: none')
    assertReply(await watcher.command({ type: 'subscribe', room: 'lobby' }))
    const ws = await wsConnect(t, srv, { token: alice, headers: { 'user-agent': 'hooks-test' } })
    assert.deepEqual(ws.welcome.user, { id: 'alice', role: 'user', info: { plan: 'pro', name: 'Alice A.' } })

    const connect = backend.of('connect').find(c => c.body.user.id === 'alice')
    assert.deepEqual(connect!.body.user, { id: 'alice', kind: 'user', role: 'user' })
    assert.equal(connect!.body.connection.id, ws.welcome.connectionId)
    assert.equal(connect!.body.connection.protocol, 'switchboard.v1')
    assert.equal(connect!.body.connection.userAgent, 'hooks-test')

    assertReply(await ws.command({ type: 'subscribe', room: 'lobby' }))
    const subscribe = backend.of('subscribe').find(c => c.body.user.id === 'alice')
    assert.equal(subscribe!.body.room, 'lobby')
    assert.deepEqual(subscribe!.body.connection, { id: ws.welcome.connectionId, ip: '127.0.0.1', info: { plan: 'pro', name: 'Alice A.' } })
    const join = (await backend.waitFor('join', 2)).find(c => c.body.user.id === 'alice')
    assert.deepEqual(join!.body, { hook: 'join', id: join!.id, ts: join!.body.ts, room: 'lobby', user: { id: 'alice' } })
    const pushed = await watcher.next(f => f.type === 'join' && f.user.id === 'alice')
    assert.deepEqual(pushed.user, { id: 'alice', info: { plan: 'pro', name: 'Alice A.' } })

    const secretData = { note: 'not-for-the-info-log-4711' }
    const published = assertReply(await ws.command({ type: 'publish', room: 'lobby', data: secretData }))
    const [publish] = backend.of('publish')
    assert.deepEqual(publish!.body.data, secretData)
    assert.equal(publish!.body.encoding, undefined)
    const [event] = await backend.waitFor('published')
    assert.deepEqual({ room: event!.body.room, epoch: event!.body.epoch, offset: event!.body.offset, data: event!.body.data }, { room: 'lobby', epoch: published.epoch, offset: published.offset, data: secretData })

    ws.close()
    const [leave] = await backend.waitFor('leave')
    assert.deepEqual([leave!.body.room, leave!.body.user.id], ['lobby', 'alice'])
    const [disconnect] = await backend.waitFor('disconnect')
    assert.equal(disconnect!.body.connection.id, ws.welcome.connectionId)
    assert.equal(typeof disconnect!.body.code, 'number')

    // Ids are unique per call; every call was verified against the secret by the backend.
    assert.equal(new Set(backend.calls.map(c => c.id)).size, backend.calls.length)
    assert.equal(await metric(srv, 'switchboard_hook_calls_total{hook="connect",outcome="ok"}'), 2)
    assert.ok(!srv.logText().includes(HOOKS_SECRET), 'the secret is never logged')
    assert.ok(!srv.logText().includes(secretData.note), 'bodies are not logged')
  })

  it('a refusal reaches the client with SB_ERR_HOOK_REFUSED / forbidden and the backend\'s reason, on every path', async (t) => {
    const backend = await startBackend(t, (call) => {
      if (call.hook === 'connect' && call.body.user.id === 'bob') return { refuse: { reason: 'bob is suspended' } }
      if (call.hook === 'subscribe' && call.body.room === 'news') return { refuse: { reason: 'news is for subscribers' } }
      if (call.hook === 'publish' && call.body.data?.swear === true) return { refuse: { reason: 'mind your language' } }
      return {}
    })
    const { srv, alice, bob } = await commandFixture(t, hooksEnv(backend.url, 'connect,subscribe,publish'))

    const refused = await refusal(t, srv, { token: bob })
    assert.equal(refused.status, 403)
    assertErrorBody(refused.body, 403, 'SB_ERR_HOOK_REFUSED')
    assert.match(String(refused.body.message), /bob is suspended/)

    const ws = await wsConnect(t, srv, { token: alice })
    const subscribe = await ws.command({ type: 'subscribe', room: 'news' })
    assertCommandError(subscribe, 'forbidden')
    assert.match(subscribe.error.message, /news is for subscribers/)
    // Nothing of the refused subscription remains: a second try is asked again, not a conflict.
    assertCommandError(await ws.command({ type: 'subscribe', room: 'news' }), 'forbidden')

    const publish = await ws.command({ type: 'publish', room: 'lobby', data: { swear: true } })
    assertCommandError(publish, 'forbidden')
    assert.match(publish.error.message, /mind your language/)
    const rest = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: { swear: true } } })
    assertErrorBody(rest.body, 403, 'SB_ERR_HOOK_REFUSED')
    assert.match(rest.body.message, /mind your language/)
    const history = await srv.request('GET', '/rooms/lobby/messages', { token: alice })
    assert.equal(history.body.publications.length, 0, 'a refused publish is not in history')
    assert.equal(await metric(srv, 'switchboard_hook_calls_total{hook="publish",outcome="refused"}'), 2)
  })

  it('the publish hook may replace data, JSON or bytes, from WebSocket and REST: subscribers and history get the replacement', async (t) => {
    const backend = await startBackend(t, (call) => {
      if (call.hook !== 'publish') return {}
      if (call.body.encoding === 'base64') return { data: Buffer.from('replaced bytes').toString('base64'), encoding: 'base64' }
      return { data: { text: String(call.body.data.text).toUpperCase(), checked: true } }
    })
    const { srv, alice, bob } = await commandFixture(t, hooksEnv(backend.url, 'publish'))
    const reader = await wsConnect(t, srv, { token: bob })
    assertReply(await reader.command({ type: 'subscribe', room: 'lobby' }))
    const writer = await wsConnect(t, srv, { token: alice })
    assertReply(await writer.command({ type: 'publish', room: 'lobby', data: { text: 'hello' } }))
    const json = await reader.next(f => f.type === 'message' && f.offset === 1)
    assert.deepEqual(json.data, { text: 'HELLO', checked: true })

    const rest = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: Buffer.from('original').toString('base64'), encoding: 'base64' } })
    assert.equal(rest.status, 201, rest.text)
    const bytes = await reader.next(f => f.type === 'message' && f.offset === 2)
    assert.equal(bytes.encoding, 'base64')
    assert.equal(Buffer.from(bytes.data as string, 'base64').toString(), 'replaced bytes')

    const history = await srv.request('GET', '/rooms/lobby/messages', { token: alice })
    assert.deepEqual(history.body.publications[0].data, { text: 'HELLO', checked: true })
  })

  it('a backend slower than HOOKS_TIMEOUT_MS fails refusing hooks closed with a temporary error', async (t) => {
    const backend = await startBackend(t, () => 'hold')
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'subscribe,publish', { HOOKS_TIMEOUT_MS: '100' }))
    const ws = await wsConnect(t, srv, { token: alice })
    const subscribe = await ws.command({ type: 'subscribe', room: 'lobby' })
    assertCommandError(subscribe, 'unavailable')
    assert.match(subscribe.error.message, /subscribe hook \(timed out\)/)
    const publish = await ws.command({ type: 'publish', room: 'lobby', data: 1 })
    assertCommandError(publish, 'unavailable')
    const rest = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: 1 } })
    assertErrorBody(rest.body, 503, 'SB_ERR_HOOK_UNAVAILABLE')
    assert.equal(await metric(srv, 'switchboard_hook_calls_total{hook="publish",outcome="timeout"}'), 2)
    assert.equal(await metric(srv, 'switchboard_hook_seconds_count{hook="publish"}'), 2)
  })

  it('a dead backend (closed port) refuses only hooked rooms (HOOKS_ROOMS): the others subscribe, publish and fan out', async (t) => {
    const url = `http://127.0.0.1:${await closedPort()}/hooks`
    const { srv, alice, bob } = await commandFixture(t, hooksEnv(url, 'subscribe,publish,published', { HOOKS_ROOMS: 'game:*,news' }))
    await srv.request('POST', '/rooms', { token: alice, body: { id: 'game:1' } })
    const ws = await wsConnect(t, srv, { token: alice })
    assertCommandError(await ws.command({ type: 'subscribe', room: 'game:1' }), 'unavailable')
    assertCommandError(await ws.command({ type: 'subscribe', room: 'news' }), 'unavailable')
    const rest = await srv.request('POST', '/rooms/game:1/messages', { token: alice, body: { data: 1 } })
    assertErrorBody(rest.body, 503, 'SB_ERR_HOOK_UNAVAILABLE')

    const other = await wsConnect(t, srv, { token: bob })
    assertReply(await other.command({ type: 'subscribe', room: 'lobby' }))
    assertReply(await ws.command({ type: 'publish', room: 'lobby', data: { ok: true } }))
    assert.deepEqual((await other.next(f => f.type === 'message')).data, { ok: true })
    assert.equal(await metric(srv, 'switchboard_hook_calls_total{hook="subscribe",outcome="unreachable"}'), 2)
  })

  it('calls held by a slow backend stall neither other rooms\' fan-out nor other connections', async (t) => {
    const backend = await startBackend(t, call => call.body.room === 'game:1' ? 'hold' : {})
    const { srv, alice, bob } = await commandFixture(t, hooksEnv(backend.url, 'publish', { HOOKS_TIMEOUT_MS: '30000', HOOKS_ROOMS: 'game:*' }))
    await srv.request('POST', '/rooms', { token: alice, body: { id: 'game:1' } })
    let settled = 0
    const held = Array.from({ length: 5 }, async () => {
      const res = await srv.request('POST', '/rooms/game:1/messages', { token: alice, body: { data: 'waiting' } })
      settled++
      return res
    })
    await backend.waitFor('publish', 5)

    const ws = await wsConnect(t, srv, { token: bob })
    assertReply(await ws.command({ type: 'subscribe', room: 'lobby' }))
    const other = await wsConnect(t, srv, { token: alice })
    assertReply(await other.command({ type: 'publish', room: 'lobby', data: 'through' }))
    assert.equal((await ws.next(f => f.type === 'message')).data, 'through')
    assert.equal(settled, 0, 'the held publishes were still waiting for the backend')

    backend.release()
    for (const res of await Promise.all(held)) assert.equal(res.status, 201, res.text)
  })

  it('past HOOKS_CONCURRENCY calls in flight a refusing hook fails at once (busy), without a request', async (t) => {
    const backend = await startBackend(t, () => 'hold')
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'publish', { HOOKS_CONCURRENCY: '2', HOOKS_TIMEOUT_MS: '30000' }))
    const held = [1, 2].map(async n => await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: n } }))
    await backend.waitFor('publish', 2)
    const busy = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: 3 } })
    assertErrorBody(busy.body, 503, 'SB_ERR_HOOK_UNAVAILABLE')
    assert.match(busy.body.message, /too many calls in flight/)
    assert.equal(backend.of('publish').length, 2)
    assert.equal(await metric(srv, 'switchboard_hook_calls_total{hook="publish",outcome="busy"}'), 1)
    backend.release()
    for (const res of await Promise.all(held)) assert.equal(res.status, 201, res.text)
  })

  it('an event the backend does not take is retried HOOKS_RETRIES times with the same id, then dropped and counted; a 4xx is dropped at once', async (t) => {
    const backend = await startBackend(t, call => call.body.room === 'lobby' ? { status: 503 } : { status: 400 })
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'published', { HOOKS_RETRIES: '2' }))
    const res = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: 'once' } })
    assert.equal(res.status, 201, 'the publish does not wait for its event')
    await metricReaches(srv, 'switchboard_hook_events_dropped_total{hook="published",reason="retries"}', 1)
    const attempts = backend.of('published')
    assert.equal(attempts.length, 3, 'the first attempt and two retries')
    assert.equal(new Set(attempts.map(a => a.id)).size, 1, 'one id for every attempt')
    assert.equal(await metric(srv, 'switchboard_hook_calls_total{hook="published",outcome="status"}'), 3)

    await srv.request('POST', '/rooms/news/messages', { token: alice, body: { data: 'rejected' } })
    await metricReaches(srv, 'switchboard_hook_events_dropped_total{hook="published",reason="rejected"}', 1)
    assert.equal(backend.of('published').filter(c => c.body.room === 'news').length, 1)
  })

  it('an idempotent retry that published nothing sends no second published event', async (t) => {
    const backend = await startBackend(t)
    // One event slot (half of 2): events leave in order, so the third publish's event is a barrier.
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'published', { HOOKS_CONCURRENCY: '2' }))
    for (const body of [{ data: 'a', idempotencyKey: 'k-1' }, { data: 'a', idempotencyKey: 'k-1' }, { data: 'b' }]) {
      assert.equal((await srv.request('POST', '/rooms/lobby/messages', { token: alice, body })).status, 201)
    }
    await waitFor(() => backend.of('published').some(c => c.body.offset === 2), 'the third publish\'s event')
    assert.deepEqual(backend.of('published').map(c => c.body.offset), [1, 2])
  })

  it('events past HOOKS_QUEUE_BYTES are dropped and counted; the queue never holds more', async (t) => {
    let holding = true
    const backend = await startBackend(t, () => holding ? 'hold' : {})
    const { srv, alice } = await commandFixture(t, hooksEnv(backend.url, 'published', { HOOKS_QUEUE_BYTES: '65536', HOOKS_CONCURRENCY: '2', HOOKS_TIMEOUT_MS: '30000' }))
    const big = 'x'.repeat(20_000)
    for (let i = 0; i < 6; i++) {
      const res = await srv.request('POST', '/rooms/lobby/messages', { token: alice, body: { data: big } })
      assert.equal(res.status, 201)
    }
    assert.ok(await metric(srv, 'switchboard_hook_events_dropped_total{hook="published",reason="queue_full"}') >= 3)
    assert.ok(await metric(srv, 'switchboard_hook_queue_bytes') <= 65536)
    holding = false
    backend.release()
    await waitFor(() => backend.of('published').length === 3, 'the queued events to be delivered')
  })
})

describe('hooks on the Redis engine, two nodes', () => {
  it('join and leave follow cluster-wide presence; a publication replaced on one node reaches the other; published comes once, from the publishing node', async (t) => {
    const skip = await skipUnlessRedis()
    if (skip !== false) return t.skip(skip)
    const backend = await startBackend(t, call => call.hook === 'publish' ? { data: { replaced: call.body.data } } : call.hook === 'connect' ? { info: { seat: call.body.user.id } } : {})
    const prefix = `sbhooks:${randomBytes(6).toString('hex')}:`
    t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
    const env = hooksEnv(backend.url, 'connect,publish,published,join,leave', { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix, DATABASE_URL: `sqlite:${join(tempDir(t), 'shared.db')}` })
    const a = await build(t, { env })
    const b = await build(t, { env })
    const alice = await a.userToken('alice')
    const bob = await a.userToken('bob')
    assert.equal((await a.request('POST', '/rooms', { token: alice, body: { id: 'arena' } })).status, 201)

    // alice watches from node b: bob's join, made on node a, reaches her with his info through Redis.
    const watcher = await wsConnect(t, b, { token: await b.login('alice') })
    assertReply(await watcher.command({ type: 'subscribe', room: 'arena' }))
    const onA = await wsConnect(t, a, { token: bob })
    const onB = await wsConnect(t, b, { token: await b.login('bob') })
    assertReply(await onA.command({ type: 'subscribe', room: 'arena' }))
    assertReply(await onB.command({ type: 'subscribe', room: 'arena' }))
    assert.deepEqual((await watcher.next(f => f.type === 'join' && f.user.id === 'bob')).user, { id: 'bob', info: { seat: 'bob' } })
    assert.equal((await a.request('POST', '/rooms/arena/messages', { token: alice, body: { data: 1 } })).status, 201)
    assert.deepEqual((await onB.next(f => f.type === 'message')).data, { replaced: 1 })
    onA.close()
    onB.close()
    await watcher.next(f => f.type === 'leave' && f.user.id === 'bob')
    await backend.waitFor('leave')
    assert.equal((await a.request('POST', '/rooms/arena/messages', { token: alice, body: { data: 2 } })).status, 201)
    const published = await backend.waitFor('published', 2)
    assert.deepEqual(published.map(c => c.body.offset).sort(), [1, 2])
    assert.equal(backend.of('join').filter(c => c.body.user.id === 'bob').length, 1, 'bob joined once, over two nodes')
    assert.equal(backend.of('leave').filter(c => c.body.user.id === 'bob').length, 1, 'and left once')
  })
})
