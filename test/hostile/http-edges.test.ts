import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { build, wsConnect, type TestApp } from '../helper.js'
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
    }
  })
})

