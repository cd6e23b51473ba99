import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { PublishError, type LoadAdapter, type LoadConnection, type CloseInfo } from '../../src/cli/load/adapter.js'
import { isLoopback } from '../../src/cli/load/command.js'
import { decodePayload, encodePayload, makePlan, publisherOf } from '../../src/cli/load/plan.js'
import { summarize } from '../../src/cli/load/report.js'
import { runLoad, type LoadOptions, type Logger } from '../../src/cli/load/run.js'
import { refusalMessage } from '../../src/cli/load/switchboard-adapter.js'

/** The load generator's parts that need no server: plans, payloads, messages, its counting. Against a real server: test/load-generator.test.ts. */
describe('switchboard load internals', () => {
  it('plans messages over publishers and rooms evenly', () => {
    const plan = makePlan(2 * 3 * 10, 2, 3)
    assert.deepEqual([...plan.perRoom], [20, 20, 20])
    // Every publisher sends to every room, equally.
    const pairs = new Map<string, number>()
    for (let k = 0; k < plan.messages; k++) {
      const key = `${publisherOf(k, 2)}:${plan.room[k]}`
      pairs.set(key, (pairs.get(key) ?? 0) + 1)
    }
    assert.equal(pairs.size, 6)
    assert.ok([...pairs.values()].every(n => n === 10))
    for (let k = 0; k < plan.messages; k++) assert.equal(plan.byRoom[plan.room[k]!]![plan.indexInRoom[k]!], k)
  })

  it('payloads carry sequence, publisher and intended time, padded to the size', () => {
    const payload = encodePayload(41, 3, 1_764_316_800_123_456, 100)
    assert.equal(Buffer.byteLength(payload), 100)
    assert.deepEqual(decodePayload(payload), { k: 41, publisher: 3, intendedMicros: 1_764_316_800_123_456 })
    assert.equal(encodePayload(1, 0, 5, 5000).length, 5000)
    assert.equal(decodePayload('hello'), null)
    assert.equal(decodePayload('a:b:c:'), null)
  })

  it('knows loopback from the rest', () => {
    for (const host of ['localhost', '127.0.0.1', '127.8.9.10', '[::1]', '::1', '[::ffff:7f00:1]']) assert.ok(isLoopback(host), host)
    for (const host of ['example.com', '10.0.0.1', '128.0.0.1', '[2001:db8::1]', '0.0.0.0', 'localhost.example.com']) assert.ok(!isLoopback(host), host)
    assert.equal(new URL('http://127.1:3000').hostname, '127.0.0.1') // what the check sees for short forms
  })

  it('names the setting to raise for each refused handshake', () => {
    assert.match(refusalMessage(4, 429, { code: 'SB_ERR_TOO_MANY_CONNECTIONS', message: 'Too many open connections for this user' }), /^connection 5 refused by the server: HTTP 429 .*raise WS_MAX_CONNECTIONS_PER_USER/)
    assert.match(refusalMessage(0, 429, { code: 'SB_ERR_TOO_MANY_CONNECTIONS', message: 'Too many open connections from this address' }), /raise WS_MAX_CONNECTIONS_PER_IP/)
    assert.match(refusalMessage(0, 429, { code: 'SB_ERR_RATE_LIMITED' }), /raise WS_HANDSHAKES_PER_IP_PER_MINUTE/)
    assert.match(refusalMessage(0, 429, { code: 'SB_ERR_TOO_MANY_CONNECTIONS', message: 'Too many open HTTP connections from this address' }), /raise HTTP_MAX_CONNECTIONS_PER_IP/)
    assert.match(refusalMessage(0, 401, { code: 'SB_ERR_INVALID_TOKEN' }), /switchboard login/)
  })

  it('counts lost, duplicate and refused deliveries exactly (a faulty in-memory hub)', async () => {
    // Subscriber 0 misses every message whose k % 5 === 0, subscriber 1 gets k % 4 === 0 twice;
    // the hub refuses k % 7 === 0 (never published: neither expected nor lost).
    const handlers = new Map<number, { room: string, deliver: (room: string, payload: string) => void }>()
    const faulty: LoadAdapter = {
      name: 'faulty',
      maxInFlight: 4,
      async connect (index): Promise<LoadConnection> {
        let closeHandler: (info: CloseInfo) => void = () => {}
        return {
          bufferedAmount: 0,
          async subscribe (room) { handlers.get(index)!.room = room },
          async publish (room, payload) {
            const k = decodePayload(payload)!.k
            if (k % 7 === 0) throw new PublishError('rate_limited', 'slow down', 'raise it')
            for (const [i, h] of handlers) {
              if (h.room !== room) continue
              if (i === 0 && k % 5 === 0) continue
              setImmediate(() => h.deliver(room, payload))
              if (i === 1 && k % 4 === 0) setImmediate(() => h.deliver(room, payload))
            }
          },
          onMessage (deliver) { handlers.set(index, { room: '', deliver }) },
          onClose (h) { closeHandler = h },
          async close () { void closeHandler }
        }
      }
    }
    const options: LoadOptions = {
      subscribers: 4, publishers: 1, rooms: 1, roomPrefix: 'r', size: 64, mode: 'burst', rate: 0,
      messages: 140, durationMs: 5000, warmupMs: 0, batch: 2, drainMs: 300, createRooms: false
    }
    const quiet: Logger = { progress () {}, warn () {} }
    const r = summarize(await runLoad(faulty, options, quiet), 'http://test')
    const published = 140 - 20 // k % 7 === 0 for 20 of 0…139
    assert.equal(r.messages.published, published)
    assert.deepEqual(r.messages.refused, { rate_limited: 20 })
    assert.equal(r.deliveries.expected, published * 4)
    const missed = [...Array(140).keys()].filter(k => k % 7 !== 0 && k % 5 === 0).length
    const doubled = [...Array(140).keys()].filter(k => k % 7 !== 0 && k % 4 === 0).length
    assert.equal(r.deliveries.lost, missed)
    assert.equal(r.deliveries.delivered, published * 4 - missed)
    assert.equal(r.deliveries.duplicates, doubled)
    assert.equal(r.latencyMs.count, published * 4 - missed)
    assert.match(r.warnings.join('\n'), /20 publishes were refused: rate_limited: slow down \(raise it\)/)
  })
})
