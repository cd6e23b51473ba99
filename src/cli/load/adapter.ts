import type { Api } from '../api.js'

/**
 * Publishes one connection keeps awaiting a reply: Switchboard refuses more than 64
 * (docs/protocol.md, Limits), and every adapter keeps the same number, so the generator does
 * the same work whichever server it drives.
 */
export const MAX_IN_FLIGHT = 64
/** How long opening a connection, or a subscribe's reply, may take before the run fails. */
export const CONNECT_TIMEOUT_MS = 15_000
export const COMMAND_TIMEOUT_MS = 15_000

/**
 * What `switchboard load` needs from a server: the load generator drives any real-time
 * server through this small interface. Switchboard's adapter speaks protocol v1 over the
 * generator's own WebSocket client (raw-websocket.ts); the comparison peers of the benchmark
 * suite (a frame-once `ws` hub, a naive `ws` hub, Socket.IO 4) each bring one, registered
 * under the name `--target` selects.
 */
export interface LoadAdapter {
  /** Shown in the report (`target`). */
  readonly name: string
  /**
   * Whether it can publish and deliver bytes (`--binary`: payloads are a `Uint8Array` both
   * ways). Without it, payloads are strings only and `--binary` is refused.
   */
  readonly binary?: boolean
  /**
   * Most publishes one connection may have sent and not yet seen acknowledged; the engine
   * holds further publishes until acknowledgements come back. Undefined: no limit (a protocol
   * without acknowledgements, whose `publish` resolves at once).
   */
  readonly maxInFlight?: number
  /**
   * Runs once before any connection: check credentials, make sure the rooms exist (creating
   * the missing ones when `create` is set), refresh a session that would expire mid-run.
   * Throw a CliError with a clear message when the run cannot work.
   */
  prepare?(rooms: string[], options: { create: boolean, runMs: number }): Promise<void>
  /**
   * Opens connection `index` (subscribers are 0…N-1, publishers N…N+P-1) and resolves once it
   * is ready for commands. Rejects with a CliError saying what to change when the server
   * refuses it (a limit, a credential). `role` lets an adapter send publishers elsewhere
   * (`--publisher-url`: publishers on one node, subscribers on another).
   */
  connect(index: number, role: 'subscriber' | 'publisher'): Promise<LoadConnection>
  /**
   * Once everything is connected, before the first publish: what in this load the server
   * will refuse or throttle (e.g. a per-connection message rate above its limit), as lines
   * that name the setting to change. Empty when nothing is expected to go wrong.
   */
  checkLoad?(load: LoadShape): string[]
}

export interface LoadShape {
  mode: 'rate' | 'burst'
  /** Messages per second each publisher sends (rate mode; 0 in burst mode). */
  ratePerPublisher: number
  /** Messages each publisher sends in the whole run (at most). */
  messagesPerPublisher: number
  /** Payload bytes. */
  size: number
  /** Payloads are bytes (`--binary`), not text. */
  binary: boolean
}

/**
 * One publication's payload: text, or bytes with `--binary`. A delivery hands back the same
 * kind it was published as; delivered bytes may be a view valid only during the handler's
 * call (the generator reads them at once).
 */
export type Payload = string | Uint8Array

export interface LoadConnection {
  /** Resolves once publications to `room` sent from now on will reach this connection. */
  subscribe(room: string): Promise<void>
  /**
   * Sends one publication. Resolves when the server acknowledged it (or at once for a
   * protocol without acknowledgements); rejects with a PublishError when it was refused.
   */
  publish(room: string, payload: Payload): Promise<void>
  /** The one handler for publications arriving on this connection (payload as published). */
  onMessage(handler: (room: string, payload: Payload) => void): void
  /** Called once when the connection ends without close() having been called. */
  onClose(handler: (info: CloseInfo) => void): void
  /** Bytes written but not yet handed to the network: burst mode waits while it is high. */
  readonly bufferedAmount: number
  /**
   * Bytes this connection has read from the server and written to it so far, WebSocket
   * frames with their headers (raw-websocket.ts counts them): the report's bytes on the wire
   * per delivery. Undefined when the adapter cannot count them.
   */
  readonly bytesReceived?: number
  readonly bytesSent?: number
  /** Closes the connection; resolves when it is gone (or after a short grace, forcibly). */
  close(): Promise<void>
}

export interface CloseInfo {
  code: number
  reason: string
  /** What to change so that it does not happen, e.g. a server setting to raise. */
  hint?: string
}

/** A publish the server refused; `code` groups them in the report. */
export class PublishError extends Error {
  override name = 'PublishError'
  constructor (readonly code: string, message: string, readonly hint?: string) {
    super(message)
  }
}

export interface AdapterOptions {
  /** Base URL of the server (http: or https:), already checked against --allow-remote. */
  url: string
  /** `--publisher-url`: where publishers connect (another node of the same cluster); default `url`. */
  publisherUrl?: string
  /** A user access token (`--token`, or the stored CLI session's). */
  token?: string
  /** `--api-key`. */
  apiKey?: string
  /** The stored CLI session, for REST calls and a refresh; absent with --token / --api-key. */
  api?: Api
  /**
   * `--codec`: the wire encoding of a server that offers several (Switchboard: `json`, the
   * default, or `msgpack`). An adapter that knows no codecs refuses one.
   */
  codec?: string
  /** `--binary`: payloads are bytes; connections must be able to send and receive them. */
  binary?: boolean
}

export type AdapterFactory = (options: AdapterOptions) => LoadAdapter | Promise<LoadAdapter>

