import type { Socket } from 'node:net'
import * as wsModule from 'ws'
import { WebSocket } from 'ws'
import type { PreparedFrame, Transport, TransportEvents } from './transport.js'

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
 */
export function wsTransport (ws: WebSocket): Transport {
  let corked = false
  const uncork = (): void => {
    corked = false
    rawSocket(ws)?.uncork()
  }
  return {
    write (frame) {
      if (ws.readyState !== WebSocket.OPEN) return
      const socket = rawSocket(ws)
      if (socket === undefined || socket.destroyed) return
      if (!corked) {
        corked = true
        socket.cork()
        process.nextTick(uncork)
      }
      socket.write((frame as WsFrame).bytes)
    },
    get bufferedAmount () {
      return ws.bufferedAmount
    },
    close (code, reason) {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(code, reason)
    },
    terminate () {
      ws.terminate()
    },
    ping () {
      if (ws.readyState === WebSocket.OPEN) ws.ping()
    }
  }
}

/**
 * Feeds a ws WebSocket's events into the core. Call it synchronously right after the upgrade,
 * before any await, so no early frame is missed. Binary frames are not part of protocol v1.
 */
export function attachWsEvents (ws: WebSocket, events: TransportEvents & { onBinary(): void, onError(err: Error): void }): void {
  ws.on('message', (data, isBinary) => {
    if (isBinary) events.onBinary()
    else events.onText(data.toString())
  })
  ws.on('pong', () => events.onPong())
  ws.on('close', (code, reason) => events.onClose(code, reason.toString()))
  ws.on('error', err => events.onError(err))
}
