import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import net from 'node:net'
import type { TestContext } from 'node:test'
import { WebSocket, WebSocketServer } from 'ws'
import {
  SwitchboardClient,
  SwitchboardError,
  type ConnectionState,
  type DisconnectEvent,
  type MessageFrame,
  type RetryEvent,
  type SubscriptionEvent,
  type SwitchboardClientOptions,
  type WebSocketConstructor
} from '@switchboard/client'
import type { TestApp } from './helper.js'

/*
 * What the SDK's end-to-end tests share (test/client.test.ts, test/client-bytes.test.ts):
 * recorded clients closed after each test, waits for events with a generous bound, a TCP
 * proxy that cuts the network, scripted servers for what the real one never does on request.
 */

export const WITHIN_MS = 15_000
export const FAST = { baseMs: 20, capMs: 100 }
export const ENV = { WS_MESSAGES_PER_SECOND: '100000', WS_MESSAGES_BURST: '100000', WS_MAX_CONNECTIONS_PER_USER: '1000' }

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

export async function waitFor (what: string | (() => string), check: () => boolean | Promise<boolean>, timeoutMs = WITHIN_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${typeof what === 'string' ? what : what()}: not within ${timeoutMs} ms`)
    await sleep(10)
  }
}

export async function rejects (promise: Promise<unknown>, code: string): Promise<SwitchboardError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof SwitchboardError, `expected a SwitchboardError, got ${String(err)}`)
    assert.equal(err.code, code, err.message)
    return err
  }
  assert.fail(`expected a rejection with ${code}`)
}

export interface Recorded {
  client: SwitchboardClient
  states: ConnectionState[]
  disconnects: DisconnectEvent[]
  retries: RetryEvent[]
  errors: Error[]
}

/**
 * Returns a factory of clients whose events are recorded, all closed when the test ends.
 * Call it first in a test: `after` hooks run in the order they were registered, and clients
 * must close before the servers, or they reconnect into a server that is closing.
 */
export function clients (t: TestContext): (options: SwitchboardClientOptions) => Recorded {
  const all: SwitchboardClient[] = []
  t.after(() => Promise.all(all.map(c => c.close())))
  return (options) => {
    const c = new SwitchboardClient(options)
    all.push(c)
    const recorded: Recorded = { client: c, states: [], disconnects: [], retries: [], errors: [] }
    c.on('state', s => recorded.states.push(s))
    c.on('disconnect', d => recorded.disconnects.push(d))
    c.on('retry', r => recorded.retries.push(r))
    c.on('error', e => recorded.errors.push(e))
    return recorded
  }
}

/**
 * Waits for `check` through I/O turns (setImmediate), not timers: for tests that mock the
 * clock, where a timer-based wait would never end. Bounded by a number of turns, not a time.
 */
export async function ioUntil (check: () => boolean, what: string, turns = 200_000): Promise<void> {
  for (let turn = 0; turn < turns; turn++) {
    await new Promise<void>(resolve => setImmediate(resolve))
    if (check()) return
  }
  assert.fail(`gave up waiting for ${what}`)
}

/**
 * `ws`, counting the sockets it opens, as the SDK's WebSocket option. Without getToken the SDK
 * constructs an attempt's socket synchronously when its retry timer fires, so on the mocked
 * clock whether an attempt was made is known right after `tick` (and `settle`), with nothing
 * to wait for.
 */
export function countingWebSocket (): { WebSocket: WebSocketConstructor, opened: () => number } {
  let opened = 0
  class CountingWebSocket extends WebSocket {
    constructor (url: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      super(url, protocols, options)
      opened++
    }
  }
  return { WebSocket: CountingWebSocket, opened: () => opened }
}

/** One I/O turn: whatever a timer fired by `tick` started through promises has run by then. */
export const settle = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

/** A handler that records what it receives. */
export function recorder (): { handler: (event: SubscriptionEvent) => void, events: SubscriptionEvent[], messages: () => MessageFrame[] } {
  const events: SubscriptionEvent[] = []
  return { handler: e => events.push(e), events, messages: () => events.filter((e): e is MessageFrame => e.type === 'message') }
}

export async function createRoom (srv: TestApp, token: string, id: string, extra: Record<string, unknown> = {}): Promise<void> {
  const res = await srv.request('POST', '/rooms', { token, body: { id, ...extra } })
  assert.equal(res.status, 201, res.text)
}

/**
 * A TCP proxy in front of a server: `cut()` destroys every connection (a network failure),
 * `refuse` closes new connections at once (a server that is down), `holdDownstream` swallows
 * server → client bytes (replies lost in the network). Every connection attempt is timestamped.
 */
export interface Proxy {
  url: string
  attempts: number[]
  refuse: boolean
  holdDownstream: boolean
  cut: () => void
}

export async function startProxy (t: TestContext, targetPort: number): Promise<Proxy> {
  const sockets = new Set<net.Socket>()
  const proxy: Proxy = { url: '', attempts: [], refuse: false, holdDownstream: false, cut: () => { for (const s of sockets) s.destroy() } }
  const server = net.createServer((downstream) => {
    proxy.attempts.push(Date.now())
    if (proxy.refuse) {
      downstream.destroy()
      return
    }
    const upstream = net.connect(targetPort, '127.0.0.1')
    for (const socket of [downstream, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        downstream.destroy()
        upstream.destroy()
      })
    }
    downstream.on('data', (chunk) => upstream.write(chunk))
    upstream.on('data', (chunk) => { if (!proxy.holdDownstream) downstream.write(chunk) })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    proxy.cut()
    return new Promise<void>(resolve => server.close(() => resolve()))
  })
  const address = server.address() as net.AddressInfo
  proxy.url = `ws://127.0.0.1:${address.port}/ws`
  return proxy
}

/** A scripted ws server for what the real server never does on request; `onConnection` drives it. */
export async function scriptedServer (t: TestContext, onConnection: (socket: WebSocket) => void): Promise<{ url: string, connections: () => number }> {
  let count = 0
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'switchboard.v1' })
  wss.on('connection', (socket) => { count++; onConnection(socket) })
  await new Promise<void>(resolve => wss.once('listening', resolve))
  t.after(() => new Promise<void>(resolve => {
    for (const socket of wss.clients) socket.terminate()
    wss.close(() => resolve())
  }))
  return { url: `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/ws`, connections: () => count }
}

export const welcomeFrame = (tokenExpiresAt: number | null = null, rate: { messagesPerSecond: number, messagesBurst: number } = { messagesPerSecond: 1000, messagesBurst: 1000 }): string => JSON.stringify({
  type: 'welcome',
  protocol: 'switchboard.v1',
  connectionId: randomUUID(),
  user: { id: 'scripted', role: 'user' },
  heartbeatMs: 25_000,
  limits: { maxMessageBytes: 65_536, ...rate, maxSubscriptions: 100, maxBufferedBytes: 1_048_576, idleTimeoutMs: 60_000 },
  tokenExpiresAt
})
