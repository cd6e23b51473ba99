import type { CommandType, UnsubscribeReason } from '@switchboard/protocol/messages'
import { backoffDelay } from './backoff.js'
import { decodeServerFrame, wireCodec, type ServerFrame, type WireCodec } from './codec.js'
import { CommandQueue, type AnswerFrame, type Command, type CommandOptions } from './command-queue.js'
import { Emitter } from './emitter.js'
import { SwitchboardError, toError } from './errors.js'
import { copyBytes, isBlob } from './payload.js'
import { backoffSettings, decideReconnect, type BackoffSettings, type HandshakeFailure } from './reconnect-policy.js'
import { Subscription } from './subscription.js'
import { TokenKeeper } from './token-keeper.js'
import { endpointUrl, loadNodeWebSocket, openSocket, randomId, runningInNode, type TransportMode } from './transport.js'
import type {
  ClientEvents,
  ConnectionState,
  HistoryOptions,
  HistoryPage,
  HistoryResult,
  PageOptions,
  MessageFrame,
  PresenceOptions,
  PresenceResult,
  PublishOptions,
  PublishResult,
  SubscribeOptions,
  SubscribeResult,
  SubscriptionHandler,
  SwitchboardClientOptions,
  WebSocketConstructor,
  WebSocketLike,
  WelcomeFrame
} from './types.js'

const SOCKET_OPEN = 1

type Frame = { type: CommandType } & Record<string, unknown>

/**
 * The Switchboard client: one WebSocket (protocol `switchboard.v1`, or `switchboard.v1.msgpack`
 * with `codec: 'msgpack'`) kept open across network failures, server restarts and token expiry.
 *
 * - Payloads are JSON values or raw bytes on either codec: `publish` takes a Uint8Array (an
 *   ArrayBuffer, a Blob) as bytes, and bytes reach handlers and history pages as Uint8Arrays.
 * - Commands return promises settled by the server's reply (or a `SwitchboardError`), with a
 *   per-command timeout. While the client is not connected they wait in a bounded queue and
 *   are written, in order, once it is; a single writer paces them under the server's message
 *   rate (from the welcome frame).
 * - The connection reconnects with exponential backoff and full jitter, honouring the close
 *   codes (`isReconnectCode`): 4500–4999 and the client's own protocol errors stop it.
 * - Subscriptions resume from their last position after every reconnect: missed publications
 *   arrive in order and once; a lost stretch is an explicit `gap` event.
 * - Publishes always carry an idempotency key and are sent again after a reconnect when their
 *   reply was lost, so a message is never doubled.
 * - With `getToken`, the access token is renewed on the open connection (`refresh`) before it
 *   expires, and fetched again after a 4001 close.
 *
 * Events: `state`, `welcome`, `disconnect`, `retry`, `error`.
 */
export class SwitchboardClient extends Emitter<ClientEvents> {
  private readonly url: string
  private readonly mode: TransportMode
  private readonly codec: WireCodec
  private readonly apiKey: string | undefined
  private readonly WebSocketCtor: WebSocketConstructor | undefined
  private readonly backoff: BackoffSettings
  private readonly connectTimeoutMs: number
  private readonly maxQueued: number

  private status: ConnectionState = 'connecting'
  private socket: WebSocketLike | null = null
  private session: WelcomeFrame | null = null
  private everOpen = false
  /** Bumped by each connection attempt and by close(): a stale async step sees it changed. */
  private generation = 0
  /** Retries since the last welcome. */
  private attempt = 0
  private retryAfterMs: number | null = null
  /** After an idle timeout with nothing to do: the next command reconnects. */
  private dormant = false

  private readonly tokens: TokenKeeper
  private readonly getRoomToken: SwitchboardClientOptions['getRoomToken']
  /** Attempts in a row whose socket closed before the welcome, with no HTTP status seen. */
  private closedBeforeWelcome = 0

  private readonly commands: CommandQueue
  private readonly subs = new Map<string, Subscription>()
  private lastReceivedAt = 0
  private livenessPing: Command | null = null

  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private connectTimer: ReturnType<typeof setTimeout> | undefined
  private livenessTimer: ReturnType<typeof setTimeout> | undefined

  /** Validates the options and starts connecting at once; watch `state` or await `ready()`. */
  constructor (options: SwitchboardClientOptions) {
    super((err, event) => {
      if (event !== 'error') this.emit('error', toError(err))
    })
    this.url = endpointUrl(options.url)
    this.mode = options.transport ?? (runningInNode() ? 'node' : 'browser')
    this.codec = wireCodec(options.codec)
    if (options.apiKey !== undefined && (options.token !== undefined || options.getToken !== undefined)) {
      throw new TypeError('switchboard client: pass either an API key or a token (getToken), not both')
    }
    if (options.apiKey === undefined && options.token === undefined && options.getToken === undefined) {
      throw new TypeError('switchboard client: a token, getToken or apiKey is required')
    }
    if (options.apiKey !== undefined && this.mode === 'browser') {
      throw new TypeError('switchboard client: API keys need the X-API-Key header, which browsers cannot send; use a user token')
    }
    if (options.WebSocket === undefined && this.mode === 'browser' && (globalThis as { WebSocket?: unknown }).WebSocket === undefined) {
      throw new TypeError('switchboard client: no global WebSocket; pass the WebSocket option')
    }
    this.commands = new CommandQueue({
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      link: () => {
        const socket = this.socket
        if (this.status !== 'open' || socket === null || this.session === null || socket.readyState !== SOCKET_OPEN) return null
        return { send: (frame) => socket.send(frame), codec: this.codec, maxMessageBytes: this.session.limits.maxMessageBytes }
      }
    })
    this.tokens = new TokenKeeper(options.token, options.getToken, {
      isOpen: () => this.status === 'open',
      sendRefresh: (token, done) => {
        this.enqueue({ type: 'refresh', token }, {
          urgent: true,
          resend: false,
          dropped: () => {},
          done: (error, result) => done(error, error === null ? (result as { tokenExpiresAt: number }).tokenExpiresAt : null)
        })
      },
      reportError: (err) => this.emit('error', err)
    })
    this.getRoomToken = options.getRoomToken
    this.apiKey = options.apiKey
    this.WebSocketCtor = options.WebSocket
    this.backoff = backoffSettings(options.reconnect)
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000
    this.maxQueued = options.maxQueuedCommands ?? 1000
    void this.connect()
  }

  get state (): ConnectionState {
    return this.status
  }

  /** The welcome frame of the open connection (null while not open). */
  get welcome (): WelcomeFrame | null {
    return this.session
  }

  /** Resolves with the welcome frame once the connection is open (at once if it is); rejects if the client closes first. */
  ready (): Promise<WelcomeFrame> {
    if (this.status === 'open' && this.session !== null) return Promise.resolve(this.session)
    if (this.status === 'closed') return Promise.reject(new SwitchboardError('closed', 'The client is closed'))
    return new Promise((resolve, reject) => {
      const offWelcome = this.once('welcome', (welcome) => { offState(); resolve(welcome) })
      const offState = this.on('state', (state) => {
        if (state !== 'closed') return
        offWelcome()
        offState()
        reject(new SwitchboardError('closed', 'The client closed before connecting'))
      })
    })
  }

  /**
   * Subscribes to a room. Resolves once the server confirmed it (with `since`, after the
   * recovered publications went to the handler). The subscription survives reconnects until
   * `unsubscribe()`, `close()`, or the server ends it (`end` event). One subscription per room.
   */
  subscribe (room: string, handler: SubscriptionHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    if (this.status === 'closed') return Promise.reject(closedError())
    if (this.subs.has(room)) return Promise.reject(new SwitchboardError('conflict', `Already subscribed to ${room} on this client`))
    if (this.commands.waiting >= this.maxQueued) return Promise.reject(queueFullError(this.maxQueued))
    const sub = new Subscription(room, handler, this, options.since)
    if (options.roomToken !== undefined) sub.roomTokens = this.roomTokenKeeper(sub, options.roomToken)
    this.subs.set(room, sub)
    const promise = new Promise<Subscription>((resolve, reject) => {
      sub.pending = { resolve: () => resolve(sub), reject }
    })
    this.sendSubscribe(sub, false)
    return promise
  }

  /** Ends the room's subscription on this client (and on the server when connected). No-op when not subscribed. */
  unsubscribe (room: string): Promise<void> {
    const sub = this.subs.get(room)
    if (sub === undefined) return Promise.resolve()
    this.subs.delete(room)
    const command = sub.command as Command | null
    // Known to the server when a subscribe was written or confirmed on the current connection.
    const serverKnows = this.status === 'open' && (command === null ? sub.state === 'subscribed' : this.commands.isInFlight(command))
    if (command !== null) this.commands.withdraw(command)
    sub.end('unsubscribed', new SwitchboardError('cancelled', `Unsubscribed from ${room} before the subscription was set up`))
    if (!serverKnows) return Promise.resolve()
    return new Promise((resolve, reject) => {
      this.enqueue({ type: 'unsubscribe', room }, {
        urgent: false,
        resend: false,
        dropped: () => resolve(), // the connection is gone, and the server-side subscription with it
        done: (error) => { if (error === null) resolve(); else reject(error) }
      })
    })
  }

  /**
   * Publishes `data` to a room; resolves with its position once stored. `data` is any JSON
   * value, or raw bytes: a Uint8Array (or another ArrayBuffer view), an ArrayBuffer or a Blob,
   * copied when called (a Blob is read first; it keeps its place among the commands). Bytes
   * travel as MessagePack `bin` or as base64, by codec, and reach subscribers as a Uint8Array.
   * A payload over the server's `maxMessageBytes` is refused with `bad_request` before sending.
   * Every publish carries an idempotency key (a random UUID unless given): when the connection
   * drops before the reply, it is sent again after reconnecting and the server returns the
   * first publish's position instead of storing it twice.
   */
  publish (room: string, data: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    const idempotencyKey = options.idempotencyKey ?? randomId()
    const token = roomTokenField(this.roomTokenOf(room, options.roomToken))
    if (!isBlob(data)) return this.request<PublishResult>({ type: 'publish', room, data: copyBytes(data) ?? data, idempotencyKey, ...token }, idempotencyKey)
    const frame = data.arrayBuffer().then(buffer => ({ type: 'publish' as const, room, data: new Uint8Array(buffer), idempotencyKey, ...token }))
    // The queue reports a failed read; when the call is refused at once (closed, queue full), nobody else would.
    frame.catch(() => {})
    return this.request<PublishResult>({ type: 'publish', room, idempotencyKey, ...token }, idempotencyKey, frame)
  }

  /**
   * The room's recent publications, or those after `since` (docs/protocol.md, `history`); with
   * `before` or `after`, a page read back or forward through the room's archive, whose `next`
   * (null at the end) gives the options of the following page:
   * `for (let o = { before: NEWEST }; o; o = page.next) page = await client.history(room, o)`.
   */
  history (room: string, options: PageOptions): Promise<HistoryPage>
  history (room: string, options?: HistoryOptions): Promise<HistoryResult>
  history (room: string, options: HistoryOptions | PageOptions = {}): Promise<HistoryResult | HistoryPage> {
    if ('before' in options || 'after' in options) {
      const page = options as PageOptions
      return this.request<HistoryPage>({
        type: 'history',
        room,
        ...(page.before === undefined ? {} : { before: page.before }),
        ...(page.after === undefined ? {} : { after: page.after }),
        ...(page.epoch === undefined ? {} : { epoch: page.epoch }),
        ...(page.limit === undefined ? {} : { limit: page.limit }),
        ...roomTokenField(this.roomTokenOf(room, page.roomToken))
      })
    }
    const recent = options as HistoryOptions
    return this.request<HistoryResult>({
      type: 'history',
      room,
      ...(recent.since === undefined ? {} : { since: recent.since }),
      ...(recent.limit === undefined ? {} : { limit: recent.limit }),
      ...roomTokenField(this.roomTokenOf(room, recent.roomToken))
    })
  }

  /** Who is subscribed to the room: users (each once) and the number of connections. */
  presence (room: string, options: PresenceOptions = {}): Promise<PresenceResult> {
    return this.request<PresenceResult>({ type: 'presence', room, ...roomTokenField(this.roomTokenOf(room, options.roomToken)) })
  }

  /** An application-level round trip; resolves with the time it took in ms. */
  async ping (): Promise<number> {
    const started = Date.now()
    await this.request<unknown>({ type: 'ping' })
    return Date.now() - started
  }

  /**
   * Closes the connection for good: pending and queued commands reject with `closed`,
   * subscriptions end. Resolves once the socket has closed.
   */
  close (): Promise<void> {
    if (this.status === 'closed') return Promise.resolve()
    const socket = this.socket
    this.socket = null
    this.finish(1000, 'client closed')
    return socket === null ? Promise.resolve() : closeSocket(socket)
  }

  /**
   * Tries to connect now instead of waiting out the backoff delay, when the application knows
   * the network is back (a browser's `online` event): after a long outage the next attempt may
   * otherwise be up to `capMs` away. Does nothing while connected, while an attempt is under
   * way, or once closed. The attempt counts as usual: if it fails, backoff continues.
   */
  reconnectNow (): void {
    if (this.status === 'closed' || this.status === 'open') return
    if (this.retryTimer === undefined && !this.dormant) return // an attempt is under way
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    void this.connect()
  }

  /** @internal For subscriptions: exceptions of handlers and listeners. */
  reportError (err: unknown): void {
    this.emit('error', toError(err))
  }

  // -------------------------------------------------------------------------------------
  // Connecting

  private async connect (): Promise<void> {
    if (this.status === 'closed') return
    const generation = ++this.generation
    this.dormant = false
    let socket: WebSocketLike
    try {
      const fetching = this.tokens.beginAttempt()
      if (fetching !== null) {
        const token = await fetching
        if (generation !== this.generation) return
        this.tokens.useFetched(token)
      }
      const Ctor = this.WebSocketCtor ?? (this.mode === 'node' ? await loadNodeWebSocket() : (globalThis as unknown as { WebSocket: WebSocketConstructor }).WebSocket)
      if (generation !== this.generation) return
      socket = openSocket(Ctor, this.url, this.mode, this.codec, this.apiKey === undefined ? { token: this.tokens.token! } : { apiKey: this.apiKey })
    } catch (err) {
      if (generation !== this.generation) return
      this.emit('error', toError(err))
      this.lost(1006, `connection attempt failed: ${toError(err).message}`)
      return
    }
    this.socket = socket
    let failure: HandshakeFailure | undefined
    let welcomed = false
    socket.onopen = () => {}
    socket.onerror = () => {} // a close event follows
    socket.onmessage = (event: { data: unknown }) => {
      if (this.socket !== socket) return
      this.lastReceivedAt = Date.now()
      let frame: ServerFrame | null
      try {
        frame = decodeServerFrame(event.data)
      } catch (err) {
        this.emit('error', new SwitchboardError('bad_request', `A frame from the server did not decode (${toError(err).message}); it was ignored`))
        return
      }
      if (frame === null) return
      if (!welcomed) {
        if (frame.type !== 'welcome') return
        if (frame.protocol !== this.codec.protocol) {
          this.wrongProtocol(socket, frame.protocol)
          return
        }
        welcomed = true
      }
      this.receive(frame)
    }
    socket.onclose = (event: { code: number, reason: string }) => {
      if (this.socket !== socket) return
      if (welcomed) this.closedBeforeWelcome = 0
      else if (failure === undefined) this.closedBeforeWelcome++
      this.lost(event.code, event.reason, failure)
    }
    // ws only: the HTTP status of a refused handshake (401, 403, 429, 503) and Retry-After.
    const nodeSocket = socket as unknown as { on?: (event: string, listener: (...args: never[]) => void) => void, terminate?: () => void }
    if (typeof nodeSocket.on === 'function') {
      nodeSocket.on('unexpected-response', (_request: unknown, response: { statusCode?: number, headers?: Record<string, string | string[] | undefined> }) => {
        const header = response.headers?.['retry-after']
        const seconds = Number(Array.isArray(header) ? header[0] : header)
        failure = { status: response.statusCode ?? 0, retryAfterMs: Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : undefined }
        nodeSocket.terminate?.()
      })
      nodeSocket.on('ping', () => { this.lastReceivedAt = Date.now() })
    }
    this.connectTimer = setTimeout(() => {
      if (this.socket === socket && !welcomed) this.abandon(socket, `no welcome within ${this.connectTimeoutMs} ms`)
    }, this.connectTimeoutMs)
  }

  /**
   * The welcome names another protocol than the codec's (a proxy or a server that chose for
   * itself): every frame would be misread, and reconnecting would get the same answer, so the
   * client stops, saying why.
   */
  private wrongProtocol (socket: WebSocketLike, protocol: unknown): void {
    const reason = `the server speaks ${typeof protocol === 'string' ? protocol : 'an unnamed protocol'}, not ${this.codec.protocol} (codec '${this.codec.name}')`
    this.emit('error', new SwitchboardError('bad_request', `switchboard client: ${reason}`))
    if (this.socket !== socket || this.closedByListener()) return
    this.socket = null
    this.finish(1002, reason)
    void closeSocket(socket)
  }

  /** Gives up on a socket that stopped answering and handles it as lost (1006: no close frame). */
  private abandon (socket: WebSocketLike, reason: string): void {
    this.lost(1006, reason)
    const terminate = (socket as unknown as { terminate?: () => void }).terminate
    if (typeof terminate === 'function') terminate.call(socket)
    else socket.close()
  }

  /**
   * The current connection (or attempt) ended: the reconnect policy decides between stopping
   * (terminal close code, refused credentials, retries exhausted) and reconnecting after a delay.
   */
  private lost (code: number, reason: string, failure?: HandshakeFailure): void {
    if (this.status === 'closed') return
    const wasOpen = this.status === 'open'
    this.socket = null
    this.session = null
    this.clearConnectionTimers()
    this.connectionLost()

    const decision = decideReconnect({
      code,
      reason,
      handshake: failure,
      retryAfterMs: this.retryAfterMs,
      attempt: this.attempt,
      closedBeforeWelcome: this.closedBeforeWelcome,
      mode: this.mode,
      canRenewToken: this.tokens.canRenew,
      tokenFresh: this.tokens.fetchedForAttempt,
      backoff: this.backoff
    })
    if (decision.handshake !== undefined) {
      const { code: errorCode, message, temporary } = decision.handshake
      this.emit('error', new SwitchboardError(errorCode, message, temporary))
      if (this.closedByListener()) return // close() from an error listener is final
    }
    if (decision.action === 'stop') {
      this.finish(code, decision.reason)
      return
    }
    if (decision.newToken) this.tokens.markStale()
    reason = decision.reason
    const delayMs = decision.delayMs
    this.retryAfterMs = null
    if (wasOpen) this.emit('disconnect', { code, reason, willReconnect: true })
    // close() from a disconnect listener is final: setState would otherwise overwrite it.
    if (this.closedByListener()) return
    this.setState(this.everOpen ? 'reconnecting' : 'connecting')
    if (this.status !== 'reconnecting' && this.status !== 'connecting') return // closed by a state listener
    if (decision.waitForCommand && this.subs.size === 0 && this.commands.isEmpty) {
      // Idle timeout with nothing to do: reconnecting now would only idle out again.
      this.dormant = true
      return
    }
    this.emit('retry', { attempt: this.attempt, delayMs, code, reason })
    this.attempt++
    clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      void this.connect()
    }, delayMs)
  }

  /** Commands and subscriptions of a lost connection: resendable commands go back to the queue front, in order. */
  private connectionLost (): void {
    this.commands.connectionLost()
    this.livenessPing = null
    for (const sub of this.subs.values()) {
      if (sub.command !== null && !this.commands.isWaiting(sub.command as Command)) sub.command = null
      sub.connectionLost()
      sub.roomTokens?.connectionLost()
    }
  }

  /** Final state: everything pending rejects with `closed`, subscriptions end. */
  private finish (code: number, reason: string): void {
    this.generation++
    this.tokens.stop()
    const wasClosed = this.status === 'closed'
    this.status = 'closed'
    this.session = null
    this.clearConnectionTimers()
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    if (wasClosed) return
    const error = new SwitchboardError('closed', `The client is closed: ${reason}`)
    this.commands.close(error)
    const subs = [...this.subs.values()]
    this.subs.clear()
    for (const sub of subs) sub.end('closed', error)
    this.emit('disconnect', { code, reason, willReconnect: false })
    this.emit('state', 'closed')
  }

  /**
   * Whether a listener called close() while an event was being emitted. A method rather than
   * a comparison inline: TypeScript narrows `status` across the emit and would call the check
   * impossible, yet listeners run inside emit and may change it.
   */
  private closedByListener (): boolean {
    return this.status === 'closed'
  }

  private setState (state: ConnectionState): void {
    if (this.status === state) return
    this.status = state
    this.emit('state', state)
  }

  private clearConnectionTimers (): void {
    for (const timer of [this.connectTimer, this.livenessTimer]) clearTimeout(timer)
    this.connectTimer = this.livenessTimer = undefined
    this.tokens.connectionLost()
  }

  // -------------------------------------------------------------------------------------
  // Receiving

  private receive (frame: ServerFrame): void {
    switch (frame.type) {
      case 'welcome': return this.onWelcome(frame as unknown as WelcomeFrame)
      case 'reply':
      case 'error': return this.onAnswer(frame)
      case 'message': {
        this.subs.get(frame.room as string)?.deliver(frame as unknown as MessageFrame)
        return
      }
      case 'join':
      case 'leave': {
        this.subs.get(frame.room as string)?.presence(frame.type, frame.user as { id: string, info?: unknown })
        return
      }
      case 'unsubscribed': return this.onUnsubscribed(frame.room as string, frame.reason as UnsubscribeReason)
      case 'reconnect': {
        if (typeof frame.retryAfterMs === 'number') this.retryAfterMs = Math.max(0, frame.retryAfterMs)
        return
      }
      default: // pushes of a later protocol version: ignored, as the protocol asks
    }
  }

  private onWelcome (welcome: WelcomeFrame): void {
    clearTimeout(this.connectTimer)
    this.connectTimer = undefined
    this.session = welcome
    this.everOpen = true
    this.attempt = 0
    this.retryAfterMs = null
    this.tokens.welcomed(welcome.tokenExpiresAt)
    this.commands.connected(welcome.limits)
    for (const sub of this.subs.values()) {
      if (sub.command === null) this.sendSubscribe(sub, true)
    }
    this.setState('open')
    if (this.status !== 'open') return
    this.emit('welcome', welcome)
    if (this.status !== 'open') return
    this.tokens.startRefreshing()
    this.armLiveness()
    this.commands.flush()
  }

  private onAnswer (frame: Record<string, unknown>): void {
    if (frame.id === undefined) {
      const error = frame.error as { code: SwitchboardError['code'], message: string, temporary: boolean } | undefined
      this.emit('error', new SwitchboardError(error?.code ?? 'internal', error?.message ?? 'error without id', error?.temporary ?? false))
      return
    }
    this.commands.answer(frame as unknown as AnswerFrame)
  }

  private onUnsubscribed (room: string, reason: UnsubscribeReason): void {
    const sub = this.subs.get(room)
    if (sub === undefined) return
    // A room token that expired unrenewed: with getRoomToken, subscribe again with a fresh one.
    const renewable = reason === 'token_expired' && sub.roomTokens?.canRenew === true
    if (renewable) sub.roomTokens!.markStale()
    if (reason === 'resubscribe' || renewable) {
      sub.resubscribing()
      // With a subscribe under way, its answer (`unavailable`) leads to a retry instead.
      if (sub.command === null) this.sendSubscribe(sub, true)
      return
    }
    this.subs.delete(room)
    const command = sub.command as Command | null
    if (command !== null) this.commands.withdraw(command)
    const code = reason === 'room_deleted' ? 'not_found' : 'forbidden'
    sub.end(reason, new SwitchboardError(code, `The subscription to ${room} ended: ${reason}`))
  }

  // -------------------------------------------------------------------------------------
  // Subscriptions

  /**
   * Sends (or queues) the subscribe command of `sub`, resuming from its position; with a room
   * token (getRoomToken, or one given to subscribe), once the token is at hand. While it is
   * being fetched a placeholder stands in `sub.command`, so that nothing sends a second
   * subscribe; a connection lost meanwhile clears it, and the fetched token then waits for
   * the next welcome's subscribe.
   */
  private sendSubscribe (sub: Subscription, urgent: boolean): void {
    if (sub.roomTokens === null || (sub.roomTokens === undefined && this.getRoomToken === undefined)) {
      this.writeSubscribe(sub, urgent, undefined)
      return
    }
    const placeholder = {}
    sub.command = placeholder
    const current = (): boolean => sub.command === placeholder && this.subs.get(sub.room) === sub
    this.roomTokenFor(sub).then((token) => {
      if (!current()) return
      sub.command = null
      this.writeSubscribe(sub, urgent, token)
    }, (err: unknown) => {
      if (!current()) return
      sub.command = null
      this.subs.delete(sub.room)
      const error = new SwitchboardError('forbidden', `getRoomToken failed for ${sub.room}: ${toError(err).message}`)
      sub.end('error', error, error)
    })
  }

  /**
   * The room token a publish, history or presence in `room` carries: the one given, else the
   * current token of this client's subscription to the room, if it was made with one (a room
   * the user may enter only by token is usually one they are subscribed to).
   */
  private roomTokenOf (room: string, given: string | undefined): string | undefined {
    return given ?? this.subs.get(room)?.roomTokens?.token
  }

  /** The room token to subscribe with: asked of getRoomToken the first time, then renewed by the keeper when stale or expired. */
  private async roomTokenFor (sub: Subscription): Promise<string | undefined> {
    if (sub.roomTokens === undefined) {
      const first = await this.getRoomToken!(sub.room, { stale: false })
      if (first === null) {
        sub.roomTokens = null
        return undefined
      }
      sub.roomTokens = this.roomTokenKeeper(sub, first)
      return first
    }
    const keeper = sub.roomTokens!
    const fetching = keeper.beginAttempt()
    if (fetching !== null) keeper.useFetched(await fetching)
    return keeper.token
  }

  /** A token keeper for one subscription's room token: renewals go out as `room_token`. */
  private roomTokenKeeper (sub: Subscription, token: string): TokenKeeper {
    const getRoomToken = this.getRoomToken
    const renew = getRoomToken === undefined
      ? undefined
      : async (context: { stale: boolean }): Promise<string> => {
        const fresh = await getRoomToken(sub.room, context)
        if (fresh === null) throw new Error(`getRoomToken returned null for ${sub.room}, which was subscribed with a room token`)
        return fresh
      }
    return new TokenKeeper(token, renew, {
      isOpen: () => this.status === 'open' && this.subs.get(sub.room) === sub && sub.state === 'subscribed',
      sendRefresh: (fresh, done) => {
        this.enqueue({ type: 'room_token', room: sub.room, token: fresh }, {
          urgent: true,
          resend: false,
          dropped: () => {},
          done: (error, result) => done(error, error === null ? (result as { tokenExpiresAt: number }).tokenExpiresAt : null)
        })
      },
      reportError: (err) => this.emit('error', err)
    })
  }

  private writeSubscribe (sub: Subscription, urgent: boolean, token: string | undefined): void {
    const since = sub.resumeFrom()
    const command = this.enqueue({ type: 'subscribe', room: sub.room, ...(since === undefined ? {} : { since }), ...roomTokenField(token) }, {
      urgent,
      resend: false,
      dropped: () => {},
      done: (error, result) => {
        if (sub.command === command) sub.command = null
        if (this.subs.get(sub.room) !== sub) return // ended meanwhile (its end already settled everything)
        if (error === null) {
          sub.applyReply(result as SubscribeResult, since)
          sub.roomTokens?.startRefreshing()
          return
        }
        this.subscribeFailed(sub, error)
      }
    })
    sub.command = command
  }

  private subscribeFailed (sub: Subscription, error: SwitchboardError): void {
    if (error.code === 'closed') return
    if (error.code === 'timeout') {
      // The server may have subscribed after all: undo that before trying again (or giving up).
      this.enqueue({ type: 'unsubscribe', room: sub.room }, { urgent: true, resend: false, dropped: () => {}, done: () => {} })
      if (sub.confirmed) {
        this.sendSubscribe(sub, true)
        return
      }
    } else if (error.temporary && sub.confirmed) {
      // A restore that failed for now (engine down, revocation race): retry with backoff.
      sub.retryTimer = setTimeout(() => {
        sub.retryTimer = undefined
        if (this.subs.get(sub.room) === sub && sub.command === null && this.status === 'open') this.sendSubscribe(sub, true)
      }, backoffDelay(sub.retries++, this.backoff.baseMs, this.backoff.capMs, this.backoff.random))
      return
    }
    this.subs.delete(sub.room)
    sub.end('error', error, error)
  }

  // -------------------------------------------------------------------------------------
  // Commands and the writer

  /** `ready`: the frame is still being prepared (a Blob read); `frame` stands for it meanwhile. */
  private request<T> (frame: Frame, idempotencyKey?: string, ready?: Promise<Frame>): Promise<T> {
    if (this.status === 'closed') return Promise.reject(closedError(idempotencyKey))
    if (this.commands.waiting >= this.maxQueued) return Promise.reject(queueFullError(this.maxQueued, idempotencyKey))
    return new Promise<T>((resolve, reject) => {
      this.enqueue(frame, {
        urgent: false,
        resend: true,
        dropped: () => {},
        done: (error, result) => { if (error === null) resolve(result as T); else reject(error) },
        ...(idempotencyKey === undefined ? {} : { idempotencyKey })
      }, ready)
    })
  }

  private enqueue (frame: Frame, options: CommandOptions, ready?: Promise<Frame>): Command {
    const command = ready === undefined
      ? this.commands.add(frame, options)
      : this.commands.addWhenReady(frame, ready, options, err => new SwitchboardError('bad_request', `The Blob could not be read (${toError(err).message}); nothing was sent`, false, options.idempotencyKey))
    if (this.dormant) void this.connect()
    else this.commands.flush()
    return command
  }

  // -------------------------------------------------------------------------------------
  // Liveness

  /**
   * Browsers cannot see the server's WebSocket pings. With subscriptions (where a silently dead
   * connection would lose messages), a `ping` command goes out when nothing arrived for a
   * heartbeat; no reply within the request timeout means the connection is dead: reconnect.
   */
  private armLiveness (): void {
    clearTimeout(this.livenessTimer)
    const heartbeatMs = this.session?.heartbeatMs ?? 0
    if (heartbeatMs <= 0) return
    this.livenessTimer = setTimeout(() => {
      this.livenessTimer = undefined
      const socket = this.socket
      if (socket === null || this.status !== 'open') return
      if (this.subs.size > 0 && this.livenessPing === null && Date.now() - this.lastReceivedAt >= heartbeatMs) {
        this.livenessPing = this.enqueue({ type: 'ping' }, {
          urgent: true,
          resend: false,
          dropped: () => {},
          done: (error) => {
            this.livenessPing = null
            if (error?.code === 'timeout' && this.socket === socket) this.abandon(socket, 'no reply to ping')
          }
        })
      }
      this.armLiveness()
    }, heartbeatMs)
  }
}

function roomTokenField (token: string | undefined): { token?: string } {
  return token === undefined ? {} : { token }
}

function closeSocket (socket: WebSocketLike): Promise<void> {
  return new Promise((resolve) => {
    const fallback = setTimeout(() => {
      ;(socket as unknown as { terminate?: () => void }).terminate?.()
      resolve()
    }, 2_000)
    socket.onclose = () => { clearTimeout(fallback); resolve() }
    socket.onmessage = () => {}
    socket.onerror = () => {}
    try {
      socket.close(1000, 'client closed')
    } catch {
      clearTimeout(fallback)
      resolve()
    }
  })
}

function closedError (idempotencyKey?: string): SwitchboardError {
  return new SwitchboardError('closed', 'The client is closed', false, idempotencyKey)
}

function queueFullError (max: number, idempotencyKey?: string): SwitchboardError {
  return new SwitchboardError('queue_full', `Too many commands waiting for a connection (maxQueuedCommands: ${max}); retry once connected`, true, idempotencyKey)
}
