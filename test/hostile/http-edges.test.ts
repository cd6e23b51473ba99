import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { WebSocket } from 'ws'
import fc from 'fast-check'
import { redactUrl } from '../../src/logger.js'
import { oneShotRequest } from '../../support/http.js'
import { build, PASSWORD, selfSignedCertificate, tempDir, wsConnect, type TestApp } from '../helper.js'
import { assertRssBack, settledRss } from './support.js'

/** Generous: the server's deadlines in these tests are about a second, checked every quarter of it. */
const CLOSE_BOUND_MS = 10_000

/** Every raw connection still open: a failed wait ends them, or the app's close would wait on them forever. */
const openSockets = new Set<net.Socket>()

async function within<T> (promise: Promise<T>, what: string, timeoutMs = CLOSE_BOUND_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      for (const socket of openSockets) socket.destroy()
      reject(new Error(`timed out waiting for ${what}`))
    }, timeoutMs)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** A TCP connection to the test server that writes what it is told and keeps everything it reads. */
interface RawClient {
  socket: net.Socket
  received: () => string
  /** Settles when the server (or the test) ends the connection. */
  closed: Promise<void>
}

async function rawConnect (t: TestContext, srv: TestApp): Promise<RawClient> {
  const { port } = new URL(srv.url)
  const socket = net.connect(Number(port), '127.0.0.1')
  let text = ''
  socket.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
  // A reset by the server is one way of being cut off: what matters is that the socket ends.
  socket.on('error', () => {})
  openSockets.add(socket)
  const closed = new Promise<void>(resolve => socket.once('close', () => { openSockets.delete(socket); resolve() }))
  t.after(() => { socket.destroy() })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  return { socket, received: () => text, closed }
}

function upgradeRequest (path: string, headers: Record<string, string> = {}, method = 'GET'): string {
  const lines = [
    `${method} ${path} HTTP/1.1`,
    'Host: 127.0.0.1',
    'Connection: Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Version: 13',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)
  ]
  return lines.join('\r\n') + '\r\n\r\n'
}

/** The status code of the first response line, and its JSON body when it has one. */
function parseResponse (text: string): { status: number, body: Record<string, unknown> | null } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
  const at = text.indexOf('\r\n\r\n')
  let body: Record<string, unknown> | null = null
  try { body = at === -1 ? null : JSON.parse(text.slice(at + 4)) as Record<string, unknown> } catch { /* not JSON */ }
  return { status, body }
}

/** Writes `chunk` every `everyMs` until the socket closes: activity that keeps an idle timeout from firing. */
function trickle (client: RawClient, chunk: string, everyMs: number): void {
  const timer = setInterval(() => { if (!client.socket.destroyed) client.socket.write(chunk) }, everyMs)
  void client.closed.then(() => clearInterval(timer))
}

/** Cut by a deadline: with the API's 408, or (when the answer lost the race with the close) none. */
function assertCutWith408 (client: RawClient): void {
  if (client.received() === '') return
  const { status, body } = parseResponse(client.received())
  assert.equal(status, 408, client.received())
  assert.equal(body?.code, 'SB_ERR_REQUEST_TIMEOUT')
}

async function assertAlive (srv: TestApp): Promise<void> {
  const live = await srv.request('GET', '/health/live')
  assert.equal(live.status, 200)
}

describe('hostile: WebSocket upgrades off /ws', () => {
  it('answers an upgrade on any other path with a plain 404 and ends the socket, whatever the credentials or Origin', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const attempts: Array<{ path: string, headers?: Record<string, string>, method?: string }> = [
      { path: '/health/live' },
      { path: '/health/live', headers: { Origin: 'https://evil.example' } },
      { path: '/health/ready', headers: { Authorization: `Bearer ${alice}` } },
      { path: '/nowhere' },
      { path: '/rooms', headers: { Authorization: `Bearer ${alice}` } },
      { path: '/ws/', headers: { Authorization: `Bearer ${alice}` } },
      { path: '/ws', headers: { Authorization: `Bearer ${alice}` }, method: 'POST' }
    ]
    for (const attempt of attempts) {
      const client = await rawConnect(t, srv)
      client.socket.write(upgradeRequest(attempt.path, attempt.headers, attempt.method))
      await within(client.closed, `the server to end the upgrade of ${attempt.method ?? 'GET'} ${attempt.path}`)
      const { status, body } = parseResponse(client.received())
      assert.equal(status, 404, `${attempt.method ?? 'GET'} ${attempt.path}: ${client.received()}`)
      assert.equal(body?.code, 'SB_ERR_NO_WEBSOCKET_ENDPOINT')
      assert.equal(body?.statusCode, 404)
    }
    assert.equal(srv.app.websocketServer.clients.size, 0)
    // /ws itself still upgrades.
    await wsConnect(t, srv, { token: alice })
  })

  it('survives a flood of upgrades to /health/live from one address: none held, memory back', async (t) => {
    const srv = await build(t)
    const baseline = await settledRss()
    const clients = await Promise.all(Array.from({ length: 300 }, async () => {
      const client = await rawConnect(t, srv)
      client.socket.write(upgradeRequest('/health/live', { Origin: 'https://evil.example' }))
      return client
    }))
    await within(Promise.all(clients.map(c => c.closed)), 'every upgrade to be refused and ended')
    for (const client of clients) assert.equal(parseResponse(client.received()).status, 404)
    assert.equal(srv.app.websocketServer.clients.size, 0)
    await assertAlive(srv)
    await assertRssBack(baseline, 'upgrade flood on /health/live')
  })
})

describe('hostile: the global rate limit', () => {
  it('exempts only the probes\' GETs: unknown /health/ paths and other methods are counted', async (t) => {
    const srv = await build(t, { env: { RATE_LIMIT_MAX: '3' } })
    for (let i = 0; i < 3; i++) assert.equal((await srv.request('GET', '/health/nowhere')).status, 404)
    assert.equal((await srv.request('GET', '/health/nowhere')).status, 429)
    assert.equal((await srv.request('POST', '/health/live')).status, 429)
    assert.equal((await srv.request('HEAD', '/health/live')).status, 429)
    // The probes themselves never are: the orchestrator must see the truth.
    for (let i = 0; i < 10; i++) {
      assert.equal((await srv.request('GET', '/health/live')).status, 200)
      assert.equal((await srv.request('GET', '/health/ready')).status, 200)
      assert.equal((await srv.request('GET', '/health')).status, 200)
    }
  })
})

describe('hostile: HTTP metrics labels', () => {
  it('made-up paths, methods and ids never become series: the label set stays that of the routes', async (t) => {
    const srv = await build(t, { env: { RATE_LIMIT_MAX: '100000' } })
    const segment = fc.string({ unit: fc.constantFrom(...'abz09-_.~%'.split('')), minLength: 1, maxLength: 20 })
    const path = fc.oneof(
      fc.array(segment, { minLength: 1, maxLength: 4 }).map(parts => '/' + parts.join('/')),
      segment.map(id => `/rooms/${id}`),
      segment.map(id => `/rooms/${id}/members/${id}`)
    )
    const method = fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'PROPFIND', 'MKCOL', 'PURGE', 'SEARCH')
    await fc.assert(fc.asyncProperty(method, path, async (m, p) => {
      const res = await fetch(srv.url + p, { method: m }).catch(() => null)
      await res?.body?.cancel()
    }), { numRuns: 300 })
    const text = (await srv.request('GET', '/metrics')).text
    const series = text.split('\n').filter(line => line.startsWith('switchboard_http_requests_total{'))
    for (const line of series) {
      const [, method, route] = /method="([^"]*)",route="([^"]*)"/.exec(line) ?? []
      assert.ok(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'other'].includes(method ?? ''), line)
      // A route's own pattern (the collection without its slash), or the one label for no route.
      const known = route === 'unmatched' || (method !== 'other' && [route, `${route}/`].some(url => srv.app.hasRoute({ method: method as 'GET', url: url ?? '' })))
      assert.ok(known, line)
    }
    // Bounded by the routes the app has, not by the 300 requests.
    assert.ok(series.length < 60, `${series.length} series:\n${series.join('\n')}`)
  })
})

describe('hostile: requests the HTTP parser refuses', () => {
  it('answers with the API\'s error body and logs no byte of the request, even at trace level', async (t) => {
    const srv = await build(t, { env: { LOG_LEVEL: 'trace' } })
    const secret = `parser-secret-${randomBytes(8).toString('hex')}`
    const malformed = await rawConnect(t, srv)
    malformed.socket.write(`GET /auth/me?token=${secret}q HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${secret}h\r\nNot a header\r\n\r\n`)
    await within(malformed.closed, 'the malformed request to be answered')
    const bad = parseResponse(malformed.received())
    assert.equal(bad.status, 400, malformed.received())
    assert.equal(bad.body?.code, 'SB_ERR_BAD_REQUEST')

    const huge = await rawConnect(t, srv)
    huge.socket.write(`GET /health/live?token=${secret}q HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${secret}h\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
    await within(huge.closed, 'the oversized headers to be answered')
    const tooLarge = parseResponse(huge.received())
    assert.equal(tooLarge.status, 431, huge.received())
    assert.equal(tooLarge.body?.code, 'SB_ERR_HEADERS_TOO_LARGE')

    // node's error carries the raw request as `rawPacket`: logged, it would be these bytes.
    const text = srv.logText()
    assert.ok(!text.includes(secret), 'the secret reached the log')
    assert.ok(!text.includes('rawPacket'), 'the raw request reached the log')
    await assertAlive(srv)
  })
})

describe('hostile: publish bodies (POST /rooms/:id/messages)', () => {
  const LIMIT = 4096
  const env = { WS_MAX_MESSAGE_BYTES: String(LIMIT), RATE_LIMIT_MAX: '1000000' }

  /** One request on its own connection, any body and headers: the status and the JSON body, or null when the server cut it. */
  function send (srv: TestApp, headers: Record<string, string>, body: Buffer): Promise<{ status: number, body: Record<string, unknown> | null } | null> {
    return new Promise((resolve) => {
      const req = http.request(`${srv.url}/rooms/files/messages`, { method: 'POST', agent: false, headers }, (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
        res.on('end', () => {
          let parsed: Record<string, unknown> | null = null
          try { parsed = JSON.parse(text) as Record<string, unknown> } catch { /* not JSON */ }
          resolve({ status: res.statusCode ?? 0, body: parsed })
        })
        res.on('error', () => resolve(null))
      })
      // A refusal may close the socket before the whole body is written.
      req.on('error', () => resolve(null))
      req.end(body)
    })
  }

  async function setup (t: TestContext): Promise<{ srv: TestApp, token: string }> {
    const srv = await build(t, { env })
    const token = await srv.userToken('alice')
    const created = await srv.request('POST', '/rooms', { token, body: { id: 'files' } })
    assert.equal(created.status, 201, created.text)
    return { srv, token }
  }

  /** 201, or a 4xx with the API's error body: never a 5xx. */
  function assertClear (res: { status: number, body: Record<string, unknown> | null } | null, what: string): void {
    if (res === null) return
    const text = `${what}: ${res.status} ${JSON.stringify(res.body)}`
    assert.ok(res.status === 201 || (res.status >= 400 && res.status < 500), text)
    if (res.status !== 201) assert.ok(typeof res.body?.code === 'string' && typeof res.body.message === 'string', text)
  }

  it('any body, content type and Idempotency-Key: 201 or a clear 4xx, never a 5xx; the server stays up', async (t) => {
    const { srv, token } = await setup(t)
    const contentType = fc.constantFrom('application/octet-stream', 'application/octet-stream; charset=utf-8', 'APPLICATION/OCTET-STREAM',
      'application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-msgpack', 'multipart/form-data; boundary=x', '')
    const jsonBody = fc.record({
      data: fc.oneof(fc.anything(), fc.base64String({ maxLength: 8000 }), fc.string({ maxLength: 100 })),
      encoding: fc.oneof(fc.constant('base64'), fc.constant(undefined), fc.anything({ maxDepth: 1 })),
      idempotencyKey: fc.option(fc.string({ maxLength: 200 }), { nil: undefined })
    }, { requiredKeys: [] }).map((value) => Buffer.from(JSON.stringify(value)))
    // Sizes spread over twice the limit (fast-check's arrays stay short), and short random bytes.
    const sized = fc.tuple(fc.integer({ min: 0, max: 2 * LIMIT }), fc.integer({ min: 0, max: 255 })).map(([length, byte]) => Buffer.alloc(length, byte))
    const body = fc.oneof(sized, fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)), jsonBody, fc.string({ maxLength: 300 }).map((text) => Buffer.from(text)))
    // Header values node's client can send: visible ASCII and spaces.
    const key = fc.option(fc.string({ unit: fc.constantFrom(...'ab-_./:=+ Z9~'.split('')), maxLength: 200 }), { nil: undefined })
    const statuses = new Set<number>()
    await fc.assert(fc.asyncProperty(contentType, body, key, async (type, bytes, idempotencyKey) => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` }
      if (type !== '') headers['content-type'] = type
      if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey
      const res = await send(srv, headers, bytes)
      assertClear(res, `${type} ${bytes.length} bytes`)
      if (res !== null) statuses.add(res.status)
    }), { numRuns: 300 })
    // The inputs reached every answer, not only the first refusal.
    for (const status of [201, 400, 413, 415]) assert.ok(statuses.has(status), `no ${status} among ${[...statuses].join(', ')}`)
    await assertAlive(srv)
    assert.equal(srv.logs().filter((line) => line.msg === 'request failed').length, 0, 'no request failed with a 5xx')
  })

  it('lying, cut and malformed bodies: a 4xx or a closed socket, never a 5xx; the next request is served', async (t) => {
    const { srv, token } = await setup(t)
    const head = (headers: string): string => `POST /rooms/files/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/octet-stream\r\n${headers}\r\n`
    const attacks: Array<[string, string | Buffer, 'close' | 'answer']> = [
      // Content-Length far over the limit: refused from the header, before the body is read.
      ['a huge Content-Length', head('Content-Length: 100000000000\r\n') + 'abc', 'answer'],
      ['a malformed chunk size', head('Transfer-Encoding: chunked\r\n') + 'zz\r\nabc\r\n0\r\n\r\n', 'answer'],
      ['a negative Content-Length', head('Content-Length: -5\r\n') + 'abc', 'answer'],
      ['both Content-Length and chunked', head('Content-Length: 3\r\nTransfer-Encoding: chunked\r\n') + '3\r\nabc\r\n0\r\n\r\n', 'answer'],
      // The client promises more than it sends, then goes away.
      ['a body cut short', head('Content-Length: 3000\r\n') + 'x'.repeat(100), 'close'],
      ['chunks over the limit', Buffer.concat([Buffer.from(head('Transfer-Encoding: chunked\r\n')), ...Array.from({ length: 5 }, () => Buffer.from(`1000\r\n${'y'.repeat(4096)}\r\n`))]), 'answer']
    ]
    for (const [what, request, ending] of attacks) {
      const client = await rawConnect(t, srv)
      client.socket.write(request)
      if (ending === 'close') client.socket.end()
      await within(client.closed, `${what} to end`)
      const { status, body } = parseResponse(client.received())
      if (status !== 0) {
        assert.ok(status >= 400 && status < 500, `${what}: ${client.received()}`)
        assert.equal(typeof body?.code, 'string', `${what}: ${client.received()}`)
      }
      if (what === 'a huge Content-Length' || what === 'chunks over the limit') assert.equal(body?.code, 'SB_ERR_PAYLOAD_TOO_LARGE', client.received())
      await assertAlive(srv)
    }
    const fine = await send(srv, { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, Buffer.from([0xff]))
    assert.equal(fine?.status, 201)
    assert.equal(srv.logs().filter((line) => line.msg === 'request failed').length, 0, 'no request failed with a 5xx')
  })

  it('a flood of oversized uploads is refused without being kept; memory back', async (t) => {
    const { srv, token } = await setup(t)
    const baseline = await settledRss()
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }
    const big = randomBytes(256 * 1024)
    for (let round = 0; round < 10; round++) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => send(srv, headers, big)))
      for (const res of answers) if (res !== null) assert.deepEqual([res.status, res.body?.code], [413, 'SB_ERR_PAYLOAD_TOO_LARGE'])
    }
    // A JSON body of base64 over the body limit (413), and base64 that goes bad at its very end (400).
    const hugeBase64 = randomBytes(3 * 1024 * 1024).toString('base64')
    for (const data of [hugeBase64, `${hugeBase64.slice(0, 4096)}!`]) {
      const res = await send(srv, { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ data, encoding: 'base64' })))
      assertClear(res, 'base64')
      assert.ok(res === null || res.status === 413 || res.status === 400, JSON.stringify(res))
    }
    await assertAlive(srv)
    await assertRssBack(baseline, 'oversized uploads')
  })
})

describe('hostile: HTTP timeouts', () => {
  const shortTimeouts = {
    HTTP_HEADERS_TIMEOUT_MS: '1000',
    HTTP_REQUEST_TIMEOUT_MS: '1000',
    HTTP_CONNECTION_TIMEOUT_MS: '1000',
    HTTP_KEEP_ALIVE_TIMEOUT_MS: '1000'
  }

  it('cuts a client that never finishes its headers, even one that keeps trickling them', async (t) => {
    // The idle timeout far off: what cuts them here is the headers deadline.
    const srv = await build(t, { env: { ...shortTimeouts, HTTP_CONNECTION_TIMEOUT_MS: '60000' } })
    const trickling = await rawConnect(t, srv)
    trickling.socket.write('GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n')
    trickle(trickling, 'X-Slow: 1\r\n', 200)
    const silent = await rawConnect(t, srv)
    await within(trickling.closed, 'the slow-header client to be cut')
    await within(silent.closed, 'the silent client to be cut')
    for (const client of [trickling, silent]) assertCutWith408(client)
    await assertAlive(srv)
  })

  it('cuts clients whose body never finishes, even ones that keep trickling it; memory back', async (t) => {
    const srv = await build(t, { env: shortTimeouts })
    const baseline = await settledRss()
    const clients = await Promise.all(Array.from({ length: 100 }, async () => {
      const client = await rawConnect(t, srv)
      client.socket.write('POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{')
      trickle(client, ' ', 200)
      return client
    }))
    await within(Promise.all(clients.map(c => c.closed)), 'every slow-body client to be cut')
    for (const client of clients) assertCutWith408(client)
    await assertAlive(srv)
    await assertRssBack(baseline, 'slow bodies')
  })

  it('with TLS, cuts a client that never finishes the handshake', async (t) => {
    const { certFile, keyFile } = selfSignedCertificate(tempDir(t))
    const srv = await build(t, { env: { ...shortTimeouts, HTTP_CONNECTION_TIMEOUT_MS: '60000', TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile } })
    // Plain TCP that never says hello: no HTTP deadline has started, only the handshake's.
    const silent = await rawConnect(t, srv)
    await within(silent.closed, 'the client that never finished its TLS handshake to be cut')
    await within(oneShotRequest(srv.url, 'GET', '/health/live', { ca: readFileSync(certFile) }), 'a probe over TLS')
  })

  it('closes an idle keep-alive connection', async (t) => {
    const srv = await build(t, { env: shortTimeouts })
    const client = await rawConnect(t, srv)
    client.socket.write('GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await within(client.closed, 'the idle keep-alive connection to be closed')
    assert.equal(parseResponse(client.received()).status, 200)
  })

  it('never cuts an upgraded WebSocket: it outlives the HTTP deadlines', async (t) => {
    const srv = await build(t, { env: shortTimeouts })
    const alice = await srv.userToken('alice')
    const ws = await wsConnect(t, srv, { token: alice })
    // Opened after the WebSocket: once the server has cut it, every HTTP deadline the
    // WebSocket could have been held to has passed too, and it stayed silent all along.
    const slow = await rawConnect(t, srv)
    slow.socket.write('POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{')
    trickle(slow, ' ', 200)
    await within(slow.closed, 'the slow-body client to be cut')
    const idle = await rawConnect(t, srv)
    await within(idle.closed, 'the silent client to be cut')
    const pong = await ws.command({ type: 'ping' })
    assert.equal(pong.type, 'reply')
    assert.equal(srv.app.realtime.stats().connections, 1)
  })
})

/**
 * Waits until the server admits a connection from this address again and answers the probe on
 * it. The server learns of the test's closes on its own schedule, so this retries, within a bound.
 */
async function admittedAgain (t: TestContext, srv: TestApp): Promise<void> {
  const deadline = Date.now() + CLOSE_BOUND_MS
  for (;;) {
    const client = await rawConnect(t, srv)
    client.socket.write('GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
    await within(client.closed, 'an answer')
    const { status } = parseResponse(client.received())
    if (status === 200) return
    assert.equal(status, 429, client.received())
    assert.ok(Date.now() < deadline, 'no connection admitted after the others closed')
  }
}

describe('hostile: open HTTP connections per address', () => {
  it('refuses connections over HTTP_MAX_CONNECTIONS_PER_IP with 429, and admits again after a close', async (t) => {
    const srv = await build(t, { env: { HTTP_MAX_CONNECTIONS_PER_IP: '4' } })
    const held = await Promise.all(Array.from({ length: 4 }, () => rawConnect(t, srv)))
    const over = await rawConnect(t, srv)
    await within(over.closed, 'the connection over the cap to be ended')
    const { status, body } = parseResponse(over.received())
    assert.equal(status, 429, over.received())
    assert.equal(body?.code, 'SB_ERR_TOO_MANY_CONNECTIONS')

    held[0]!.socket.destroy()
    await held[0]!.closed
    await admittedAgain(t, srv)
    // The server's close waits for connections that are not idle: these never sent a request.
    for (const client of held) client.socket.destroy()
  })

  it('does not count upgraded WebSockets: they have caps of their own', async (t) => {
    const srv = await build(t, { env: { HTTP_MAX_CONNECTIONS_PER_IP: '3' } })
    const alice = await srv.userToken('alice')
    for (let i = 0; i < 4; i++) await wsConnect(t, srv, { token: alice })
    assert.equal((await srv.request('GET', '/health/live', { headers: { connection: 'close' } })).status, 200)
  })

  it('does not cap a trusted proxy: its connections carry many clients', async (t) => {
    const srv = await build(t, { env: { HTTP_MAX_CONNECTIONS_PER_IP: '2', TRUST_PROXY: '127.0.0.1' } })
    const clients = await Promise.all(Array.from({ length: 4 }, () => rawConnect(t, srv)))
    for (const client of clients) {
      client.socket.write('GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
      await within(client.closed, 'an answer')
      assert.equal(parseResponse(client.received()).status, 200)
    }
  })

  it('with TLS: upgraded WebSockets leave the count, a connection over the cap is closed', async (t) => {
    const { certFile, keyFile } = selfSignedCertificate(tempDir(t))
    const ca = readFileSync(certFile)
    const srv = await build(t, { env: { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile, HTTP_MAX_CONNECTIONS_PER_IP: '2' } })
    await srv.createUser('alice')
    const login = await oneShotRequest(srv.url, 'POST', '/auth/login', { body: { username: 'alice', password: PASSWORD }, ca })
    const token = login.body.accessToken as string
    // Each TLS socket wraps the TCP connection that was counted: the upgrade must release that one.
    for (let i = 0; i < 3; i++) {
      const ws = new WebSocket(`${srv.url.replace(/^https/, 'wss')}/ws`, { ca, headers: { authorization: `Bearer ${token}` } })
      ws.on('error', () => {})
      t.after(() => { ws.terminate() })
      await within(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('unexpected-response', () => reject(new Error('handshake refused'))) }), 'a WebSocket over TLS')
    }
    const { port } = new URL(srv.url)
    const tlsClient = (): Promise<{ socket: tls.TLSSocket, secured: boolean }> => new Promise((resolve) => {
      const socket = tls.connect({ port: Number(port), host: '127.0.0.1', ca, servername: 'localhost' })
      let secured = false
      socket.once('secureConnect', () => { secured = true; resolve({ socket, secured }) })
      socket.on('error', () => {})
      socket.once('close', () => resolve({ socket, secured }))
      t.after(() => { socket.destroy() })
    })
    const held = [await tlsClient(), await tlsClient()]
    assert.ok(held.every(client => client.secured))
    const over = await within(tlsClient(), 'the connection over the cap')
    assert.equal(over.secured, false)
    for (const client of held) client.socket.destroy()
  })

  it('survives many connections from one address: refused past the cap, memory back', async (t) => {
    const srv = await build(t, { env: { HTTP_MAX_CONNECTIONS_PER_IP: '20' } })
    const baseline = await settledRss()
    const clients = await Promise.all(Array.from({ length: 300 }, () => rawConnect(t, srv)))
    let ended = 0
    const overCap = new Promise<void>(resolve => {
      for (const client of clients) void client.closed.then(() => { if (++ended === 280) resolve() })
    })
    await within(overCap, 'the 280 connections over the cap to be ended')
    for (const client of clients) client.socket.destroy()
    await admittedAgain(t, srv)
    await assertRssBack(baseline, 'connection flood')
  })
})

describe('hostile: credentials in URLs are redacted by their decoded names', () => {
  it('never logs a token sent as ?tok%65n=, in the handshake, request or refusal logs', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    // Accepted: the query parser decodes the name, so this is the `token` parameter.
    const ws = await wsConnect(t, srv, { query: `?tok%65n=${alice}` })
    assert.equal(ws.welcome.type, 'welcome')

    const restSecret = 'rest-secret-0123456789abcdef'
    const res = await srv.request('GET', `/auth/me?%74oken=${restSecret}1&access%5Ftoken=${restSecret}2&api%5fkey=${restSecret}3&API%5FKEY=${restSecret}4&x=1`, { token: alice })
    assert.equal(res.status, 200)

    const refusedSecret = 'refused-secret-0123456789abcdef'
    await assert.rejects(wsConnect(t, srv, { query: `?tok%65n=${refusedSecret}` }))
    const offPath = await rawConnect(t, srv)
    offPath.socket.write(upgradeRequest(`/health/live?tok%65n=${refusedSecret}x`))
    await within(offPath.closed, 'the off-path upgrade to be ended')
    // A URL the router cannot decode is an error of its own: logged too, redacted too.
    const badUrl = await rawConnect(t, srv)
    badUrl.socket.write(`GET /rooms/%E0%A4%A?tok%65n=${refusedSecret}y HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
    await within(badUrl.closed, 'the answer to a malformed URL')
    assert.equal(parseResponse(badUrl.received()).status, 400)

    const text = srv.logText()
    assert.ok(!text.includes(alice), 'the JWT reached the log')
    for (const secret of [`${restSecret}1`, `${restSecret}2`, `${restSecret}3`, `${restSecret}4`, refusedSecret]) {
      assert.ok(!text.includes(secret), `${secret} reached the log`)
    }
    const urls = srv.logs().map(line => (line.req as { url?: string } | undefined)?.url ?? line.url).filter((url): url is string => typeof url === 'string')
    assert.ok(urls.includes('/auth/me?%74oken=[REDACTED]&access%5Ftoken=[REDACTED]&api%5fkey=[REDACTED]&API%5FKEY=[REDACTED]&x=1'), JSON.stringify(urls))
    assert.ok(urls.includes('/ws?tok%65n=[REDACTED]'), JSON.stringify(urls))
  })
})

describe('hostile: redactUrl', () => {
  it('censors a credential parameter however its name is percent-encoded, as the query parser decodes it', () => {
    const names = ['token', 'access_token', 'refresh_token', 'api_key', 'apikey']
    const spelling = fc.constantFrom(...names).chain(name => fc.tuple(...[...name].map(char => fc.oneof(
      fc.constant(char),
      fc.constant(char.toUpperCase()),
      fc.constant(`%${char.charCodeAt(0).toString(16)}`),
      fc.constant(`%${char.charCodeAt(0).toString(16).toUpperCase()}`)
    ))).map(chars => chars.join('')))
    fc.assert(fc.property(spelling, fc.string({ minLength: 1 }).map(s => encodeURIComponent(s)), (rawName, before) => {
      const secret = `s3cr3t${randomBytes(8).toString('hex')}`
      const url = `/ws?a=${before}&${rawName}=${secret}&b=1`
      // The premise: the server's parser reads this name as a credential.
      assert.ok(names.includes([...new URLSearchParams(url.slice(4)).keys()][1]!.toLowerCase()))
      const logged = redactUrl(url)
      assert.ok(!logged.includes(secret), logged)
      assert.equal(logged, `/ws?a=${before}&${rawName}=[REDACTED]&b=1`)
    }))
  })
})
