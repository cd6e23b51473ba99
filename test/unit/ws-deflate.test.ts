import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { constants, deflateRawSync, inflateRawSync } from 'node:zlib'
import * as ws from 'ws'
import { declineNarrowOffers, deflatedFrame, MAX_DEFLATE_BYTES, SERVER_WINDOW_BITS, WsDeflate } from '../../src/realtime/ws-deflate.js'
import { frameWithHeader, prepareWsFrame, type WsFrame } from '../../src/realtime/ws-frames.js'

const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff])

// ws exports these but its type definitions leave them out.
interface Extension { accept(offers: Array<Record<string, Array<string | true>>>): unknown }
const { PerMessageDeflate, Receiver } = ws as unknown as {
  PerMessageDeflate: new (options: { clientNoContextTakeover?: boolean, serverNoContextTakeover?: boolean, isServer?: boolean }) => Extension
  Receiver: new (options: { isServer: boolean, extensions: Record<string, Extension> }) => NodeJS.WritableStream & { on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void }
}

/** A server frame read strictly: the length in its shortest encoding, no mask, nothing left over. */
function parse (frame: Buffer): { fin: boolean, rsv1: boolean, opcode: number, headerLength: number, payload: Buffer } {
  const b1 = frame[1]!
  assert.equal(b1 & 0x80, 0, 'a server frame is not masked')
  let length = b1 & 0x7f
  let headerLength = 2
  if (length === 126) {
    length = frame.readUInt16BE(2)
    headerLength = 4
    assert.ok(length >= 126, `${length} bytes fit the 7-bit length`)
  } else if (length === 127) {
    length = Number(frame.readBigUInt64BE(2))
    headerLength = 10
    assert.ok(length >= 65536, `${length} bytes fit the 16-bit length`)
  }
  assert.equal(frame.length, headerLength + length, 'the header\'s length is the payload\'s')
  return { fin: (frame[0]! & 0x80) !== 0, rsv1: (frame[0]! & 0x40) !== 0, opcode: frame[0]! & 0x0f, headerLength, payload: frame.subarray(headerLength) }
}

/** RFC 7692 §7.2.2: re-append the sync flush's trailer, then inflate. */
function inflate (payload: Buffer): Buffer {
  return inflateRawSync(Buffer.concat([payload, TRAILER]), { windowBits: SERVER_WINDOW_BITS, finishFlush: constants.Z_SYNC_FLUSH })
}

/** Bytes that do not compress (deflate stores them), the same on every run. */
function noise (length: number, seed = 1): Buffer {
  const bytes = Buffer.alloc(length)
  let x = seed
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    bytes[i] = x >>> 24
  }
  return bytes
}

describe('deflated frames (RFC 7692 §7.2.1)', () => {
  it('carry the payload raw-deflated without the trailer, RSV1 set, FIN and the opcode kept', () => {
    for (const length of [0, 1, 125, 126, 1000, 65535, 65536, 200_000]) {
      for (const [opcode, payload] of [[0x1, Buffer.from('{"type":"message","data":"hello"} '.repeat(Math.ceil(length / 34)).slice(0, length))], [0x2, noise(length)]] as const) {
        const frame = parse(deflatedFrame(0x80 | opcode, payload))
        assert.deepEqual([frame.fin, frame.rsv1, frame.opcode], [true, true, opcode], `${length} bytes, opcode ${opcode}`)
        assert.notDeepEqual(frame.payload.subarray(-4), TRAILER, 'the trailer is removed')
        assert.deepEqual(inflate(frame.payload), payload, `${length} bytes, opcode ${opcode}`)
      }
    }
  })

  it('have the shortest header for their compressed length, at 125, 126, 65535 and 65536 bytes and around', () => {
    // The header of a compressed frame, at exactly the boundary lengths.
    for (const [length, headerLength] of [[125, 2], [126, 4], [65535, 4], [65536, 10]] as const) {
      const frame = frameWithHeader(0xc1, length)
      frame.fill(0x61, headerLength)
      const parsed = parse(frame)
      assert.deepEqual([parsed.rsv1, parsed.opcode, parsed.headerLength, parsed.payload.length], [true, 1, headerLength, length], `${length} bytes`)
    }
    // Deflated frames whose compressed length crosses each boundary, read strictly and inflated.
    // (zlib cannot end a sync flush at some lengths just under 64 KiB: when its output buffer
    // fills exactly, it adds another empty block, a few bytes more, which inflates the same.)
    const lengths = new Set<number>()
    for (const [from, to] of [[100, 140], [65_300, 65_420]] as const) {
      for (let length = from; length <= to; length++) {
        const payload = noise(length, 3)
        const frame = parse(deflatedFrame(0x82, payload))
        assert.deepEqual(inflate(frame.payload), payload, `${length} bytes`)
        lengths.add(frame.headerLength)
      }
    }
    assert.deepEqual([...lengths].sort((a, b) => a - b), [2, 4, 10], 'every header size was crossed')
  })

  it('are read by ws\'s own receiver with the extension as the server grants it', async () => {
    const extension = new PerMessageDeflate({ clientNoContextTakeover: true, serverNoContextTakeover: true, isServer: false })
    // What plugins/websocket.ts answers: no context takeover both ways, the server's window.
    extension.accept([{ server_no_context_takeover: [true], client_no_context_takeover: [true], server_max_window_bits: [String(SERVER_WINDOW_BITS)] }])
    const receiver = new Receiver({ isServer: false, extensions: { 'permessage-deflate': extension } })
    const received: Array<[Buffer, boolean]> = []
    receiver.on('message', (data, isBinary) => { received.push([data, isBinary]) })
    // A history-like page, larger than the window: matches reach back no further than it.
    const page = JSON.stringify(Array.from({ length: 400 }, (_, i) => ({ offset: i, data: { text: `message ${i % 37} of the room`, n: i * 7 }, from: { id: `user-${i % 11}` } })))
    const sent: Array<[Buffer, boolean]> = [[Buffer.from(page), false], [noise(3000), true], [Buffer.from('{"type":"message"}'.repeat(200)), false]]
    for (const [payload, isBinary] of sent) receiver.write(deflatedFrame(isBinary ? 0x82 : 0x81, payload))
    const deadline = Date.now() + 10_000
    while (received.length < sent.length && Date.now() < deadline) await new Promise(resolve => setImmediate(resolve))
    assert.deepEqual(received, sent)
  })
})

describe('WsDeflate', () => {
  const text = (length: number): string => JSON.stringify({ type: 'message', text: 'lunch at noon? '.repeat(length) }).slice(0, length - 2) + '"}'

  it('compresses a frame at most once, and hands every socket the same buffer', () => {
    const deflate = new WsDeflate(1024)
    const frame = prepareWsFrame(text(2000)) as WsFrame
    const first = deflate.bytesFor(frame)
    const again = deflate.bytesFor(frame)
    assert.equal(again, first, 'the same Buffer object')
    assert.equal(parse(first).rsv1, true)
    assert.equal(inflate(parse(first).payload).toString(), text(2000))
    assert.equal(deflate.totals.deflates, 1)
    assert.equal(deflate.totals.framesCompressed, 2)
    assert.equal(deflate.totals.bytesSaved, 2 * (frame.bytes.length - first.length))
    assert.ok(deflate.totals.deflateSeconds > 0)
  })

  it('sends below the threshold uncompressed, from the threshold on compressed', () => {
    const deflate = new WsDeflate(1024)
    const below = prepareWsFrame(text(1023)) as WsFrame
    const at = prepareWsFrame(text(1024)) as WsFrame
    assert.equal(deflate.bytesFor(below), below.bytes, 'the plain frame itself')
    assert.equal(parse(deflate.bytesFor(at)).rsv1, true)
    assert.equal(deflate.totals.deflates, 1, 'nothing deflated below the threshold')
    // Threshold 0: everything, the empty payload too.
    const all = new WsDeflate(0)
    const empty = prepareWsFrame('') as WsFrame
    assert.equal(all.bytesFor(empty), empty.bytes, 'an empty payload deflates to more than nothing: plain')
  })

  it('sends incompressible and very large payloads uncompressed', () => {
    const deflate = new WsDeflate(0)
    const random = prepareWsFrame(noise(5000)) as WsFrame
    assert.equal(deflate.bytesFor(random), random.bytes, 'random bytes: the plain frame')
    assert.equal(random.deflated, null, 'decided once')
    const large = prepareWsFrame('a'.repeat(MAX_DEFLATE_BYTES + 1)) as WsFrame
    assert.equal(deflate.bytesFor(large), large.bytes)
    const largest = prepareWsFrame('a'.repeat(MAX_DEFLATE_BYTES)) as WsFrame
    assert.equal(parse(deflate.bytesFor(largest)).rsv1, true, 'MAX_DEFLATE_BYTES itself is compressed')
    assert.equal(deflate.totals.framesCompressed, 1)
  })

  it('deflates with the window it announces', () => {
    // A payload whose repeats lie further apart than the window: the output must not reach past it.
    const unit = noise(1 << SERVER_WINDOW_BITS, 9)
    const payload = Buffer.concat([unit, unit, unit])
    const frame = parse(deflatedFrame(0x82, payload))
    assert.deepEqual(inflate(frame.payload), payload)
    const wider = deflateRawSync(payload, { windowBits: 15, finishFlush: constants.Z_SYNC_FLUSH })
    assert.ok(wider.length < frame.payload.length, 'a 32 KiB window would have found the repeats: ours did not look that far')
  })
})

describe('declineNarrowOffers', () => {
  it('drops the offers that ask for a server window smaller than ours, keeps the rest as offered', () => {
    const cases: Array<[string | undefined, string | undefined]> = [
      [undefined, undefined],
      ['permessage-deflate', 'permessage-deflate'],
      ['permessage-deflate; client_max_window_bits', 'permessage-deflate; client_max_window_bits'],
      [`permessage-deflate; server_max_window_bits=${SERVER_WINDOW_BITS}`, `permessage-deflate; server_max_window_bits=${SERVER_WINDOW_BITS}`],
      ['permessage-deflate; server_max_window_bits=15', 'permessage-deflate; server_max_window_bits=15'],
      [`permessage-deflate; server_max_window_bits=${SERVER_WINDOW_BITS - 1}`, undefined],
      ['permessage-deflate; server_max_window_bits=9, permessage-deflate', 'permessage-deflate'],
      ['x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10', 'x-webkit-deflate-frame'],
      // Unparsable: left to ws, which answers 400.
      ['permessage-deflate; ;;', 'permessage-deflate; ;;']
    ]
    for (const [header, expected] of cases) assert.equal(declineNarrowOffers(header), expected, String(header))
  })
})
