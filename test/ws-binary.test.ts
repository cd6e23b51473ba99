// Binary payloads and the two codecs over real sockets, on the embedded defaults (memory
// engine): bytes published on either codec reach subscribers of either codec, from live
// fan-out, history and recovery; bad input is refused with an error and the socket stays open.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import { encodeMsgpack } from '@switchboard/protocol/msgpack'
import { MSGPACK_PROTOCOL_VERSION, PROTOCOL_VERSION } from '@switchboard/protocol/messages'
import { maxFrameBytes } from '@switchboard/protocol/limits'
import { build, wsConnect, type TestApp, type WsClient, type WsFrame } from './helper.js'
import { assertErrorFrame, assertReply, clientFrame, rawWebSocket, within } from './ws-support.js'

/** Every byte value, 0x00 and 0xFF among them: not valid UTF-8, so nothing can pass it through as text. */
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
const MSGPACK = [MSGPACK_PROTOCOL_VERSION]

async function setup (t: TestContext, env: Record<string, string> = {}): Promise<{ srv: TestApp, token: string }> {
  const srv = await build(t, { env })
  const token = await srv.userToken('alice')
  assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'bytes' } })).status, 201)
  return { srv, token }
}

async function subscriber (t: TestContext, srv: TestApp, token: string, protocols: string[] = []): Promise<WsClient> {
  const client = await wsConnect(t, srv, { token, protocols })
  assertReply(await client.command({ type: 'subscribe', room: 'bytes' }))
  return client
}

const messageAt = (offset: number) => (f: WsFrame) => f.type === 'message' && f.offset === offset

/** The bytes a frame's `data` carries on either codec: base64 with `encoding` on JSON, `bin` on MessagePack. */
function bytesOf (carrier: Record<string, unknown>): Buffer {
  if (carrier.data instanceof Uint8Array) {
    assert.equal(carrier.encoding, undefined, 'MessagePack frames carry bytes as bin, without encoding')
    return Buffer.from(carrier.data)
  }
  assert.equal(carrier.encoding, 'base64', `bytes on JSON frames are base64 with encoding: ${JSON.stringify(carrier)}`)
  return Buffer.from(carrier.data as string, 'base64')
}

describe('binary payloads over WebSocket (memory engine)', () => {
  it('the subprotocol chooses the codec; the welcome names it; none offered is JSON', async (t) => {
    const { srv, token } = await setup(t)
    const json = await wsConnect(t, srv, { token, protocols: [PROTOCOL_VERSION] })
    const msgpack = await wsConnect(t, srv, { token, protocols: MSGPACK })
    const both = await wsConnect(t, srv, { token, protocols: [PROTOCOL_VERSION, MSGPACK_PROTOCOL_VERSION] })
    const none = await wsConnect(t, srv, { token })
    assert.equal(json.welcome.protocol, PROTOCOL_VERSION)
    assert.equal(msgpack.welcome.protocol, MSGPACK_PROTOCOL_VERSION)
    assert.equal(msgpack.socket.protocol, MSGPACK_PROTOCOL_VERSION)
    assert.equal(both.welcome.protocol, MSGPACK_PROTOCOL_VERSION, 'MessagePack is preferred when both are offered')
    assert.equal(none.welcome.protocol, PROTOCOL_VERSION)
    assert.equal(none.socket.protocol, '', 'nothing is selected when nothing was offered')
    assert.deepEqual(msgpack.welcome.limits, json.welcome.limits)
  })

  it('bytes published on either codec reach subscribers of both: base64 on JSON, bin on MessagePack', async (t) => {
    const { srv, token } = await setup(t)
    const jsonSub = await subscriber(t, srv, token)
    const msgpackSub = await subscriber(t, srv, token, MSGPACK)
    const jsonPub = await wsConnect(t, srv, { token })
    const msgpackPub = await wsConnect(t, srv, { token, protocols: MSGPACK })

    assert.deepEqual(assertReply(await jsonPub.command({ type: 'publish', room: 'bytes', data: ALL_BYTES.toString('base64'), encoding: 'base64' })).offset, 1)
    assert.deepEqual(assertReply(await msgpackPub.command({ type: 'publish', room: 'bytes', data: new Uint8Array([0xff, 0x00, 0xfe]) })).offset, 2)
    // JSON on MessagePack, and an empty byte string.
    assertReply(await msgpackPub.command({ type: 'publish', room: 'bytes', data: { text: 'hi', n: [1, 2.5, null, true], __proto__x: 1 } }))
    assertReply(await jsonPub.command({ type: 'publish', room: 'bytes', data: '', encoding: 'base64' }))

    for (const client of [jsonSub, msgpackSub]) {
      assert.deepEqual(bytesOf(await client.next(messageAt(1))), ALL_BYTES)
      assert.deepEqual(bytesOf(await client.next(messageAt(2))), Buffer.from([0xff, 0x00, 0xfe]))
      const third = await client.next(messageAt(3))
      assert.deepEqual(third.data, { text: 'hi', n: [1, 2.5, null, true], __proto__x: 1 })
      assert.equal(third.encoding, undefined)
      assert.deepEqual(bytesOf(await client.next(messageAt(4))), Buffer.alloc(0))
    }
    // The rest of the message frame is the same on both codecs.
    const [a, b] = [await jsonSub.next(messageAt(1)), await msgpackSub.next(messageAt(1))]
    for (const key of ['type', 'room', 'epoch', 'offset', 'from', 'ts']) assert.deepEqual(a[key], b[key], key)
  })

  it('history and recovery carry bytes on both codecs', async (t) => {
    const { srv, token } = await setup(t)
    const publisher = await wsConnect(t, srv, { token, protocols: MSGPACK })
    const first = assertReply(await publisher.command({ type: 'publish', room: 'bytes', data: { n: 1 } }))
    assertReply(await publisher.command({ type: 'publish', room: 'bytes', data: ALL_BYTES }))
    assertReply(await publisher.command({ type: 'publish', room: 'bytes', data: ALL_BYTES.toString('base64'), encoding: 'base64' }))

    for (const protocols of [[], MSGPACK]) {
      const client = await wsConnect(t, srv, { token, protocols })
      const history = assertReply(await client.command({ type: 'history', room: 'bytes' }))
      const publications = history.publications as Array<Record<string, unknown>>
      assert.deepEqual(publications.map(p => p.offset), [1, 2, 3])
      assert.deepEqual(publications[0]!.data, { n: 1 })
      assert.deepEqual(bytesOf(publications[1]!), ALL_BYTES)
      assert.deepEqual(bytesOf(publications[2]!), ALL_BYTES)

      const recovered = assertReply(await client.command({ type: 'subscribe', room: 'bytes', since: { epoch: first.epoch, offset: 1 } }))
      assert.equal(recovered.recovered, true)
      const missed = recovered.publications as Array<Record<string, unknown>>
      assert.deepEqual(missed.map(p => p.offset), [2, 3])
      assert.deepEqual(bytesOf(missed[0]!), ALL_BYTES)
    }
  })

  it('an idempotent retry of a byte publish gets the first position and publishes once', async (t) => {
    const { srv, token } = await setup(t)
    const sub = await subscriber(t, srv, token)
    const publisher = await wsConnect(t, srv, { token, protocols: MSGPACK })
    const publish = { type: 'publish', room: 'bytes', data: new Uint8Array([0, 1, 2]), idempotencyKey: 'k-1' }
    const first = assertReply(await publisher.command(publish))
    const again = assertReply(await publisher.command(publish))
    assert.deepEqual(again, first)
    assertReply(await publisher.command({ type: 'publish', room: 'bytes', data: 'AAEC', encoding: 'base64' }))
    await sub.next(messageAt(2))
    assert.deepEqual(sub.frames.filter(f => f.type === 'message').map(f => f.offset), [1, 2])
  })

  it('WS_MAX_MESSAGE_BYTES counts the bytes: a payload at the limit passes as base64, one over it is refused and the socket stays open', async (t) => {
    const limit = 1024
    const { srv, token } = await setup(t, { WS_MAX_MESSAGE_BYTES: String(limit) })
    const sub = await subscriber(t, srv, token, MSGPACK)
    const json = await wsConnect(t, srv, { token })
    const msgpack = await wsConnect(t, srv, { token, protocols: MSGPACK })

    const atLimit = Buffer.alloc(limit, 0xff)
    assert.equal(assertReply(await json.command({ type: 'publish', room: 'bytes', data: atLimit.toString('base64'), encoding: 'base64' })).offset, 1)
    assert.equal(assertReply(await msgpack.command({ type: 'publish', room: 'bytes', data: atLimit })).offset, 2)
    assert.deepEqual(bytesOf(await sub.next(messageAt(1))), atLimit)

    const over = Buffer.alloc(limit + 1, 0xff)
    for (const [client, data, encoding] of [[json, over.toString('base64'), 'base64'], [msgpack, over, undefined]] as const) {
      const answer = await client.command({ type: 'publish', room: 'bytes', data, ...(encoding === undefined ? {} : { encoding }) })
      assertErrorFrame(answer, 'bad_request', answer.id)
      assert.match(answer.error.message, /limit is maxMessageBytes \(1024\)/)
      assertReply(await client.command({ type: 'ping' }))
    }
    // JSON data counts as its text.
    const text = 'x'.repeat(limit)
    const tooLong = await json.command({ type: 'publish', room: 'bytes', data: text })
    assertErrorFrame(tooLong, 'bad_request', tooLong.id)

    // Only a frame over the frame limit closes the socket.
    const frameLimit = maxFrameBytes(limit)
    msgpack.send(encodeMsgpack({ type: 'publish', id: 'big', room: 'bytes', data: Buffer.alloc(frameLimit) }))
    assert.equal((await within(msgpack.closed, 'the oversize frame to close the socket')).code, 1009)
    assert.equal(sub.frames.filter(f => f.type === 'message').length, 2, 'nothing over the limit was published')
  })

  it('a frame of the other codec, or one that does not decode, gets bad_request; the socket stays open', async (t) => {
    const { srv, token } = await setup(t)
    const msgpack = await wsConnect(t, srv, { token, protocols: MSGPACK })
    msgpack.send(JSON.stringify({ type: 'ping', id: 'text' }))
    assertErrorFrame(await msgpack.next(f => f.type === 'error'), 'bad_request')
    assert.match(msgpack.frames.find(f => f.type === 'error')!.error.message, /Text frames are not part of switchboard.v1.msgpack/)
    assertReply(await msgpack.command({ type: 'ping' }))

    const json = await wsConnect(t, srv, { token })
    json.send(encodeMsgpack({ type: 'ping', id: 'bin' }))
    assertErrorFrame(await json.next(f => f.type === 'error'), 'bad_request')
    assertReply(await json.command({ type: 'ping' }))

    // Over a raw socket: a binary frame of MessagePack garbage, then a good one.
    const raw = await rawWebSocket(t, srv, token, MSGPACK_PROTOCOL_VERSION)
    raw.write(clientFrame(0x2, Buffer.from([0x92, 0x01])))
    raw.write(clientFrame(0x2, Buffer.from(encodeMsgpack({ type: 'ping', id: 'after' }))))
    await raw.until(() => raw.frames.filter(f => f.opcode === 0x2).length >= 3 ? true : undefined, 'two answers after the welcome')
    raw.destroy()
  })

  it('bad bytes input is refused with a clear message naming the path, and nothing is published', async (t) => {
    const { srv, token } = await setup(t)
    const sub = await subscriber(t, srv, token)
    const json = await wsConnect(t, srv, { token })
    const msgpack = await wsConnect(t, srv, { token, protocols: MSGPACK })
    const refusals: Array<[WsClient, Record<string, unknown>, RegExp]> = [
      [json, { type: 'publish', room: 'bytes', data: 'not base64!', encoding: 'base64' }, /\/data: not valid base64/],
      [json, { type: 'publish', room: 'bytes', data: 'AAE', encoding: 'base64' }, /\/data: not valid base64/],
      [json, { type: 'publish', room: 'bytes', data: { a: 1 }, encoding: 'base64' }, /\/data: with encoding "base64", data must be a string/],
      [json, { type: 'publish', room: 'bytes', data: 'AAEC', encoding: 'hex' }, /\/encoding/],
      [msgpack, { type: 'publish', room: 'bytes', data: new Uint8Array([1]), encoding: 'base64' }, /\/encoding: data is raw bytes already/],
      [msgpack, { type: 'publish', room: 'bytes', data: { nested: new Uint8Array([1]) } }, /\/data\/nested: raw bytes are allowed only as the whole data/],
      [msgpack, { type: 'publish', room: 'bytes', data: [new Uint8Array([1])] }, /\/data\/0: raw bytes are allowed only/],
      [msgpack, { type: 'publish', room: 'bytes', data: 2n ** 60n }, /\/data: integer beyond 2\^53/],
      [msgpack, { type: 'publish', room: 'bytes', data: new Date(0) }, /\/data: MessagePack extension types are not allowed/],
      [msgpack, { type: 'publish', room: 'bytes', data: Number.NaN }, /\/data: a number must be finite/],
      [msgpack, { type: 'subscribe', room: new Uint8Array([0x61]) }, /\/room: raw bytes are allowed only/]
    ]
    let nested: unknown = 1
    for (let i = 0; i < 40; i++) nested = [nested]
    refusals.push([msgpack, { type: 'publish', room: 'bytes', data: nested }, /\/data: nested deeper than 32 levels/])
    for (const [client, command, message] of refusals) {
      const answer = await client.command(command)
      assertErrorFrame(answer, 'bad_request', answer.id)
      assert.match(answer.error.message, message, JSON.stringify(answer))
    }
    // A key that is not a string stops the decoder: there is no id to echo.
    msgpack.send(encodeMsgpack({ type: 'publish', id: 'keys', room: 'bytes', data: new Map([[1, 'one']]) }))
    const keys = await msgpack.next(f => f.type === 'error' && f.id === undefined)
    assertErrorFrame(keys, 'bad_request')
    assert.match(keys.error.message, /map keys must be strings/)
    // A safe 64-bit integer sent as uint64 is an ordinary number.
    const uint64 = Buffer.from(encodeMsgpack({ type: 'publish', id: 'u64', room: 'bytes', data: 0 }))
    const withUint64 = Buffer.concat([uint64.subarray(0, uint64.length - 1), Buffer.from([0xcf, 0, 0, 0, 0, 0, 0, 0, 42])])
    msgpack.send(withUint64)
    assert.equal(assertReply(await msgpack.next(f => f.id === 'u64')).offset, 1)
    assert.equal((await sub.next(messageAt(1))).data, 42)
    assert.equal(sub.frames.filter(f => f.type === 'message').length, 1)
  })
})
