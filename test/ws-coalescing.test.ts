import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import { binaryFrame, textFrame } from '../src/realtime/ws-frames.js'
import { jsonPayload } from '../src/realtime/engine.js'
import { build, wsConnect } from './helper.js'
import { countWrites, watchWrites } from './ws-support.js'
import { MSGPACK_PROTOCOL_VERSION } from '@switchboard/protocol/messages'

/**
 * Frames written to one socket within one event-loop tick leave in one syscall (BAR: coalescing
 * is what multiplies fan-out throughput). Observed on the server's real TCP socket: with the
 * socket corked, Node hands the queued chunks to the kernel in one writev.
 */
describe('write coalescing', () => {
  it('publications delivered in the same tick reach a subscriber in one writev', async (t) => {
    const server = await build(t)
    const token = await server.userToken('alice', 'admin')
    await server.request('POST', '/rooms', { token, body: { id: 'burst' } })
    const client = await wsConnect(t, server, { token })
    assert.equal((await client.command({ type: 'subscribe', room: 'burst' })).type, 'reply')

    // The server side of this client's TCP connection, and what the kernel is handed.
    const serverSocket = [...server.app.websocketServer.clients][0] as unknown as { _socket: Socket }
    const raw = serverSocket._socket
    const calls = countWrites(t, raw)

    // Twenty publications in one synchronous run: the memory engine fans each out at once.
    const principal = { kind: 'user' as const, userId: 'alice', role: 'admin' as const, tokenId: 't', expiresAt: Math.floor(Date.now() / 1000) + 600, sessionId: 's' }
    await Promise.all(Array.from({ length: 20 }, (_, i) => server.app.realtime.publish(principal, 'burst', jsonPayload({ i }))))
    await client.next(f => f.type === 'message' && f.offset === 20)

    assert.equal(client.frames.filter(f => f.type === 'message').length, 20)
    // One syscall for the burst, not twenty.
    assert.equal(calls.write + calls.writev, 1, JSON.stringify(calls))
    assert.equal(calls.chunks, 20)
  })

  // A connection answers its commands in order: a client's second publish is processed only
  // once the first is answered. With durable history each waits for its commit, which must
  // therefore come within the same turn of the loop, or each publish of a burst would be fanned
  // out on a turn of its own (one write per subscriber per publication).
  it('a burst of publishes from one client, read in one turn, reaches a subscriber in one writev (HISTORY_STORE=sqlite)', async (t) => {
    const server = await build(t, { env: { HISTORY_STORE: 'sqlite', WS_MESSAGES_BURST: '1000' } })
    const token = await server.userToken('alice', 'admin')
    await server.request('POST', '/rooms', { token, body: { id: 'burst' } })
    const subscriber = await wsConnect(t, server, { token })
    assert.equal((await subscriber.command({ type: 'subscribe', room: 'burst' })).type, 'reply')
    const raw = ([...server.app.websocketServer.clients][0] as unknown as { _socket: Socket })._socket
    const publisher = await wsConnect(t, server, { token })
    // The first publish looks the room up in the store; the burst below finds it cached.
    assert.equal((await publisher.command({ type: 'publish', room: 'burst', data: 0 })).type, 'reply')
    await subscriber.next(f => f.type === 'message' && f.offset === 1)

    const calls = countWrites(t, raw)

    // Twenty publish frames in one TCP write, so the server reads them in one turn.
    const tcp = (publisher.socket as unknown as { _socket: Socket })._socket
    tcp.cork()
    for (let i = 1; i <= 20; i++) publisher.send({ type: 'publish', id: `p${i}`, room: 'burst', data: i })
    tcp.uncork()
    await subscriber.next(f => f.type === 'message' && f.offset === 21)
    assert.equal(subscriber.frames.filter(f => f.type === 'message').length, 21)
    assert.equal(calls.write + calls.writev, 1, JSON.stringify(calls))
    assert.equal(calls.chunks, 20)
  })
})

describe('frame once per codec', () => {
  it('one publication to JSON and MessagePack subscribers is encoded once per codec: every socket of a codec is handed the same buffer', async (t) => {
    const server = await build(t)
    const token = await server.userToken('alice', 'admin')
    await server.request('POST', '/rooms', { token, body: { id: 'mixed' } })
    const clients = []
    for (const protocols of [[], [MSGPACK_PROTOCOL_VERSION], [], [MSGPACK_PROTOCOL_VERSION], [], [MSGPACK_PROTOCOL_VERSION]]) {
      const client = await wsConnect(t, server, { token, protocols })
      assert.equal((await client.command({ type: 'subscribe', room: 'mixed' })).type, 'reply')
      clients.push(client)
    }
    // What each server-side socket hands the kernel from here on, by the buffer object itself.
    const written = watchWrites(t, server)

    const principal = { kind: 'user' as const, userId: 'alice', role: 'admin' as const, tokenId: 't', expiresAt: Math.floor(Date.now() / 1000) + 600, sessionId: 's' }
    await server.app.realtime.publish(principal, 'mixed', { kind: 'binary', payload: Buffer.from([0, 0xff, 0x80]) })
    for (const client of clients) await client.next(f => f.type === 'message' && f.offset === 1)

    const chunks = [...written.values()]
    assert.ok(chunks.every(list => list.length === 1), `one write per socket: ${chunks.map(list => list.length).join(',')}`)
    const distinct = new Set(chunks.map(list => list[0]))
    assert.equal(distinct.size, 2, 'two encodings of the publication in all: one per codec')
    const opcodes = [...distinct].map(buffer => buffer?.[0]).sort()
    assert.deepEqual(opcodes, [0x81, 0x82], 'a text frame for the JSON sockets, a binary one for the MessagePack sockets')
  })
})

describe('handshake write', () => {
  it('the 101 and the welcome frame reach the kernel in one write', async (t) => {
    const server = await build(t)
    const token = await server.userToken('alice')
    // Every write the server's side of each new TCP connection hands to the kernel.
    const writes: Array<{ socket: Socket, bytes: string[] }> = []
    const watch = (socket: Socket & { _writev?: unknown, _write: unknown }): void => {
      const originalWrite = socket._write as (chunk: Buffer | string, ...rest: unknown[]) => void
      const originalWritev = socket._writev as (chunks: Array<{ chunk: Buffer | string }>, cb: unknown) => void
      socket._write = function (chunk: Buffer | string, ...rest: unknown[]) { writes.push({ socket, bytes: [String(chunk)] }); return originalWrite.call(this, chunk, ...rest) }
      socket._writev = function (chunks: Array<{ chunk: Buffer | string }>, cb: unknown) { writes.push({ socket, bytes: chunks.map(c => String(c.chunk)) }); return originalWritev.call(this, chunks, cb) }
    }
    server.app.server.on('connection', watch)
    t.after(() => { server.app.server.off('connection', watch) })

    const client = await wsConnect(t, server, { token })
    assert.equal(client.welcome.type, 'welcome')
    const serverSide = [...server.app.websocketServer.clients][0] as unknown as { _socket: Socket }
    const handshake = writes.filter(w => w.socket === serverSide._socket)
    assert.equal(handshake.length, 1, `writes: ${JSON.stringify(handshake.map(w => w.bytes))}`)
    const bytes = handshake[0]!.bytes.join('')
    assert.ok(bytes.startsWith('HTTP/1.1 101 '), bytes)
    assert.ok(bytes.includes('"type":"welcome"'), bytes)
  })
})

describe('flush order', () => {
  // A publisher's reply is written after its fan-out; flushed in order of corking it would
  // leave after every subscriber's write, and a pipelining client would wait for it. Answers
  // go first (src/realtime/ws-transport.ts, uncorkAll).
  // Durable history commits before the reply and the fan-out, in a callback of its own: the order holds there too.
  for (const history of ['memory', 'sqlite'] as const) {
    it(`a publisher's reply is handed to the kernel before the fan-out to the subscribers (HISTORY_STORE=${history})`, async (t) => {
      const server = await build(t, { env: { HISTORY_STORE: history } })
      const token = await server.userToken('alice', 'admin')
      await server.request('POST', '/rooms', { token, body: { id: 'order' } })
      const subscribers = []
      for (let i = 0; i < 3; i++) {
        const subscriber = await wsConnect(t, server, { token })
        assert.equal((await subscriber.command({ type: 'subscribe', room: 'order' })).type, 'reply')
        subscribers.push(subscriber)
      }
      const before = new Set(server.app.websocketServer.clients)
      const publisher = await wsConnect(t, server, { token })
      const publisherSide = [...server.app.websocketServer.clients].find(ws => !before.has(ws))
      assert.ok(publisherSide !== undefined)

      // Every server-side socket reports its writes, in the order they reach the kernel.
      const order: string[] = []
      for (const ws of server.app.websocketServer.clients) {
        const raw = (ws as unknown as { _socket: Socket & { _writev: (chunks: unknown[], cb: unknown) => void, _write: (...args: unknown[]) => void } })._socket
        const name = ws === publisherSide ? 'publisher' : 'subscriber'
        const { _write: originalWrite, _writev: originalWritev } = raw
        raw._write = function (...args: unknown[]) { order.push(name); return originalWrite.apply(this, args) }
        raw._writev = function (chunks: unknown[], cb: unknown) { order.push(name); return originalWritev.call(this, chunks, cb) }
        t.after(() => { raw._write = originalWrite; raw._writev = originalWritev })
      }

      const reply = await publisher.command({ type: 'publish', room: 'order', data: 'first' })
      assert.equal(reply.type, 'reply')
      for (const subscriber of subscribers) await subscriber.next(f => f.type === 'message' && f.data === 'first')
      assert.deepEqual(order, ['publisher', 'subscriber', 'subscriber', 'subscriber'])
    })
  }
})

describe('text frames', () => {
  // The frame every welcome, reply and publication is written in: byte for byte what ws
  // itself frames (FIN, opcode 1, unmasked, 7/16/64-bit length), and ws's receiver reads it.
  it('are framed as ws frames them, at every length encoding', async () => {
    const { Receiver, Sender } = await import('ws') as unknown as {
      Receiver: new (options: { isServer: boolean }) => NodeJS.WritableStream & { on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void }
      Sender: { frame(data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean }): Buffer[] }
    }
    for (const length of [0, 1, 125, 126, 127, 65535, 65536, 200_000]) {
      for (const filler of ['a', 'é', '😀']) {
        // Whole characters only, padded with ASCII to exactly `length` bytes.
        const text = filler.repeat(Math.floor(length / Buffer.byteLength(filler))) + 'a'.repeat(length % Buffer.byteLength(filler))
        const frame = textFrame(text)
        assert.deepEqual(frame, Buffer.concat(Sender.frame(Buffer.from(text), { fin: true, opcode: 1, mask: false, readOnly: true })), `${length} × ${filler}`)
        const receiver = new Receiver({ isServer: false })
        const received = new Promise<string>((resolve) => { receiver.on('message', (data, isBinary) => { assert.equal(isBinary, false); resolve(data.toString()) }) })
        receiver.write(frame)
        assert.equal(await received, text)
      }
    }
  })

  it('binary frames (MessagePack) too: opcode 2, the bytes as they are', async () => {
    const { Receiver, Sender } = await import('ws') as unknown as {
      Receiver: new (options: { isServer: boolean }) => NodeJS.WritableStream & { on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): void }
      Sender: { frame(data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean }): Buffer[] }
    }
    for (const length of [0, 1, 125, 126, 127, 65535, 65536, 200_000]) {
      const bytes = Buffer.from(Array.from({ length }, (_, i) => (i * 7) & 0xff))
      // A view into a larger buffer: only its own bytes are framed.
      const backing = Buffer.concat([Buffer.from([9, 9]), bytes, Buffer.from([9])])
      const view = new Uint8Array(backing.buffer, backing.byteOffset + 2, length)
      for (const input of [bytes, view]) {
        const frame = binaryFrame(input)
        assert.deepEqual(frame, Buffer.concat(Sender.frame(bytes, { fin: true, opcode: 2, mask: false, readOnly: true })), `${length}`)
        const receiver = new Receiver({ isServer: false })
        const received = new Promise<Buffer>((resolve) => { receiver.on('message', (data, isBinary) => { assert.equal(isBinary, true); resolve(data) }) })
        receiver.write(frame)
        assert.deepEqual(await received, bytes)
      }
    }
  })
})
