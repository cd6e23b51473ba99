import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import http from 'node:http'
import { createHmac, randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { WebSocket } from 'ws'
import { build, TEST_JWT_SECRET, wsConnect, type TestApp, type WsClient, type WsFrame } from './helper.js'
import { Connection } from '../src/realtime/connection.js'
import { parseCommand, type ClientCommand } from '../src/realtime/protocol.js'

// ---------------------------------------------------------------------------------------
// Helpers

const nowSeconds = (): number => Math.floor(Date.now() / 1000)
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

/** An HS256 token signed with the test secret: lets a test make exactly the token it needs (expired here). */
function signedToken (claims: Record<string, unknown>): string {
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64(claims)
  return `${head}.${body}.${createHmac('sha256', TEST_JWT_SECRET).update(`${head}.${body}`).digest('base64url')}`
}

function portOf (srv: TestApp): number {
  return Number(new URL(srv.url).port)
}

/** A refused handshake: the HTTP status and the parsed JSON error body. Fails when the upgrade succeeds. */
async function refusal (t: TestContext, srv: TestApp, options: Parameters<typeof wsConnect>[2] = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  let client: WsClient
  try {
    client = await wsConnect(t, srv, options)
  } catch (err) {
    const { statusCode, body } = err as { statusCode?: number, body?: string }
    if (statusCode === undefined) throw err
    return { status: statusCode, body: JSON.parse(body ?? '') as Record<string, unknown> }
  }
  client.close()
  return assert.fail('the handshake was accepted')
}

function assertErrorBody (body: Record<string, unknown>, statusCode: number, code: string): void {
  assert.equal(body.statusCode, statusCode, JSON.stringify(body))
  assert.equal(body.code, code, JSON.stringify(body))
  assert.equal(typeof body.error, 'string')
  assert.equal(typeof body.message, 'string')
}

/** The exact shape of every error frame; `temporary` is true only for the retryable codes. */
function assertErrorFrame (frame: WsFrame | undefined, code: string, id?: string | number): void {
  assert.ok(frame !== undefined, 'no frame')
  const text = JSON.stringify(frame)
  assert.equal(frame.type, 'error', text)
  assert.deepEqual(Object.keys(frame).sort(), id === undefined ? ['error', 'type'] : ['error', 'id', 'type'], text)
  if (id !== undefined) assert.equal(frame.id, id, text)
  assert.deepEqual(Object.keys(frame.error as object).sort(), ['code', 'message', 'temporary'], text)
  assert.equal(frame.error.code, code, text)
  assert.equal(typeof frame.error.message, 'string', text)
  assert.equal(frame.error.temporary, code === 'unavailable' || code === 'rate_limited', text)
}

function assertReply (frame: WsFrame): Record<string, unknown> {
  assert.equal(frame.type, 'reply', JSON.stringify(frame))
  return frame.result as Record<string, unknown>
}

/** A close (or any event) the test waits for, with a generous bound so a missing one fails instead of hanging. */
async function within<T> (promise: Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Waits for a condition the test cannot get an event for (server-side bookkeeping), with a generous bound. */
async function waitFor (condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** The raw HTTP upgrade (no ws client): its status and headers, to read what the server echoed. */
function rawUpgradeResponse (srv: TestApp, headers: Record<string, string>, path = '/ws'): Promise<{ status: number, headers: http.IncomingHttpHeaders, rawHeaders: string[] }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${srv.url}${path}`, {
      agent: false,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64'),
        ...headers
      }
    })
    req.on('upgrade', (res, socket) => {
      socket.destroy()
      resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders })
    })
    req.on('response', (res) => {
      res.resume()
      resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders })
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * One handshake without the helper's expectations: how it ended. Used where a refusal may come
 * before the upgrade (HTTP status) or right after it (close code), depending on a race.
 */
function attempt (t: TestContext, srv: TestApp, headers: Record<string, string>): Promise<{ welcome: boolean, status?: number, code?: number }> {
  return new Promise((resolve) => {
    const socket = new WebSocket(srv.url.replace(/^http/, 'ws') + '/ws', { headers, perMessageDeflate: false })
    t.after(() => { socket.terminate() })
    socket.on('error', () => {})
    socket.on('message', (data) => {
      if ((JSON.parse(data.toString()) as { type: string }).type === 'welcome') resolve({ welcome: true })
    })
    socket.on('unexpected-response', (_req, res) => { res.resume(); resolve({ welcome: false, status: res.statusCode ?? 0 }) })
    socket.on('close', code => resolve({ welcome: false, code }))
  })
}

// ---------------------------------------------------------------------------------------
// A raw TCP WebSocket client: hand-made handshakes and hand-built frames.

interface RawFrame { fin: boolean, opcode: number, payload: Buffer }

/** A client frame, masked unless told otherwise; `rsv` sets the reserved bits (0–7). */
function clientFrame (opcode: number, payload: Buffer, { fin = true, rsv = 0, mask = true } = {}): Buffer {
  const first = (fin ? 0x80 : 0) | (rsv << 4) | opcode
  const maskBit = mask ? 0x80 : 0
  let header: Buffer
  if (payload.length < 126) {
    header = Buffer.from([first, maskBit | payload.length])
  } else if (payload.length < 65_536) {
    header = Buffer.alloc(4)
    header[0] = first
    header[1] = maskBit | 126
    header.writeUInt16BE(payload.length, 2)
  } else {
    header = Buffer.alloc(10)
    header[0] = first
    header[1] = maskBit | 127
    header.writeBigUInt64BE(BigInt(payload.length), 2)
  }
  if (!mask) return Buffer.concat([header, payload])
  const key = randomBytes(4)
  const masked = Buffer.from(payload.map((byte, i) => byte ^ key[i % 4]!))
  return Buffer.concat([header, key, masked])
}

class RawClient {
  readonly frames: RawFrame[] = []
  /** The raw HTTP response head (status line and headers). */
  head = ''
  status: number | null = null
  private buffer = Buffer.alloc(0)
  private headDone = false
  private waiters: Array<() => void> = []
  /** Resolves when the server ends or resets the TCP connection. */
  readonly ended: Promise<void>

  constructor (readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      this.parse()
      this.wake()
    })
    this.ended = new Promise(resolve => socket.on('close', () => { this.wake(); resolve() }))
    // A reset while we write (the server dropping us) is an outcome the tests read from `ended`.
    socket.on('error', () => {})
  }

  private wake (): void {
    for (const waiter of this.waiters.splice(0)) waiter()
  }

  private parse (): void {
    if (!this.headDone) {
      const end = this.buffer.indexOf('\r\n\r\n')
      if (end === -1) return
      this.head = this.buffer.subarray(0, end).toString('latin1')
      this.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(this.head)?.[1] ?? 0)
      this.buffer = this.buffer.subarray(end + 4)
      this.headDone = true
      // Only a 101 is followed by frames; anything else is a body we do not parse.
      if (this.status !== 101) return
    }
    if (this.status !== 101) return
    while (this.buffer.length >= 2) {
      const b0 = this.buffer[0]!
      const b1 = this.buffer[1]!
      let length = b1 & 0x7f
      let offset = 2
      if (length === 126) {
        if (this.buffer.length < 4) return
        length = this.buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (this.buffer.length < 10) return
        length = Number(this.buffer.readBigUInt64BE(2))
        offset = 10
      }
      if ((b1 & 0x80) !== 0) offset += 4 // the server never masks, but parse it right anyway
      if (this.buffer.length < offset + length) return
      this.frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload: Buffer.from(this.buffer.subarray(offset, offset + length)) })
      this.buffer = this.buffer.subarray(offset + length)
    }
  }

  /** Resolves once `ready()` holds, or rejects when the connection ends first or the bound passes. */
  async until<T> (ready: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const value = ready()
      if (value !== undefined) return value
      if (this.socket.destroyed) throw new Error(`connection ended before ${what}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** The code of the close frame the server sends (it must send one before dropping the TCP connection). */
  async closeCode (): Promise<number> {
    const frame = await this.until(() => this.frames.find(f => f.opcode === 0x8), 'a close frame')
    assert.ok(frame.payload.length >= 2, 'close frame without a code')
    return frame.payload.readUInt16BE(0)
  }

  write (bytes: Buffer | string): void {
    this.socket.write(bytes)
  }

  destroy (): void {
    this.socket.destroy()
  }
}

function rawConnect (t: TestContext, srv: TestApp): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(portOf(srv), '127.0.0.1', () => resolve(new RawClient(socket)))
    socket.once('error', reject)
    t.after(() => { socket.destroy() })
  })
}

function upgradeRequest (srv: TestApp, headers: Record<string, string>): string {
  const lines = [`GET /ws HTTP/1.1`, `Host: 127.0.0.1:${portOf(srv)}`, 'Connection: Upgrade', 'Upgrade: websocket']
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
  return lines.join('\r\n') + '\r\n\r\n'
}

/** Upgrades by hand and waits for the welcome frame: from here on the test writes raw frames. */
async function rawWebSocket (t: TestContext, srv: TestApp, token: string): Promise<RawClient> {
  const raw = await rawConnect(t, srv)
  raw.write(upgradeRequest(srv, {
    Authorization: `Bearer ${token}`,
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13'
  }))
  await raw.until(() => raw.frames.find(f => f.opcode === 0x1 && f.payload.toString().includes('"welcome"')), 'the welcome frame')
  assert.equal(raw.status, 101)
  return raw
}

/** Sends a raw HTTP request and reads the status, or null when the server drops the connection without one. */
async function rawHttpStatus (t: TestContext, srv: TestApp, request: string | Buffer): Promise<number | null> {
  const raw = await rawConnect(t, srv)
  raw.write(request)
  // Either a status line arrives or the server closes the connection without one (then null).
  await raw.until(() => raw.status ?? (raw.socket.destroyed ? null : undefined), 'a response or a drop')
  raw.destroy()
  return raw.status
}

/** Asserts "4xx or dropped, never 5xx". */
function assertRefusedOrDropped (status: number | null, what: string): void {
  if (status === null) return
  assert.ok(status >= 400 && status < 500, `${what}: got HTTP ${status}`)
}

// ---------------------------------------------------------------------------------------
// Fixtures

interface CommandFixture { srv: TestApp, alice: string, bob: string, carol: string, dave: string }

/**
 * Rooms for the command tests: `lobby` (public, carol banned), `news` (public, publish policy
 * `moderators`, dave a plain member), `secret` (private). alice owns all three; bob is
 * nobody's member.
 */
async function commandFixture (t: TestContext, env: Record<string, string> = {}): Promise<CommandFixture> {
  const srv = await build(t, { env })
  const [alice, bob, carol, dave] = await Promise.all(['alice', 'bob', 'carol', 'dave'].map(id => srv.userToken(id)))
  const expect = async (status: number, method: string, path: string, body: unknown): Promise<void> => {
    const res = await srv.request(method, path, { token: alice!, body })
    assert.equal(res.status, status, `${method} ${path}: ${res.text}`)
  }
  await expect(201, 'POST', '/rooms', { id: 'lobby' })
  await expect(201, 'POST', '/rooms', { id: 'news', publish: 'moderators' })
  await expect(201, 'POST', '/rooms', { id: 'secret', visibility: 'private' })
  await expect(201, 'PUT', '/rooms/news/members/dave', { role: 'member' })
  await expect(201, 'PUT', '/rooms/lobby/bans/carol', {})
  return { srv, alice: alice!, bob: bob!, carol: carol!, dave: dave! }
}

async function createApiKey (srv: TestApp, scopes: string[]): Promise<{ key: string, name: string }> {
  const admin = await srv.userToken('root', 'admin')
  const res = await srv.request('POST', '/api-keys', { token: admin, body: { name: 'svc', scopes } })
  assert.equal(res.status, 201, res.text)
  return { key: res.body.key as string, name: res.body.apiKey.name as string }
}

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
    const claims = { sub: 'alice', role: 'user', jti: 'j1', iss: 'switchboard' }
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

describe('ws frame abuse', () => {
  it('bad UTF-8 → 1007, oversize → 1009, protocol errors → 1002; the server keeps serving', async (t) => {
    const srv = await build(t, { env: { WS_MAX_MESSAGE_BYTES: '1024' } })
    const alice = await srv.userToken('alice')
    const ping = Buffer.from(JSON.stringify({ type: 'ping', id: 'p' }))
    const cases: Array<[string, Buffer, number]> = [
      ['invalid UTF-8 in a text frame', clientFrame(0x1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 1007],
      ['a truncated UTF-8 sequence', clientFrame(0x1, Buffer.from([0x22, 0xe2, 0x82])), 1007],
      ['a frame over WS_MAX_MESSAGE_BYTES', clientFrame(0x1, Buffer.alloc(2000, 0x20)), 1009],
      ['fragments that add up to more than WS_MAX_MESSAGE_BYTES', Buffer.concat([clientFrame(0x1, Buffer.alloc(600, 0x20), { fin: false }), clientFrame(0x0, Buffer.alloc(600, 0x20))]), 1009],
      ['an unmasked client frame', clientFrame(0x1, ping, { mask: false }), 1002],
      ['RSV1 set without an extension', clientFrame(0x1, ping, { rsv: 4 }), 1002],
      ['RSV3 set', clientFrame(0x1, ping, { rsv: 1 }), 1002],
      ['an unknown data opcode', clientFrame(0x3, ping), 1002],
      ['an unknown control opcode', clientFrame(0xb, Buffer.alloc(0)), 1002],
      ['a fragmented ping', clientFrame(0x9, Buffer.from('x'), { fin: false }), 1002],
      ['a continuation with nothing to continue', clientFrame(0x0, ping), 1002],
      ['a control frame over 125 bytes', clientFrame(0x9, Buffer.alloc(126)), 1002],
      ['a new text frame inside a fragmented message', Buffer.concat([clientFrame(0x1, Buffer.from('{"a"'), { fin: false }), clientFrame(0x1, ping)]), 1002],
      ['a close frame with a one-byte payload', clientFrame(0x8, Buffer.from([0x03])), 1002],
      ['a close frame with the reserved code 1005', clientFrame(0x8, Buffer.from([0x03, 0xed])), 1002],
      ['a close frame with an invalid UTF-8 reason', clientFrame(0x8, Buffer.from([0x03, 0xe8, 0xff])), 1007]
    ]
    for (const [what, bytes, code] of cases) {
      const raw = await rawWebSocket(t, srv, alice)
      raw.write(bytes)
      assert.equal(await raw.closeCode(), code, what)
      raw.destroy()
    }

    // A well-formed raw frame on the same kind of connection gets its reply: the harness itself is sound.
    const raw = await rawWebSocket(t, srv, alice)
    raw.write(clientFrame(0x1, ping))
    const reply = await raw.until(() => raw.frames.find(f => f.opcode === 0x1 && f.payload.toString().includes('"reply"')), 'the ping reply')
    assert.deepEqual(JSON.parse(reply.payload.toString()), { type: 'reply', id: 'p', result: {} })
    raw.destroy()

    const client = await wsConnect(t, srv, { token: alice })
    assertReply(await client.command({ type: 'ping' }))
    // Every abused connection was cleaned up: only the healthy client is left.
    await waitFor(() => srv.app.realtime.stats().connections === 1, 'the abused connections to be released')
  })

  it('a binary frame gets bad_request and the connection stays open', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const client = await wsConnect(t, srv, { token: alice })
    client.socket.send(Buffer.from(JSON.stringify({ type: 'ping', id: 'b' })))
    assertErrorFrame(await client.next(f => f.type === 'error'), 'bad_request')
    assertReply(await client.command({ type: 'ping' }))
    assert.equal(client.socket.readyState, client.socket.OPEN)
  })
})

describe('ws handshake abuse', () => {
  it('bad keys, versions and huge headers get 4xx or a drop, never 5xx; slow headers block nobody', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const auth = { Authorization: `Bearer ${alice}` }
    const goodKey = randomBytes(16).toString('base64')
    const cases: Array<[string, string]> = [
      ['a short key', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': 'abc', 'Sec-WebSocket-Version': '13' })],
      ['a key that is not base64', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': '!!!!!!!!!!!!!!!!!!!!!!==', 'Sec-WebSocket-Version': '13' })],
      ['no key', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Version': '13' })],
      ['no version', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey })],
      ['version 12', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '12' })],
      ['a version that is not a number', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': 'x' })],
      ['an invalid subprotocol list', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'a,,b' })],
      ['bad key, no credentials', upgradeRequest(srv, { 'Sec-WebSocket-Key': 'abc', 'Sec-WebSocket-Version': '13' })],
      ['a 20 KiB header', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13', 'X-Big': 'a'.repeat(20 * 1024) })],
      ['many headers over 16 KiB', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13', ...Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`X-H${i}`, 'b'.repeat(50)])) })],
      ['a 20 KiB Authorization header', upgradeRequest(srv, { Authorization: `Bearer ${'a'.repeat(20 * 1024)}`, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13' })],
      ['a 200 KB token in the query', `GET /ws?token=${'a'.repeat(200_000)} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${goodKey}\r\nSec-WebSocket-Version: 13\r\n\r\n`],
      ['a POST upgrade', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13' }).replace(/^GET/, 'POST')],
      ['garbage', 'NOT HTTP AT ALL\r\n\r\n']
    ]
    for (const [what, request] of cases) {
      const status = await rawHttpStatus(t, srv, request)
      assertRefusedOrDropped(status, what)
      if (what === 'a short key' || what === 'no version' || what === 'version 12') assert.equal(status, 400, what)
    }
    assert.equal(srv.app.realtime.stats().connections, 0)

    // A client that trickles its headers and then stalls holds its own socket only.
    const slow = await rawConnect(t, srv)
    const partial = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.slice(0, 10)}`
    for (const char of partial.slice(0, 40)) {
      slow.write(char)
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    const others = await Promise.all([1, 2, 3].map(() => wsConnect(t, srv, { token: alice })))
    for (const other of others) assertReply(await other.command({ type: 'ping' }))
    assert.equal(slow.socket.destroyed, false, 'the slow client was not connected meanwhile')
    assert.equal(slow.status, null)
    slow.destroy()
    await slow.ended

    assertReply(await (await wsConnect(t, srv, { token: alice })).command({ type: 'ping' }))
  })
})

// ---------------------------------------------------------------------------------------
// Envelope fuzzing

/** The id a conforming server can echo: the schema's CommandId, read the way the parser reads it. */
function echoableId (text: string): string | number | undefined {
  let value: unknown
  try { value = JSON.parse(text) } catch { return undefined }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, 'id')) return undefined
  const id = (value as { id: unknown }).id
  if (typeof id === 'string' && id.length >= 1 && id.length <= 64) return id
  if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) return id
  return undefined
}

let probeSeq = 0

/**
 * Sends one frame, then a ping marker; returns every frame that arrived before the marker's
 * reply. Commands run in order, so whatever the frame caused has been sent by then.
 */
async function probe (client: WsClient, text: string): Promise<WsFrame[]> {
  const start = client.frames.length
  const marker = `probe-${++probeSeq}`
  client.send(text)
  client.send({ type: 'ping', id: marker })
  await client.next(f => f.type === 'reply' && f.id === marker)
  const end = client.frames.findIndex((f, i) => i >= start && f.type === 'reply' && f.id === marker)
  return client.frames.slice(start, end)
}

/** Exactly one answer: a reply to the frame's id, or a bad_request error (with the id when it had a valid one). */
async function expectOneAnswer (client: WsClient, text: string, { replyAllowed = true, pathPrefix }: { replyAllowed?: boolean, pathPrefix?: string } = {}): Promise<WsFrame> {
  const answers = await probe(client, text)
  const shown = `${text.slice(0, 300)} → ${JSON.stringify(answers).slice(0, 500)}`
  assert.equal(answers.length, 1, shown)
  const answer = answers[0]!
  const id = echoableId(text)
  if (answer.type === 'reply') {
    assert.ok(replyAllowed, shown)
    assert.notEqual(id, undefined, shown)
    assert.equal(answer.id, id, shown)
    return answer
  }
  assertErrorFrame(answer, 'bad_request', id)
  if (pathPrefix !== undefined) assert.ok((answer.error.message as string).startsWith(pathPrefix), `expected a message naming ${pathPrefix}: ${shown}`)
  return answer
}

const MISSING = Symbol('missing')
const nonString = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }))
const nonNumber = fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }))
const nonObject = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }))
const nonInteger = fc.double({ noNaN: true, noDefaultInfinity: true }).filter(d => !Number.isInteger(d))

/** For every field of every command, values of the wrong type or out of range. */
const WRONG: Record<string, fc.Arbitrary<unknown>> = {
  type: fc.oneof(fc.string(), nonString).filter(v => !(typeof v === 'string' && ['subscribe', 'unsubscribe', 'publish', 'history', 'presence', 'ping', 'refresh'].includes(v))),
  id: fc.oneof(fc.constant(''), fc.string({ minLength: 65, maxLength: 80 }), fc.integer({ max: -1 }), nonInteger, fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }), fc.constant(MISSING)),
  room: fc.oneof(nonString, fc.string().filter(s => !/^[a-z0-9][a-z0-9_.:-]{0,63}$/.test(s)), fc.constant('a'.repeat(65)), fc.constant(MISSING)),
  since: fc.oneof(
    nonObject,
    fc.record({ epoch: fc.oneof(nonString, fc.constant(''), fc.string({ minLength: 65, maxLength: 70 })), offset: fc.nat() }),
    fc.record({ epoch: fc.string({ minLength: 1, maxLength: 10 }), offset: fc.oneof(nonNumber, fc.integer({ max: -1 }), nonInteger) }),
    fc.record({ epoch: fc.constant('e'), offset: fc.constant(0), extra: fc.jsonValue() }),
    fc.constant({})
  ),
  data: fc.constant(MISSING),
  idempotencyKey: fc.oneof(nonString, fc.constant(''), fc.string({ minLength: 129, maxLength: 140 })),
  limit: fc.oneof(nonNumber, fc.integer({ max: 0 }), fc.integer({ min: 1001 }), nonInteger),
  token: fc.oneof(nonString, fc.constant(''), fc.constant('t'.repeat(8193)), fc.constant(MISSING)),
  extra: fc.jsonValue()
}

const TEMPLATES: Record<ClientCommand['type'], Record<string, unknown>> = {
  subscribe: { type: 'subscribe', id: 'w1', room: 'fuzz', since: { epoch: 'e', offset: 0 } },
  unsubscribe: { type: 'unsubscribe', id: 'w1', room: 'fuzz' },
  publish: { type: 'publish', id: 'w1', room: 'fuzz', data: { a: 1 }, idempotencyKey: 'k' },
  history: { type: 'history', id: 'w1', room: 'fuzz', since: { epoch: 'e', offset: 0 }, limit: 10 },
  presence: { type: 'presence', id: 'w1', room: 'fuzz' },
  ping: { type: 'ping', id: 'w1' },
  refresh: { type: 'refresh', id: 'w1', token: 'x' }
}

const FIELD_CASES: Array<[ClientCommand['type'], string]> = Object.entries(TEMPLATES).flatMap(([type, template]) =>
  [...Object.keys(template), 'extra'].map(field => [type as ClientCommand['type'], field] as [ClientCommand['type'], string]))

describe('ws envelope fuzzing', () => {
  it('every frame gets one reply or one bad_request; the connection survives; Object.prototype untouched', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '1000000', WS_MESSAGES_BURST: '1000000' } })
    const token = await srv.userToken('fuzzer')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'fuzz' } })).status, 201)
    const client = await wsConnect(t, srv, { token })
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort()
    // The templates are valid commands, so each mutation below is the only thing wrong.
    for (const template of Object.values(TEMPLATES)) assert.ok(parseCommand(JSON.stringify(template)).ok, JSON.stringify(template))

    await t.test('random strings', async () => {
      await fc.assert(fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' })), async (text) => {
        await expectOneAnswer(client, text)
      }), { numRuns: 200 })
    })

    await t.test('random JSON values', async () => {
      await fc.assert(fc.asyncProperty(fc.jsonValue(), async (value) => {
        await expectOneAnswer(client, JSON.stringify(value))
      }), { numRuns: 200 })
    })

    await t.test('a wrong type for every field of every command', async () => {
      const arbitrary = fc.constantFrom(...FIELD_CASES).chain(([type, field]) => WRONG[field]!.map(value => ({ type, field, value })))
      await fc.assert(fc.asyncProperty(arbitrary, async ({ type, field, value }) => {
        const frame: Record<string, unknown> = { ...TEMPLATES[type] }
        if (value === MISSING) delete frame[field]
        else frame[field] = value
        const text = JSON.stringify(frame)
        await expectOneAnswer(client, text, { replyAllowed: false, pathPrefix: `/${field}` })
      }), { numRuns: 300 })
    })

    await t.test('__proto__, constructor and prototype keys', async () => {
      const key = fc.constantFrom('__proto__', 'constructor', 'prototype')
      const polluting = fc.oneof(fc.constant({ polluted: true, toString: 1, hasOwnProperty: 'x' }), fc.jsonValue())
      // Raw JSON text, so that JSON.parse makes the key a real own property.
      const frames = fc.oneof(
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"ping","id":"pp","${k}":${JSON.stringify(v)}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"${k}":${JSON.stringify(v)},"type":"ping","id":"pp"}`),
        key.map(k => `{"${k}":{"type":"ping","id":"pp"}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"publish","id":"pp","room":"fuzz","data":{"${k}":${JSON.stringify(v)}}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"publish","id":"pp","room":"fuzz","data":{"a":[{"${k}":{"${k}":${JSON.stringify(v)}}}]}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"history","id":"pp","room":"fuzz","since":{"epoch":"e","offset":0,"${k}":${JSON.stringify(v)}}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"subscribe","id":{"${k}":${JSON.stringify(v)}},"room":"fuzz"}`)
      )
      await fc.assert(fc.asyncProperty(frames, async (text) => {
        await expectOneAnswer(client, text)
        assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)
      }), { numRuns: 200 })
      // Such keys are data: stored and sent back as own properties, never as prototypes.
      await expectOneAnswer(client, '{"type":"publish","id":"pp","room":"fuzz","data":{"__proto__":{"polluted":true}}}')
      const history = assertReply(await client.command({ type: 'history', room: 'fuzz', limit: 1 }))
      const data = (history.publications as Array<{ data: object }>)[0]!.data
      assert.deepEqual(Object.getOwnPropertyDescriptor(data, '__proto__')?.value, { polluted: true })
    })

    await t.test('deep nesting', async () => {
      const depth = 10_000
      const arrays = '['.repeat(depth) + ']'.repeat(depth)
      const objects = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
      await expectOneAnswer(client, `{"type":"publish","id":"deep","room":"fuzz","data":${arrays}}`, { replyAllowed: false, pathPrefix: '/data' })
      await expectOneAnswer(client, `{"type":"publish","id":"deep","room":"fuzz","data":${objects}}`, { replyAllowed: false, pathPrefix: '/data' })
      await expectOneAnswer(client, `{"type":"subscribe","id":"deep","room":"fuzz","since":${objects}}`, { replyAllowed: false, pathPrefix: '/since' })
      await expectOneAnswer(client, `{"type":"ping","id":"deep","x":${arrays}}`, { replyAllowed: false, pathPrefix: '/x' })
      await expectOneAnswer(client, arrays, { replyAllowed: false })
      await expectOneAnswer(client, `{"type":"ping","id":${arrays}}`, { replyAllowed: false, pathPrefix: '/id' })
      // Just under the limit is still a valid publication.
      await expectOneAnswer(client, `{"type":"publish","id":"ok","room":"fuzz","data":${'['.repeat(32)}${']'.repeat(32)}}`, { replyAllowed: true })
    })

    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
    assert.equal(client.socket.readyState, client.socket.OPEN)
    assertReply(await client.command({ type: 'ping' }))
    assert.equal(client.frames.filter(f => f.type === 'error' && f.error.code !== 'bad_request').length, 0)
  })
})

describe('ws rate limits', () => {
  it('a burst over the bucket gets rate_limited errors; a flood is cut off with 4029', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '5', WS_MESSAGES_BURST: '5' } })
    const token = await srv.userToken('alice')
    const client = await wsConnect(t, srv, { token })
    const tcp = (client.socket as unknown as { _socket: net.Socket })._socket
    const ids = Array.from({ length: 10 }, (_, i) => `burst-${i}`)
    // One TCP write, so the server reads the whole burst at once and the bucket cannot refill in between.
    tcp.cork()
    for (const id of ids) client.send({ type: 'ping', id })
    tcp.uncork()
    const answers = await Promise.all(ids.map(id => client.next(f => f.id === id)))
    assert.equal(answers.filter(f => f.type === 'reply').length, 5, JSON.stringify(answers))
    const limited = answers.filter(f => f.type === 'error')
    assert.equal(limited.length, 5, JSON.stringify(answers))
    for (const frame of limited) assertErrorFrame(frame, 'rate_limited', frame.id)
    assert.equal(client.socket.readyState, client.socket.OPEN)

    const flooder = await wsConnect(t, srv, { token })
    for (let i = 0; i < 200; i++) flooder.send({ type: 'ping', id: `flood-${i}` })
    const { code } = await within(flooder.closed, 'the flooder to be cut off')
    assert.equal(code, 4029)
    assert.ok(flooder.frames.some(f => f.type === 'error' && f.error.code === 'rate_limited'), 'no rate_limited warning before the cut-off')
    // The flood cost the flooder only. (The pause only lets the first client's own bucket refill
    // by at least one token at 5/s; timers never fire early, so this cannot flake.)
    await new Promise(resolve => setTimeout(resolve, 250))
    assertReply(await client.command({ type: 'ping' }))
  })

  it('binary frames count against the rate: a binary flood is cut off with 4029 too', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '5', WS_MESSAGES_BURST: '5' } })
    const client = await wsConnect(t, srv, { token: await srv.userToken('alice') })
    for (let i = 0; i < 200; i++) client.socket.send(Buffer.from([i & 0xff]))
    const { code } = await within(client.closed, 'the binary flooder to be cut off')
    assert.equal(code, 4029)
    const errors = client.frames.filter(f => f.type === 'error')
    assert.ok(errors.length <= 5 + 20, `${errors.length} error frames for a flood`)
    assert.ok(errors.some(f => f.error.code === 'rate_limited'))
  })
})

describe('ws handler failure', () => {
  it('a throwing handler closes only its own socket with 1011; 100 others keep working', async (t) => {
    const srv = await build(t, { env: { WS_MAX_CONNECTIONS_PER_USER: '150' } })
    const crowdToken = await srv.userToken('crowd')
    const victimToken = await srv.userToken('victim')
    assert.equal((await srv.request('POST', '/rooms', { token: crowdToken, body: { id: 'lobby' } })).status, 201)
    const crowd = await Promise.all(Array.from({ length: 100 }, () => wsConnect(t, srv, { token: crowdToken })))
    for (const reply of await Promise.all(crowd.map(c => c.command({ type: 'subscribe', room: 'lobby' })))) assertReply(reply)
    const victim = await wsConnect(t, srv, { token: victimToken })
    assertReply(await victim.command({ type: 'subscribe', room: 'lobby' }))

    // The bug: `execute` throws for room `boom`, which only the victim asks for.
    const proto = Connection.prototype as unknown as { execute: (this: Connection, command: ClientCommand) => Promise<unknown> }
    const original = proto.execute
    proto.execute = function (command) {
      if ('room' in command && command.room === 'boom') throw new TypeError('injected bug for room boom')
      return original.call(this, command)
    }
    t.after(() => { proto.execute = original })

    victim.send({ type: 'subscribe', id: 'kaboom', room: 'boom' })
    const { code } = await within(victim.closed, 'the victim to be closed')
    assert.equal(code, 1011)
    assert.ok(!victim.frames.some(f => f.id === 'kaboom'), 'the failed command was answered')

    const publisher = crowd[0]!
    assertReply(await publisher.command({ type: 'publish', room: 'lobby', data: { after: 'boom' } }))
    const received = await Promise.all(crowd.map(c => c.next(f => f.type === 'message' && f.data?.after === 'boom')))
    assert.equal(received.length, 100)
    for (const client of crowd) assert.equal(client.socket.readyState, client.socket.OPEN)

    const failure = srv.logs().find(l => l.msg === 'connection handler failed')
    assert.ok(failure !== undefined, 'the failure was not logged')
    assert.equal(failure.level, 50)
    assert.match(JSON.stringify(failure.err), /injected bug for room boom/)
    assert.equal(failure.connId, victim.welcome.connectionId)
    await waitFor(() => srv.app.realtime.stats().connections === 100, 'the victim to be unregistered')
  })
  it('a bug in authorization is a bug (1011, logged at error), not a temporary `unavailable` clients would retry forever', async (t) => {
    const srv = await build(t)
    const token = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    const original = srv.app.rooms.authorize.bind(srv.app.rooms)
    srv.app.rooms.authorize = async (principal, room, action) => {
      if (room === 'lobby') throw new TypeError('injected authorization bug')
      return await original(principal, room, action)
    }
    const client = await wsConnect(t, srv, { token })
    client.send({ type: 'subscribe', id: 'bug', room: 'lobby' })
    assert.equal((await within(client.closed, 'the socket to be closed')).code, 1011)
    assert.ok(!client.frames.some(f => f.id === 'bug'), 'the command was answered as if it could be retried')
    const rest = await srv.request('POST', '/rooms/lobby/messages', { token, body: { data: 1 } })
    assert.equal(rest.status, 500)
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
