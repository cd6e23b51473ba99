import { createHash, randomFillSync } from 'node:crypto'
import { isIP, connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

/**
 * The load generator's WebSocket client: text frames (and, when asked, binary ones), read
 * straight off the TCP socket.
 *
 * Why not `ws`: in the latency scenarios the generator reads 50,000 frames a second from a
 * thousand sockets, and with `ws` each one went through Node's stream machinery (push, the
 * 'data' event), ws's Receiver (itself a Writable stream) and its 'message' event: most of the
 * generator's core went there, a thousand deliveries of one publication were read over many
 * milliseconds, and any stall of the host became queueing in the generator (the figures are in
 * docs/performance.md). Here a plain TCP socket hands each read to one callback (`onread`, no stream
 * events), into one shared buffer, and the frames in it are parsed in place.
 *
 * What it speaks (RFC 6455, client side): the opening handshake with the accept key checked;
 * text, continuation, ping (answered), pong and close frames from the server (which must be
 * unmasked); masked text and close frames to it. Binary messages both ways only for a
 * connection opened with `binary: true` (the binary payload scenarios); elsewhere a binary
 * frame is a protocol error, as no other protocol under test sends one. No extensions (the
 * generator never offers permessage-deflate).
 */

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
/** Largest message the generator accepts: far above any benchmark payload; bounds its memory. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024
/** Largest handshake response: a server sending more headers than this is not one we test. */
const MAX_HANDSHAKE_BYTES = 16 * 1024
/** How much of a refused upgrade's body is kept for the error. */
const MAX_REFUSAL_BODY_BYTES = 4096
/** Messages kept until the connection's user reads: a server does not send many unasked. */
const MAX_EARLY_MESSAGES = 64
/** How long a server may take to close its side after this client ended the connection. */
const END_GRACE_MS = 2000

/** One buffer for every socket's reads: each read is parsed before the next one is made. */
const readBuffer = Buffer.allocUnsafe(256 * 1024)

/** Mask keys come from a pool of random bytes, refilled as it runs out (as ws does). */
const maskPool = Buffer.allocUnsafe(8 * 1024)
let maskAt = maskPool.length
function maskKey (): Buffer {
  if (maskAt + 4 > maskPool.length) {
    randomFillSync(maskPool)
    maskAt = 0
  }
  const key = maskPool.subarray(maskAt, maskAt + 4)
  maskAt += 4
  return key
}

export const CONNECTING = 0
export const OPEN = 1
export const CLOSING = 2
export const CLOSED = 3

const OP_CONTINUATION = 0x0
const OP_TEXT = 0x1
const OP_BINARY = 0x2
const OP_CLOSE = 0x8
const OP_PING = 0x9
const OP_PONG = 0xa

/**
 * Why the opening handshake failed. `status` and `body` (its first 4 KiB) when the server
 * answered with something other than 101; `code` a system error's code (ECONNREFUSED, …).
 */
export class HandshakeError extends Error {
  override name = 'HandshakeError'
  constructor (message: string, readonly details: { status?: number, body?: string, code?: string } = {}) {
    super(message)
  }
}

export interface RawWebSocketOptions {
  /** Subprotocols to offer: the server must choose one of them. */
  protocols?: string[]
  /** Extra request headers (e.g. authorization). */
  headers?: Record<string, string>
  /** The handshake fails after this long. */
  timeoutMs: number
  /** For wss: trust anchors instead of Node's (users add theirs with NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer
  /** Accept binary messages (handed to the message handler as a Buffer); otherwise one closes with 1003. */
  binary?: boolean
  /**
   * The source address to connect from (e.g. 127.0.0.12): one address has one range of
   * ephemeral ports, so a generator holding more connections spreads them over several.
   */
  localAddress?: string
}

/**
 * A message from the server: a text message's string, or a binary message's bytes. The bytes
 * may be a view into the client's read buffer, valid only during the handler's call: copy
 * them to keep them.
 */
export type RawMessage = string | Buffer

/** The ws: or wss: URL of `path` (query included) on a server's http: or https: base URL. */
export function webSocketUrl (base: string, path: string): string {
  const url = new URL(path, base)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  return url.href
}

/**
 * Opens a WebSocket to `url` (ws: or wss:) and resolves once the server accepted it; rejects
 * with a HandshakeError otherwise.
 */
export function connectRawWebSocket (url: string, options: RawWebSocketOptions): Promise<RawWebSocket> {
  return new Promise((resolve, reject) => {
    const target = new URL(url)
    const secure = target.protocol === 'wss:'
    if (!secure && target.protocol !== 'ws:') {
      reject(new HandshakeError(`not a WebSocket URL: ${url}`))
      return
    }
    const bad = Object.entries(options.headers ?? {}).find(([name, value]) => /[\r\n:]/.test(name) || /[\r\n]/.test(value))
    if (bad !== undefined) {
      reject(new HandshakeError(`the request header ${JSON.stringify(bad[0])} holds a line break or a colon in its name`))
      return
    }
    const port = Number(target.port === '' ? (secure ? 443 : 80) : target.port)
    const host = target.hostname.replace(/^\[|\]$/g, '')
    const client = new RawWebSocket(options.binary === true)
    // Plain TCP reads through `onread` (no stream events); TLS has no such option, so a
    // secure socket feeds the same parser from its 'data' events.
    const from = options.localAddress === undefined ? {} : { localAddress: options.localAddress }
    const socket = secure
      ? tlsConnect({ host, port, ...from, ...(isIP(host) === 0 ? { servername: host } : {}), ...(options.ca === undefined ? {} : { ca: options.ca }) })
      : netConnect({ host, port, ...from, onread: { buffer: readBuffer, callback: (n) => { client.received(readBuffer, n); return true } } })
    if (secure) socket.on('data', (chunk: Buffer) => { client.received(chunk, chunk.length) })
    const key = randomFillSync(Buffer.alloc(16)).toString('base64')
    const expectedAccept = createHash('sha1').update(key + GUID).digest('base64')
    const protocols = options.protocols ?? []
    const timer = setTimeout(() => { client.fail(new HandshakeError(`no handshake answer within ${options.timeoutMs} ms`, { code: 'ETIMEDOUT' })) }, options.timeoutMs)
    client.attach(socket, { accept: expectedAccept, protocols }, (err) => {
      clearTimeout(timer)
      if (err === undefined) resolve(client)
      else reject(err)
    })
    socket.setNoDelay(true)
    const headers = Object.entries({ ...options.headers, ...(protocols.length === 0 ? {} : { 'Sec-WebSocket-Protocol': protocols.join(', ') }) })
      .map(([name, value]) => `${name}: ${value}\r\n`).join('')
    const request = `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${headers}\r\n`
    client.bytesSent += Buffer.byteLength(request)
    socket.write(request)
  })
}

export class RawWebSocket {
  readyState = CONNECTING
  /** The subprotocol the server chose ('' when none was offered). */
  protocol = ''
  /**
   * Bytes read from the server since the connection opened, and written to it: every frame,
   * header included, and the handshake (TCP and IP headers are not seen here). What a
   * difference of two readings measures is what the WebSocket protocol put on the wire.
   */
  bytesReceived = 0
  bytesSent = 0
  private socket!: Socket
  private expect = { accept: '', protocols: [] as string[] }
  private opened: ((err?: Error) => void) | undefined
  /** A refused upgrade: its status and the body read so far, until the body is all here. */
  private refusal: { status: number, body: Buffer, length: number } | null = null
  /** Bytes of an unfinished handshake answer or frame, carried to the next read. */
  private pending: Buffer | null = null
  /** A fragmented message so far, and whether it is binary. */
  private fragments: Buffer[] | null = null
  private fragmentsBinary = false
  private fragmentBytes = 0
  private messageHandler: ((message: RawMessage) => void) | undefined
  /** Messages that arrived before there was a handler (the first can come with the handshake): copies. */
  private early: RawMessage[] = []
  private closeHandler: ((code: number, reason: string) => void) | undefined
  /** Set once the connection is gone, for a close handler set after that. */
  private gone: { code: number, reason: string } | undefined
  private closeCode = 1006
  private closeReason = ''
  private closeSent = false

  /** @internal */
  constructor (private readonly acceptBinary = false) {}

  /** @internal */
  attach (socket: Socket, expect: { accept: string, protocols: string[] }, opened: (err?: Error) => void): void {
    this.socket = socket
    this.expect = expect
    this.opened = opened
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.fail(new HandshakeError(err.message, { code: err.code }))
    })
    socket.on('close', () => {
      const wasOpen = this.readyState !== CONNECTING
      this.readyState = CLOSED
      if (!wasOpen) {
        this.fail(this.refused() ?? new HandshakeError('the connection closed during the handshake'))
        return
      }
      this.gone = { code: this.closeCode, reason: this.closeReason }
      const handler = this.closeHandler
      this.closeHandler = undefined
      handler?.(this.closeCode, this.closeReason)
    })
  }

  /** Ends a connection that is still in its handshake with `err`. @internal */
  fail (err: Error): void {
    const opened = this.opened
    this.opened = undefined
    if (this.readyState === CONNECTING) this.socket.destroy()
    opened?.(err)
  }

  /**
   * The one handler for messages (text as a string; binary, on a connection that accepts it,
   * as bytes valid during the call); messages that came before it are handed to it now.
   */
  onMessage (handler: (message: RawMessage) => void): void {
    this.messageHandler = handler
    // A handler may set the next one (a welcome frame awaited, then the connection's own):
    // what is left goes to whichever is current.
    while (this.early.length > 0 && this.messageHandler === handler) handler(this.early.shift()!)
  }

  /**
   * Called once when the connection is gone: the close code the server sent, 1005 when its
   * close frame had none, or 1006 when no close frame came. At once if it is already gone.
   */
  onClose (handler: (code: number, reason: string) => void): void {
    if (this.gone !== undefined) {
      handler(this.gone.code, this.gone.reason)
      return
    }
    this.closeHandler = handler
  }

  private message (message: RawMessage): void {
    if (this.messageHandler !== undefined) {
      this.messageHandler(message)
    } else if (this.early.length < MAX_EARLY_MESSAGES) {
      // The bytes of a binary message may be the shared read buffer's: a copy outlives the read.
      this.early.push(typeof message === 'string' ? message : Buffer.from(message))
    } else {
      this.protocolError('too many messages before the client read any', 1008)
    }
  }

  /** Bytes written but not yet handed to the kernel. */
  get bufferedAmount (): number {
    return this.socket.writableLength
  }

  send (text: string): void {
    if (this.readyState !== OPEN) return
    this.writeFrame(OP_TEXT, Buffer.from(text))
  }

  /** Sends one binary message (a connection opened with `binary: true` only). */
  sendBinary (bytes: Uint8Array): void {
    if (this.readyState !== OPEN) return
    if (!this.acceptBinary) throw new Error('sendBinary on a connection opened without binary: true')
    this.writeFrame(OP_BINARY, bytes)
  }

  /** Starts the closing handshake; the socket ends once the server answers. */
  close (code = 1000): void {
    if (this.readyState !== OPEN) return
    this.readyState = CLOSING
    this.sendClose(code)
  }

  /** Drops the TCP connection at once. */
  terminate (): void {
    this.socket.destroy()
  }

  /** One read from the socket: `length` bytes at the start of `buf` (valid only during this call). @internal */
  received (buf: Buffer, length: number): void {
    this.bytesReceived += length
    let data = buf.subarray(0, length)
    if (this.pending !== null) {
      data = Buffer.concat([this.pending, data])
      this.pending = null
    }
    if (this.refusal !== null) {
      this.refusalBody(data)
      return
    }
    let at = 0
    if (this.readyState === CONNECTING) {
      at = this.handshake(data)
      if (at < 0) return
    }
    while (at < data.length && this.readyState !== CLOSED) {
      const used = this.frame(data, at)
      if (used === 0) break
      at += used
    }
    // What is left is the start of a frame: copied, since `buf` is reused by the next read.
    if (at < data.length && this.readyState !== CLOSED) this.pending = Buffer.from(data.subarray(at))
  }

  /** Parses the handshake answer; returns where frames start, or -1 (incomplete, or failed). */
  private handshake (data: Buffer): number {
    const end = data.indexOf('\r\n\r\n')
    if (end < 0) {
      if (data.length > MAX_HANDSHAKE_BYTES) this.fail(new HandshakeError('the handshake answer is too long'))
      else this.pending = Buffer.from(data)
      return -1
    }
    const lines = data.toString('latin1', 0, end).split('\r\n')
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? NaN)
    const headers = new Map<string, string>()
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim())
    }
    if (Number.isNaN(status)) {
      this.fail(new HandshakeError(`the server answered the upgrade with something other than HTTP: ${JSON.stringify(lines[0]?.slice(0, 80))}`))
      return -1
    }
    if (status !== 101) {
      // Read the body the server explains its refusal in (Switchboard sends a JSON error).
      const length = Number(headers.get('content-length') ?? MAX_REFUSAL_BODY_BYTES)
      this.refusal = { status, body: Buffer.alloc(0), length: Number.isSafeInteger(length) ? Math.min(length, MAX_REFUSAL_BODY_BYTES) : MAX_REFUSAL_BODY_BYTES }
      this.refusalBody(data.subarray(end + 4))
      return -1
    }
    if (headers.get('sec-websocket-accept') !== this.expect.accept) {
      this.fail(new HandshakeError('the server answered the upgrade with a wrong Sec-WebSocket-Accept'))
      return -1
    }
    if (headers.has('sec-websocket-extensions')) {
      this.fail(new HandshakeError('the server chose an extension the client did not offer'))
      return -1
    }
    const protocol = headers.get('sec-websocket-protocol') ?? ''
    if (protocol === '' ? this.expect.protocols.length > 0 : !this.expect.protocols.includes(protocol)) {
      this.fail(new HandshakeError(protocol === '' ? 'the server chose none of the offered subprotocols' : `the server chose a subprotocol that was not offered: ${protocol}`))
      return -1
    }
    this.protocol = protocol
    this.readyState = OPEN
    const opened = this.opened
    this.opened = undefined
    opened?.()
    return end + 4
  }

  /** Collects a refused upgrade's body; fails the handshake once it is all here. */
  private refusalBody (data: Buffer): void {
    const refusal = this.refusal!
    refusal.body = Buffer.concat([refusal.body, data]).subarray(0, refusal.length)
    if (refusal.body.length >= refusal.length) this.fail(this.refused()!)
  }

  private refused (): HandshakeError | undefined {
    if (this.refusal === null) return undefined
    const { status, body } = this.refusal
    return new HandshakeError(`the server refused the upgrade with HTTP ${status}`, { status, body: body.toString('utf8') })
  }

  /** Parses one frame at `at`; returns its length, or 0 when it is not all here yet. */
  private frame (data: Buffer, at: number): number {
    if (data.length - at < 2) return 0
    const first = data[at]!
    const second = data[at + 1]!
    const fin = (first & 0x80) !== 0
    const opcode = first & 0x0f
    if ((first & 0x70) !== 0) return this.protocolError('a reserved bit is set')
    if ((second & 0x80) !== 0) return this.protocolError('the server masked a frame')
    let length = second & 0x7f
    let header = 2
    if (length === 126) {
      if (data.length - at < 4) return 0
      length = data.readUInt16BE(at + 2)
      header = 4
    } else if (length === 127) {
      if (data.length - at < 10) return 0
      const high = data.readUInt32BE(at + 2)
      if (high !== 0) return this.protocolError('a frame longer than 4 GiB')
      length = data.readUInt32BE(at + 6)
      header = 10
    }
    if (length > MAX_MESSAGE_BYTES) return this.protocolError('a frame larger than 16 MiB', 1009)
    if (data.length - at < header + length) return 0
    const start = at + header
    const end = start + length
    if (opcode >= 0x8) {
      if (!fin || length > 125) return this.protocolError('a fragmented or long control frame')
      this.control(opcode, data, start, end)
    } else if (opcode === OP_TEXT || opcode === OP_CONTINUATION || (opcode === OP_BINARY && this.acceptBinary)) {
      this.dataFrame(opcode, fin, data, start, end)
    } else {
      return this.protocolError(`a frame with opcode ${opcode} (only text is expected)`, opcode === OP_BINARY ? 1003 : 1002)
    }
    return header + length
  }

  private dataFrame (opcode: number, fin: boolean, data: Buffer, start: number, end: number): void {
    if (opcode !== OP_CONTINUATION && this.fragments !== null) {
      this.protocolError('a new message before the last one ended')
      return
    }
    if (opcode === OP_CONTINUATION && this.fragments === null) {
      this.protocolError('a continuation frame without a message')
      return
    }
    if (fin && this.fragments === null) {
      this.message(opcode === OP_BINARY ? data.subarray(start, end) : data.toString('utf8', start, end))
      return
    }
    if (this.fragments === null) {
      this.fragments = []
      this.fragmentsBinary = opcode === OP_BINARY
    }
    this.fragmentBytes += end - start
    if (this.fragmentBytes > MAX_MESSAGE_BYTES) {
      this.protocolError('a message larger than 16 MiB', 1009)
      return
    }
    this.fragments.push(Buffer.from(data.subarray(start, end)))
    if (!fin) return
    const whole = Buffer.concat(this.fragments)
    this.fragments = null
    this.fragmentBytes = 0
    this.message(this.fragmentsBinary ? whole : whole.toString('utf8'))
  }

  private control (opcode: number, data: Buffer, start: number, end: number): void {
    if (opcode === OP_PING) {
      this.writeFrame(OP_PONG, data.subarray(start, end))
    } else if (opcode === OP_CLOSE) {
      if (end - start >= 2) {
        this.closeCode = data.readUInt16BE(start)
        this.closeReason = data.toString('utf8', start + 2, end)
      } else {
        this.closeCode = 1005
      }
      this.readyState = CLOSING
      // Echo the close (RFC 6455 §5.5.1), then the server ends the TCP connection.
      this.sendClose(this.closeCode === 1005 ? 1000 : this.closeCode)
      this.end()
    } else if (opcode !== OP_PONG) {
      this.protocolError(`a control frame with opcode ${opcode}`)
    }
  }

  /** Closes with `code` after a frame this client cannot accept; returns 0 so parsing stops. */
  private protocolError (why: string, code = 1002): 0 {
    this.closeCode = code
    this.closeReason = why
    if (this.readyState === OPEN) {
      this.readyState = CLOSING
      this.sendClose(code)
    }
    this.end()
    this.readyState = CLOSED
    return 0
  }

  /** Ends the TCP connection, and drops it if the server does not close its side soon. */
  private end (): void {
    this.socket.end()
    this.socket.setTimeout(END_GRACE_MS, () => { this.socket.destroy() })
  }

  private sendClose (code: number): void {
    if (this.closeSent) return
    this.closeSent = true
    const body = Buffer.alloc(2)
    body.writeUInt16BE(code)
    this.writeFrame(OP_CLOSE, body)
  }

  /** Writes one final frame, masked as a client must. */
  private writeFrame (opcode: number, payload: Uint8Array): void {
    if (this.socket.destroyed) return
    const length = payload.length
    const header = length < 126 ? 2 : length < 65536 ? 4 : 10
    const frame = Buffer.allocUnsafe(header + 4 + length)
    frame[0] = 0x80 | opcode
    if (header === 2) {
      frame[1] = 0x80 | length
    } else if (header === 4) {
      frame[1] = 0x80 | 126
      frame.writeUInt16BE(length, 2)
    } else {
      frame[1] = 0x80 | 127
      frame.writeUInt32BE(0, 2)
      frame.writeUInt32BE(length, 6)
    }
    const key = maskKey()
    key.copy(frame, header)
    const body = header + 4
    for (let i = 0; i < length; i++) frame[body + i] = payload[i]! ^ key[i & 3]!
    this.bytesSent += frame.length
    this.socket.write(frame)
  }
}
