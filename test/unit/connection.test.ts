import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Principal } from '../../src/auth/principal.js'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import { Connection, type ConnectionHost } from '../../src/realtime/connection.js'
import type { RealtimeLimits } from '../../src/realtime/limits.js'
import type { Logger } from '../../src/realtime/logger.js'
import { createMemoryEngine } from '../../src/realtime/memory-engine.js'
import { noopMetrics } from '../../src/realtime/metrics.js'
import type { PreparedFrame, Transport } from '../../src/realtime/transport.js'

/** A frame that keeps its text, so the test can read what the connection wrote. */
interface TextFrame extends PreparedFrame { readonly text: string }

/** A transport that records writes and closes; it reports the close back as a socket would. */
class FakeTransport implements Transport {
  readonly frames: string[] = []
  readonly closes: Array<{ code: number, reason: string }> = []
  terminated = 0
  bufferedAmount = 0
  connection: Connection | undefined
  write (frame: PreparedFrame): void { this.frames.push((frame as TextFrame).text) }
  close (code: number, reason: string): void {
    this.closes.push({ code, reason })
    this.connection?.handleClose(code)
  }

  terminate (): void { this.terminated++ }
  ping (): void {}
  /** The frames written, parsed. */
  messages (): Array<{ type: string, id?: unknown, result?: unknown }> {
    return this.frames.map(text => JSON.parse(text) as { type: string })
  }
}

const log: Logger = { debug () {}, info () {}, warn () {}, error () {}, child: () => log }
const limits: RealtimeLimits = {
  maxMessageBytes: 65536,
  messagesPerSecond: 100,
  messagesBurst: 100,
  maxSubscriptions: 10,
  maxBufferedBytes: 1 << 20,
  heartbeatMs: 30_000,
  idleTimeoutMs: 60_000,
  tokenClockToleranceMs: 0,
  maxConnectionsPerUser: 10,
  maxConnectionsPerIp: 10,
  maxRecoveryPublications: 100,
  historyPageBytes: 65536
}
const alice: Principal = { kind: 'apiKey', keyId: 'k1', name: 'device', scopes: [] }

/** A host with an in-memory engine that counts unregistrations; nothing else is used by these tests. */
function setup (overrides: Partial<ConnectionHost> = {}): { connection: Connection, transport: FakeTransport, unregistered: () => number } {
  let unregistered = 0
  const host: ConnectionHost = {
    engine: createMemoryEngine(),
    limits,
    metrics: noopMetrics,
    log,
    now: () => 0,
    prepareFrame: (text) => ({ byteLength: text.length, text }) as TextFrame,
    verifyToken: async () => { throw new Error('not in these tests') },
    grantFor: async () => { throw new Error('not in these tests') },
    revision: 0,
    publish: async () => { throw new Error('not in these tests') },
    history: async () => { throw new Error('not in these tests') },
    page: async () => { throw new Error('not in these tests') },
    presence: async () => { throw new Error('not in these tests') },
    subscribeHook: async () => {},
    joinRoom: async () => {},
    leaveRoom: () => {},
    presenceJoin: async () => {},
    presenceLeave: () => {},
    unregister: () => { unregistered++ },
    tickBy: () => {},
    ...overrides
  }
  const transport = new FakeTransport()
  const connection = new Connection('c1', alice, transport, { ip: '127.0.0.1' }, host)
  transport.connection = connection
  return { connection, transport, unregistered: () => unregistered }
}

/** Lets the connection's command chain run. */
const settle = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

describe('Connection (over a fake transport)', () => {
  it('moves connecting → open with a welcome, and open only once', () => {
    const { connection, transport } = setup()
    assert.equal(connection.state, 'connecting')
    connection.open()
    connection.open()
    assert.equal(connection.state, 'open')
    assert.deepEqual(transport.messages().map(m => m.type), ['welcome'])
  })

  it('answers a command with a reply carrying its id, and a bad frame with an error', async () => {
    const { connection, transport } = setup()
    connection.open()
    connection.handleText(JSON.stringify({ type: 'ping', id: 7 }))
    connection.handleText('{"type":"nonsense"')
    await settle()
    const [, ...rest] = transport.messages()
    assert.deepEqual(rest.find(m => m.type === 'reply'), { type: 'reply', id: 7, result: {} })
    assert.ok(rest.some(m => m.type === 'error'), 'a frame that does not parse is answered with an error frame')
  })

  it('close is idempotent: the transport closes once, cleanup runs once, nothing is written after', async () => {
    const { connection, transport, unregistered } = setup()
    connection.open()
    connection.close(CloseCodes.KICKED)
    connection.close(CloseCodes.KICKED)
    connection.terminate()
    assert.deepEqual(transport.closes.map(c => c.code), [CloseCodes.KICKED])
    assert.equal(connection.state, 'closed')
    assert.equal(unregistered(), 1)
    const written = transport.frames.length
    connection.handleText(JSON.stringify({ type: 'ping', id: 1 }))
    await settle()
    assert.equal(transport.frames.length, written)
  })

  it('the sweep ends a subscription made with a room token at its expiry (token_expired), unless room_token moved it', async () => {
    // A room token here is its expiry: `exp:<ms>`; no token, a subscription on standing.
    const grant = { stream: { historySize: 10, historyTtlSeconds: 60 }, presenceEvents: false }
    const { connection, transport } = setup({
      grantFor: async (_principal, _room, _op, token) => ({ grant, expiresAt: token === undefined ? null : Number(token.slice(4)) })
    })
    connection.open()
    for (const [room, token] of [['a', 'exp:1000'], ['b', 'exp:1000'], ['c', undefined], ['d', 'exp:5000']] as const) {
      connection.handleText(JSON.stringify({ type: 'subscribe', id: room, room, ...(token === undefined ? {} : { token }) }))
    }
    connection.handleText(JSON.stringify({ type: 'room_token', id: 'renew', room: 'b', token: 'exp:3000' }))
    connection.handleText(JSON.stringify({ type: 'room_token', id: 'standing', room: 'c', token: 'exp:3000' }))
    await settle()
    const unsubscribed = (): unknown[] => transport.messages().filter(m => m.type === 'unsubscribed')
    assert.deepEqual(transport.messages().find(m => m.id === 'renew'), { type: 'reply', id: 'renew', result: { tokenExpiresAt: 3000 } })
    assert.equal(transport.messages().find(m => m.id === 'standing')?.type, 'error')
    connection.tick(999)
    assert.deepEqual(unsubscribed(), [])
    connection.tick(1000)
    assert.deepEqual(unsubscribed(), [{ type: 'unsubscribed', room: 'a', reason: 'token_expired' }])
    connection.tick(3000)
    assert.deepEqual(unsubscribed().slice(1), [{ type: 'unsubscribed', room: 'b', reason: 'token_expired' }])
    connection.tick(9000)
    assert.deepEqual(unsubscribed().slice(2), [{ type: 'unsubscribed', room: 'd', reason: 'token_expired' }])
    assert.deepEqual([...connection.subscriptions.keys()], ['c'], 'the subscription on standing never expires')
    assert.equal(connection.state, 'open')
  })

  it('an idle connection is closed by the sweep with 4002', () => {
    const { connection, transport } = setup()
    connection.open()
    connection.tick(limits.idleTimeoutMs - 1)
    assert.equal(connection.state, 'open')
    connection.tick(limits.idleTimeoutMs)
    assert.deepEqual(transport.closes.map(c => c.code), [CloseCodes.IDLE_TIMEOUT])
  })
})
