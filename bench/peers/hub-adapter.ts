import { CliError } from '../../src/cli/api.js'
import { COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS, MAX_IN_FLIGHT, type AdapterFactory, type Payload } from '../../src/cli/load/adapter.js'
import { connectRawWebSocket, HandshakeError, webSocketUrl } from '../../src/cli/load/raw-websocket.js'
import { WsLoadConnection } from '../../src/cli/load/ws-connection.js'
import { binaryPubFrame, parseBinaryMsg } from './hub-frames.js'

/**
 * `switchboard load --target bench/peers/hub-adapter.ts`: drives the two `ws` hub peers
 * (hub-protocol.ts) the way switchboard-adapter.ts drives Switchboard: the generator's own
 * WebSocket client (raw-websocket.ts) through the same connection base, frames built by hand,
 * a fast path for `msg` frames, and the same 64 publishes in flight per connection, so the
 * generator does the same work for every server. With `--binary`, bytes go in the hubs'
 * binary frames (hub-frames.ts).
 */

const MESSAGE_PREFIX = '{"t":"msg","room":"'
const DATA_FIELD = ',"data":"'

class HubConnection extends WsLoadConnection {
  async subscribe (room: string): Promise<void> {
    await this.command(`{"t":"sub","id":${this.nextId},"room":${JSON.stringify(room)}}`, COMMAND_TIMEOUT_MS)
  }

  async publish (room: string, payload: Payload): Promise<void> {
    await this.command(typeof payload === 'string'
      ? `{"t":"pub","id":${this.nextId},"room":${JSON.stringify(room)},"data":${JSON.stringify(payload)}}`
      : binaryPubFrame(this.nextId, room, payload))
  }

  protected override receiveBinary (bytes: Buffer): void {
    const msg = parseBinaryMsg(bytes)
    if (msg !== null) this.handler(msg.room, msg.data)
  }

  protected receive (text: string): void {
    // The generator's payloads hold no escapes: a `msg` frame is cut without JSON.parse, as the
    // Switchboard adapter does, so both cost the generator the same per delivery.
    if (text.startsWith(MESSAGE_PREFIX)) {
      const roomEnd = text.indexOf('"', MESSAGE_PREFIX.length)
      const dataAt = text.indexOf(DATA_FIELD, roomEnd)
      const end = text.lastIndexOf('"')
      if (roomEnd > 0 && dataAt > 0 && end >= dataAt + DATA_FIELD.length) {
        this.handler(text.slice(MESSAGE_PREFIX.length, roomEnd), text.slice(dataAt + DATA_FIELD.length, end))
      }
      return
    }
    let frame: { t?: unknown, id?: unknown }
    try {
      frame = JSON.parse(text) as { t?: unknown, id?: unknown }
    } catch {
      return
    }
    if (frame.t === 'ok') this.settle(frame.id, { result: undefined })
  }
}

const hubAdapter: AdapterFactory = (options) => {
  if (options.codec !== undefined) throw new CliError(`--codec: the ws hubs speak one protocol (JSON text, bytes in binary frames); drop --codec ${options.codec}`, 2)
  const binary = options.binary === true
  const urls = { subscriber: webSocketUrl(options.url, '/'), publisher: webSocketUrl(options.publisherUrl ?? options.url, '/') }
  return {
    name: 'ws-hub',
    maxInFlight: MAX_IN_FLIGHT,
    binary: true,
    async connect (index, role) {
      // A token (--token) goes in the header a JWT-checking hub reads; the plain hubs ignore it.
      const headers: Record<string, string> = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }
      try {
        return new HubConnection(await connectRawWebSocket(urls[role], { headers, timeoutMs: CONNECT_TIMEOUT_MS, binary }))
      } catch (err) {
        const { status, code } = err instanceof HandshakeError ? err.details : {}
        // A JWT-checking hub answers a bad token with 401: a refusal, not an unreachable hub.
        if (status !== undefined) throw new CliError(`connection ${index + 1}: the hub at ${options.url} refused the handshake with HTTP ${status}${status === 401 ? ' (a wrong or expired --token)' : ''}`)
        throw new CliError(`connection ${index + 1}: cannot reach the hub at ${options.url} (${code ?? (err as Error).message})`)
      }
    }
  }
}

export default hubAdapter
