import type { IncomingMessage } from 'node:http'
import { createVerifier } from 'fast-jwt'
import { WebSocketServer, type WebSocket } from 'ws'
import { parseBinaryPub } from './hub-frames.js'

/**
 * The minimal protocol both `ws` hub peers speak (JSON text frames), and the room index they
 * share, so the two differ only in how a broadcast reaches the sockets.
 *
 * Client → hub:  {"t":"sub","id":1,"room":"r"}            reply {"t":"ok","id":1}
 *                {"t":"pub","id":2,"room":"r","data":"…"}  reply {"t":"ok","id":2}
 * Hub → client:  {"t":"msg","room":"r","data":"…"}
 *
 * Bytes are published and delivered in binary frames (hub-frames.ts): a binary `pub` is
 * answered with the same `ok`, and its subscribers get a binary `msg`.
 *
 * A publication reaches every subscriber of the room, the publisher too if it subscribed
 * (as in Switchboard, docs/protocol.md "publish"); the reply is written after the fan-out, so
 * an acknowledged publish has been handed to every subscriber's socket, as Switchboard's reply
 * comes after its fan-out. No authentication and no schema validation: these peers are the
 * stack's floor, not a product (docs/performance.md says so next to the numbers) — except that,
 * given JWT_SECRET, a hub verifies an `Authorization: Bearer` JWT before each upgrade (401
 * otherwise) with the library and the options Switchboard uses (`JWT_ISSUER`, default
 * `switchboard`): the handshake scenario's reference for the cost of that check alone.
 */

interface HubCommand { t?: unknown, id?: unknown, room?: unknown, data?: unknown }

/** The `msg` frame of a publication, serialised once per broadcast. */
export function messageFrame (room: string, data: unknown): string {
  return `{"t":"msg","room":${JSON.stringify(room)},"data":${JSON.stringify(data)}}`
}

function okFrame (id: unknown): string {
  return `{"t":"ok","id":${JSON.stringify(id)}}`
}

/** Delivers one publication to the room's sockets on this process: bytes (a Buffer) in a binary `msg`, anything else in a JSON one. */
export type Broadcast = (subscribers: Set<WebSocket>, room: string, data: unknown) => void

/**
 * Carries a publication to every hub process (scenario 6's two hubs through Redis): the hub
 * replies once `publish` settles, and each process hands what it receives to `deliver`.
 */
export interface Relay {
  publish(room: string, data: unknown): Promise<void>
  start(deliver: (room: string, data: unknown) => void): Promise<void>
}

/**
 * Starts a hub on `port` (0: any) and prints `ready <port>` once listening (and, with a
 * relay, subscribed): the runner waits for that line. `broadcast` delivers one publication to
 * the room's sockets; without a relay, a publish is broadcast here and answered at once.
 */
export function startHub (name: string, port: number, broadcast: Broadcast, relay?: Relay): WebSocketServer {
  const rooms = new Map<string, Set<WebSocket>>()
  const deliver = (room: string, data: unknown): void => {
    const members = rooms.get(room)
    if (members !== undefined) broadcast(members, room, data)
  }
  const verifyClient = jwtCheck(process.env.JWT_SECRET, process.env.JWT_ISSUER ?? 'switchboard')
  const wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate: false, ...(verifyClient === undefined ? {} : { verifyClient }) })
  wss.on('connection', (ws) => {
    const joined = new Set<string>()
    ws.on('message', (raw: Buffer, isBinary: boolean) => {
      if (isBinary) {
        const pub = parseBinaryPub(raw)
        if (pub === null) {
          ws.close(1007, 'not a binary pub')
          return
        }
        // The Redis relay carries JSON text (scenario 6 publishes text only).
        if (relay !== undefined) {
          ws.close(1003, 'the relay carries text only')
          return
        }
        deliver(pub.room, pub.data)
        ws.send(okFrame(pub.id))
        return
      }
      let command: HubCommand
      try {
        command = JSON.parse(raw.toString()) as HubCommand
      } catch {
        ws.close(1007, 'not JSON')
        return
      }
      if (typeof command.room !== 'string') return
      if (command.t === 'sub') {
        let members = rooms.get(command.room)
        if (members === undefined) rooms.set(command.room, members = new Set())
        members.add(ws)
        joined.add(command.room)
      } else if (command.t === 'pub') {
        if (relay !== undefined) {
          const id = command.id
          relay.publish(command.room, command.data).then(() => ws.send(okFrame(id)), () => ws.close(1011, 'relay failed'))
          return
        }
        deliver(command.room, command.data)
      } else {
        return
      }
      ws.send(okFrame(command.id))
    })
    ws.on('error', () => ws.terminate())
    // Empty rooms are deleted, as in Socket.IO's in-memory adapter and Switchboard.
    ws.on('close', () => {
      for (const room of joined) {
        const members = rooms.get(room)
        members?.delete(ws)
        if (members?.size === 0) rooms.delete(room)
      }
    })
  })
  const relayReady = relay === undefined ? Promise.resolve() : relay.start(deliver)
  wss.on('listening', () => {
    const address = wss.address()
    relayReady.then(
      () => process.stdout.write(`ready ${typeof address === 'object' && address !== null ? address.port : port} ${name}\n`),
      (err: unknown) => { process.stderr.write(`${name}: relay failed to start: ${String(err)}\n`); process.exit(1) }
    )
  })
  process.on('SIGTERM', () => { wss.close(); for (const ws of wss.clients) ws.terminate(); process.exit(0) })
  return wss
}

/** The port from `PORT` (the runner passes a free one). */
export function portFromEnv (): number {
  const port = Number(process.env.PORT ?? '0')
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT: not a port: ${process.env.PORT}`)
  return port
}

/** ws's `verifyClient` (sync form: false answers 401) checking a bearer JWT as plugins/auth.ts does. */
function jwtCheck (secret: string | undefined, issuer: string): ((info: { req: IncomingMessage }) => boolean) | undefined {
  if (secret === undefined || secret === '') return undefined
  const verify = createVerifier({
    key: secret,
    algorithms: ['HS256'],
    allowedIss: issuer,
    requiredClaims: ['exp', 'iat', 'iss', 'sub', 'jti', 'sid'],
    clockTolerance: 5000
  })
  return ({ req }) => {
    const match = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')
    if (match?.[1] === undefined) return false
    try {
      verify(match[1])
      return true
    } catch {
      return false
    }
  }
}
