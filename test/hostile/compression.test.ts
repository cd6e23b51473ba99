// Attacks on permessage-deflate (WS_COMPRESSION=on): a zip bomb, compressed frames without the
// extension, garbage deflate data. Each closes only its own connection; the server keeps serving.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { constants, createDeflateRaw, deflateRawSync } from 'node:zlib'
import { build, wsConnect } from '../helper.js'
import { maxFrameBytes } from '@switchboard/protocol/limits'
import { assertReply, clientFrame, rawWebSocket, waitFor } from '../ws-support.js'
import { assertRssBack, settledRss } from './support.js'

const OFFER = { 'Sec-WebSocket-Extensions': 'permessage-deflate' }
/** RSV1 in clientFrame's `rsv` (bits 4–6 of the first byte, RSV1 the highest). */
const RSV1 = 4

/** `payload` deflated as a client sends it (RFC 7692 §7.2.1: the sync flush's trailer removed). */
function compressed (payload: Buffer): Buffer {
  return deflateRawSync(payload, { finishFlush: constants.Z_SYNC_FLUSH }).subarray(0, -4)
}

/**
 * `megabytes` MiB of spaces deflated, streamed through zlib 1 MiB at a time so that this
 * process never holds the inflated size itself (its peak RSS is what the test watches).
 */
async function bomb (megabytes: number): Promise<Buffer> {
  const deflate = createDeflateRaw({ level: 9 })
  const chunks: Buffer[] = []
  deflate.on('data', (chunk: Buffer) => chunks.push(chunk))
  const spaces = Buffer.alloc(1024 * 1024, 0x20)
  for (let i = 0; i < megabytes; i++) {
    if (!deflate.write(spaces)) await new Promise(resolve => deflate.once('drain', resolve))
  }
  await new Promise<void>(resolve => deflate.flush(constants.Z_SYNC_FLUSH, () => resolve()))
  deflate.close()
  return Buffer.concat(chunks).subarray(0, -4)
}

/** Peak resident memory of this process (the server runs in it), bytes. */
const peakRss = (): number => process.resourceUsage().maxRSS * 1024

describe('permessage-deflate abuse', () => {
  it('a zip bomb closes with 1009 once the inflated bytes pass the frame limit, without inflating the rest', async (t) => {
    const srv = await build(t, { env: { WS_COMPRESSION: 'on', WS_MAX_MESSAGE_BYTES: '262144' } })
    const alice = await srv.userToken('alice')
    const payload = await bomb(256)
    // A frame the size limit lets in, that would inflate to a thousand times the limit.
    assert.ok(payload.length < maxFrameBytes(262_144), `${payload.length} compressed bytes`)
    const baseline = await settledRss()
    const before = peakRss()
    for (const fragments of [1, 4]) {
      const raw = await rawWebSocket(t, srv, alice, undefined, OFFER)
      assert.match(raw.head, /Sec-WebSocket-Extensions: permessage-deflate/i)
      const size = Math.ceil(payload.length / fragments)
      const frames = Array.from({ length: fragments }, (_, i) => clientFrame(i === 0 ? 0x1 : 0x0, payload.subarray(i * size, (i + 1) * size), { rsv: i === 0 ? RSV1 : 0, fin: i === fragments - 1 }))
      raw.write(Buffer.concat(frames))
      assert.equal(await raw.closeCode(), 1009, `${fragments} fragment(s)`)
      raw.destroy()
    }
    // Either bomb inflated whole would have raised the peak by 256 MiB.
    const grown = peakRss() - before
    assert.ok(grown < 100 * 1024 * 1024, `peak RSS grew by ${Math.round(grown / 1048576)} MiB`)
    await assertRssBack(baseline, 'a zip bomb')

    const client = await wsConnect(t, srv, { token: alice, perMessageDeflate: { threshold: 0 } })
    assertReply(await client.command({ type: 'ping' }))
    await waitFor(() => srv.app.realtime.stats().connections === 1, 'the bombed connections to be released')
  })

  it('a compressed frame without the extension negotiated closes with 1002', async (t) => {
    const srv = await build(t, { env: { WS_COMPRESSION: 'on' } })
    const alice = await srv.userToken('alice')
    const raw = await rawWebSocket(t, srv, alice)
    assert.doesNotMatch(raw.head, /Sec-WebSocket-Extensions/i)
    raw.write(clientFrame(0x1, compressed(Buffer.from('{"type":"ping","id":"p"}')), { rsv: RSV1 }))
    assert.equal(await raw.closeCode(), 1002)
    raw.destroy()
    const client = await wsConnect(t, srv, { token: alice })
    assertReply(await client.command({ type: 'ping' }))
  })

  it('garbage deflate data, compressed control frames and compressed invalid UTF-8 close their connection only', async (t) => {
    const srv = await build(t, { env: { WS_COMPRESSION: 'on' } })
    const alice = await srv.userToken('alice')
    const bystander = await wsConnect(t, srv, { token: alice, perMessageDeflate: { threshold: 0 } })
    const cases: Array<[string, Buffer, number]> = [
      // 0xff: a block type deflate does not have (3), whatever follows.
      ['an invalid deflate block', clientFrame(0x1, Buffer.concat([Buffer.from([0xff]), randomBytes(200)]), { rsv: RSV1 }), 1007],
      ['a compressed ping (control frames are never compressed)', clientFrame(0x9, compressed(Buffer.from('x')), { rsv: RSV1 }), 1002],
      ['compressed invalid UTF-8 in a text frame', clientFrame(0x1, compressed(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), { rsv: RSV1 }), 1007],
      ['RSV1 on a continuation frame', Buffer.concat([clientFrame(0x1, compressed(Buffer.from('{"type"')), { rsv: RSV1, fin: false }), clientFrame(0x0, compressed(Buffer.from(':"ping"}')), { rsv: RSV1 })]), 1002]
    ]
    for (const [what, bytes, code] of cases) {
      const raw = await rawWebSocket(t, srv, alice, undefined, OFFER)
      raw.write(bytes)
      assert.equal(await raw.closeCode(), code, what)
      raw.destroy()
    }
    // A well-formed compressed command on the same kind of connection gets its reply: the harness is sound.
    const raw = await rawWebSocket(t, srv, alice, undefined, OFFER)
    raw.write(clientFrame(0x1, compressed(Buffer.from('{"type":"ping","id":"ok"}')), { rsv: RSV1 }))
    const reply = await raw.until(() => raw.frames.find(f => f.payload.toString().includes('"id":"ok"')), 'the ping reply')
    assert.deepEqual(JSON.parse(reply.payload.toString()), { type: 'reply', id: 'ok', result: {} })
    raw.destroy()
    assertReply(await bystander.command({ type: 'ping' }))
    await waitFor(() => srv.app.realtime.stats().connections === 1, 'the abused connections to be released')
  })
})
