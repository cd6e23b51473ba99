import type { Socket } from 'node:net'
import { WebSocket } from 'ws'
import type { PreparedFrame, Transport, TransportSink } from './transport.js'
import { negotiatedDeflate, releaseInflaterBetweenMessages, type WsDeflate } from './ws-deflate.js'
import type { WsFrame } from './ws-frames.js'

/**
 * An empty ping (RFC 6455 §5.5.2: FIN + opcode 9, no payload, unmasked as a server's frames
 * are), shared by every socket: ws's own `ping()` frames each one anew, a header buffer, an
 * options object and a two-buffer writev for an empty payload, once per connection per
 * heartbeat; this is one write of the same two bytes.
 */
const PING_FRAME = Buffer.from([0x89, 0x00])

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

  /**
   * @param deflate the server's compression when this connection negotiated permessage-deflate
   * (its frames at or above the threshold go compressed), else null.
   */
  constructor (private readonly ws: WebSocket, private readonly deflate: WsDeflate | null) {}

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
    socket.write(this.deflate === null ? (frame as WsFrame).bytes : this.deflate.bytesFor(frame as WsFrame))
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
    if (this.ws.readyState !== WebSocket.OPEN) return
    const socket = rawSocket(this.ws)
    // A control frame may go between any two frames (§5.5), so it needs no place in ws's
    // queue of frames waiting for compression; fan-out frames bypass that queue already.
    if (socket !== undefined && !socket.destroyed) socket.write(PING_FRAME)
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

/**
 * The transport of one upgraded socket. `deflate`: the server's compression (WS_COMPRESSION=on),
 * used when this socket negotiated it; null when compression is off.
 */
export function wsTransport (ws: WebSocket, deflate: WsDeflate | null = null): Transport {
  const socket = rawSocket(ws)
  if (socket !== undefined) releaseClearedTimeout(socket)
  const compressing = deflate !== null && negotiatedDeflate(ws)
  if (compressing) releaseInflaterBetweenMessages(ws)
  return new WsTransport(ws, compressing ? deflate : null)
}

/**
 * The HTTP server armed an inactivity timer on the socket (HTTP_CONNECTION_TIMEOUT_MS) and ws
 * cleared it at the upgrade with `setTimeout(0)`, which leaves the cleared Timeout on the
 * socket for its whole life (net.Socket keeps it under a private symbol, and refreshes it on
 * every read and write for nothing). Dropped here: an idle connection is mostly such leftovers.
 * Only a timer already cleared is dropped (its `_idleTimeout` is -1), so an armed one stays.
 */
function releaseClearedTimeout (socket: Socket): void {
  const slots = socket as unknown as Record<symbol, { _idleTimeout?: number } | null | undefined>
  const key = Object.getOwnPropertySymbols(socket).find(s => s.description === 'timeout')
  if (key !== undefined && slots[key]?._idleTimeout === -1) slots[key] = null
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
