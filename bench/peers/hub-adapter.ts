import { WebSocket } from 'ws'
import { CliError } from '../../src/cli/api.js'
import { COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS, MAX_IN_FLIGHT, type AdapterFactory } from '../../src/cli/bench/adapter.js'
import { WsBenchConnection } from '../../src/cli/bench/ws-connection.js'

/**
 * `switchboard bench --target bench/peers/hub-adapter.ts`: drives the two `ws` hub peers
 * (hub-protocol.ts) the way switchboard-adapter.ts drives Switchboard: raw `ws` through the same
 * connection base, frames built by hand, a fast path for `msg` frames, and the same 64
 * publishes in flight per connection, so the generator does the same work for every server.
 */

const MESSAGE_PREFIX = '{"t":"msg","room":"'
const DATA_FIELD = ',"data":"'

class HubConnection extends WsBenchConnection {
  async subscribe (room: string): Promise<void> {
    await this.command(`{"t":"sub","id":${this.nextId},"room":${JSON.stringify(room)}}`, COMMAND_TIMEOUT_MS)
  }

  async publish (room: string, payload: string): Promise<void> {
    await this.command(`{"t":"pub","id":${this.nextId},"room":${JSON.stringify(room)},"data":${JSON.stringify(payload)}}`)
  }

  protected receive (text: string): void {
    // The bench payloads hold no escapes: a `msg` frame is cut without JSON.parse, as the
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
  const wsUrl = (base: string): string => {
    const url = new URL(base)
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    return url.href
  }
  const urls = { subscriber: wsUrl(options.url), publisher: wsUrl(options.publisherUrl ?? options.url) }
  return {
    name: 'ws-hub',
    maxInFlight: MAX_IN_FLIGHT,
    connect (index, role) {
      // A token (--token) goes in the header a JWT-checking hub reads; the plain hubs ignore it.
      const headers = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }
      const socket = new WebSocket(urls[role], { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: CONNECT_TIMEOUT_MS, headers })
      return new Promise((resolve, reject) => {
        socket.once('open', () => resolve(new HubConnection(socket)))
        // A JWT-checking hub answers a bad token with 401: a refusal, not an unreachable hub.
        socket.once('unexpected-response', (_request, response) => {
          socket.terminate()
          reject(new CliError(`connection ${index + 1}: the hub at ${options.url} refused the handshake with HTTP ${response.statusCode ?? '?'}${response.statusCode === 401 ? ' (a wrong or expired --token)' : ''}`))
        })
        socket.once('error', (err: NodeJS.ErrnoException) => {
          socket.terminate()
          reject(new CliError(`connection ${index + 1}: cannot reach the hub at ${options.url} (${err.code ?? err.message})`))
        })
      })
    }
  }
}

export default hubAdapter
