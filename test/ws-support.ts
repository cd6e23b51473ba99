// What the WebSocket protocol tests and the hostile suite share: hand-made tokens, raw frames
// and upgrades, refusal and error-frame assertions, and a fixture of users in rooms.
import { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import http from 'node:http'
import { createHmac, randomBytes } from 'node:crypto'
import { WebSocket } from 'ws'
import { MSGPACK_PROTOCOL_VERSION } from '@switchboard/protocol/messages'
import { build, TEST_JWT_SECRET, wsConnect, type TestApp, type WsClient, type WsFrame } from './helper.js'
// ---------------------------------------------------------------------------------------
// Helpers

export const nowSeconds = (): number => Math.floor(Date.now() / 1000)
export const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

/** An HS256 token signed with the test secret: lets a test make exactly the token it needs (expired here). */
export function signedToken (claims: Record<string, unknown>): string {
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64(claims)
  return `${head}.${body}.${createHmac('sha256', TEST_JWT_SECRET).update(`${head}.${body}`).digest('base64url')}`
}

export function portOf (srv: TestApp): number {
  return Number(new URL(srv.url).port)
}

/** A refused handshake: the HTTP status and the parsed JSON error body. Fails when the upgrade succeeds. */
export async function refusal (t: TestContext, srv: TestApp, options: Parameters<typeof wsConnect>[2] = {}): Promise<{ status: number, body: Record<string, unknown> }> {
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

export function assertErrorBody (body: Record<string, unknown>, statusCode: number, code: string): void {
  assert.equal(body.statusCode, statusCode, JSON.stringify(body))
  assert.equal(body.code, code, JSON.stringify(body))
  assert.equal(typeof body.error, 'string')
  assert.equal(typeof body.message, 'string')
}

/** The exact shape of every error frame; `temporary` is true only for the retryable codes. */
export function assertErrorFrame (frame: WsFrame | undefined, code: string, id?: string | number): void {
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

/** The error frame answering a command (`client.command`), with its id. */
export function assertCommandError (frame: WsFrame, code: string): void {
  assertErrorFrame(frame, code, frame.id)
}

export function assertReply (frame: WsFrame): Record<string, unknown> {
  assert.equal(frame.type, 'reply', JSON.stringify(frame))
  return frame.result as Record<string, unknown>
}

/** A close (or any event) the test waits for, with a generous bound so a missing one fails instead of hanging. */
export async function within<T> (promise: Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Waits for a condition the test cannot get an event for (server-side bookkeeping, or another
 * node's view asked over HTTP), with a generous bound.
 */
export async function waitFor (condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** The raw HTTP upgrade (no ws client): its status and headers, to read what the server echoed. */
export function rawUpgradeResponse (srv: TestApp, headers: Record<string, string>, path = '/ws'): Promise<{ status: number, headers: http.IncomingHttpHeaders, rawHeaders: string[] }> {
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
export function attempt (t: TestContext, srv: TestApp, headers: Record<string, string>): Promise<{ welcome: boolean, status?: number, code?: number }> {
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

/** `rsv1`: the frame is compressed (permessage-deflate). */
export interface RawFrame { fin: boolean, rsv1: boolean, opcode: number, payload: Buffer }

/** A client frame, masked unless told otherwise; `rsv` sets the reserved bits (0–7). */
export function clientFrame (opcode: number, payload: Buffer, { fin = true, rsv = 0, mask = true } = {}): Buffer {
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
      this.frames.push({ fin: (b0 & 0x80) !== 0, rsv1: (b0 & 0x40) !== 0, opcode: b0 & 0x0f, payload: Buffer.from(this.buffer.subarray(offset, offset + length)) })
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

export function rawConnect (t: TestContext, srv: TestApp): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(portOf(srv), '127.0.0.1', () => resolve(new RawClient(socket)))
    socket.once('error', reject)
    t.after(() => { socket.destroy() })
  })
}

export function upgradeRequest (srv: TestApp, headers: Record<string, string>): string {
  const lines = [`GET /ws HTTP/1.1`, `Host: 127.0.0.1:${portOf(srv)}`, 'Connection: Upgrade', 'Upgrade: websocket']
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`)
  return lines.join('\r\n') + '\r\n\r\n'
}

/**
 * Upgrades by hand and waits for the welcome frame: from here on the test writes raw frames.
 * With `protocol` (a subprotocol, e.g. switchboard.v1.msgpack) the welcome is whatever frame comes first;
 * `headers` adds to the upgrade request (Sec-WebSocket-Extensions, say).
 */
export async function rawWebSocket (t: TestContext, srv: TestApp, token: string, protocol?: string, headers: Record<string, string> = {}): Promise<RawClient> {
  const raw = await rawConnect(t, srv)
  raw.write(upgradeRequest(srv, {
    Authorization: `Bearer ${token}`,
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...(protocol === undefined ? {} : { 'Sec-WebSocket-Protocol': protocol }),
    ...headers
  }))
  if (protocol === undefined) await raw.until(() => raw.frames.find(f => f.opcode === 0x1 && f.payload.toString().includes('"welcome"')), 'the welcome frame')
  else await raw.until(() => raw.frames[0], 'the welcome frame')
  assert.equal(raw.status, 101)
  return raw
}

/** Sends a raw HTTP request and reads the status, or null when the server drops the connection without one. */
export async function rawHttpStatus (t: TestContext, srv: TestApp, request: string | Buffer): Promise<number | null> {
  const raw = await rawConnect(t, srv)
  raw.write(request)
  // Either a status line arrives or the server closes the connection without one (then null).
  await raw.until(() => raw.status ?? (raw.socket.destroyed ? null : undefined), 'a response or a drop')
  raw.destroy()
  return raw.status
}

/** Asserts "4xx or dropped, never 5xx". */
export function assertRefusedOrDropped (status: number | null, what: string): void {
  if (status === null) return
  assert.ok(status >= 400 && status < 500, `${what}: got HTTP ${status}`)
}

// ---------------------------------------------------------------------------------------
// Fixtures

export interface CommandFixture { srv: TestApp, alice: string, bob: string, carol: string, dave: string }

/**
 * Rooms for the command tests: `lobby` (public, carol banned), `news` (public, publish policy
 * `moderators`, dave a plain member), `secret` (private). alice owns all three; bob is
 * nobody's member.
 */
export async function commandFixture (t: TestContext, env: Record<string, string> = {}): Promise<CommandFixture> {
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

export async function createApiKey (srv: TestApp, scopes: string[]): Promise<{ key: string, name: string }> {
  const admin = await srv.userToken('root', 'admin')
  const res = await srv.request('POST', '/api-keys', { token: admin, body: { name: 'svc', scopes } })
  assert.equal(res.status, 201, res.text)
  return { key: res.body.key as string, name: res.body.apiKey.name as string }
}

// ---------------------------------------------------------------------------------------
// MessagePack codec

/**
 * wsConnect offering only `switchboard.v1.msgpack`: frames are decoded from MessagePack (bytes as
 * Buffers; a text frame would arrive with base64 strings instead), commands go out as MessagePack.
 */
export async function msgpackConnect (t: TestContext, base: { url: string }, token: string): Promise<WsClient> {
  const client = await wsConnect(t, base, { token, protocols: [MSGPACK_PROTOCOL_VERSION] })
  assert.equal(client.socket.protocol, MSGPACK_PROTOCOL_VERSION)
  return client
}

/**
 * Counts what one server-side TCP socket hands the kernel: `_write` and `_writev` calls (one
 * syscall each) and the chunks they carry, so a test can prove a burst leaves in one writev.
 */
export function countWrites (t: TestContext, raw: net.Socket): { write: number, writev: number, chunks: number } {
  const socket = raw as net.Socket & { _writev?: unknown, _write: unknown }
  const calls = { write: 0, writev: 0, chunks: 0 }
  const originalWrite = socket._write as (...args: unknown[]) => void
  const originalWritev = socket._writev as (chunks: unknown[], cb: unknown) => void
  socket._write = function (...args: unknown[]) { calls.write++; return originalWrite.apply(this, args) }
  socket._writev = function (chunks: unknown[], cb: unknown) { calls.writev++; calls.chunks += chunks.length; return originalWritev.call(this, chunks, cb) }
  t.after(() => { socket._write = originalWrite; socket._writev = originalWritev })
  return calls
}

/** Every chunk each server-side socket hands the kernel from now on, by the buffer object itself. */
export function watchWrites (t: TestContext, server: TestApp): Map<net.Socket, Buffer[]> {
  const written = new Map<net.Socket, Buffer[]>()
  for (const ws of server.app.websocketServer.clients) {
    const raw = (ws as unknown as { _socket: net.Socket & { _writev?: unknown, _write: unknown } })._socket
    const chunks: Buffer[] = []
    written.set(raw, chunks)
    const originalWrite = raw._write as (chunk: Buffer, ...rest: unknown[]) => void
    const originalWritev = raw._writev as (list: Array<{ chunk: Buffer }>, cb: unknown) => void
    raw._write = function (chunk: Buffer, ...rest: unknown[]) { chunks.push(chunk); return originalWrite.call(this, chunk, ...rest) }
    raw._writev = function (list: Array<{ chunk: Buffer }>, cb: unknown) { chunks.push(...list.map(c => c.chunk)); return originalWritev.call(this, list, cb) }
    t.after(() => { raw._write = originalWrite; raw._writev = originalWritev })
  }
  return written
}
