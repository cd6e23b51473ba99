import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type net from 'node:net'
import { join } from 'node:path'
import { build as bundle } from 'esbuild'
import { WebSocket, WebSocketServer } from 'ws'
import type { SwitchboardClient as SwitchboardClientType } from '@switchboard/client'
import { clients, createRoom, ENV, FAST, recorder, rejects, startProxy, waitFor, welcomeFrame } from './client-support.js'
import { build } from './helper.js'
import { ROOT } from './process.js'
import { launchBrowser, skipUnlessChromium } from './web-browser.js'

/*
 * Raw bytes through the SDK on both codecs, against a real server: a `json` and a `msgpack`
 * client in one room, recovery through a network cut (the TCP proxy of client-support.ts),
 * the local size checks, the welcome's protocol check, and the bundled SDK in Chromium.
 *
 * Apart from test/client.test.ts: its mocked-clock tests can leave one of fetch's (undici's)
 * HTTP parser timers uncleared (the mocked clearTimeout cannot clear a real timer; fixed
 * upstream in nodejs/undici#4758, not in Node 20's bundled undici), and a file that runs on
 * long enough after them meets it as an uncaught TypeError.
 */

describe('client SDK: bytes on both codecs', () => {
  /** Not valid UTF-8 (0xff, 0xc0, a lone continuation byte), with 0x00 and the bytes JSON escapes. */
  const FROM_JSON = Uint8Array.of(0x00, 0xff, 0xfe, 0xc0, 0x80, 0x22, 0x5c, 0x0a, 0x00)
  const FROM_MSGPACK = Uint8Array.of(0xff, 0x00, 0xc1, 0xc4, 0x01, 0xdc, 0x00)
  const BLOB = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0x00)

  /** What a handler or a history page shows of a payload: bytes as an array of numbers (after checking they are a plain Uint8Array), values as they are. */
  const shown = (data: unknown): unknown => {
    if (data instanceof Uint8Array) {
      assert.equal(data.constructor, Uint8Array, 'bytes are a plain Uint8Array on either codec')
      return { bytes: [...data] }
    }
    return data
  }
  const bytes = (array: Uint8Array): { bytes: number[] } => ({ bytes: [...array] })

  it('a JSON client and a MessagePack client in one room: each gets the other\'s bytes as a Uint8Array and JSON as values, live and from history', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    const bob = await srv.userToken('bob')
    await createRoom(srv, alice, 'lobby')
    const member = await srv.request('PUT', '/rooms/lobby/members/bob', { token: alice, body: { role: 'member' } })
    assert.equal(member.status, 201, member.text)
    const { client: json, errors: jsonErrors } = client({ url: srv.url, token: alice, codec: 'json' })
    // The browser transport (ws standing in): the token rides beside the msgpack subprotocol.
    const { client: msgpack, errors: msgpackErrors } = client({ url: srv.url.replace('http', 'ws'), token: bob, codec: 'msgpack', transport: 'browser', WebSocket })
    assert.equal((await json.ready()).protocol, 'switchboard.v1')
    assert.equal((await msgpack.ready()).protocol, 'switchboard.v1.msgpack')
    const seenByJson = recorder()
    const seenByMsgpack = recorder()
    await json.subscribe('lobby', seenByJson.handler)
    await msgpack.subscribe('lobby', seenByMsgpack.handler)

    const source = FROM_MSGPACK.slice()
    const published = [
      await json.publish('lobby', FROM_JSON),
      await json.publish('lobby', { text: 'from json', n: [1, 2.5, null] }),
      await msgpack.publish('lobby', source.buffer), // an ArrayBuffer
      await msgpack.publish('lobby', { text: 'from msgpack', nested: { ok: true } }),
      await json.publish('lobby', new Blob([BLOB.subarray(0, 4), BLOB.subarray(4)])),
      await msgpack.publish('lobby', new Uint8Array(0)),
      await json.publish('lobby', 'AP8=') // a string that looks like base64 stays a string
    ]
    source.fill(0) // copied when published: changing it now changes nothing
    assert.deepEqual(published.map(p => p.offset), [1, 2, 3, 4, 5, 6, 7])
    const expected = [
      bytes(FROM_JSON),
      { text: 'from json', n: [1, 2.5, null] },
      bytes(FROM_MSGPACK),
      { text: 'from msgpack', nested: { ok: true } },
      bytes(BLOB),
      bytes(new Uint8Array(0)),
      'AP8='
    ]
    for (const [name, seen] of [['json', seenByJson], ['msgpack', seenByMsgpack]] as const) {
      await waitFor(`${name}: seven messages`, () => seen.messages().length === 7)
      assert.deepEqual(seen.messages().map(m => shown(m.data)), expected, name)
      assert.deepEqual(seen.messages().map(m => m.from.id), ['alice', 'alice', 'bob', 'bob', 'alice', 'bob', 'alice'], name)
      assert.ok(seen.messages().every(m => !('encoding' in m)), `${name}: no encoding field reaches the handler`)
    }
    for (const c of [json, msgpack]) {
      const page = await c.history('lobby', { limit: 10 })
      assert.deepEqual(page.publications.map(p => shown(p.data)), expected)
      assert.ok(page.publications.every(p => !('encoding' in p)))
    }
    // Stored as bytes (not as a base64 string): REST shows them base64 with encoding.
    const rest = await srv.request('GET', '/rooms/lobby/messages?limit=10', { token: alice })
    const stored = rest.body.publications as Array<{ data: unknown, encoding?: string }>
    assert.deepEqual(stored[0], { ...stored[0], data: Buffer.from(FROM_JSON).toString('base64'), encoding: 'base64' })
    assert.deepEqual(stored[2], { ...stored[2], data: Buffer.from(FROM_MSGPACK).toString('base64'), encoding: 'base64' })
    assert.equal(stored[6]!.encoding, undefined)
    assert.deepEqual(jsonErrors, [])
    assert.deepEqual(msgpackErrors, [])
  })

  it('recovers bytes after a reconnect on either codec, and resends queued byte publishes once', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'lobby')
    const proxy = await startProxy(t, Number(new URL(srv.url).port))
    const { client: publisher } = client({ url: srv.url, token: alice, codec: 'msgpack' }) // not through the proxy
    const subscribers = (['json', 'msgpack'] as const).map(codec => ({ codec, rec: recorder(), recoveries: [] as boolean[], ...client({ url: proxy.url, token: alice, codec, reconnect: FAST }) }))
    for (const s of subscribers) {
      const sub = await s.client.subscribe('lobby', s.rec.handler)
      sub.on('subscribed', e => s.recoveries.push(e.recovered))
    }
    await publisher.publish('lobby', FROM_JSON)
    for (const s of subscribers) await waitFor(`${s.codec}: message 1`, () => s.rec.messages().length === 1)

    proxy.refuse = true
    proxy.cut()
    for (const s of subscribers) await waitFor(`${s.codec}: disconnect`, () => s.disconnects.length === 1)
    await publisher.publish('lobby', FROM_MSGPACK)
    await publisher.publish('lobby', { missed: true })
    // Written while the connection is down: sent once it is back, bytes and key unchanged.
    const queued = subscribers.map(s => s.client.publish('lobby', Uint8Array.of(0xff, s.codec === 'json' ? 1 : 2, 0x00), { idempotencyKey: `queued-${s.codec}` }))
    await waitFor('a few refused attempts', () => proxy.attempts.length >= 4)
    proxy.refuse = false
    const offsets = (await Promise.all(queued)).map(r => r.offset).sort()
    assert.deepEqual(offsets, [4, 5])

    const expected = [bytes(FROM_JSON), bytes(FROM_MSGPACK), { missed: true }]
    for (const s of subscribers) {
      await waitFor(`${s.codec}: five messages`, () => s.rec.messages().length === 5)
      assert.deepEqual(s.rec.messages().slice(0, 3).map(m => shown(m.data)), expected, s.codec)
      assert.deepEqual(s.rec.messages().slice(3).map(m => shown(m.data)).sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y))), [bytes(Uint8Array.of(0xff, 1, 0)), bytes(Uint8Array.of(0xff, 2, 0))], s.codec)
      assert.deepEqual(s.rec.messages().map(m => m.offset), [1, 2, 3, 4, 5])
      assert.deepEqual(s.recoveries, [true], `${s.codec}: recovered after the cut`)
    }
    const history = await publisher.history('lobby', { limit: 10 })
    assert.equal(history.publications.length, 5, 'each queued publish stored once')
  })

  it('refuses a payload over maxMessageBytes locally on either codec, with a clear error; the connection stays open', async (t) => {
    const client = clients(t)
    const srv = await build(t, { env: { ...ENV, WS_MAX_MESSAGE_BYTES: '1024' } })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'lobby')
    for (const codec of ['json', 'msgpack'] as const) {
      const { client: c, disconnects } = client({ url: srv.url, token: alice, codec })
      await c.ready()
      assert.equal((await c.publish('lobby', new Uint8Array(1024).fill(0xff))).epoch.length > 0, true, `${codec}: at the limit`)
      const error = await rejects(c.publish('lobby', new Uint8Array(1025), { idempotencyKey: `big-${codec}` }), 'bad_request')
      assert.match(error.message, /payload is 1025 bytes, over the server's maxMessageBytes \(1024\)/)
      assert.equal(error.idempotencyKey, `big-${codec}`)
      const text = await rejects(c.publish('lobby', 'x'.repeat(1023)), 'bad_request')
      assert.match(text.message, /payload is 1025 bytes/, `${codec}: a JSON value counts as its JSON text`)
      assert.equal(typeof await c.ping(), 'number')
      assert.deepEqual(disconnects, [], `${codec}: never disconnected`)
    }
    const page = await srv.request('GET', '/rooms/lobby/messages', { token: alice })
    assert.equal(page.body.publications.length, 2)
  })

  it('stops with an error when the welcome names another protocol than its codec\'s (scripted server)', async (t) => {
    const client = clients(t)
    // A server that accepts whatever is offered, then speaks switchboard.v1 anyway.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (protocols) => [...protocols][0] ?? false })
    let connections = 0
    wss.on('connection', (socket) => { connections++; socket.send(welcomeFrame()) })
    await new Promise<void>(resolve => wss.once('listening', resolve))
    t.after(() => new Promise<void>(resolve => { for (const s of wss.clients) s.terminate(); wss.close(() => resolve()) }))
    const { client: c, errors, disconnects } = client({ url: `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/ws`, token: 't', codec: 'msgpack', reconnect: FAST })
    await rejects(c.ready(), 'closed')
    assert.equal(c.state, 'closed')
    assert.match(errors[0]?.message ?? '', /the server speaks switchboard\.v1, not switchboard\.v1\.msgpack \(codec 'msgpack'\)/)
    assert.deepEqual(disconnects.map(d => [d.code, d.willReconnect]), [[1002, false]])
    assert.equal(connections, 1, 'no reconnect: the answer would be the same')
  })

  it('in Chromium, under the server\'s CSP: a msgpack client publishes a Blob and bytes, a json client receives them as Uint8Arrays, and back', { skip: skipUnlessChromium() }, async (t) => {
    const srv = await build(t, { env: ENV })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'lobby')
    // The SDK as a browser bundle would have it: msgpackr's browser build, no Node built-ins.
    const sdk = await bundle({ entryPoints: [join(ROOT, 'packages/client/src/index.ts')], bundle: true, format: 'iife', globalName: 'Switchboard', footer: { js: 'globalThis.Switchboard = Switchboard' }, platform: 'browser', write: false, logLevel: 'silent' })
    const browser = await launchBrowser(t)
    const page = await browser.newPage()
    const pageErrors: string[] = []
    page.on('pageerror', err => pageErrors.push(err.message))
    await page.goto(`${srv.url}/health`) // same origin as /ws, with the server's security headers
    await page.evaluate(sdk.outputFiles[0]!.text)
    // tsx compiles this file keeping function names: the function handed to the page below
    // calls esbuild's `__name` helper, which the page does not have.
    await page.evaluate('globalThis.__name = (target) => target')
    const result = await page.evaluate(async ({ url, token }) => {
      const { SwitchboardClient } = (globalThis as unknown as { Switchboard: { SwitchboardClient: typeof SwitchboardClientType } }).Switchboard
      const json = new SwitchboardClient({ url, token, codec: 'json' })
      const msgpack = new SwitchboardClient({ url, token, codec: 'msgpack' })
      const protocols = [(await json.ready()).protocol, (await msgpack.ready()).protocol]
      const seen: Record<string, unknown[]> = { json: [], msgpack: [] }
      const show = (data: unknown): unknown => data instanceof Uint8Array ? { kind: data.constructor.name, bytes: Array.from(data) } : data
      for (const [name, c] of [['json', json], ['msgpack', msgpack]] as const) {
        await c.subscribe('lobby', (event) => { if (event.type === 'message') seen[name]!.push(show(event.data)) })
      }
      await msgpack.publish('lobby', new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47]), new Uint8Array([0x00, 0xff])], { type: 'image/png' }))
      await json.publish('lobby', new Uint8Array([0xff, 0x00, 0xc1]))
      await json.publish('lobby', { text: 'hi' })
      const deadline = Date.now() + 15_000
      while ((seen.json!.length < 3 || seen.msgpack!.length < 3) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
      const history = (await msgpack.history('lobby')).publications.map(p => show(p.data))
      await Promise.all([json.close(), msgpack.close()])
      return { protocols, seen, history }
    }, { url: srv.url.replace('http', 'ws'), token: alice })
    const expected = [
      { kind: 'Uint8Array', bytes: [0x89, 0x50, 0x4e, 0x47, 0x00, 0xff] },
      { kind: 'Uint8Array', bytes: [0xff, 0x00, 0xc1] },
      { text: 'hi' }
    ]
    assert.deepEqual(result, { protocols: ['switchboard.v1', 'switchboard.v1.msgpack'], seen: { json: expected, msgpack: expected }, history: expected })
    assert.deepEqual(pageErrors, [])
  })
})
