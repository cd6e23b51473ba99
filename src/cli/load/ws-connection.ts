import { PublishError, type LoadConnection, type CloseInfo, type Payload } from './adapter.js'
import { CLOSED, OPEN, type RawWebSocket } from './raw-websocket.js'

/**
 * What every adapter connection over the generator's WebSocket client shares (Switchboard's,
 * and the benchmark suite's for the `ws` hubs and Socket.IO): numbered commands awaiting a reply, one
 * delivery handler, close reporting, and a close that terminates after a short grace. A
 * protocol brings `receive` (which settles replies through `settle`) and its subscribe and
 * publish frames.
 */

const CLOSE_GRACE_MS = 2_000

export abstract class WsLoadConnection implements LoadConnection {
  protected nextId = 1
  protected handler: (room: string, payload: Payload) => void = () => {}
  private readonly waiting = new Map<number, { resolve: (result: unknown) => void, reject: (err: PublishError) => void }>()
  private closeHandler: ((info: CloseInfo) => void) | undefined
  /** Set by close(): settles once the connection is gone (every call gets the same one). */
  private closing: Promise<void> | undefined
  /** Settles `closing`. */
  private gone: (() => void) | undefined

  /** `hint` names what to change for a close code the server chose (e.g. a limit to raise). */
  constructor (protected readonly socket: RawWebSocket, hint: (code: number) => string | undefined = () => undefined) {
    socket.onMessage((message) => {
      if (typeof message === 'string') this.receive(message)
      else this.receiveBinary(message)
    })
    socket.onClose((code, reason) => {
      for (const waiter of this.waiting.values()) waiter.reject(new PublishError('closed', `the connection closed (${code})`))
      this.waiting.clear()
      this.gone?.()
      if (this.closing === undefined) {
        const text = hint(code)
        this.closeHandler?.({ code, reason, ...(text === undefined ? {} : { hint: text }) })
      }
    })
  }

  abstract subscribe (room: string): Promise<void>
  abstract publish (room: string, payload: Payload): Promise<void>
  /** One text frame from the server. */
  protected abstract receive (text: string): void
  /**
   * One binary message from the server (only on a socket opened with `binary: true`: others
   * close on one), its bytes valid during the call.
   */
  protected receiveBinary (_bytes: Buffer): void {}

  get bufferedAmount (): number {
    return this.socket.bufferedAmount
  }

  get bytesReceived (): number {
    return this.socket.bytesReceived
  }

  get bytesSent (): number {
    return this.socket.bytesSent
  }

  onMessage (handler: (room: string, payload: Payload) => void): void {
    this.handler = handler
  }

  onClose (handler: (info: CloseInfo) => void): void {
    this.closeHandler = handler
  }

  /**
   * Sends a frame (text, or one or more binary messages sent in order) whose id is
   * `this.nextId` (already written into it); resolves with its reply.
   */
  protected command (frame: string | Uint8Array | Array<string | Uint8Array>, timeoutMs?: number): Promise<unknown> {
    if (this.socket.readyState !== OPEN) return Promise.reject(new PublishError('closed', 'the connection is closed'))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiting.delete(id)
          reject(new PublishError('timeout', `no reply within ${timeoutMs} ms`))
        }, timeoutMs)
      }
      this.waiting.set(id, {
        resolve: (result) => { clearTimeout(timer); resolve(result) },
        reject: (err) => { clearTimeout(timer); reject(err) }
      })
      for (const part of Array.isArray(frame) ? frame : [frame]) {
        if (typeof part === 'string') this.socket.send(part)
        else this.socket.sendBinary(part)
      }
    })
  }

  /** The reply to command `id` arrived: a result, or the server's refusal. Unknown ids are ignored. */
  protected settle (id: unknown, outcome: { result: unknown } | { error: PublishError }): void {
    const waiter = typeof id === 'number' ? this.waiting.get(id) : undefined
    if (waiter === undefined) return
    this.waiting.delete(id as number)
    if ('error' in outcome) waiter.reject(outcome.error)
    else waiter.resolve(outcome.result)
  }

  close (): Promise<void> {
    this.closing ??= this.socket.readyState === CLOSED
      ? Promise.resolve()
      : new Promise(resolve => {
        const timer = setTimeout(() => { this.socket.terminate() }, CLOSE_GRACE_MS)
        this.gone = () => { clearTimeout(timer); resolve() }
        this.socket.close(1000)
      })
    return this.closing
  }
}
