import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import { connectRawWebSocket, HandshakeError, OPEN, type RawWebSocket } from '../src/cli/load/raw-websocket.js'
import { WsLoadConnection } from '../src/cli/load/ws-connection.js'
import { selfSignedCertificate, tempDir } from './helper.js'

/**
 * The load generator's WebSocket client (src/cli/load/raw-websocket.ts) against `ws`'s server
 * for what a well-behaved server does, and against a hand-written TCP server for what `ws`
 * would never send: frames cut anywhere across reads, a frame in the handshake's packet,
 * masked, binary and reserved-bit frames, a wrong accept key.
 */

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

function listening (server: net.Server | http.Server, t: TestContext): Promise<number> {
  t.after(() => { server.close(); (server as http.Server).closeAllConnections?.() })
  return new Promise(resolve => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))
}

/** A `ws` server on its own HTTP server; `onConnection` gets each accepted socket. */
async function wsServer (t: TestContext, options: { protocols?: boolean, onConnection?: (ws: WebSocket) => void } = {}): Promise<{ url: string, wss: WebSocketServer }> {
  const server = http.createServer()
  const wss = new WebSocketServer({
    server,
    ...(options.protocols === true ? { handleProtocols: (offered: Set<string>) => offered.has('sb.v1') ? 'sb.v1' : false } : {})
  })
  wss.on('connection', (ws) => options.onConnection?.(ws))
  t.after(() => { for (const ws of wss.clients) ws.terminate(); wss.close() })
  const port = await listening(server, t)
  return { url: `ws://127.0.0.1:${port}/ws`, wss }
}

/** An unmasked server frame. */
function frame (opcode: number, payload: Buffer | string, options: { fin?: boolean, mask?: boolean, rsv?: boolean } = {}): Buffer {
  const body = Buffer.from(payload)
  const length = body.length
  const header = length < 126 ? Buffer.from([0, length]) : length < 65536 ? Buffer.from([0, 126, length >> 8, length & 0xff]) : Buffer.concat([Buffer.from([0, 127, 0, 0, 0, 0]), Buffer.from([length >>> 24, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff])])
  header[0] = (options.fin === false ? 0 : 0x80) | (options.rsv === true ? 0x40 : 0) | opcode
  if (options.mask === true) {
    header[1] = header[1]! | 0x80
    return Buffer.concat([header, Buffer.from([0, 0, 0, 0]), body])
  }
  return Buffer.concat([header, body])
}

/** Reads one masked client frame off `data` at `at`: its opcode, payload and length. */
function clientFrame (data: Buffer, at = 0): { opcode: number, payload: Buffer, length: number } | undefined {
  if (data.length - at < 2) return undefined
  const opcode = data[at]! & 0x0f
  assert.ok((data[at + 1]! & 0x80) !== 0, 'client frames are masked')
  let length = data[at + 1]! & 0x7f
  let offset = at + 2
  if (length === 126) { length = data.readUInt16BE(offset); offset += 2 }
  if (data.length < offset + 4 + length) return undefined
  const key = data.subarray(offset, offset + 4)
  const payload = Buffer.from(data.subarray(offset + 4, offset + 4 + length))
  for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ key[i & 3]!
  return { opcode, payload, length: offset + 4 + length - at }
}

/**
 * A TCP server that answers the upgrade by hand (`answer` may spoil it) and then runs
 * `script` with the socket; what the client sends afterwards is collected in `received`.
 */
async function handServer (
  t: TestContext,
  script: (socket: net.Socket) => void | Promise<void>,
  answer: (accept: string) => string = (accept) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
  options: { neverCloses?: boolean } = {}
): Promise<{ url: string, received: () => Buffer }> {
  let received = Buffer.alloc(0)
  // neverCloses: the server keeps its side open after the client ended its own.
  const server = net.createServer({ allowHalfOpen: options.neverCloses === true }, (socket) => {
    let request = ''
    let upgraded = false
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => {
      if (upgraded) {
        received = Buffer.concat([received, chunk])
        return
      }
      request += chunk.toString('latin1')
      const end = request.indexOf('\r\n\r\n')
      if (end < 0) return
      upgraded = true
      received = Buffer.from(request.slice(end + 4), 'latin1')
      const key = /sec-websocket-key: (.+)\r\n/i.exec(request)?.[1] ?? ''
      socket.write(answer(createHash('sha1').update(key + GUID).digest('base64')))
      void script(socket)
    })
  })
  const port = await listening(server, t)
  return { url: `ws://127.0.0.1:${port}/`, received: () => received }
}

function closed (socket: RawWebSocket): Promise<{ code: number, reason: string }> {
  return new Promise(resolve => socket.onClose((code, reason) => resolve({ code, reason })))
}

function nextMessage (socket: RawWebSocket): Promise<string> {
  return new Promise(resolve => socket.onMessage(message => resolve(String(message))))
}

async function until (check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  assert.fail(`timed out waiting for ${what}`)
}

describe('the load generator\'s WebSocket client', () => {
  it('talks to ws: subprotocol, short, 16-bit and 64-bit lengths, UTF-8, and a clean close both ways', async (t) => {
    const seen: string[] = []
    let serverClose: { code: number, reason: string } | undefined
    const { url } = await wsServer(t, {
      protocols: true,
      onConnection: (ws) => {
        ws.on('message', (data: Buffer) => {
          seen.push(data.toString())
          ws.send(data.toString())
        })
        ws.on('close', (code: number, reason: Buffer) => { serverClose = { code, reason: reason.toString() } })
      }
    })
    const socket = await connectRawWebSocket(url, { protocols: ['other', 'sb.v1'], timeoutMs: 5000 })
    assert.equal(socket.readyState, OPEN)
    assert.equal(socket.protocol, 'sb.v1')
    const messages = ['hello', 'é'.repeat(100) + '→✓', 'x'.repeat(70_000)]
    const echoed: string[] = []
    socket.onMessage((text) => echoed.push(String(text)))
    for (const text of messages) socket.send(text)
    await until(() => echoed.length === messages.length, 'the echoes')
    assert.deepEqual(seen, messages)
    assert.deepEqual(echoed, messages)
    const gone = closed(socket)
    socket.close(1000)
    assert.deepEqual(await gone, { code: 1000, reason: '' })
    await until(() => serverClose !== undefined, 'the server to see the close')
    assert.equal(serverClose!.code, 1000)
  })

  it('reports the server\'s close code and reason', async (t) => {
    const { url } = await wsServer(t, { onConnection: (ws) => ws.close(4029, 'too many connections') })
    const socket = await connectRawWebSocket(url, { timeoutMs: 5000 })
    assert.deepEqual(await closed(socket), { code: 4029, reason: 'too many connections' })
  })

  it('keeps a frame that came in the handshake\'s packet, reassembles fragments cut anywhere, and answers pings', async (t) => {
    const { url, received } = await handServer(t, async (socket) => {
      // The first frame follows the 101 at once, before the client has a message handler: it
      // must be kept until there is one.
      socket.write(frame(0x1, 'welcome'))
      // A pause, so the welcome travels with the 101 and the rest comes later (what is tested).
      await new Promise(resolve => setTimeout(resolve, 50))
      const bytes = Buffer.concat([
        frame(0x1, 'first ', { fin: false }),
        frame(0x9, 'are you there'),
        frame(0x0, 'second ', { fin: false }),
        frame(0x0, 'third', { fin: true }),
        frame(0x1, 'y'.repeat(300))
      ])
      // One byte per write, each after a turn of the event loop: every cut point is a read.
      for (const byte of bytes) {
        socket.write(Buffer.from([byte]))
        await new Promise(resolve => setImmediate(resolve))
      }
    })
    const socket = await connectRawWebSocket(url, { timeoutMs: 5000 })
    // Deliberately late: the handler is attached after the early frame arrived (what is tested).
    await new Promise(resolve => setTimeout(resolve, 20))
    const messages: string[] = []
    socket.onMessage((text) => messages.push(String(text)))
    await until(() => messages.length === 3, 'three messages')
    assert.deepEqual(messages, ['welcome', 'first second third', 'y'.repeat(300)])
    const pong = clientFrame(received())
    assert.equal(pong?.opcode, 0xa)
    assert.equal(pong?.payload.toString(), 'are you there')
    socket.terminate()
  })

  for (const [name, bad, code] of [
    ['a masked frame', frame(0x1, 'hi', { mask: true }), 1002],
    ['a binary frame', frame(0x2, 'hi'), 1003],
    ['a reserved bit', frame(0x1, 'hi', { rsv: true }), 1002],
    ['a continuation without a message', frame(0x0, 'hi'), 1002],
    ['a fragmented ping', frame(0x9, 'hi', { fin: false }), 1002]
  ] as const) {
    it(`closes with ${code} on ${name}, after delivering what came before`, async (t) => {
      const { url, received } = await handServer(t, (socket) => { socket.write(Buffer.concat([frame(0x1, 'before'), bad, frame(0x1, 'after')])) })
      const socket = await connectRawWebSocket(url, { timeoutMs: 5000 })
      const messages: string[] = []
      socket.onMessage((text) => messages.push(String(text)))
      const gone = await closed(socket)
      assert.deepEqual(messages, ['before'])
      assert.equal(gone.code, code)
      const close = clientFrame(received())
      assert.equal(close?.opcode, 0x8)
      assert.equal(close?.payload.readUInt16BE(0), code)
    })
  }

  it('with binary: true, reads binary messages (early, fragmented, cut across reads) as bytes beside text, and counts bytes both ways', async (t) => {
    const bytes = Buffer.from([0x00, 0xff, 0xc0, 0x80, 0x0a])
    const first = frame(0x2, bytes)
    const rest = Buffer.concat([
      frame(0x2, bytes.subarray(0, 2), { fin: false }),
      frame(0x9, 'ping'),
      frame(0x0, bytes.subarray(2), { fin: true }),
      frame(0x1, 'text between'),
      frame(0x2, Buffer.alloc(300, 0xfe))
    ])
    const { url, received } = await handServer(t, async (socket) => {
      // Before the client has a handler, in the handshake's packet: kept as a copy.
      socket.write(first)
      await new Promise(resolve => setTimeout(resolve, 50))
      for (const byte of rest) {
        socket.write(Buffer.from([byte]))
        await new Promise(resolve => setImmediate(resolve))
      }
    })
    const socket = await connectRawWebSocket(url, { timeoutMs: 5000, binary: true })
    await new Promise(resolve => setTimeout(resolve, 20))
    const messages: Array<string | Buffer> = []
    // Bytes handed to the handler are valid during the call: kept as copies here.
    socket.onMessage((message) => messages.push(typeof message === 'string' ? message : Buffer.from(message)))
    await until(() => messages.length === 4, 'four messages')
    assert.deepEqual(messages, [bytes, bytes, 'text between', Buffer.alloc(300, 0xfe)])
    // The 101 (its accept key 28 characters), then every frame, the ping included.
    const answer = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${'k'.repeat(28)}\r\n\r\n`
    assert.equal(socket.bytesReceived, answer.length + first.length + rest.length)
    const sentBefore = socket.bytesSent
    socket.sendBinary(bytes)
    await until(() => clientFrame(received(), clientFrame(received())!.length) !== undefined, 'the binary frame')
    // The pong first, then the masked binary frame: 2 header bytes, 4 of mask, 5 of payload.
    const pong = clientFrame(received())!
    const sent = clientFrame(received(), pong.length)!
    assert.equal(sent.opcode, 0x2)
    assert.deepEqual(sent.payload, bytes)
    assert.equal(socket.bytesSent - sentBefore, 2 + 4 + bytes.length)
    socket.terminate()
  })

  it('counts what it reads and writes: the handshake and every frame with its header', async (t) => {
    const { url } = await wsServer(t, { onConnection: (ws) => ws.on('message', (data: Buffer, isBinary: boolean) => ws.send(data, { binary: isBinary })) })
    const socket = await connectRawWebSocket(url, { timeoutMs: 5000, binary: true })
    const [read, written] = [socket.bytesReceived, socket.bytesSent]
    assert.ok(read > 100 && written > 100, 'the handshake is counted both ways')
    const echoes: Array<string | Buffer> = []
    socket.onMessage((message) => echoes.push(typeof message === 'string' ? message : Buffer.from(message)))
    socket.send('x'.repeat(200))
    socket.sendBinary(new Uint8Array(1000))
    await until(() => echoes.length === 2, 'the echoes')
    assert.deepEqual(echoes, ['x'.repeat(200), Buffer.alloc(1000)])
    // Client frames: 4-byte header (126 ≤ length < 65536) and a 4-byte mask; server frames: no mask.
    assert.equal(socket.bytesSent - written, (4 + 4 + 200) + (4 + 4 + 1000))
    assert.equal(socket.bytesReceived - read, (4 + 200) + (4 + 1000))
    socket.terminate()
  })

  it('refuses sendBinary on a connection opened without binary: true', async (t) => {
    const { url } = await wsServer(t)
    const socket = await connectRawWebSocket(url, { timeoutMs: 5000 })
    assert.throws(() => socket.sendBinary(new Uint8Array(1)), /binary: true/)
    socket.terminate()
  })

  it('drops the connection itself when the server never closes its side after a protocol error', { timeout: 10_000 }, async (t) => {
    const { url } = await handServer(t, (socket) => { socket.write(frame(0x2, 'binary')) }, undefined, { neverCloses: true })
    const socket = await connectRawWebSocket(url, { timeoutMs: 5000 })
    assert.equal((await closed(socket)).code, 1003)
  })

  it('connects from the source address it is given (the capacity scenario spreads over 127.0.0.x)', async (t) => {
    let peer: string | undefined
    const { url, wss } = await wsServer(t)
    wss.on('connection', (_ws, request) => { peer = request.socket.remoteAddress })
    const client = await connectRawWebSocket(url, { timeoutMs: 5000, localAddress: '127.0.0.7' })
    t.after(() => client.terminate())
    assert.equal(peer, '127.0.0.7')
  })

  it('refuses a request header that would split the request', async (t) => {
    const { url } = await wsServer(t)
    await assert.rejects(connectRawWebSocket(url, { headers: { authorization: 'Bearer x\r\nX-Injected: 1' }, timeoutMs: 5000 }), /line break/)
  })

  it('fails the handshake on a wrong accept key, a subprotocol not offered, or none chosen', async (t) => {
    const wrongAccept = await handServer(t, () => {}, () => 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n')
    await assert.rejects(connectRawWebSocket(wrongAccept.url, { timeoutMs: 5000 }), /wrong Sec-WebSocket-Accept/)
    const otherProtocol = await handServer(t, () => {}, (accept) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: evil\r\n\r\n`)
    await assert.rejects(connectRawWebSocket(otherProtocol.url, { protocols: ['sb.v1'], timeoutMs: 5000 }), /subprotocol that was not offered: evil/)
    const noProtocol = await handServer(t, () => {})
    await assert.rejects(connectRawWebSocket(noProtocol.url, { protocols: ['sb.v1'], timeoutMs: 5000 }), /none of the offered subprotocols/)
    const notHttp = await handServer(t, () => {}, () => 'SSH-2.0-OpenSSH\r\n\r\n')
    await assert.rejects(connectRawWebSocket(notHttp.url, { timeoutMs: 5000 }), /something other than HTTP/)
  })

  it('reads a refused upgrade\'s status and body', async (t) => {
    const server = http.createServer()
    server.on('upgrade', (_request, socket) => {
      const body = JSON.stringify({ code: 'SB_ERR_TOO_MANY_CONNECTIONS', message: 'too many connections for this user' })
      socket.end(`HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    })
    const port = await listening(server, t)
    const err = await connectRawWebSocket(`ws://127.0.0.1:${port}/ws`, { timeoutMs: 5000 }).then(() => undefined, (e: unknown) => e)
    assert.ok(err instanceof HandshakeError)
    assert.equal(err.details.status, 429)
    assert.deepEqual(JSON.parse(err.details.body ?? ''), { code: 'SB_ERR_TOO_MANY_CONNECTIONS', message: 'too many connections for this user' })
  })

  it('fails with the system error when nothing listens, and after its timeout when nothing answers', async (t) => {
    const free = net.createServer()
    const port = await listening(free, t)
    free.close()
    const refused = await connectRawWebSocket(`ws://127.0.0.1:${port}/`, { timeoutMs: 5000 }).then(() => undefined, (e: unknown) => e)
    assert.ok(refused instanceof HandshakeError)
    assert.equal(refused.details.code, 'ECONNREFUSED')
    const silent = net.createServer(() => {})
    const silentPort = await listening(silent, t)
    const late = await connectRawWebSocket(`ws://127.0.0.1:${silentPort}/`, { timeoutMs: 200 }).then(() => undefined, (e: unknown) => e)
    assert.ok(late instanceof HandshakeError)
    assert.equal(late.details.code, 'ETIMEDOUT')
  })

  it('speaks over TLS (wss:)', async (t) => {
    const { certFile, keyFile } = selfSignedCertificate(tempDir(t))
    const server = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) })
    const wss = new WebSocketServer({ server })
    wss.on('connection', (ws) => ws.on('message', (data: Buffer) => ws.send(`echo ${data.toString()}`)))
    t.after(() => { for (const ws of wss.clients) ws.terminate(); wss.close() })
    const port = await listening(server, t)
    // Not trusted without the certificate: the TLS error, not a hang.
    await assert.rejects(connectRawWebSocket(`wss://127.0.0.1:${port}/`, { timeoutMs: 5000 }), HandshakeError)
    const socket = await connectRawWebSocket(`wss://127.0.0.1:${port}/`, { timeoutMs: 5000, ca: readFileSync(certFile) })
    const reply = nextMessage(socket)
    socket.send('over tls')
    assert.equal(await reply, 'echo over tls')
    const gone = closed(socket)
    socket.close()
    assert.equal((await gone).code, 1000)
  })

  it('a generator connection closed twice settles both closes once the server has answered', { timeout: 10_000 }, async (t) => {
    let serverSaw: number | undefined
    const { url } = await wsServer(t, { onConnection: (ws) => ws.on('close', (code: number) => { serverSaw = code }) })
    class Minimal extends WsLoadConnection {
      async subscribe (): Promise<void> {}
      async publish (): Promise<void> {}
      protected receive (): void {}
    }
    const connection = new Minimal(await connectRawWebSocket(url, { timeoutMs: 5000 }))
    await Promise.all([connection.close(), connection.close()])
    await until(() => serverSaw !== undefined, 'the server to see the close')
    assert.equal(serverSaw, 1000)
    await connection.close()
  })
})
