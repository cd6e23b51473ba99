import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { BINARY_MSG, BINARY_PUB, binaryMsgFrame, binaryPubFrame, parseBinaryMsg, parseBinaryPub } from '../../bench/peers/hub-frames.js'

/** The `ws` hubs' binary frames (bench/peers/hub-frames.ts): no server. The hubs themselves: test/bench-peers.test.ts. */
describe('the ws hubs\' binary frames', () => {
  it('a pub and a msg carry room and bytes with the least envelope', () => {
    const data = Uint8Array.from([0x00, 0xff, 0xc0, 0x80])
    const pub = binaryPubFrame(7, 'bench-0', data)
    assert.deepEqual([...pub], [BINARY_PUB, 0, 0, 0, 7, 7, ...Buffer.from('bench-0'), 0x00, 0xff, 0xc0, 0x80])
    assert.deepEqual(parseBinaryPub(pub), { id: 7, room: 'bench-0', data: Buffer.from(data) })
    const msg = binaryMsgFrame('bench-0', data)
    assert.equal(msg.length, 2 + 7 + 4)
    assert.deepEqual(parseBinaryMsg(msg), { room: 'bench-0', data: Buffer.from(data) })
    // Each parser reads its own kind only, and nothing cut short.
    assert.equal(parseBinaryMsg(pub), null)
    assert.equal(parseBinaryPub(msg), null)
    assert.equal(parseBinaryPub(pub.subarray(0, 8)), null)
    assert.equal(parseBinaryMsg(Buffer.from([BINARY_MSG, 5, 0x61])), null)
    assert.throws(() => binaryMsgFrame('r'.repeat(256), data), RangeError)
  })

  it('round-trips any room and bytes; any input parses or is refused, never throws', () => {
    const room = fc.string({ maxLength: 60 })
    fc.assert(fc.property(fc.nat({ max: 2 ** 32 - 1 }), room, fc.uint8Array({ maxLength: 300 }), (id, name, data) => {
      assert.deepEqual(parseBinaryPub(binaryPubFrame(id, name, data)), { id, room: name, data: Buffer.from(data) })
      assert.deepEqual(parseBinaryMsg(binaryMsgFrame(name, data)), { room: name, data: Buffer.from(data) })
    }))
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      parseBinaryPub(Buffer.from(bytes))
      parseBinaryMsg(Buffer.from(bytes))
    }))
  })
})
