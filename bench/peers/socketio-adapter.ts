import { CliError } from '../../src/cli/api.js'
import { COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS, MAX_IN_FLIGHT, type AdapterFactory, type Payload } from '../../src/cli/load/adapter.js'
import { connectRawWebSocket, HandshakeError, webSocketUrl, type RawWebSocket } from '../../src/cli/load/raw-websocket.js'
import { WsLoadConnection } from '../../src/cli/load/ws-connection.js'

/**
 * `switchboard load --target bench/peers/socketio-adapter.ts`: drives the Socket.IO peer
 * (socketio.ts) over the websocket transport, speaking Engine.IO 4 and Socket.IO 5 itself on
 * the generator's own WebSocket client, as the other adapters do: the official client's
 * parsing and events cost the generator more per delivery than the others' (and the latency
 * scenarios read a thousand deliveries in a row), which would have charged the generator's
 * cost to Socket.IO's latency. No reconnection (a dropped connection must show in the
 * report), and the same 64 acknowledged publishes in flight per connection.
 *
 * What goes over the wire, one Engine.IO packet per WebSocket message, main namespace:
 *   server → client  0{"sid":…,"pingInterval":…}   Engine.IO open
 *   client → server  40                              Socket.IO connect
 *   server → client  40{"sid":…}                     connected (44{…}: refused)
 *   client → server  42<id>["sub","room"]            an event with an acknowledgement id
 *   server → client  43<id>[]                        its acknowledgement
 *   server → client  42["msg","room","payload"]      a publication
 *   server → client  2, client → server 3            Engine.IO ping and pong
 *
 * With `--binary` the payload is a Buffer: an event carrying one is a binary event, its bytes
 * replaced by a placeholder and sent in a binary WebSocket message right after it:
 *   client → server  451-<id>["pub","room",{"_placeholder":true,"num":0}]  then the bytes
 *   server → client  451-["msg","room",{"_placeholder":true,"num":0}]      then the bytes
 */

/** Engine.IO 4 over the websocket transport from the start (no polling). */
const ENDPOINT = '/socket.io/?EIO=4&transport=websocket'
const MESSAGE_PREFIX = '42["msg","'
const ROOM_END = '","'
const BINARY_MESSAGE_PREFIX = '451-["msg","'
const PLACEHOLDER = '{"_placeholder":true,"num":0}'
const ACK = /^43(\d+)\[/

class SocketIoConnection extends WsLoadConnection {
  /** The room of a binary `msg` whose bytes come in the next binary message. */
  private awaiting: string | undefined

  async subscribe (room: string): Promise<void> {
    await this.command(`42${this.nextId}["sub",${JSON.stringify(room)}]`, COMMAND_TIMEOUT_MS)
  }

  async publish (room: string, payload: Payload): Promise<void> {
    await this.command(typeof payload === 'string'
      ? `42${this.nextId}["pub",${JSON.stringify(room)},${JSON.stringify(payload)}]`
      : [`451-${this.nextId}["pub",${JSON.stringify(room)},${PLACEHOLDER}]`, payload])
  }

  protected override receiveBinary (bytes: Buffer): void {
    const room = this.awaiting
    this.awaiting = undefined
    if (room !== undefined) this.handler(room, bytes)
  }

  protected receive (text: string): void {
    if (text.startsWith(BINARY_MESSAGE_PREFIX)) {
      const roomEnd = text.indexOf('",', BINARY_MESSAGE_PREFIX.length)
      if (roomEnd > 0) this.awaiting = text.slice(BINARY_MESSAGE_PREFIX.length, roomEnd)
      return
    }
    // The generator's payloads hold no escapes: a `msg` event is cut without JSON.parse, as the
    // other adapters do, so every server costs the generator the same per delivery.
    if (text.startsWith(MESSAGE_PREFIX)) {
      const roomEnd = text.indexOf(ROOM_END, MESSAGE_PREFIX.length)
      const end = text.lastIndexOf('"]')
      if (roomEnd > 0 && end >= roomEnd + ROOM_END.length) {
        this.handler(text.slice(MESSAGE_PREFIX.length, roomEnd), text.slice(roomEnd + ROOM_END.length, end))
      }
      return
    }
    if (text === '2') {
      this.socket.send('3')
      return
    }
    const ack = ACK.exec(text)
    if (ack !== null) this.settle(Number(ack[1]), { result: undefined })
  }
}

/** Opens the Engine.IO session and connects to the main namespace; resolves once connected. */
function join (socket: RawWebSocket, index: number, url: string): Promise<SocketIoConnection> {
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (why: string): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.terminate()
      reject(new CliError(`connection ${index + 1}: the Socket.IO peer at ${url} ${why}`))
    }
    const timer = setTimeout(() => fail(`did not connect within ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS)
    socket.onClose((code) => fail(`closed the connection (${code}) before it was connected`))
    socket.onMessage((text) => {
      if (settled) return
      if (typeof text !== 'string') {
        fail('sent a binary message before it was connected')
      } else if (text.startsWith('0{')) {
        socket.send('40')
      } else if (text.startsWith('40')) {
        settled = true
        clearTimeout(timer)
        resolve(new SocketIoConnection(socket))
      } else if (text === '2') {
        socket.send('3')
      } else {
        fail(`answered the connect with ${text.slice(0, 200)}`)
      }
    })
  })
}

const socketIoAdapter: AdapterFactory = (options) => {
  if (options.codec !== undefined) throw new CliError(`--codec: the Socket.IO peer speaks Socket.IO's own protocol; drop --codec ${options.codec}`, 2)
  const binary = options.binary === true
  const urls = { subscriber: webSocketUrl(options.url, ENDPOINT), publisher: webSocketUrl(options.publisherUrl ?? options.url, ENDPOINT) }
  return {
    name: 'socketio',
    maxInFlight: MAX_IN_FLIGHT,
    binary: true,
    async connect (index, role) {
      let socket: RawWebSocket
      try {
        socket = await connectRawWebSocket(urls[role], { timeoutMs: CONNECT_TIMEOUT_MS, binary })
      } catch (err) {
        const { status, code } = err instanceof HandshakeError ? err.details : {}
        throw new CliError(`connection ${index + 1}: cannot reach the Socket.IO peer at ${options.url} (${status === undefined ? code ?? (err as Error).message : `HTTP ${status}`})`)
      }
      return await join(socket, index, options.url)
    }
  }
}

export default socketIoAdapter
