import type { Socket } from 'node:net'
import type { IncomingMessage } from 'node:http'
import * as ws from 'ws'
import { WebSocket } from 'ws'
import { binaryMsgFrame } from './hub-frames.js'
import { messageFrame, type Broadcast } from './hub-protocol.js'

/**
 * The frame-once broadcast, the practical ceiling of a ws-based stack: each broadcast is
 * serialised and framed once (ws's own `Sender.frame`; bytes in a binary frame, opcode 2,
 * anything else in a text frame), and the same bytes are written to
 * every subscriber's TCP socket. Sockets written in one event-loop turn are corked and
 * uncorked together in `setImmediate`, so the publications that arrive in one read from the
 * publisher leave in one write per subscriber (BAR.md: coalescing is what multiplies
 * throughput, not serialising once).
 *
 * Writing to the raw socket beside ws is safe because permessage-deflate is off: ws's Sender
 * then writes every frame synchronously and in full, so frames never interleave.
 */

interface FrameOptions { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }
/** `Sender.frame` is public in ws (lib/sender.js) but missing from @types/ws. */
const Sender = (ws as unknown as { Sender: { frame (data: Buffer, options: FrameOptions): Buffer[] } }).Sender
const TEXT = { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }
const BINARY = { ...TEXT, opcode: 2 }

/** The TCP socket under each WebSocket: ws keeps it private, the upgrade request has it. */
const sockets = new WeakMap<WebSocket, Socket>()
const corked = new Set<Socket>()
let flushPending = false

function flush (): void {
  flushPending = false
  for (const socket of corked) socket.uncork()
  corked.clear()
}

export const frameOnceBroadcast: Broadcast = (subscribers, room, data) => {
  const [header, payload] = Buffer.isBuffer(data)
    ? Sender.frame(binaryMsgFrame(room, data), BINARY)
    : Sender.frame(Buffer.from(messageFrame(room, data)), TEXT)
  for (const client of subscribers) {
    const socket = sockets.get(client)
    if (socket === undefined || client.readyState !== WebSocket.OPEN) continue
    if (!corked.has(socket)) {
      socket.cork()
      corked.add(socket)
    }
    socket.write(header!)
    if (payload !== undefined) socket.write(payload)
  }
  if (!flushPending && corked.size > 0) {
    flushPending = true
    setImmediate(flush)
  }
}

/** The hub's `connection` listener: remembers the socket the broadcast writes to. */
export function trackSocket (client: WebSocket, request: IncomingMessage): void {
  sockets.set(client, request.socket)
}
