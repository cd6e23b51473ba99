import { io, type Socket } from 'socket.io-client'
import { CliError } from '../../src/cli/api.js'
import { COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS, MAX_IN_FLIGHT, PublishError, type AdapterFactory, type BenchConnection, type CloseInfo } from '../../src/cli/bench/adapter.js'

/**
 * `switchboard bench --target bench/peers/socketio-adapter.ts`: drives the Socket.IO peer
 * (socketio.ts) with the official client, websocket transport only, no reconnection (a
 * dropped connection must show in the report, not be papered over), and the same 64
 * acknowledged publishes in flight per connection as the other adapters.
 */

/** What the client keeps under its public surface: the engine's websocket, for bufferedAmount. */
interface EngineInternals { transport?: { ws?: { bufferedAmount?: number } } }

class SocketIoConnection implements BenchConnection {
  private closeHandler: ((info: CloseInfo) => void) | undefined
  private closing = false

  constructor (private readonly socket: Socket) {
    socket.on('disconnect', (reason) => {
      if (!this.closing) this.closeHandler?.({ code: 1006, reason })
    })
  }

  get bufferedAmount (): number {
    return (this.socket.io.engine as unknown as EngineInternals).transport?.ws?.bufferedAmount ?? 0
  }

  onMessage (handler: (room: string, payload: string) => void): void {
    this.socket.on('msg', handler)
  }

  onClose (handler: (info: CloseInfo) => void): void { this.closeHandler = handler }

  subscribe (room: string): Promise<void> {
    return this.emit('sub', [room], COMMAND_TIMEOUT_MS)
  }

  publish (room: string, payload: string): Promise<void> {
    return this.emit('pub', [room, payload])
  }

  /** An acknowledged emit; with `timeoutMs` (as the other adapters' subscribe), a missing ack fails it. */
  private emit (event: 'sub' | 'pub', args: string[], timeoutMs?: number): Promise<void> {
    if (!this.socket.connected) return Promise.reject(new PublishError('closed', 'the connection is closed'))
    return new Promise((resolve, reject) => {
      // The ack callback never fires once the socket is gone: settle on disconnect instead.
      const gone = (): void => { clearTimeout(timer); reject(new PublishError('closed', 'the connection closed')) }
      const timer = timeoutMs === undefined
        ? undefined
        : setTimeout(() => { this.socket.off('disconnect', gone); reject(new PublishError('timeout', `no reply within ${timeoutMs} ms`)) }, timeoutMs)
      this.socket.once('disconnect', gone)
      this.socket.emit(event, ...args, () => {
        clearTimeout(timer)
        this.socket.off('disconnect', gone)
        resolve()
      })
    })
  }

  close (): Promise<void> {
    this.closing = true
    this.socket.disconnect()
    return Promise.resolve()
  }
}

const socketIoAdapter: AdapterFactory = (options) => ({
  name: 'socketio',
  maxInFlight: MAX_IN_FLIGHT,
  connect (index) {
    const socket = io(options.url, { transports: ['websocket'], reconnection: false, forceNew: true, timeout: CONNECT_TIMEOUT_MS })
    return new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(new SocketIoConnection(socket)))
      socket.once('connect_error', (err) => {
        socket.disconnect()
        reject(new CliError(`connection ${index + 1}: cannot reach the Socket.IO peer at ${options.url} (${err.message})`))
      })
    })
  }
})

export default socketIoAdapter
