import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, randomUUID } from 'node:crypto'
import net from 'node:net'
import { WebSocket } from 'ws'
import { oneShotRequest } from '../support/http.js'
import { build, tempDir, wsConnect, type TestApp, type WsClient, type WsFrame } from './helper.js'
import { ADMIN, baseEnv, startServer, waitUntilReady } from './process.js'

/**
 * Connection lifecycle over real sockets: heartbeat (BAR 11), idle timeout, token expiry
 * (BAR 6), slow consumers (BAR 10), the SIGTERM drain of a real process (BAR 14) and churn
 * (BAR 15). Nothing here asserts a duration: every wait is for an event, with a generous bound.
 */

/** Generous bound for anything the server does on its own (timers, fan-out, cleanup). */
const WITHIN_MS = 15_000

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`. */
async function waitFor (what: string | (() => string), check: () => boolean | Promise<boolean>, timeoutMs = WITHIN_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${typeof what === 'string' ? what : what()}: not within ${timeoutMs} ms`)
    await sleep(20)
  }
}

function withTimeout<T> (promise: Promise<T>, what: string, ms = WITHIN_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms) })
  ]).finally(() => clearTimeout(timer))
}

async function createRoom (srv: TestApp, token: string, id: string, extra: Record<string, unknown> = {}): Promise<void> {
  const res = await srv.request('POST', '/rooms', { token, body: { id, ...extra } })
  assert.equal(res.status, 201, res.text)
}

async function subscribe (client: WsClient, room: string): Promise<WsFrame> {
  const reply = await client.command({ type: 'subscribe', room })
  assert.equal(reply.type, 'reply', JSON.stringify(reply))
  return reply
}

async function presence (srv: TestApp, token: string, room: string): Promise<{ users: string[], connections: number }> {
  const res = await srv.request('GET', `/rooms/${room}/presence`, { token })
  assert.equal(res.status, 200, res.text)
  return res.body
}

function connectionIds (srv: TestApp): string[] {
  return srv.app.realtime.listConnections().map(c => c.id)
}

/**
 * A ws client that does NOT answer pings (`autoPong: false`), for the heartbeat test; the
 * helper's client always answers. Resolves once the welcome frame is in.
 */
async function noPongClient (t: TestContext, srv: TestApp, token: string): Promise<{ socket: WebSocket, frames: WsFrame[], pings: () => number, closed: Promise<number> }> {
  const socket = new WebSocket(srv.url.replace(/^http/, 'ws') + '/ws', [], { headers: { authorization: `Bearer ${token}` }, autoPong: false, perMessageDeflate: false })
  t.after(() => { socket.terminate() })
  const frames: WsFrame[] = []
  let pings = 0
  socket.on('message', data => { frames.push(JSON.parse(data.toString()) as WsFrame) })
  socket.on('ping', () => { pings++ })
  socket.on('error', () => {})
  const closed = new Promise<number>(resolve => socket.on('close', code => resolve(code)))
  await withTimeout(new Promise(resolve => socket.once('open', resolve)), 'no-pong client open')
  await waitFor('welcome', () => frames.some(f => f.type === 'welcome'))
  return { socket, frames, pings: () => pings, closed }
}

/** One masked client text frame (RFC 6455 §5.2), for the raw TCP client. */
function maskedTextFrame (text: string): Buffer {
  const payload = Buffer.from(text)
  assert.ok(payload.length < 65_536)
  const header = payload.length < 126
    ? Buffer.from([0x81, 0x80 | payload.length])
    : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff])
  const mask = randomBytes(4)
  const masked = Buffer.alloc(payload.length)
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i]! ^ mask[i % 4]!
  return Buffer.concat([header, mask, masked])
}

/**
 * A raw TCP client that completes the WebSocket upgrade, sends one subscribe, and from then on
 * behaves like a stopped process: it never answers a ping, and once `stop()` is called it does
 * not read either, so the server's frames pile up in the kernel.
 */
async function stoppedClient (t: TestContext, srv: TestApp, token: string, room: string): Promise<{ socket: net.Socket, stop: () => void, gone: Promise<void> }> {
  const { port } = new URL(srv.url)
  const socket = net.connect(Number(port), '127.0.0.1')
  t.after(() => { socket.destroy() })
  socket.on('error', () => {})
  const gone = new Promise<void>(resolve => socket.once('close', () => resolve()))
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
  await withTimeout(new Promise(resolve => socket.once('connect', resolve)), 'raw connect')
  socket.write([
    'GET /ws HTTP/1.1',
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    `Authorization: Bearer ${token}`,
    '', ''
  ].join('\r\n'))
  await waitFor(() => `101 and welcome (got ${JSON.stringify(received.slice(0, 200))})`, () => received.startsWith('HTTP/1.1 101') && received.includes('"welcome"'))
  socket.write(maskedTextFrame(JSON.stringify({ type: 'subscribe', room, id: 'raw-sub' })))
  return { socket, stop: () => { socket.pause() }, gone }
}

describe('heartbeat', () => {
  const env = { WS_HEARTBEAT_MS: '200' }

  it('keeps a client that answers pings connected across several heartbeats', async (t) => {
    const srv = await build(t, { env })
    const token = await srv.userToken('alice')
    const client = await wsConnect(t, srv, { token })
    let pings = 0
    client.socket.on('ping', () => { pings++ })
    await waitFor('five pings', () => pings >= 5)
    assert.equal(client.socket.readyState, WebSocket.OPEN)
    assert.deepEqual(connectionIds(srv), [client.welcome.connectionId])
    assert.equal((await client.command({ type: 'ping' })).type, 'reply')
  })

  it('terminates a client that does not answer pings; its room sees it leave', async (t) => {
    const srv = await build(t, { env })
    const alice = await srv.userToken('alice')
    await srv.createUser('dave')
    const dave = await srv.login('dave')
    await createRoom(srv, alice, 'hb')
    const watcher = await wsConnect(t, srv, { token: alice })
    await subscribe(watcher, 'hb')

    const mute = await noPongClient(t, srv, dave)
    mute.socket.send(JSON.stringify({ type: 'subscribe', room: 'hb', id: 's1' }))
    await watcher.next(f => f.type === 'join' && f.user.id === 'dave')

    const code = await withTimeout(mute.closed, 'no-pong client closed')
    // Terminated, not closed politely: no close frame, so the client sees 1006.
    assert.equal(code, 1006)
    assert.ok(mute.pings() >= 1, 'the server pinged before giving up')
    assert.ok(mute.frames.some(f => f.type === 'reply' && f.id === 's1'), JSON.stringify(mute.frames))

    await watcher.next(f => f.type === 'leave' && f.user.id === 'dave')
    await waitFor('presence without dave', async () => (await presence(srv, alice, 'hb')).users.join() === 'alice')
    assert.deepEqual(connectionIds(srv), [watcher.welcome.connectionId])
    assert.equal(watcher.socket.readyState, WebSocket.OPEN, 'the healthy client is untouched')
  })

  it('terminates a stopped client (raw TCP, never reads or answers) and removes its presence', async (t) => {
    const srv = await build(t, { env })
    const alice = await srv.userToken('alice')
    await srv.createUser('carol')
    const carol = await srv.login('carol')
    await createRoom(srv, alice, 'hb')
    const watcher = await wsConnect(t, srv, { token: alice })
    await subscribe(watcher, 'hb')

    const stopped = await stoppedClient(t, srv, carol, 'hb')
    await watcher.next(f => f.type === 'join' && f.user.id === 'carol')
    stopped.stop()

    await watcher.next(f => f.type === 'leave' && f.user.id === 'carol')
    await waitFor('stopped connection gone', () => srv.app.realtime.stats().connections === 1)
    assert.deepEqual(connectionIds(srv), [watcher.welcome.connectionId])
    assert.deepEqual(await presence(srv, alice, 'hb'), { users: ['alice'], connections: 1 })
    // Once it reads again, the stopped client finds its socket closed by the server.
    stopped.socket.resume()
    await withTimeout(stopped.gone, 'stopped client socket closed')
  })
})

describe('idle timeout', () => {
  it('closes a silent connection with 4002, spares one holding a subscription, and re-arms after unsubscribe', async (t) => {
    const idleMs = 300
    const srv = await build(t, { env: { WS_IDLE_TIMEOUT_MS: String(idleMs) } })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'idle')
    const silent = await wsConnect(t, srv, { token: alice })
    const holder = await wsConnect(t, srv, { token: alice })
    await subscribe(holder, 'idle')

    assert.equal((await withTimeout(silent.closed, 'silent client closed')).code, 4002)
    // Several idle periods with a subscription and no traffic at all, each marked by a silent
    // probe connected after the holder's last frame: one sweep ticks every connection at the
    // same moment, so the sweep that closes a probe is past the holder's idle deadline too.
    for (let i = 0; i < 3; i++) {
      const probe = await wsConnect(t, srv, { token: alice })
      assert.equal((await withTimeout(probe.closed, `probe ${i} closed`)).code, 4002)
    }
    await waitFor('the probes gone', () => connectionIds(srv).length === 1)
    assert.equal(holder.socket.readyState, WebSocket.OPEN)
    assert.deepEqual(connectionIds(srv), [holder.welcome.connectionId])
    // Sent after the last probe's close, so read after that sweep: a holder it had closed would not answer.
    assert.equal((await holder.command({ type: 'ping' })).type, 'reply')

    const reply = await holder.command({ type: 'unsubscribe', room: 'idle' })
    assert.equal(reply.type, 'reply', JSON.stringify(reply))
    assert.equal((await withTimeout(holder.closed, 'holder closed after unsubscribe')).code, 4002)
    await waitFor('no connections', () => srv.app.realtime.stats().connections === 0)
  })
})

describe('token expiry', () => {
  const env = { JWT_CLOCK_TOLERANCE: '0s' }

  function shortToken (srv: TestApp, sub: string, expiresInMs: number): string {
    // @fastify/jwt reads a numeric expiresIn as seconds (it scales it for fast-jwt): pass a unit.
    return srv.app.jwt.sign({ sub, role: 'user', jti: randomUUID(), sid: randomUUID() }, { expiresIn: `${expiresInMs}ms` })
  }

  it('closes with 4001 once the token expires', async (t) => {
    const srv = await build(t, { env })
    await srv.createUser('erin')
    const token = shortToken(srv, 'erin', 2000)
    const client = await wsConnect(t, srv, { token })
    assert.equal(typeof client.welcome.tokenExpiresAt, 'number')
    const { code } = await withTimeout(client.closed, 'expired client closed')
    assert.equal(code, 4001)
    // The close came from the expiry, not from anything earlier.
    assert.ok(Date.now() >= client.welcome.tokenExpiresAt, `closed before exp (${client.welcome.tokenExpiresAt as number})`)
    await waitFor('no connections', () => srv.app.realtime.stats().connections === 0)
  })

  it('a refresh before expiry keeps the connection open past the first expiry', async (t) => {
    const srv = await build(t, { env })
    await srv.createUser('erin')
    // Both connections use the same token, so the control's 4001 marks the refresher's old deadline.
    const token = shortToken(srv, 'erin', 2000)
    const control = await wsConnect(t, srv, { token })
    const refresher = await wsConnect(t, srv, { token })

    const fresh = shortToken(srv, 'erin', 60_000)
    const freshExp = (JSON.parse(Buffer.from(fresh.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp
    const reply = await refresher.command({ type: 'refresh', token: fresh })
    assert.equal(reply.type, 'reply', JSON.stringify(reply))
    assert.equal(reply.result.tokenExpiresAt, freshExp * 1000, JSON.stringify(reply))
    assert.ok(freshExp * 1000 > refresher.welcome.tokenExpiresAt)

    assert.equal((await withTimeout(control.closed, 'control closed')).code, 4001)
    // No sleep: the sweep that closed the control ticked the refresher at the same moment, with
    // the same old deadline were the refresh ignored; this ping, sent after that close, is read
    // after that sweep, and a refresher it had closed would not answer.
    assert.equal((await refresher.command({ type: 'ping' })).type, 'reply')
    assert.equal(refresher.socket.readyState, WebSocket.OPEN)

    // A token for someone else is refused and changes nothing.
    await srv.createUser('frank')
    const other = shortToken(srv, 'frank', 60_000)
    const refused = await refresher.command({ type: 'refresh', token: other })
    assert.equal(refused.type, 'error')
    assert.equal(refused.error.code, 'forbidden')
    assert.equal(refresher.socket.readyState, WebSocket.OPEN)
  })
})

describe('slow consumer', () => {
  it('cuts off a client that stops reading (4008) within its budget; 100 others get every message', async (t) => {
    const budget = 64 * 1024
    const messages = 400
    const srv = await build(t, {
      env: { WS_MAX_BUFFERED_BYTES: String(budget), WS_MAX_CONNECTIONS_PER_USER: '200', WS_MAX_CONNECTIONS_PER_IP: '1000' }
    })
    const alice = await srv.userToken('alice')
    await createRoom(srv, alice, 'firehose', { historySize: 1000 })
    await createRoom(srv, alice, 'filler', { historySize: 1 })

    const others: WsClient[] = []
    for (let batch = 0; batch < 4; batch++) {
      others.push(...await Promise.all(Array.from({ length: 25 }, async () => {
        const client = await wsConnect(t, srv, { token: alice })
        await subscribe(client, 'firehose')
        return client
      })))
    }
    const slow = await wsConnect(t, srv, { token: alice })
    await subscribe(slow, 'firehose')
    await subscribe(slow, 'filler')

    // The server side of the slow client: measure its user-space write buffer after every write.
    const clientSocket = (slow.socket as unknown as { _socket: net.Socket })._socket
    const serverWs = [...srv.app.websocketServer.clients].find(ws => (ws as unknown as { _socket: net.Socket })._socket.remotePort === clientSocket.localPort)
    assert.ok(serverWs !== undefined, 'server side of the slow client')
    const serverSocket = (serverWs as unknown as { _socket: net.Socket })._socket
    let maxBuffered = 0
    const write = serverSocket.write.bind(serverSocket) as (...args: unknown[]) => boolean
    serverSocket.write = ((...args: unknown[]) => {
      const result = write(...args)
      maxBuffered = Math.max(maxBuffered, serverSocket.writableLength)
      return result
    }) as typeof serverSocket.write

    clientSocket.pause()
    // The kernel's socket buffers (megabytes on loopback) absorb a lot before the server's own
    // buffer grows; a second room, that only the slow client reads, fills them cheaply, while
    // the firehose messages interleave so the 100 others are served during the whole backlog.
    const payload = 'x'.repeat(2048)
    const filler = 'f'.repeat(48 * 1024)
    let published = 0
    let fillerBytes = 0
    const publishFirehose = async (): Promise<void> => {
      const i = ++published
      const res = await srv.request('POST', '/rooms/firehose/messages', { token: alice, body: { data: { i, payload } } })
      assert.equal(res.status, 201, res.text)
      assert.equal(res.body.offset, i)
    }
    while (connectionIds(srv).includes(slow.welcome.connectionId)) {
      assert.ok(fillerBytes < 64 * 1024 * 1024, `still connected after ${fillerBytes} bytes it never read`)
      const res = await srv.request('POST', '/rooms/filler/messages', { token: alice, body: { data: filler } })
      assert.equal(res.status, 201, res.text)
      fillerBytes += filler.length
      if (published < messages) await publishFirehose()
    }
    while (published < messages) await publishFirehose()

    const cutOff = srv.logs().find(line => line.msg === 'slow consumer cut off' && line.connId === slow.welcome.connectionId)
    assert.ok(cutOff !== undefined, 'the server logged the slow-consumer cut-off')

    await Promise.all(others.map(client => client.next(f => f.type === 'message' && f.offset === messages, WITHIN_MS)))
    let frameBytes = 0
    for (const client of others) {
      const offsets = client.frames.filter(f => f.type === 'message').map(f => f.offset as number)
      assert.equal(offsets.length, messages)
      assert.ok(offsets.every((offset, index) => offset === index + 1), 'every offset, in order')
      assert.equal(client.frames.filter(f => f.type === 'unsubscribed').length, 0)
      assert.equal(client.socket.readyState, WebSocket.OPEN)
      frameBytes = Math.max(frameBytes, Buffer.byteLength(JSON.stringify(client.frames.at(-1))) + 4)
    }
    assert.deepEqual(srv.app.realtime.stats(), { connections: 100, rooms: 1 })

    // The buffer really filled up to the point where the next message would not fit (the cut
    // was not premature), and never went past the budget plus a small frame (the close frame).
    assert.ok(maxBuffered + filler.length + 1024 > budget, `cut off with only ${maxBuffered} bytes buffered`)
    assert.ok(maxBuffered <= budget + frameBytes, `buffer reached ${maxBuffered} bytes, budget ${budget}`)

    // Reading again, the slow client finds itself disconnected (4008 if the close frame got
    // through the backlog, 1006 when the server had to destroy the socket).
    clientSocket.resume()
    const { code } = await withTimeout(slow.closed, 'slow client closed')
    assert.ok([4008, 1006].includes(code), `close code ${code}`)
    const received = slow.frames.filter(f => f.type === 'message').length
    assert.ok(received < messages, `the slow client got ${received} of ${messages}`)
  })
})

describe('drain on SIGTERM (real process)', () => {
  it('fails readiness, refuses new upgrades, sends every client reconnect + 1012, exits 0', async (t) => {
    const server = await startServer(t, { ...baseEnv(tempDir(t)), WS_DRAIN_MS: '1000', WS_MAX_CONNECTIONS_PER_USER: '100' })
    const { child, port } = server
    const output = (): string => server.stdout() + server.stderr()
    const base = `http://127.0.0.1:${port}`
    const status = async (path: string): Promise<string> => {
      try {
        return String((await oneShotRequest(base, 'GET', path, { timeoutMs: 5000 })).status)
      } catch (err) {
        return (err as NodeJS.ErrnoException).code ?? (err as Error).message
      }
    }

    await waitUntilReady(server)
    const login = await oneShotRequest(base, 'POST', '/auth/login', { body: ADMIN })
    assert.equal(login.status, 200)
    const token = login.body.accessToken as string
    assert.equal((await oneShotRequest(base, 'POST', '/rooms', { token, body: { id: 'deploy' } })).status, 201)

    const clients = await Promise.all(Array.from({ length: 20 }, async () => {
      const client = await wsConnect(t, { url: base }, { token })
      await subscribe(client, 'deploy')
      return client
    }))
    // Record, per client, whether the reconnect push arrived before the close.
    const pushedBeforeClose = clients.map(client => client.closed.then(() => client.frames.some(f => f.type === 'reconnect')))

    child.kill('SIGTERM')
    const seen: string[] = []
    await waitFor(() => `readiness 503 (saw ${seen.join(', ')})`, async () => {
      const s = await status('/health/ready')
      seen.push(s)
      if (s === 'ECONNREFUSED' || s === 'ECONNRESET') assert.fail(`listener closed before readiness was seen failing: ${seen.join(', ')}`)
      return s === '503'
    })

    const handshake = await new Promise<string>((resolve) => {
      const socket = new WebSocket(base.replace(/^http/, 'ws') + '/ws', [], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false })
      socket.once('open', () => { socket.terminate(); resolve('open') })
      socket.once('unexpected-response', (_req, res) => { resolve(String(res.statusCode)); res.resume(); socket.terminate() })
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
    assert.ok(['503', 'ECONNREFUSED', 'ECONNRESET'].includes(handshake), `handshake during the drain: ${handshake}`)

    const closes = await withTimeout(Promise.all(clients.map(c => c.closed)), 'every client closed')
    assert.deepEqual(closes.map(c => c.code), clients.map(() => 1012))
    assert.deepEqual(await Promise.all(pushedBeforeClose), clients.map(() => true))
    for (const client of clients) {
      const push = client.frames.find(f => f.type === 'reconnect')
      assert.ok(push !== undefined)
      assert.equal(push.reason, 'shutdown')
      assert.ok(Number.isInteger(push.retryAfterMs) && push.retryAfterMs >= 0, JSON.stringify(push))
    }

    const exit = await withTimeout(server.exited, 'server exit', 20_000)
    assert.deepEqual(exit, { code: 0, signal: null }, output())
  })
})

describe('churn', () => {
  it('500 connects, subscribes and disconnects leave no connection, room, presence or handle behind', async (t) => {
    const srv = await build(t, { env: { WS_MAX_CONNECTIONS_PER_USER: '100' } })
    const users = ['u1-churn', 'u2-churn', 'u3-churn', 'u4-churn', 'u5-churn']
    const tokens = await Promise.all(users.map(id => srv.userToken(id)))
    const owner = tokens[0]!
    await createRoom(srv, owner, 'churn')
    assert.deepEqual(await presence(srv, owner, 'churn'), { users: [], connections: 0 })
    const baseline = process.getActiveResourcesInfo().length

    for (let batch = 0; batch < 10; batch++) {
      const clients = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
        const client = await wsConnect(t, srv, { token: tokens[i % tokens.length]! })
        await subscribe(client, 'churn')
        return client
      }))
      assert.ok(srv.app.realtime.listConnections({ room: 'churn' }).length >= 50)
      for (const client of clients) client.close()
      const codes = await withTimeout(Promise.all(clients.map(c => c.closed)), `batch ${batch} closed`)
      assert.ok(codes.every(c => c.code === 1000 || c.code === 1005), JSON.stringify(codes.filter(c => c.code !== 1000 && c.code !== 1005)))
    }

    await waitFor(() => `stats back to zero (${JSON.stringify(srv.app.realtime.stats())})`, () => {
      const stats = srv.app.realtime.stats()
      return stats.connections === 0 && stats.rooms === 0
    })
    assert.deepEqual(srv.app.realtime.stats(), { connections: 0, rooms: 0 })
    await waitFor('presence empty', async () => (await presence(srv, owner, 'churn')).connections === 0)
    assert.deepEqual(await presence(srv, owner, 'churn'), { users: [], connections: 0 })
    await waitFor(() => `active handles back near ${baseline} (${process.getActiveResourcesInfo().join(', ')})`,
      () => process.getActiveResourcesInfo().length <= baseline + 5)
  })
})

