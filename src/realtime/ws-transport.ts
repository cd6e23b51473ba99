import type { Socket } from 'node:net'
import { WebSocket } from 'ws'
import type { PreparedFrame, Transport, TransportSink } from './transport.js'

/** A frame, header and payload in one buffer, shared by every socket it is written to. */
class WsFrame implements PreparedFrame {
  constructor (readonly bytes: Buffer) {}
  get byteLength (): number { return this.bytes.length }
}

/**
 * Frames a server message once: text as a text frame, bytes (MessagePack) as a binary frame.
 * The result is written as-is to every subscriber's TCP socket, so a fan-out to N sockets
 * costs one encode, one frame and N writes (ws's own `send` would re-frame for each socket).
 */
export function prepareWsFrame (message: string | Uint8Array): PreparedFrame {
  return new WsFrame(typeof message === 'string' ? textFrame(message) : binaryFrame(message))
}

/**
 * One unfragmented, unmasked text frame (RFC 6455 §5.2: FIN + opcode 1, then the payload
 * length in 7, 7+16 or 7+64 bits; servers never mask) in a single allocation: ws's
 * `Sender.frame` returns header and payload apart, and joining them cost a second copy and two
 * more buffers on every welcome, reply and publication.
 */
export function textFrame (text: string): Buffer {
  const length = Buffer.byteLength(text)
  const frame = frameWithHeader(0x81, length)
  frame.write(text, frame.length - length, 'utf8')
  return frame
}

/** The same for bytes: FIN + opcode 2, the payload copied in after the header. */
export function binaryFrame (bytes: Uint8Array): Buffer {
  const frame = frameWithHeader(0x82, bytes.byteLength)
  frame.set(bytes, frame.length - bytes.byteLength)
  return frame
}

/** A buffer for one frame: its header written, its `length` payload bytes left to fill. */
function frameWithHeader (first: number, length: number): Buffer {
  const headerLength = length < 126 ? 2 : length < 65536 ? 4 : 10
  const frame = Buffer.allocUnsafe(headerLength + length)
  frame[0] = first
  if (length < 126) {
    frame[1] = length
  } else if (length < 65536) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
    frame.writeUInt32BE(length >>> 0, 6)
  }
  return frame
}

/** ws keeps its TCP socket private; pre-framed writes (the same trick engine.io uses) need it. */
function rawSocket (ws: WebSocket): Socket | undefined {
  return (ws as unknown as { _socket?: Socket })._socket
}

/**
 * Adapts a ws WebSocket to the core's Transport. Writes within one event-loop tick are
 * coalesced: the socket is corked on the first write and uncorked on the next tick, so a
 * burst of publications to one client leaves in one writev syscall instead of one each.
 *
 * A class with prototype methods (and module-level callbacks below), not closures: idle
 * connections are most of a server's memory, and per-connection closures cost a context
 * and a function object each.
 */
class WsTransport implements Transport {
  corked = false
  /** An answer is queued: flushed in the first pass (see uncorkAll). */
  answering = false

  constructor (private readonly ws: WebSocket) {}

  write (frame: PreparedFrame, answer = false): void {
    if (this.ws.readyState !== WebSocket.OPEN) return
    const socket = rawSocket(this.ws)
    if (socket === undefined || socket.destroyed) return
    if (!this.corked) {
      this.corked = true
      socket.cork()
      corkedThisTick.push(this)
      if (corkedThisTick.length === 1) process.nextTick(uncorkAll)
    }
    if (answer) this.answering = true
    socket.write((frame as WsFrame).bytes)
  }

  uncork (): void {
    this.corked = false
    this.answering = false
    rawSocket(this.ws)?.uncork()
  }

  get bufferedAmount (): number {
    return this.ws.bufferedAmount
  }

  close (code: number, reason: string): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(code, reason)
  }

  terminate (): void {
    this.ws.terminate()
  }

  ping (): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.ping()
  }
}

/**
 * Transports corked during this tick, uncorked together by one callback: a fan-out to a
 * thousand sockets schedules one nextTick, not a thousand.
 */
let corkedThisTick: WsTransport[] = []

/**
 * Sockets with an answer first, then the rest. A publisher's reply is written after its
 * fan-out, so in order of corking it would leave after a thousand subscribers' writes; sent
 * first, it lets a pipelining client send its next commands while the fan-out is still being
 * written, and they arrive together, so more publications share each subscriber's write. In
 * the burst benchmark that is about a quarter fewer writev calls and a quarter more deliveries
 * per CPU-second (docs/performance.md).
 */
function uncorkAll (): void {
  const transports = corkedThisTick
  corkedThisTick = []
  for (const transport of transports) if (transport.answering) flush(transport)
  for (const transport of transports) if (transport.corked) flush(transport)
}

function flush (transport: WsTransport): void {
  // One socket failing to flush must not leave the others corked (or reach the top level).
  try {
    transport.uncork()
  } catch {
    transport.terminate()
  }
}

export function wsTransport (ws: WebSocket): Transport {
  return new WsTransport(ws)
}

const kSink = Symbol('switchboard.sink')

function sinkOf (ws: WebSocket): TransportSink {
  return (ws as WebSocket & { [kSink]: TransportSink })[kSink]
}

// Shared listeners: ws calls them with `this` set to the socket, which carries its sink.
function onMessage (this: WebSocket, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
  // ws hands a Buffer unless binaryType was changed, which nothing here does.
  const bytes = data as Buffer
  if (isBinary) sinkOf(this).handleBinary(bytes)
  else sinkOf(this).handleText(bytes.toString())
}
function onPong (this: WebSocket): void { sinkOf(this).handlePong() }
function onClose (this: WebSocket, code: number): void { sinkOf(this).handleClose(code) }
function onError (this: WebSocket, err: Error): void { sinkOf(this).handleError(err) }

/**
 * Feeds a ws WebSocket's events into the core. Call it synchronously right after the upgrade,
 * before any await, so no early frame is missed.
 */
export function attachWsEvents (ws: WebSocket, sink: TransportSink): void {
  (ws as WebSocket & { [kSink]: TransportSink })[kSink] = sink
  ws.on('message', onMessage)
  ws.on('pong', onPong)
  ws.on('close', onClose)
  ws.on('error', onError)
}
