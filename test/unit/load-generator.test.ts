import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { PublishError, type LoadAdapter, type LoadConnection, type CloseInfo, type Payload } from '../../src/cli/load/adapter.js'
import { isLoopback } from '../../src/cli/load/command.js'
import fc from 'fast-check'
import { BINARY_HEAD_BYTES, binaryPool, decodeBinaryPayload, decodePayload, encodeBinaryPayload, encodePayload, makePlan, publisherOf } from '../../src/cli/load/plan.js'
import { formatTable, summarize } from '../../src/cli/load/report.js'
import { runLoad, type LoadOptions, type Logger } from '../../src/cli/load/run.js'
import { fastMessage, jsonPayload, jsonPublish, refusalMessage } from '../../src/cli/load/switchboard-adapter.js'

/** A pool whose bytes are i mod 256, so every byte value is in every tail of 256 bytes or more. */
const everyByte = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i % 256))

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

  it('binary payloads carry the same head, then pool bytes, and are checked byte for byte', () => {
    const pool = binaryPool(1024, everyByte)
    const a = encodeBinaryPayload(41, 3, 1_764_316_800_123_456, 1024, pool)
    assert.equal(a.length, 1024)
    assert.deepEqual(decodeBinaryPayload(a, 1024, pool), { k: 41, publisher: 3, intendedMicros: 1_764_316_800_123_456 })
    // What a server must carry untouched: 0x00, 0xFF and bytes that are not UTF-8.
    const tail = a.subarray(BINARY_HEAD_BYTES)
    assert.ok(tail.includes(0x00) && tail.includes(0xff) && tail.includes(0xc0))
    // The next message does not repeat the bytes of this one.
    assert.notDeepEqual(encodeBinaryPayload(42, 3, 1_764_316_800_123_456, 1024, pool).subarray(BINARY_HEAD_BYTES), tail)
    // Delivered as a plain Uint8Array view (as a decoder hands out `bin`), it reads the same.
    const copy = new Uint8Array(new ArrayBuffer(1030), 3, 1024)
    copy.set(a)
    assert.deepEqual(decodeBinaryPayload(copy, 1024, pool), { k: 41, publisher: 3, intendedMicros: 1_764_316_800_123_456 })
    const flipped = Buffer.from(a)
    flipped[700] = flipped[700]! ^ 0x01
    assert.equal(decodeBinaryPayload(flipped, 1024, pool), null)
    assert.equal(decodeBinaryPayload(a.subarray(0, 1023), 1024, pool), null)
    assert.equal(decodeBinaryPayload(Buffer.concat([a, Buffer.from([0])]), 1024, pool), null)
    assert.throws(() => encodeBinaryPayload(1, 0, 5, BINARY_HEAD_BYTES - 1, pool), RangeError)
    assert.throws(() => encodeBinaryPayload(1, 0, 5, 2048, pool), RangeError)
  })

  it('binary payloads: any bytes decode to ours or to null, never throw; ours round-trip', () => {
    const pool = binaryPool(64, everyByte)
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
      const d = decodeBinaryPayload(bytes, 64, pool)
      if (d !== null) assert.deepEqual(decodeBinaryPayload(encodeBinaryPayload(d.k, d.publisher, d.intendedMicros, 64, pool), 64, pool), d)
    }))
    fc.assert(fc.property(fc.nat({ max: 2 ** 32 - 1 }), fc.nat({ max: 10_000 }), fc.nat({ max: Number.MAX_SAFE_INTEGER }), (k, publisher, intendedMicros) => {
      assert.deepEqual(decodeBinaryPayload(encodeBinaryPayload(k, publisher, intendedMicros, 64, pool), 64, pool), { k, publisher, intendedMicros })
    }))
  })

  it('Switchboard on JSON: bytes as standard base64 with encoding, both ways', () => {
    const bytes = Uint8Array.from([0x00, 0xff, 0xfe, 0x3e, 0x3f])
    assert.equal(jsonPublish(7, 'r-1', bytes), '{"type":"publish","id":7,"room":"r-1","data":"AP/+Pj8=","encoding":"base64"}')
    assert.equal(jsonPublish(7, 'r-1', 'a"b'), '{"type":"publish","id":7,"room":"r-1","data":"a\\"b"}')
    // The push, encoding after data (as the server writes it) or before: bytes; without: text.
    const after = fastMessage('{"type":"message","room":"r-1","epoch":"e","offset":3,"data":"AP/+Pj8=","encoding":"base64","from":{"id":"u"},"ts":1}')
    assert.equal(after?.room, 'r-1')
    assert.deepEqual(after?.payload, Buffer.from(bytes))
    const before = fastMessage('{"type":"message","room":"r-1","encoding":"base64","data":"AP/+Pj8=","from":{"id":"u"}}')
    assert.deepEqual(before?.payload, Buffer.from(bytes))
    assert.deepEqual(fastMessage('{"type":"message","room":"r-1","data":"1:0:5:...","from":{"id":"u"}}'), { room: 'r-1', payload: '1:0:5:...' })
    // A string with escapes, or not a message: the caller parses the frame.
    assert.equal(fastMessage('{"type":"message","room":"r-1","data":"a\\"b"}'), undefined)
    assert.equal(fastMessage('{"type":"reply","id":1}'), undefined)
    assert.deepEqual(jsonPayload('AP/+Pj8=', 'base64'), Buffer.from(bytes))
    assert.equal(jsonPayload('AP/+Pj8=', undefined), 'AP/+Pj8=')
    assert.equal(jsonPayload({ a: 1 }, undefined), '{"a":1}')
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
    const handlers = new Map<number, { room: string, deliver: (room: string, payload: Payload) => void }>()
    const faulty: LoadAdapter = {
      name: 'faulty',
      maxInFlight: 4,
      async connect (index): Promise<LoadConnection> {
        let closeHandler: (info: CloseInfo) => void = () => {}
        return {
          bufferedAmount: 0,
          async subscribe (room) { handlers.get(index)!.room = room },
          async publish (room, payload) {
            const k = decodePayload(payload as string)!.k
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
      messages: 140, durationMs: 5000, warmupMs: 0, batch: 2, drainMs: 300, createRooms: false, binary: false
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
    assert.equal(r.wire, null) // these connections count no bytes
  })

  it('binary: counts bytes on the wire per delivery, and a changed byte as unexpected (an in-memory hub)', async () => {
    // Each connection counts 10 bytes of envelope around a payload, both ways; the hub flips a
    // byte of message 3 on its way to subscriber 1.
    const members: Array<{ room: string, deliver: (room: string, payload: Payload) => void, received: number }> = []
    const hub: LoadAdapter = {
      name: 'binary',
      binary: true,
      maxInFlight: 4,
      async connect (index, role): Promise<LoadConnection> {
        const me = { room: '', deliver: (_room: string, _payload: Payload): void => {}, received: 0 }
        let sent = 0
        if (role === 'subscriber') members[index] = me
        return {
          bufferedAmount: 0,
          get bytesReceived () { return me.received },
          get bytesSent () { return sent },
          async subscribe (room) { me.room = room },
          async publish (room, payload) {
            assert.ok(payload instanceof Uint8Array)
            sent += payload.byteLength + 10
            const k = Buffer.from(payload).readUInt32BE(0)
            members.forEach((m, i) => {
              if (m.room !== room) return
              m.received += payload.byteLength + 10
              const copy = Buffer.from(payload)
              if (i === 1 && k === 3) copy[100] = copy[100]! ^ 0xff
              setImmediate(() => m.deliver(room, copy))
            })
          },
          onMessage (deliver) { me.deliver = deliver },
          onClose () {},
          async close () {}
        }
      }
    }
    const options: LoadOptions = {
      subscribers: 3, publishers: 1, rooms: 1, roomPrefix: 'r', size: 256, binary: true, mode: 'burst', rate: 0,
      messages: 20, durationMs: 5000, warmupMs: 0, batch: 4, drainMs: 300, createRooms: false
    }
    const r = summarize(await runLoad(hub, options, { progress () {}, warn () {} }), 'http://test')
    assert.equal(r.config.binary, true)
    assert.equal(r.deliveries.expected, 60)
    assert.equal(r.deliveries.delivered, 59)
    assert.equal(r.deliveries.lost, 1)
    assert.equal(r.deliveries.unexpected, 1)
    assert.deepEqual(r.wire, { subscriberBytes: 60 * 266, publisherBytes: 20 * 266, bytesPerDelivery: Math.round(60 * 266 / 59 * 10) / 10, bytesPerPublish: 266 })
    assert.match(formatTable(r), /^wire\s+270\.5 bytes per delivery \(0\.0 MiB read by subscribers\), 266 bytes per publish$/m)
    assert.match(formatTable(r), /256-byte binary payloads/)
  })
})
