import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import fc from 'fast-check'
import { WebSocket } from 'ws'
import { backoffBound, backoffDelay, NEWEST, SwitchboardClient, type HistoryPage, type PageOptions, type WebSocketConstructor } from '@switchboard/client'
import {
  clients, countingWebSocket, createRoom, ENV, FAST, ioUntil, recorder, rejects, scriptedServer, settle, startProxy, waitFor, welcomeFrame, WITHIN_MS
} from './client-support.js'
import { build, tempDir } from './helper.js'
import { freePort } from '../support/free-port.js'
import { ADMIN, baseEnv, startServer, waitUntilReady, withTimeout, type ServerProcess } from './process.js'

/*
 * The client SDK against real servers: in-process apps (build) for most tests, a real server
 * process for the restart, and a TCP proxy (test/client-support.ts) to cut the network, refuse
 * connections and count connection attempts. Small scripted `ws` servers cover what the
 * real server never does on request (stay silent, close with 4500, ask for a resubscribe,
 * refuse with rate_limited) and what needs a clock the test moves (the pacing, the backoff).
 * Nothing asserts a wall-clock duration: the pacing, rate_limited and backoff tests read
 * node:test's mocked clock. Every other wait is for an event, with a generous bound.
 */

describe('client SDK: commands', () => {
  it('connects with a token (Node transport) and subscribes, publishes, receives, reads history and presence, pings', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, 'lobby')
    const { client: a, states } = client({ url: srv.url, token: alice })
    const welcome = await a.ready()
    assert.equal(welcome.user.id, 'alice')
    assert.equal(typeof welcome.tokenExpiresAt, 'number')
    assert.deepEqual(states, ['open'])

    const rec = recorder()
    const sub = await a.subscribe('lobby', rec.handler)
    assert.equal(sub.state, 'subscribed')
    assert.equal(sub.position?.offset, 0)
    const joins: string[] = []
    const leaves: string[] = []
    sub.on('join', e => joins.push(e.user.id))
    sub.on('leave', e => leaves.push(e.user.id))

    const first = await a.publish('lobby', { text: 'hi' })
    assert.equal(first.offset, 1)
    const second = await a.publish('lobby', [1, 2, 3], { idempotencyKey: 'k-1' })
    assert.equal(second.offset, 2)
    assert.deepEqual(await a.publish('lobby', 'ignored: same key', { idempotencyKey: 'k-1' }), second)
    await waitFor('two messages', () => rec.messages().length === 2)
    assert.deepEqual(rec.messages().map(m => [m.room, m.offset, m.data, m.from.id]), [['lobby', 1, { text: 'hi' }, 'alice'], ['lobby', 2, [1, 2, 3], 'alice']])
    assert.deepEqual(sub.position, { epoch: first.epoch, offset: 2 })

    const history = await a.history('lobby', { limit: 10 })
    assert.deepEqual(history.publications.map(p => p.data), [{ text: 'hi' }, [1, 2, 3]])
    const since = await a.history('lobby', { since: { epoch: first.epoch, offset: 1 } })
    assert.deepEqual(since.publications.map(p => p.offset), [2])
    assert.equal(since.complete, true)

    // Reading back page by page: `next` is the options of the following page, null at the end.
    const back: unknown[] = []
    let options: PageOptions | null = { before: NEWEST, limit: 1 }
    while (options !== null) {
      const page: HistoryPage = await a.history('lobby', options)
      back.push(...page.publications.map(p => p.data))
      options = page.next === null ? null : { ...page.next, limit: 1 } as PageOptions
    }
    assert.deepEqual(back, [[1, 2, 3], { text: 'hi' }])
    const forward = await a.history('lobby', { after: 0, epoch: first.epoch })
    assert.deepEqual([forward.publications.map(p => p.offset), forward.next, forward.top], [[1, 2], null, { epoch: first.epoch, offset: 2 }])

    // Presence, and join / leave as events on the subscription.
    const { client: b } = client({ url: srv.url, token: bob })
    await b.subscribe('lobby', () => {})
    await waitFor('join of bob', () => joins.includes('bob'))
    assert.deepEqual(await a.presence('lobby'), { users: ['alice', 'bob'], connections: 2 })
    await b.close()
    await waitFor('leave of bob', () => leaves.includes('bob'))

    assert.equal(typeof await a.ping(), 'number')
    await sub.unsubscribe()
    assert.equal(sub.state, 'ended')
    await a.publish('lobby', 'after unsubscribe')
    await a.ping()
    assert.equal(rec.messages().length, 2, 'nothing after unsubscribe')
    assert.deepEqual(await a.presence('lobby'), { users: [], connections: 0 })
  })

  it('connects with an API key, and with the browser transport (token in Sec-WebSocket-Protocol)', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    await createRoom(srv, root, 'sensors')
    const res = await srv.request('POST', '/api-keys', { token: root, body: { name: 'svc', scopes: ['publish:sensors', 'subscribe:sensors'] } })
    assert.equal(res.status, 201, res.text)

    const { client: service } = client({ url: srv.url, apiKey: res.body.key as string })
    const welcome = await service.ready()
    assert.deepEqual(welcome.user, { id: 'key:svc', role: 'apiKey' })
    assert.equal(welcome.tokenExpiresAt, null)
    const rec = recorder()
    await service.subscribe('sensors', rec.handler)
    assert.equal((await service.publish('sensors', 21.5)).offset, 1)
    await waitFor('own publication', () => rec.messages().length === 1)
    await rejects(service.history('sensors'), 'forbidden')

    // The browser transport (ws stands in for the browser's WebSocket): no headers, the token rides in the subprotocol.
    const { client: browser } = client({ url: srv.url.replace('http', 'ws'), token: alice, transport: 'browser', WebSocket })
    assert.equal((await browser.ready()).user.id, 'alice')
    assert.equal((await browser.history('sensors')).publications.length, 1)
    assert.throws(() => new SwitchboardClient({ url: srv.url, apiKey: 'sbk_x', transport: 'browser', WebSocket }), /browsers cannot send/)
    assert.throws(() => new SwitchboardClient({ url: srv.url }), /token, getToken or apiKey/)
  })

  it('rejects with typed SwitchboardErrors from real server errors', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, 'announce', { publish: 'moderators' })
    await createRoom(srv, alice, 'secret', { visibility: 'private' })
    const { client: b } = client({ url: srv.url, token: bob })

    const notFound = await rejects(b.subscribe('nowhere', () => {}), 'not_found')
    assert.equal(notFound.temporary, false)
    await rejects(b.subscribe('secret', () => {}), 'not_found')
    const forbidden = await rejects(b.publish('announce', 'x', { idempotencyKey: 'mine' }), 'forbidden')
    assert.equal(forbidden.idempotencyKey, 'mine', 'a failed publish tells its key')
    await rejects(b.history('announce', { limit: 5000 }), 'bad_request')
    await b.subscribe('announce', () => {})
    await rejects(b.subscribe('announce', () => {}), 'conflict')
    // The connection survived every error.
    assert.equal(b.state, 'open')
    assert.equal(typeof await b.ping(), 'number')
  })

  it('paces a burst of commands under the welcome\'s message rate: nothing a bucket of that rate would refuse, all within twice the time it needs, each once, in order (scripted server, mocked clock)', async (t) => {
    const client = clients(t)
    // Not the client's defaults, so the pacing must come from the welcome.
    const rate = { messagesPerSecond: 20, messagesBurst: 6 }
    const count = 20 // under the SDK's 32 in flight, so only the pacing can hold commands back
    const accepted: Array<{ data: unknown, at: number }> = []
    const refused: Array<{ data: unknown, at: number }> = []
    let serverSide: WebSocket | undefined
    // A ping from the server and the client's pong: whatever the client wrote before the pong
    // has reached the server by then (one socket, in order). No timer involved.
    const roundTrip = (): Promise<void> => new Promise(resolve => { serverSide!.once('pong', () => resolve()); serverSide!.ping() })
    const server = await scriptedServer(t, (socket) => {
      serverSide = socket
      socket.send(welcomeFrame(null, rate))
      // The real server's per-connection bucket (src/realtime/connection.ts takeToken): full at
      // first, refilled at messagesPerSecond, a refused frame takes nothing. On the mocked
      // clock: a frame arrives before the test moves it again (see roundTrip), so `at` is the
      // time it was written.
      let tokens = rate.messagesBurst
      let lastRefill: number | undefined
      socket.on('message', (raw) => {
        const command = JSON.parse(raw.toString()) as { type: string, id: number, data?: unknown }
        if (command.type !== 'publish') return
        const at = Date.now()
        tokens = Math.min(rate.messagesBurst, tokens + (at - (lastRefill ?? at)) * rate.messagesPerSecond / 1000)
        lastRefill = at
        if (tokens < 1) {
          refused.push({ data: command.data, at })
          socket.send(JSON.stringify({ type: 'error', id: command.id, error: { code: 'rate_limited', message: 'slow down', temporary: true } }))
          return
        }
        tokens -= 1
        accepted.push({ data: command.data, at })
        socket.send(JSON.stringify({ type: 'reply', id: command.id, result: { epoch: 'e1', offset: accepted.length } }))
      })
    })
    const { client: c, errors } = client({ url: server.url, token: 'x' })
    await c.ready()
    // From here the SDK's clock (and the scripted server's) moves only when the test says so;
    // sockets stay real.
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() })
    try {
      const startedAt = Date.now()
      const published = Promise.allSettled(Array.from({ length: count }, (_, i) => c.publish('lobby', i)))
      // Twice the time the server's rate needs for them all: a client far slower than the rate
      // it was given does not pass for pacing. Moved 1 ms at a time, so each frame's time is exact.
      const enoughMs = 2 * count * 1000 / rate.messagesPerSecond
      while (accepted.length + refused.length < count && Date.now() - startedAt < enoughMs) {
        await roundTrip()
        t.mock.timers.tick(1)
      }
      await roundTrip()
      // Written all at once (no pacing), the frames past the burst would find the bucket empty.
      assert.deepEqual(refused.map(r => r.data), [], `publishes the server would refuse, written at (mocked ms): ${refused.map(r => r.at - startedAt).join(', ')}`)
      assert.deepEqual(accepted.map(a => a.data), Array.from({ length: count }, (_, i) => i), `all ${count} written within ${enoughMs} ms of the mocked clock, each once, in order`)
      const results = await published
      assert.deepEqual(results.map(r => r.status === 'fulfilled' ? r.value.offset : String(r.reason)), Array.from({ length: count }, (_, i) => i + 1))
      assert.deepEqual(errors, [])
    } finally {
      t.mock.timers.reset()
    }
  })

  // One refusal, and three in a row (each resets the wait; the first is where the time the
  // refusal took to arrive could be counted as waiting).
  for (const refused of [1, 3]) {
    it(`${refused} command(s) refused with rate_limited go out again in the order first sent, once retryAfterMs has passed since the refusal (scripted server, mocked clock)`, async (t) => {
      const client = clients(t)
      const sent: unknown[] = []
      const held: string[] = []
      let release: (() => void) | undefined
      let refusals = refused
      let serverSide: WebSocket | undefined
      // A ping from the server and the client's pong: whatever the client wrote before the pong
      // has reached the server by then (one socket, in order). No timer involved.
      const roundTrip = (): Promise<void> => new Promise(resolve => { serverSide!.once('pong', () => resolve()); serverSide!.ping() })
      const server = await scriptedServer(t, (socket) => {
        serverSide = socket
        socket.send(welcomeFrame())
        socket.on('message', (raw) => {
          const command = JSON.parse(raw.toString()) as { type: string, id: number, data?: unknown }
          if (command.type === 'subscribe') {
            socket.send(JSON.stringify({ type: 'reply', id: command.id, result: { room: 'lobby', epoch: 'e1', offset: 0, recovered: false, publications: [] } }))
            return
          }
          if (command.type !== 'publish') return
          sent.push(command.data)
          if (refusals > 0) {
            refusals--
            held.push(JSON.stringify({ type: 'error', id: command.id, error: { code: 'rate_limited', message: 'slow down', temporary: true, retryAfterMs: 150 } }))
            if (refusals === 0) {
              // Held back until the test releases them (after moving the client's clock), then a
              // message the client surfaces: frames arrive in order, so once it is seen, every
              // refusal before it has been handled.
              release = () => {
                for (const frame of held) socket.send(frame)
                socket.send(JSON.stringify({ type: 'message', room: 'lobby', epoch: 'e1', offset: 1, data: 'marker', from: { id: 'bob' }, ts: 1 }))
              }
            }
            return
          }
          socket.send(JSON.stringify({ type: 'reply', id: command.id, result: { epoch: 'e1', offset: sent.length } }))
        })
      })
      const { client: c } = client({ url: server.url, token: 'x' })
      const rec = recorder()
      await c.subscribe('lobby', rec.handler)
      // From here the SDK's clock moves only when the test says so; sockets stay real.
      t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() })
      try {
        const published = Promise.all([0, 1, 2].map(n => c.publish('lobby', n)))
        await ioUntil(() => release !== undefined, 'the three publishes')
        // The refusals take 100 ms to come back: the wait they ask for starts when they arrive.
        t.mock.timers.tick(100)
        release!()
        await ioUntil(() => rec.messages().length === 1, 'the marker after the refusals')
        await roundTrip()
        assert.deepEqual(sent, [0, 1, 2], 'nothing is sent again at once')
        t.mock.timers.tick(149)
        await roundTrip()
        assert.deepEqual(sent, [0, 1, 2], 'nor 1 ms before retryAfterMs, counted from the refusal')
        t.mock.timers.tick(1)
        // Then paced by the connection's rate (a token every ~1 ms of the mocked clock).
        for (let step = 0; step < 100 && sent.length < 3 + refused; step++) {
          await roundTrip()
          t.mock.timers.tick(5)
        }
        await published
        assert.deepEqual(sent, [0, 1, 2, ...[0, 1, 2].slice(0, refused)], 'the refused publishes, resent in their first order')
      } finally {
        t.mock.timers.reset()
      }
    })
  }

  it('an unsubscribed push (removed) ends the subscription with an event', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, 'team', { visibility: 'private' })
    const put = await srv.request('PUT', '/rooms/team/members/bob', { token: alice, body: { role: 'member' } })
    assert.ok(put.status === 200 || put.status === 201, put.text)
    const { client: b } = client({ url: srv.url, token: bob })
    const sub = await b.subscribe('team', () => {})
    const ended = new Promise(resolve => sub.on('end', resolve))
    const del = await srv.request('DELETE', '/rooms/team/members/bob', { token: alice })
    assert.ok(del.status === 204 || del.status === 200, del.text)
    assert.deepEqual(await ended, { room: 'team', reason: 'removed' })
    assert.equal(sub.state, 'ended')
    // The room is free to subscribe again on this client (and the server says no).
    await rejects(b.subscribe('team', () => {}), 'not_found')
  })

  it('times out a request the server never answers, and an attempt that never gets a welcome', async (t) => {
    const client = clients(t)
    const silent = await scriptedServer(t, socket => socket.send(welcomeFrame()))
    const { client: c } = client({ url: silent.url, token: 'x', requestTimeoutMs: 200 })
    await c.ready()
    const timeout = await rejects(c.ping(), 'timeout')
    assert.equal(timeout.temporary, true)
    const publish = await rejects(c.publish('lobby', 1), 'timeout')
    assert.match(publish.idempotencyKey ?? '', /^[0-9a-f-]{36}$/, 'the generated key, to retry with')
    assert.equal(c.state, 'open', 'a timeout does not drop the connection')

    const mute = await scriptedServer(t, () => {})
    const { client: d, retries, disconnects } = client({ url: mute.url, token: 'x', connectTimeoutMs: 200, reconnect: { ...FAST, maxAttempts: 1 } })
    await waitFor('given up', () => d.state === 'closed')
    assert.match(retries[0]?.reason ?? '', /no welcome within 200 ms/)
    assert.equal(mute.connections(), 2)
    assert.equal(disconnects.at(-1)?.willReconnect, false)
  })
})

describe('client SDK: reconnect and recovery', () => {
  it('reconnects after a server restart (SIGTERM drain, same port) and reports the gap of the new epoch', async (t) => {
    const client = clients(t)
    const dir = tempDir(t)
    const port = await freePort()
    // History in memory only: the restart starts a new epoch, which is the gap this test is about.
    const env = { ...baseEnv(dir), PORT: String(port), WS_DRAIN_MS: '200', LOGIN_RATE_LIMIT: '100', HISTORY_STORE: 'memory' }
    const start = async (): Promise<ServerProcess> => {
      const server = { ...await startServer(t, env), port }
      await waitUntilReady(server)
      return server
    }
    const first = await start()
    const base = `http://127.0.0.1:${port}`
    const login = await fetch(`${base}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) })
    const token = (await login.json() as { accessToken: string }).accessToken
    const created = await fetch(`${base}/rooms`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ id: 'lobby' }) })
    assert.equal(created.status, 201)

    const { client: c, disconnects, retries } = client({ url: base, token, reconnect: { baseMs: 100, capMs: 500 } })
    const rec = recorder()
    const sub = await c.subscribe('lobby', rec.handler)
    const before = await c.publish('lobby', 'before')
    await waitFor('first message', () => rec.messages().length === 1)
    const firstConnection = c.welcome?.connectionId

    first.child.kill('SIGTERM')
    await waitFor('disconnect', () => disconnects.length === 1)
    assert.deepEqual(disconnects[0], { code: 1012, reason: 'service restart', willReconnect: true })
    // The first wait is the server's retryAfterMs (within WS_DRAIN_MS), not the backoff.
    assert.ok(retries[0] !== undefined && retries[0].code === 1012 && retries[0].delayMs <= 200, JSON.stringify(retries[0]))
    await first.exited // its port is free again

    await start()
    await waitFor('gap event', () => rec.events.some(e => e.type === 'gap'))
    assert.equal(c.state, 'open')
    assert.notEqual(c.welcome?.connectionId, firstConnection)
    const gap = rec.events.find(e => e.type === 'gap')
    assert.ok(gap?.type === 'gap')
    assert.deepEqual(gap.previous, { epoch: before.epoch, offset: 1 })
    assert.notEqual(gap.epoch, before.epoch, 'memory engine: a new process is a new epoch')
    assert.equal(sub.state, 'subscribed')

    const after = await c.publish('lobby', 'after')
    assert.equal(after.epoch, gap.epoch)
    await waitFor('live message after the restart', () => rec.messages().length === 2)
    assert.deepEqual(rec.events.map(e => e.type === 'gap' ? 'gap' : e.data), ['before', 'gap', 'after'])
  })

  it('close() from a disconnect or error listener is final: the client does not reconnect after it', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    const proxy = await startProxy(t, Number(new URL(srv.url).port))
    const { client: a, disconnects, retries } = client({ url: proxy.url, token: alice, reconnect: FAST })
    await a.ready()
    const states: string[] = []
    a.on('state', (state) => states.push(state))
    a.on('disconnect', () => { void a.close() })
    proxy.cut()
    await waitFor('disconnect', () => disconnects.length >= 1)
    // lost() runs to its end in the same turn as the disconnect event: its state is final here.
    assert.equal(a.state, 'closed')
    assert.deepEqual(states, ['closed'])
    assert.deepEqual(retries, [])
    assert.deepEqual(disconnects.map(d => d.willReconnect), [true, false])
  })

  it('recovers through a network cut: exactly the missed publications, once, in order; queued publishes go out after', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'lobby')
    const proxy = await startProxy(t, Number(new URL(srv.url).port))
    const { client: a, disconnects } = client({ url: proxy.url, token: alice, reconnect: FAST })
    const { client: b } = client({ url: srv.url, token: alice }) // another connection, not through the proxy
    const rec = recorder()
    const sub = await a.subscribe('lobby', rec.handler)
    const recoveries: boolean[] = []
    sub.on('subscribed', e => recoveries.push(e.recovered))
    await b.publish('lobby', 1)
    await waitFor('message 1', () => rec.messages().length === 1)

    proxy.refuse = true
    proxy.cut()
    await waitFor('disconnect', () => disconnects.length === 1)
    assert.equal(a.state, 'reconnecting')
    for (const n of [2, 3, 4]) await b.publish('lobby', n)
    const own = a.publish('lobby', 'queued while down')
    await waitFor('a few refused attempts', () => proxy.attempts.length >= 3)
    proxy.refuse = false

    assert.equal((await own).offset, 5)
    await b.publish('lobby', 6)
    await waitFor('message 6', () => rec.messages().some(m => m.data === 6))
    assert.deepEqual(rec.events.map(e => e.type === 'message' ? e.data : e.type), [1, 2, 3, 4, 'queued while down', 6])
    assert.deepEqual(rec.messages().map(m => m.offset), [1, 2, 3, 4, 5, 6])
    assert.deepEqual(recoveries, [true], 'recovered after the cut')
    assert.deepEqual(disconnects, [{ code: 1006, reason: '', willReconnect: true }])
  })

  it('backs off with full jitter: attempt i waits floor(random · min(cap, base·2^i)) on the mocked clock, none earlier, and gives up after maxAttempts (mocked clock, reconnect.random)', async (t) => {
    const client = clients(t)
    const server = await scriptedServer(t, socket => socket.send(welcomeFrame()))
    const proxy = await startProxy(t, Number(new URL(server.url).port))
    // Bounds 40, 80, 160, 300 (capped; 320 without the cap), 300 (640), 300 (1280), 300 (2560).
    // The jitter's draw for each attempt: near the top for most, so a bound that does not grow,
    // or is not capped, shows in the delay; 0.5 and 0.25 for two, so a delay that is not drawn
    // from [0, bound) (none, or "equal" jitter) shows too. The SDK draws once per retry.
    const draws = [0.999, 0.5, 0.999, 0.999, 0.25, 0.999, 0.999]
    const schedule = [39, 40, 159, 299, 75, 299, 299]
    let drawn = 0
    const reconnect = { baseMs: 40, capMs: 300, maxAttempts: 7, random: () => draws[drawn++] ?? 0 }
    // From here the SDK's clock (and the proxy's timestamps) move only when the test says so;
    // sockets stay real. Enabled before the client exists, so that none of its timers is a real
    // one (the mocked clearTimeout cannot clear those).
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() })
    try {
      const sockets = countingWebSocket()
      const { client: c, retries, disconnects } = client({ url: proxy.url, token: 'x', reconnect, WebSocket: sockets.WebSocket })
      await c.ready()
      assert.equal(sockets.opened(), 1)
      const cutAt = Date.now()
      proxy.refuse = true
      const before = proxy.attempts.length
      proxy.cut()
      let at = cutAt
      for (const [i, delayMs] of schedule.entries()) {
        await ioUntil(() => retries.length === i + 1, `the retry event of attempt ${i}`)
        assert.deepEqual({ attempt: retries[i]!.attempt, delayMs: retries[i]!.delayMs }, { attempt: i, delayMs }, `retry ${i}`)
        t.mock.timers.tick(delayMs - 1)
        await settle()
        assert.equal(sockets.opened(), 1 + i, `no attempt ${i} 1 ms before its delay of ${delayMs} ms`)
        t.mock.timers.tick(1)
        await settle()
        assert.equal(sockets.opened(), 2 + i, `attempt ${i} once its delay of ${delayMs} ms has passed`)
        at += delayMs
        // And at the proxy, on the mocked clock: the attempt reached the network at that time.
        await ioUntil(() => proxy.attempts.length === before + i + 1, `attempt ${i} at the proxy`)
        assert.equal(proxy.attempts.at(-1)! - cutAt, at - cutAt, `attempt ${i} at the proxy, ms after the cut`)
      }
      await ioUntil(() => c.state === 'closed', 'giving up')
      assert.deepEqual(retries.map(r => r.attempt), [0, 1, 2, 3, 4, 5, 6])
      assert.deepEqual(disconnects.at(-1), { code: 1006, reason: 'gave up after 7 reconnect attempts', willReconnect: false })
      // Past any delay the schedule could still hold: nothing more.
      t.mock.timers.tick(reconnect.capMs)
      await settle()
      assert.equal(sockets.opened(), 1 + reconnect.maxAttempts, 'no attempt after giving up')
      await rejects(c.ping(), 'closed')
    } finally {
      t.mock.timers.reset()
    }
  })

  it('the backoff delay is always within its full-jitter bound (property)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: 120_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (attempt, base, cap, r) => {
      const bound = backoffBound(attempt, base, cap)
      const delay = backoffDelay(attempt, base, cap, () => r)
      return bound === Math.min(cap, base * 2 ** attempt) && delay >= 0 && delay <= bound && backoffBound(attempt + 1, base, cap) >= bound
    }))
  })

  it('reconnectNow() skips the rest of a backoff delay (the network is back)', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    const proxy = await startProxy(t, Number(new URL(srv.url).port))
    // A first delay that would outlast the test: only reconnectNow() can bring it back in time.
    const { client: c, retries } = client({ url: proxy.url, token: alice, reconnect: { baseMs: 600_000, capMs: 600_000 } })
    await c.ready()
    c.reconnectNow() // open: nothing to do
    proxy.refuse = true
    proxy.cut()
    await waitFor('a retry scheduled', () => retries.length === 1 && c.state === 'reconnecting')
    c.reconnectNow() // still refused: the attempt fails and backoff goes on
    await waitFor('a second retry scheduled', () => retries.length === 2)
    proxy.refuse = false
    c.reconnectNow()
    await waitFor('reconnected', () => c.state === 'open')
    assert.equal(retries.length, 2)
    assert.equal(typeof await c.ping(), 'number')
  })

  it('does not reconnect after 4503 (kicked) or 4500 (protocol violation): no socket opened once the mocked clock is past the longest backoff delay', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const root = await srv.userToken('root', 'admin')
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'lobby')
    let violatorSide: WebSocket | undefined
    const violator = await scriptedServer(t, (socket) => {
      violatorSide = socket
      socket.send(welcomeFrame())
    })
    // Every backoff delay is below capMs, and neither close comes with a `reconnect` push (no
    // retryAfterMs): a client that meant to reconnect has opened a socket once the clock is
    // capMs past the close.
    const reconnect = { baseMs: 5, capMs: 20 }
    // From here the SDK's clock moves only when the test says so; sockets stay real. Enabled
    // before the clients exist, so that none of their timers is a real one.
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() })
    try {
      const kicked = countingWebSocket()
      const { client: c, disconnects, states } = client({ url: srv.url, token: alice, reconnect, WebSocket: kicked.WebSocket })
      const sub = await c.subscribe('lobby', () => {})
      const ended = new Promise(resolve => sub.on('end', resolve))
      const kick = await srv.request('DELETE', `/admin/connections/${c.welcome!.connectionId}`, { token: root })
      assert.equal(kick.status, 204, kick.text)
      await ioUntil(() => disconnects.length === 1, 'the disconnect of the kick')
      t.mock.timers.tick(reconnect.capMs)
      await settle()
      assert.equal(kicked.opened(), 1, 'no reconnect attempt after 4503')
      assert.deepEqual(disconnects, [{ code: 4503, reason: 'kicked', willReconnect: false }])
      assert.deepEqual(states, ['open', 'closed'])
      assert.equal((await ended as { reason: string }).reason, 'closed')
      await rejects(c.publish('lobby', 'x'), 'closed')

      const violated = countingWebSocket()
      const { client: v, disconnects: vd } = client({ url: violator.url, token: 'x', reconnect, WebSocket: violated.WebSocket })
      await v.ready()
      violatorSide!.close(4500, 'protocol violation')
      await ioUntil(() => vd.length === 1, 'the disconnect of the 4500 close')
      t.mock.timers.tick(reconnect.capMs)
      await settle()
      assert.equal(violated.opened(), 1, 'no reconnect attempt after 4500')
      assert.deepEqual(vd, [{ code: 4500, reason: 'protocol violation', willReconnect: false }])
      assert.equal(v.state, 'closed')
    } finally {
      t.mock.timers.reset()
    }
  })

  it('does not reconnect after 4504 (account closed), even with getToken: no socket opened once the mocked clock is past the longest backoff delay', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const mallory = await srv.userToken('mallory')
    const reconnect = { baseMs: 5, capMs: 20 }
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() })
    try {
      const counted = countingWebSocket()
      let tokenRequests = 0
      const { client: c, disconnects, states } = client({ url: srv.url, token: mallory, getToken: () => { tokenRequests++; return mallory }, reconnect, WebSocket: counted.WebSocket })
      await c.ready()
      assert.equal(await srv.app.auth.deleteUser('mallory'), true)
      await ioUntil(() => disconnects.length === 1, 'the disconnect of the closed account')
      t.mock.timers.tick(reconnect.capMs)
      await settle()
      assert.equal(counted.opened(), 1, 'no reconnect attempt after 4504')
      assert.equal(tokenRequests, 0, 'no token asked for: a new one cannot help')
      assert.deepEqual(disconnects, [{ code: 4504, reason: 'account closed', willReconnect: false }])
      assert.deepEqual(states, ['open', 'closed'])
    } finally {
      t.mock.timers.reset()
    }
  })

  it('resubscribes with since on an unsubscribed/resubscribe push, dropping duplicates by offset (scripted server)', async (t) => {
    const client = clients(t)
    // The real server sends `resubscribe` when its engine loses live continuity (a Redis
    // reconnect), which no test can trigger on request: this server scripts the exchange.
    const seen: unknown[] = []
    const server = await scriptedServer(t, (socket) => {
      socket.send(welcomeFrame())
      const msg = (offset: number): string => JSON.stringify({ type: 'message', room: 'lobby', epoch: 'e1', offset, data: offset, from: { id: 'bob' }, ts: 1 })
      socket.on('message', (raw) => {
        const command = JSON.parse(raw.toString()) as { type: string, id: number, since?: unknown }
        seen.push(command)
        if (command.type !== 'subscribe') return
        if (command.since === undefined) {
          socket.send(JSON.stringify({ type: 'reply', id: command.id, result: { room: 'lobby', epoch: 'e1', offset: 0, recovered: false, publications: [] } }))
          socket.send(msg(1))
          socket.send(msg(2))
          socket.send(JSON.stringify({ type: 'unsubscribed', room: 'lobby', reason: 'resubscribe' }))
        } else {
          const pub = (offset: number): unknown => ({ offset, data: offset, from: { id: 'bob' }, ts: 1 })
          socket.send(JSON.stringify({ type: 'reply', id: command.id, result: { room: 'lobby', epoch: 'e1', offset: 4, recovered: true, publications: [pub(2), pub(3), pub(4)] } }))
          socket.send(msg(4)) // a duplicate
          socket.send(msg(5))
        }
      })
    })
    const { client: c } = client({ url: server.url, token: 'x' })
    const rec = recorder()
    await c.subscribe('lobby', rec.handler)
    await waitFor('message 5', () => rec.messages().some(m => m.offset === 5))
    assert.deepEqual(rec.events.map(e => e.type === 'message' ? e.offset : e.type), [1, 2, 3, 4, 5])
    assert.deepEqual(seen.map(s => (s as { since?: unknown }).since), [undefined, { epoch: 'e1', offset: 2 }])
  })

  it('a publish whose reply was lost is sent again with its key: stored exactly once', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'lobby')
    const proxy = await startProxy(t, Number(new URL(srv.url).port))
    const { client: a, disconnects } = client({ url: proxy.url, token: alice, reconnect: FAST })
    const { client: observer } = client({ url: srv.url, token: alice })
    await a.ready()

    proxy.holdDownstream = true
    const pending = a.publish('lobby', { n: 'once' })
    await waitFor('stored on the server', async () => (await observer.history('lobby')).publications.length === 1)
    proxy.holdDownstream = false
    proxy.cut() // the reply never reached the client

    const result = await pending
    assert.equal(disconnects.length, 1, 'the publish was resolved over a new connection')
    assert.equal(result.offset, 1, 'the first publish\'s position')
    const history = await observer.history('lobby')
    assert.deepEqual(history.publications.map(p => p.data), [{ n: 'once' }])
    assert.equal((await a.publish('lobby', 'next')).offset, 2)
  })

  it('rejects commands beyond maxQueuedCommands while the server is unreachable', async (t) => {
    const client = clients(t)
    const port = await freePort() // nothing listens there
    const { client: c } = client({ url: `ws://127.0.0.1:${port}/ws`, token: 'x', maxQueuedCommands: 3, reconnect: FAST })
    const queued = [c.publish('lobby', 1), c.history('lobby'), c.ping()]
    for (const p of queued) p.catch(() => {})
    const overflow = await rejects(c.publish('lobby', 4, { idempotencyKey: 'k4' }), 'queue_full')
    assert.match(overflow.message, /maxQueuedCommands: 3/)
    assert.equal(overflow.temporary, true)
    assert.equal(overflow.idempotencyKey, 'k4')
    await rejects(c.subscribe('lobby', () => {}), 'queue_full')
    assert.equal(c.state, 'connecting')
    await c.close()
    for (const p of queued) await rejects(p, 'closed')
  })
})

describe('client SDK: token refresh', () => {
  it('refreshes before expiry so the connection outlives its first token; without a refresh, 4001 stops or reconnects via getToken', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: { ...ENV, JWT_CLOCK_TOLERANCE: '0s' } })
    const alice = await srv.userToken('alice')
    await srv.createUser('erin')
    await createRoom(srv, alice, 'lobby')
    const shortToken = (): string => srv.app.jwt.sign({ sub: 'erin', role: 'user', jti: randomUUID(), sid: randomUUID() }, { expiresIn: '3000ms' })

    let refreshes = 0
    const refresher = client({ url: srv.url, token: shortToken(), getToken: () => { refreshes++; return shortToken() } })
    const control = client({ url: srv.url, token: shortToken() })
    let authDown = true
    const renewer = client({
      url: srv.url,
      token: shortToken(),
      reconnect: FAST,
      getToken: () => authDown ? Promise.reject(new Error('auth server down')) : shortToken()
    })
    renewer.client.on('disconnect', (d) => { if (d.code === 4001) authDown = false })
    const [welcome, , renewerWelcome] = await Promise.all([refresher.client.ready(), control.client.ready(), renewer.client.ready()])
    const renewerSub = await renewer.client.subscribe('lobby', () => {})
    const firstExpiry = welcome.tokenExpiresAt!

    await waitFor('control closed', () => control.client.state === 'closed')
    assert.deepEqual(control.disconnects, [{ code: 4001, reason: 'token expired', willReconnect: false }])

    await waitFor('renewer reconnected', () => renewer.client.state === 'open' && renewer.client.welcome?.connectionId !== renewerWelcome.connectionId)
    assert.deepEqual(renewer.disconnects, [{ code: 4001, reason: 'token expired', willReconnect: true }])
    assert.ok(renewer.errors.some(e => /auth server down/.test(e.message)), 'the failed refreshes were reported')
    await waitFor('subscription restored', () => renewerSub.state === 'subscribed')

    await waitFor('past the first token\'s expiry', () => Date.now() > firstExpiry + 1000)
    assert.equal(refresher.client.state, 'open')
    assert.deepEqual(refresher.disconnects, [])
    assert.equal(refresher.client.welcome?.connectionId, welcome.connectionId)
    assert.ok(refreshes >= 1)
    assert.equal(typeof await refresher.client.ping(), 'number')
    assert.deepEqual(refresher.errors, [])

    // A token already expired (by its `exp`) is replaced before connecting: in a browser a 401
    // handshake cannot be told from a network failure, so it must not be sent at all.
    const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
    const expired = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'erin', exp: Math.floor(Date.now() / 1000) - 60 })}.invalid`
    const browser = client({ url: srv.url, token: expired, getToken: shortToken, transport: 'browser', WebSocket })
    assert.equal((await browser.client.ready()).user.id, 'erin')
    assert.deepEqual([browser.retries, browser.errors], [[], []], 'connected at the first attempt')
  })
})

/**
 * What a browser's WebSocket shows of a refused handshake: nothing but a close with 1006 (no
 * HTTP status, no headers). `ws` underneath, with its status-revealing events hidden.
 */
class BrowserLikeWebSocket {
  onopen: ((event: unknown) => void) | null = null
  onmessage: ((event: { data: unknown }) => void) | null = null
  onclose: ((event: { code: number, reason: string }) => void) | null = null
  onerror: ((event: unknown) => void) | null = null
  private readonly ws: WebSocket
  constructor (url: string, protocols?: string | string[]) {
    this.ws = new WebSocket(url, protocols)
    this.ws.on('open', () => this.onopen?.({}))
    this.ws.on('message', (data, isBinary) => this.onmessage?.({ data: isBinary ? data : data.toString() }))
    this.ws.on('close', (code, reason) => this.onclose?.({ code, reason: reason.toString() }))
    this.ws.on('error', () => this.onerror?.({}))
  }

  get readyState (): number { return this.ws.readyState }
  get protocol (): string { return this.ws.protocol }
  send (data: string): void { this.ws.send(data) }
  close (code?: number, reason?: string): void { this.ws.close(code, reason) }
}

describe('client SDK: a token refused before it expires, in a browser', () => {
  it('after two failed handshakes the client asks getToken for a new token (stale: true) and connects', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    await srv.createUser('frank')
    // Valid until its `exp`, but signed with another secret: the server answers 401, which a
    // browser sees only as a failed connection.
    const otherDeployment = await build(t, { env: { ...ENV, JWT_SECRET: 'another-secret-that-is-long-enough-for-hs256-!!' } })
    const refused = otherDeployment.app.jwt.sign({ sub: 'frank', role: 'user', jti: randomUUID(), sid: randomUUID() })
    const issued: string[] = []
    // One timeline of the handshakes the server saw (by the token each carried, in
    // Sec-WebSocket-Protocol with the browser transport) and of the calls to getToken: the
    // end state alone would not tell after how many failures the new token was asked for.
    const timeline: string[] = []
    srv.app.server.on('upgrade', (request: { headers: Record<string, string | string[] | undefined> }) => {
      const offered = String(request.headers['sec-websocket-protocol'])
      timeline.push(offered.includes(refused) ? 'handshake: refused token' : issued.some(token => offered.includes(token)) ? 'handshake: new token' : `handshake: ${offered}`)
    })
    const { client: c } = client({
      url: srv.url,
      token: refused,
      getToken: ({ stale }) => {
        timeline.push(`getToken({ stale: ${String(stale)} })`)
        // A cache that hands out the same token until told it is stale, like most apps'.
        if (!stale) return refused
        const token = srv.app.jwt.sign({ sub: 'frank', role: 'user', jti: randomUUID(), sid: randomUUID() })
        issued.push(token)
        return token
      },
      transport: 'browser',
      WebSocket: BrowserLikeWebSocket as unknown as WebSocketConstructor,
      reconnect: { baseMs: 10, capMs: 50 }
    })
    assert.equal((await withTimeout(c.ready(), WITHIN_MS, 'a connection with a new token')).user.id, 'frank')
    assert.deepEqual(timeline, [
      'handshake: refused token',
      'handshake: refused token',
      'getToken({ stale: true })',
      'handshake: new token'
    ], 'two handshakes with the refused token, then one request for a new token, then one handshake with it')
  })
})

describe('first subscribe with since', () => {
  it('delivers the recovered publications to the handler, in order, then live ones', async (t) => {
    const server = await build(t)
    const token = await server.userToken('alice')
    await server.request('POST', '/rooms', { token, body: { id: 'resume' } })
    for (const n of [1, 2, 3]) await server.request('POST', '/rooms/resume/messages', { token, body: { data: n } })
    const { epoch } = (await server.request('GET', '/rooms/resume/messages?limit=1', { token })).body as { epoch: string }
    const client = new SwitchboardClient({ url: server.url, token, WebSocket })
    t.after(() => client.close())
    const seen: number[] = []
    await client.subscribe('resume', (event) => { if (event.type === 'message') seen.push(event.offset) }, { since: { epoch, offset: 1 } })
    await client.publish('resume', 4)
    const deadline = Date.now() + 10_000
    while (seen.length < 3 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
    assert.deepEqual(seen, [2, 3, 4])
  })
})
