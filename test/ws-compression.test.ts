import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { constants, inflateRawSync } from 'node:zlib'
import { jsonPayload } from '../src/realtime/engine.js'
import { MSGPACK_PROTOCOL_VERSION } from '@switchboard/protocol/messages'
import { SERVER_WINDOW_BITS } from '../src/realtime/ws-deflate.js'
import { build, wsConnect, type WsClient } from './helper.js'
import { assertReply, clientFrame, rawWebSocket, watchWrites, type RawFrame } from './ws-support.js'

/**
 * permessage-deflate with WS_COMPRESSION=on (src/realtime/ws-deflate.ts): negotiated by ws,
 * our pre-built frames compressed once per publication and codec, observed on the wire and
 * on the server's TCP sockets.
 */

const OFFER = { 'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits' }
const GRANTED = `permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=${SERVER_WINDOW_BITS}`

const principal = { kind: 'user' as const, userId: 'alice', role: 'admin' as const, tokenId: 't', expiresAt: Math.floor(Date.now() / 1000) + 600, sessionId: 's' }

/** A chat message of about `bytes` bytes of JSON, words varied as people type them. */
function chat (bytes: number, n: number): Record<string, unknown> {
  const words = ['deploy', 'is', 'green', 'lunch', 'at', 'noon', 'the', 'review', 'of', 'ticket', 'ready', 'merge', 'tomorrow', 'thanks', 'coffee', 'bug']
  let text = ''
  for (let i = 0; text.length < bytes - 120; i++) text += words[(i * 7 + n * 3 + (i >> 3)) % words.length]! + ' '
  return { id: `msg-${n}`, text, author: { id: 'u-17', name: 'Ada Lovelace' }, mentions: [], sentAt: '2026-12-07T12:00:00.000Z' }
}

/** The payload of a server frame as sent: inflated when RSV1 says it is compressed (RFC 7692 §7.2.2). */
function payloadOf (frame: RawFrame): Buffer {
  return frame.rsv1 ? inflateRawSync(Buffer.concat([frame.payload, Buffer.from([0, 0, 0xff, 0xff])]), { windowBits: SERVER_WINDOW_BITS, finishFlush: constants.Z_SYNC_FLUSH }) : frame.payload
}

async function subscribe (client: WsClient, room: string): Promise<void> {
  assertReply(await client.command({ type: 'subscribe', room }))
}

describe('permessage-deflate on (WS_COMPRESSION=on)', () => {
  it('is granted without context takeover and with the server\'s window; a client asking a smaller window gets plain frames', async (t) => {
    const server = await build(t, { env: { WS_COMPRESSION: 'on' } })
    const token = await server.userToken('alice')
    const raw = await rawWebSocket(t, server, token, undefined, OFFER)
    assert.match(raw.head, new RegExp(`\r\nSec-WebSocket-Extensions: ${GRANTED}(\r\n|$)`, 'i'))
    // A window smaller than the one every frame is deflated with once: declined, the connection still opens.
    const narrow = await rawWebSocket(t, server, token, undefined, { 'Sec-WebSocket-Extensions': 'permessage-deflate; server_max_window_bits=10' })
    assert.doesNotMatch(narrow.head, /Sec-WebSocket-Extensions/i)
    // A narrow offer and a second one without the window: the second is granted.
    const second = await rawWebSocket(t, server, token, undefined, { 'Sec-WebSocket-Extensions': 'permessage-deflate; server_max_window_bits=9, permessage-deflate' })
    assert.match(second.head, new RegExp(`\r\nSec-WebSocket-Extensions: ${GRANTED}(\r\n|$)`, 'i'))
    const client = await wsConnect(t, server, { token, perMessageDeflate: true })
    assert.equal(client.socket.extensions, 'permessage-deflate')
  })

  it('publications reach compressing clients compressed, once per codec for all of them; others get plain frames in the same room', async (t) => {
    const server = await build(t, { env: { WS_COMPRESSION: 'on' } })
    const token = await server.userToken('alice', 'admin')
    assert.equal((await server.request('POST', '/rooms', { token, body: { id: 'chat' } })).status, 201)
    const compressing = { json: [] as WsClient[], msgpack: [] as WsClient[] }
    for (let i = 0; i < 3; i++) compressing.json.push(await wsConnect(t, server, { token, perMessageDeflate: true }))
    for (let i = 0; i < 3; i++) compressing.msgpack.push(await wsConnect(t, server, { token, perMessageDeflate: true, protocols: [MSGPACK_PROTOCOL_VERSION] }))
    const plain = await wsConnect(t, server, { token })
    const raw = await rawWebSocket(t, server, token, undefined, OFFER)
    for (const client of [...compressing.json, ...compressing.msgpack, plain]) await subscribe(client, 'chat')
    raw.write(clientText({ type: 'subscribe', room: 'chat', id: 'r' }))
    await raw.until(() => raw.frames.find(f => payloadOf(f).toString().includes('"id":"r"')), 'the raw client\'s subscribe reply')
    assert.equal(plain.socket.extensions, '')

    const written = watchWrites(t, server)
    const deflate = server.app.wsDeflate!
    const before = { ...deflate.totals }
    const large = chat(1500, 1)
    await server.app.realtime.publish(principal, 'chat', jsonPayload(large))
    for (const client of [...compressing.json, ...compressing.msgpack, plain]) {
      const message = await client.next(f => f.type === 'message' && f.offset === 1)
      assert.deepEqual(message.data, large, 'decoded as published')
    }
    const frame = await raw.until(() => raw.frames.find(f => f.opcode === 0x1 && payloadOf(f).toString().includes('"type":"message"')), 'the publication on the wire')
    assert.equal(frame.rsv1, true, 'compressed on the wire')
    assert.ok(frame.payload.length < 1000, `${frame.payload.length} bytes for about 1500`)
    assert.deepEqual(JSON.parse(payloadOf(frame).toString()).data, large)

    // Frame once: one deflate per codec for seven compressing sockets, and each socket of a kind handed the very same buffer.
    assert.equal(deflate.totals.deflates - before.deflates, 2)
    assert.equal(deflate.totals.framesCompressed - before.framesCompressed, 7)
    const chunks = [...written.values()].flat()
    const byKind = new Map<number, Set<Buffer>>()
    for (const chunk of chunks) byKind.set(chunk[0]!, (byKind.get(chunk[0]!) ?? new Set()).add(chunk))
    assert.deepEqual([...byKind.keys()].sort(), [0x81, 0xc1, 0xc2], 'plain text, compressed text, compressed binary')
    assert.deepEqual([...byKind.values()].map(set => set.size), [1, 1, 1], 'one buffer of each kind')
    assert.equal(chunks.filter(chunk => chunk[0] === 0xc1).length, 4)
    assert.equal(chunks.filter(chunk => chunk[0] === 0xc2).length, 3)
    const metrics = await server.app.metrics.scrape()
    assert.match(metrics, /^switchboard_ws_deflates_total 2$/m)
    assert.match(metrics, /^switchboard_ws_compressed_frames_total 7$/m)

    // Below the threshold (1024 bytes of payload): plain for everyone, nothing deflated.
    for (const list of written.values()) list.length = 0
    const small = chat(300, 2)
    await server.app.realtime.publish(principal, 'chat', jsonPayload(small))
    for (const client of [...compressing.json, ...compressing.msgpack, plain]) assert.deepEqual((await client.next(f => f.type === 'message' && f.offset === 2)).data, small)
    const smallFrame = await raw.until(() => raw.frames.find(f => f.opcode === 0x1 && payloadOf(f).toString().includes('"offset":2')), 'the small publication')
    assert.equal(smallFrame.rsv1, false)
    assert.equal(deflate.totals.deflates - before.deflates, 2)
    assert.deepEqual(new Set([...written.values()].flat().map(chunk => chunk[0])), new Set([0x81, 0x82]), 'the small publication went uncompressed')
  })

  it('welcome, replies and errors go through the same rule: small ones plain, large ones compressed', async (t) => {
    const server = await build(t, { env: { WS_COMPRESSION: 'on' } })
    const token = await server.userToken('alice', 'admin')
    await server.request('POST', '/rooms', { token, body: { id: 'chat' } })
    for (let i = 1; i <= 4; i++) await server.app.realtime.publish(principal, 'chat', jsonPayload(chat(600, i)))
    const raw = await rawWebSocket(t, server, token, undefined, OFFER)
    const welcome = raw.frames[0]!
    assert.equal(welcome.rsv1, false, 'the welcome is below the threshold')
    raw.write(clientText({ type: 'history', room: 'chat', id: 'h' }))
    const page = await raw.until(() => raw.frames.find(f => payloadOf(f).toString().includes('"id":"h"')), 'the history reply')
    assert.equal(page.rsv1, true, 'a page of four 600-byte messages is compressed')
    const reply = JSON.parse(payloadOf(page).toString()) as { result: { publications: Array<{ data: unknown }> } }
    assert.deepEqual(reply.result.publications.map(p => p.data), [1, 2, 3, 4].map(i => chat(600, i)))
    raw.write(clientText({ type: 'history', room: 'nowhere', id: 'e' }))
    const error = await raw.until(() => raw.frames.find(f => payloadOf(f).toString().includes('"id":"e"')), 'the error')
    assert.equal(error.rsv1, false)
    assert.equal(JSON.parse(payloadOf(error).toString()).type, 'error')
  })

  it('a client\'s compressed commands are read, and its inflater does not stay with the connection', async (t) => {
    const server = await build(t, { env: { WS_COMPRESSION: 'on' } })
    const token = await server.userToken('alice', 'admin')
    await server.request('POST', '/rooms', { token, body: { id: 'chat' } })
    // threshold 0: ws compresses every message this client sends.
    const client = await wsConnect(t, server, { token, perMessageDeflate: { threshold: 0 } })
    const serverSide = [...server.app.websocketServer.clients][0] as unknown as { _extensions: Record<string, { _inflate: unknown }> }
    const extension = serverSide._extensions['permessage-deflate']!
    await subscribe(client, 'chat')
    const data = chat(2000, 3)
    assertReply(await client.command({ type: 'publish', room: 'chat', data }))
    assert.deepEqual((await client.next(f => f.type === 'message')).data, data)
    assert.equal(extension._inflate, null, 'no inflater kept between messages')
    // A message in fragments, each inflated by the same inflater until the last.
    client.socket.send(JSON.stringify({ type: 'ping', id: 'frag' }).slice(0, 10), { fin: false })
    client.socket.send(JSON.stringify({ type: 'ping', id: 'frag' }).slice(10), { fin: true })
    assertReply(await client.next(f => f.id === 'frag'))
    assert.equal(extension._inflate, null)
  })
})

describe('permessage-deflate off (the default)', () => {
  it('is not granted to a client that offers it', async (t) => {
    const server = await build(t)
    const token = await server.userToken('alice')
    assert.equal(server.app.wsDeflate, null)
    const client = await wsConnect(t, server, { token, perMessageDeflate: true })
    assert.equal(client.socket.extensions, '')
    const raw = await rawWebSocket(t, server, token, undefined, OFFER)
    assert.doesNotMatch(raw.head, /Sec-WebSocket-Extensions/i)
    assertReply(await client.command({ type: 'ping' }))
  })
})

/** A command in a masked text frame, uncompressed. */
function clientText (command: Record<string, unknown>): Buffer {
  return clientFrame(0x1, Buffer.from(JSON.stringify(command)))
}
