import { Packr, Unpackr } from 'msgpackr'
import { CliError } from '../api.js'
import { COMMAND_TIMEOUT_MS, CONNECT_TIMEOUT_MS, MAX_IN_FLIGHT, PublishError, type AdapterFactory, type AdapterOptions, type LoadAdapter, type LoadConnection, type LoadShape, type Payload } from './adapter.js'
import { connectRawWebSocket, HandshakeError, webSocketUrl, type RawMessage, type RawWebSocket } from './raw-websocket.js'
import { WsLoadConnection } from './ws-connection.js'

/**
 * Switchboard protocol v1 over the generator's own WebSocket client (raw-websocket.ts; not
 * the SDK: the generator's own cost must stay small), on either codec (docs/protocol.md):
 * `switchboard.v1`, JSON text frames built by hand, bytes as standard base64 beside
 * `"encoding":"base64"`; or `switchboard.v1.msgpack`, every frame one MessagePack map in a
 * binary frame, bytes as `bin`. Only what the run needs is read: `welcome`, `reply`, `error`
 * and `message`.
 */

export type Codec = 'json' | 'msgpack'
export const CODECS: readonly Codec[] = ['json', 'msgpack']
const SUBPROTOCOLS: Record<Codec, string> = { json: 'switchboard.v1', msgpack: 'switchboard.v1.msgpack' }
const SETTINGS = 'see docs/load-generator.md for the settings to run the server with'
/** How the server starts a `message` frame (src/realtime/connection.ts) and names its data. */
const MESSAGE_PREFIX = '{"type":"message","room":"'
const DATA_FIELD = ',"data":"'
/** Beside a `data` string that holds bytes, on the JSON codec. */
const BASE64_FIELD = '"encoding":"base64"'

/** Standard MessagePack only: no records or other extensions of msgpackr's own, which a server may refuse. */
const packr = new Packr({ useRecords: false, variableMapSize: true })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

const CLOSE_HINTS: Record<number, string> = {
  1012: 'the server is shutting down',
  4001: 'the access token expired: log in again (or pass a fresh --token) before a long run',
  4002: 'idle timeout: raise WS_IDLE_TIMEOUT_MS',
  4008: 'slow consumer: the load generator did not read fast enough; raise WS_MAX_BUFFERED_BYTES or spread subscribers over more generator processes',
  4029: `rate limited: raise WS_MESSAGES_PER_SECOND and WS_MESSAGES_BURST; ${SETTINGS}`,
  4503: 'kicked by an administrator'
}

const ERROR_HINTS: Record<string, string> = {
  rate_limited: `raise WS_MESSAGES_PER_SECOND and WS_MESSAGES_BURST (per connection) or PUBLISH_RATE_PER_USER (0: off; all the generator's connections are one user) on the server, or spread the rate over more --publishers; ${SETTINGS}`,
  forbidden: 'the credential may not publish to these rooms (room publish policy, API key scopes)',
  not_found: 'the room does not exist: pass --create-rooms'
}

interface Limits {
  maxMessageBytes?: number
  messagesPerSecond?: number
  messagesBurst?: number
}

interface Frame {
  type?: string
  limits?: Limits
  id?: unknown
  room?: string
  data?: unknown
  encoding?: unknown
  result?: unknown
  error?: { code?: string, message?: string }
}

/**
 * One server frame as an object, on either codec; undefined when it does not decode, or came
 * in the other codec's kind of frame.
 */
function parseFrame (message: RawMessage, codec: Codec): Frame | undefined {
  try {
    if (codec === 'msgpack') return typeof message === 'string' ? undefined : unpackr.unpack(message) as Frame
    return typeof message === 'string' ? JSON.parse(message) as Frame : undefined
  } catch {
    return undefined
  }
}

/**
 * The `data` of a JSON `message` frame as the payload it was published as: bytes when the
 * frame says base64, a string as is, any other JSON value as its text.
 */
export function jsonPayload (data: unknown, encoding: unknown): Payload {
  if (typeof data === 'string') return encoding === 'base64' ? Buffer.from(data, 'base64') : data
  return JSON.stringify(data)
}

/** The text of a JSON `publish`: bytes go as standard base64 with `"encoding":"base64"`. */
export function jsonPublish (id: number, room: string, payload: Payload): string {
  if (typeof payload === 'string') return `{"type":"publish","id":${id},"room":${JSON.stringify(room)},"data":${JSON.stringify(payload)}}`
  const base64 = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('base64')
  return `{"type":"publish","id":${id},"room":${JSON.stringify(room)},"data":"${base64}","encoding":"base64"}`
}

/**
 * The room and payload of a JSON `message` frame read without JSON.parse, for the frame that
 * comes by the hundred thousand: its data a string without escapes (the generator's payloads,
 * base64 too). Undefined for anything else, or a server that orders the fields differently:
 * the caller then parses the frame.
 */
export function fastMessage (text: string): { room: string, payload: Payload } | undefined {
  if (!text.startsWith(MESSAGE_PREFIX)) return undefined
  const roomEnd = text.indexOf('"', MESSAGE_PREFIX.length)
  const dataAt = roomEnd < 0 ? -1 : text.indexOf(DATA_FIELD, roomEnd)
  const end = dataAt < 0 ? -1 : text.indexOf('"', dataAt + DATA_FIELD.length)
  if (end < 0 || text.charCodeAt(end - 1) === 92 /* \ */) return undefined
  const data = text.slice(dataAt + DATA_FIELD.length, end)
  if (data.includes('\\')) return undefined
  // Quotes inside strings are escaped, so an unescaped `"encoding":"base64"` is a field of the
  // frame (before or after `data`), never the content of a string.
  const bytes = text.indexOf(BASE64_FIELD, roomEnd) > 0
  return { room: text.slice(MESSAGE_PREFIX.length, roomEnd), payload: bytes ? Buffer.from(data, 'base64') : data }
}

class SwitchboardConnection extends WsLoadConnection {
  constructor (socket: RawWebSocket, private readonly codec: Codec) {
    super(socket, code => CLOSE_HINTS[code])
  }

  async subscribe (room: string): Promise<void> {
    try {
      await this.command(this.codec === 'msgpack'
        ? packr.pack({ type: 'subscribe', id: this.nextId, room })
        : `{"type":"subscribe","id":${this.nextId},"room":${JSON.stringify(room)}}`, COMMAND_TIMEOUT_MS)
    } catch (err) {
      const e = err as PublishError
      if (e.code === 'not_found') throw new CliError(`room "${room}" does not exist (or is private): create the rooms, or pass --create-rooms`)
      if (e.code === 'forbidden') throw new CliError(`not allowed to subscribe to "${room}": ${e.message}`)
      throw new CliError(`subscribe to "${room}" failed: ${e.code}: ${e.message}${e.hint === undefined ? '' : ` (${e.hint})`}`)
    }
  }

  async publish (room: string, payload: Payload): Promise<void> {
    await this.command(this.codec === 'msgpack'
      ? packr.pack({ type: 'publish', id: this.nextId, room, data: payload })
      : jsonPublish(this.nextId, room, payload))
  }

  protected receive (text: string): void {
    if (this.codec !== 'json') return
    const fast = fastMessage(text)
    if (fast !== undefined) {
      this.handler(fast.room, fast.payload)
      return
    }
    const frame = parseFrame(text, 'json')
    if (frame !== undefined) this.dispatch(frame)
  }

  protected override receiveBinary (bytes: Buffer): void {
    if (this.codec !== 'msgpack') return
    const frame = parseFrame(bytes, 'msgpack')
    if (frame !== undefined) this.dispatch(frame)
  }

  private dispatch (frame: Frame): void {
    switch (frame.type) {
      case 'message':
        if (typeof frame.room !== 'string') return
        // MessagePack: bytes are `bin` (a Uint8Array), a string is a string.
        if (this.codec === 'msgpack' && (frame.data instanceof Uint8Array || typeof frame.data === 'string')) this.handler(frame.room, frame.data)
        else this.handler(frame.room, jsonPayload(frame.data, frame.encoding))
        return
      case 'reply':
        this.settle(frame.id, { result: frame.result })
        return
      case 'error': {
        const code = frame.error?.code ?? 'error'
        this.settle(frame.id, { error: new PublishError(code, frame.error?.message ?? code, ERROR_HINTS[code]) })
        return
      }
      default: // welcome, join, leave, unsubscribed, reconnect: nothing the run needs
    }
  }
}

/** A refused handshake's body: the server's JSON error, or nothing. */
function parseBody (text: string | undefined): { code?: string, message?: string } {
  try {
    const body = JSON.parse(text ?? '') as unknown
    return typeof body === 'object' && body !== null ? body as { code?: string, message?: string } : {}
  } catch {
    return {}
  }
}

/** The one line a refused handshake turns into: what happened, and which setting to change. */
export function refusalMessage (index: number, status: number, body: { code?: string, message?: string }): string {
  const what = `connection ${index + 1} refused by the server: HTTP ${status}${body.code === undefined ? '' : ` ${body.code}`}${body.message === undefined ? '' : ` (${body.message})`}`
  let hint: string
  if (status === 429 && body.code === 'SB_ERR_TOO_MANY_CONNECTIONS' && /HTTP connections/i.test(body.message ?? '')) {
    // Refused at accept: more handshakes at once than one address may have open.
    hint = `raise HTTP_MAX_CONNECTIONS_PER_IP on the server, or lower --batch; ${SETTINGS}`
  } else if (status === 429 && body.code === 'SB_ERR_TOO_MANY_CONNECTIONS') {
    hint = /address/i.test(body.message ?? '')
      ? `raise WS_MAX_CONNECTIONS_PER_IP on the server; ${SETTINGS}`
      : `raise WS_MAX_CONNECTIONS_PER_USER (and WS_MAX_CONNECTIONS_PER_IP) on the server: every connection of the generator is the same user; ${SETTINGS}`
  } else if (status === 429) {
    hint = `raise WS_HANDSHAKES_PER_IP_PER_MINUTE on the server; ${SETTINGS}`
  } else if (status === 401) {
    hint = 'the credential was refused: run `switchboard login` again, or pass a fresh --token or a valid --api-key'
  } else if (status === 403) {
    hint = 'the server refused this client (WS_ALLOWED_ORIGINS)'
  } else if (status === 503) {
    hint = 'the server is shutting down'
  } else {
    hint = 'is --url a Switchboard server?'
  }
  return `${what}: ${hint}`
}

/** Seconds since the epoch when a JWT expires; undefined when it cannot be read. */
export function tokenExpiry (token: string): number | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { exp?: unknown }
    return typeof payload.exp === 'number' ? payload.exp : undefined
  } catch {
    return undefined
  }
}

class SwitchboardAdapter implements LoadAdapter {
  readonly name = 'switchboard'
  readonly maxInFlight = MAX_IN_FLIGHT
  readonly binary = true
  private readonly codec: Codec
  private readonly wsUrl: string
  private readonly publisherWsUrl: string
  private token: string | undefined
  /** The server's limits, from the first welcome frame. */
  private limits: Limits | undefined

  constructor (private readonly options: AdapterOptions) {
    const codec = options.codec ?? 'json'
    if (!(CODECS as readonly string[]).includes(codec)) throw new CliError(`--codec: "${codec}" is not one of ${CODECS.join(', ')}`, 2)
    this.codec = codec as Codec
    this.wsUrl = webSocketUrl(options.url, '/ws')
    this.publisherWsUrl = options.publisherUrl === undefined ? this.wsUrl : webSocketUrl(options.publisherUrl, '/ws')
    this.token = options.token
  }

  async prepare (rooms: string[], { create, runMs }: { create: boolean, runMs: number }): Promise<void> {
    const { api } = this.options
    if (this.token === undefined && this.options.apiKey === undefined) {
      if (api?.accessToken === undefined) throw new CliError('not logged in: run `switchboard login`, or pass --token or --api-key')
      // A stored session whose access token would expire during the run is refreshed first.
      const exp = tokenExpiry(api.accessToken)
      if (exp === undefined || exp * 1000 < Date.now() + runMs + 60_000) {
        if (!(await api.refresh()) && (exp === undefined || exp * 1000 < Date.now())) {
          throw new CliError('session expired: run `switchboard login` again')
        }
      }
      this.token = api.accessToken
    }
    if (create) await this.createRooms(rooms)
  }

  private async createRooms (rooms: string[]): Promise<void> {
    const token = this.token ?? this.options.api?.accessToken
    if (token === undefined) throw new CliError('--create-rooms needs a user token: pass --token, or run `switchboard login`')
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < rooms.length) {
        const room = rooms[next++]!
        let res: Response
        try {
          res = await fetch(new URL('/rooms', this.options.url), {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ id: room })
          })
        } catch (err) {
          throw new CliError(`cannot reach the server at ${this.options.url} (${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message})`)
        }
        const body = await res.json().catch(() => ({})) as { code?: string, message?: string }
        if (res.status === 201 || (res.status === 409 && body.code === 'SB_ERR_ROOM_EXISTS')) continue
        const hint = res.status === 429 ? ' (raise RATE_LIMIT_MAX on the server)' : res.status === 401 ? ' (log in again or pass a fresh --token)' : ''
        throw new CliError(`creating room "${room}" failed: HTTP ${res.status}${body.code === undefined ? '' : ` ${body.code}`}${body.message === undefined ? '' : ` (${body.message})`}${hint}`)
      }
    }
    await Promise.all(Array.from({ length: Math.min(8, rooms.length) }, worker))
  }

  async connect (index: number, role: 'subscriber' | 'publisher' = 'subscriber'): Promise<LoadConnection> {
    const headers: Record<string, string> = {}
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`
    else if (this.options.apiKey !== undefined) headers['x-api-key'] = this.options.apiKey
    const base = role === 'publisher' ? this.options.publisherUrl ?? this.options.url : this.options.url
    const began = Date.now()
    let socket: RawWebSocket
    try {
      socket = await connectRawWebSocket(role === 'publisher' ? this.publisherWsUrl : this.wsUrl, {
        protocols: [SUBPROTOCOLS[this.codec]],
        headers,
        timeoutMs: CONNECT_TIMEOUT_MS,
        binary: this.codec === 'msgpack'
      })
    } catch (err) {
      const { status, body, code } = err instanceof HandshakeError ? err.details : {}
      if (status !== undefined) throw new CliError(refusalMessage(index, status, parseBody(body)))
      if (err instanceof HandshakeError && /subprotocol/.test(err.message)) {
        throw new CliError(`connection ${index + 1}: the server does not speak ${SUBPROTOCOLS[this.codec]} (${err.message})${this.codec === 'msgpack' ? ': a server without the MessagePack codec; use --codec json' : ''}`)
      }
      throw new CliError(`connection ${index + 1}: cannot reach the server at ${base} (${code ?? (err as Error).message})`)
    }
    return await new Promise((resolve, reject) => {
      let settled = false
      const fail = (err: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.terminate()
        reject(err)
      }
      const timer = setTimeout(() => fail(new CliError(`connection ${index + 1}: no welcome within ${CONNECT_TIMEOUT_MS} ms`)), Math.max(0, CONNECT_TIMEOUT_MS - (Date.now() - began)))
      socket.onClose((code) => {
        fail(new CliError(code === 4029
          ? `connection ${index + 1} closed at once with 4029 (too many connections): raise WS_MAX_CONNECTIONS_PER_USER and WS_MAX_CONNECTIONS_PER_IP on the server; ${SETTINGS}`
          : `connection ${index + 1} closed before the welcome frame (${code})`))
      })
      socket.onMessage((message) => {
        if (settled) return
        const frame = parseFrame(message, this.codec)
        if (frame?.type !== 'welcome') {
          const got = typeof message === 'string' ? message.slice(0, 200) : `a binary frame of ${message.length} bytes${this.codec === 'json' ? '' : ` (${message.subarray(0, 32).toString('hex')}…)`}`
          fail(new CliError(`connection ${index + 1}: expected a welcome frame, got ${got}`))
          return
        }
        settled = true
        clearTimeout(timer)
        this.limits ??= frame.limits
        resolve(new SwitchboardConnection(socket, this.codec))
      })
    })
  }

  checkLoad (load: LoadShape): string[] {
    const warnings: string[] = []
    const limits = this.limits
    if (limits === undefined) return warnings
    const { messagesPerSecond: rate, messagesBurst: burst, maxMessageBytes } = limits
    if (rate !== undefined && burst !== undefined) {
      // A token bucket: `burst` frames at once, refilled at `rate` per second.
      const tooFast = load.mode === 'rate'
        ? load.ratePerPublisher > rate && load.messagesPerPublisher > burst
        : load.messagesPerPublisher > burst
      if (tooFast) {
        warnings.push(`the server allows ${rate} messages/s per connection (burst ${burst}); each publisher sends ${load.mode === 'rate' ? `${round(load.ratePerPublisher)}/s` : `${load.messagesPerPublisher} as fast as it can`}: publishes will be rate-limited: ${ERROR_HINTS.rate_limited}`)
      }
    }
    // The publish frame wraps the payload in about 80 bytes of envelope.
    if (maxMessageBytes !== undefined && load.size + 128 > maxMessageBytes) {
      warnings.push(`--size ${load.size} is at or over the server's WS_MAX_MESSAGE_BYTES (${maxMessageBytes}) once framed: the server will close publishers with 1009`)
    }
    return warnings
  }
}

function round (n: number): number {
  return Math.round(n * 100) / 100
}

export const switchboardAdapter: AdapterFactory = (options) => new SwitchboardAdapter(options)
