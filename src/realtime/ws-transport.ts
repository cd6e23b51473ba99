import type { Socket } from 'node:net'
import * as wsModule from 'ws'
import { WebSocket } from 'ws'
import type { PreparedFrame, Transport, TransportSink } from './transport.js'

/** ws's frame builder: exported at runtime, missing from @types/ws. */
const Sender = (wsModule as unknown as { Sender: { frame(data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean }): Buffer[] } }).Sender

/** A text frame, header and payload in one buffer, shared by every socket it is written to. */
class WsFrame implements PreparedFrame {
  constructor (readonly bytes: Buffer) {}
  get byteLength (): number { return this.bytes.length }
}

/**
 * Serialises and frames a server message once. The result is written as-is to every
 * subscriber's TCP socket, so a fan-out to N sockets costs one encode, one frame and N writes
 * (ws's own `send` would re-frame for each socket). Server frames are never masked.
 */
export function prepareWsFrame (text: string): PreparedFrame {
  const payload = Buffer.from(text)
  const [header] = Sender.frame(payload, { fin: true, opcode: 0x01, mask: false, readOnly: true })
  return new WsFrame(Buffer.concat([header!, payload]))
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
  private corked = false

  constructor (private readonly ws: WebSocket) {}

  write (frame: PreparedFrame): void {
    if (this.ws.readyState !== WebSocket.OPEN) return
    const socket = rawSocket(this.ws)
    if (socket === undefined || socket.destroyed) return
    if (!this.corked) {
      this.corked = true
      socket.cork()
      corkedThisTick.push(this)
      if (corkedThisTick.length === 1) process.nextTick(uncorkAll)
    }
    socket.write((frame as WsFrame).bytes)
  }

  uncork (): void {
    this.corked = false
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

function uncorkAll (): void {
  const transports = corkedThisTick
  corkedThisTick = []
  for (const transport of transports) {
    // One socket failing to flush must not leave the others corked (or reach the top level).
    try {
      transport.uncork()
    } catch {
      transport.terminate()
    }
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
  if (isBinary) sinkOf(this).handleBinary()
  else sinkOf(this).handleText(data.toString())
}
function onPong (this: WebSocket): void { sinkOf(this).handlePong() }
function onClose (this: WebSocket, code: number): void { sinkOf(this).handleClose(code) }
function onError (this: WebSocket, err: Error): void { sinkOf(this).handleError(err) }

/**
 * Feeds a ws WebSocket's events into the core. Call it synchronously right after the upgrade,
 * before any await, so no early frame is missed. Binary frames are not part of protocol v1.
 */
export function attachWsEvents (ws: WebSocket, sink: TransportSink): void {
  (ws as WebSocket & { [kSink]: TransportSink })[kSink] = sink
  ws.on('message', onMessage)
  ws.on('pong', onPong)
  ws.on('close', onClose)
  ws.on('error', onError)
}
