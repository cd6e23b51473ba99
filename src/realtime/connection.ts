import type { Principal, UserPrincipal } from '../auth/principal.js'
import { CloseCodes, CloseReasons, type CloseCode } from '@switchboard/protocol/close-codes'
import type { ConnectionDescription, Engine, HistoryPage, HistoryQuery, HistoryResult, PageQuery, Payload, PresenceInfo, Publication, PublishResult, StreamPosition } from './engine.js'
import { AppError, Errors, protocolErrorOf } from '../errors.js'
import { RealtimeError } from './errors.js'
import type { Logger } from './logger.js'
import type { ClientCommand, CommandId, HistoryCommand, SubscribeCommand, UnsubscribeReason } from '@switchboard/protocol/messages'
import type { WelcomeUser } from '@switchboard/protocol/frames'
import { publishPayload } from './command-parser.js'
import { historyRequest } from './history-request.js'
import { jsonCodec, type FrameCodec, type WireMessage } from './frame-codec.js'
import type { PrepareFrame, PreparedFrame, Transport } from './transport.js'
import type { RealtimeMetrics } from './metrics.js'
import type { RealtimeLimits } from './limits.js'
import type { GrantBasis, RoomGrant, RoomOperation } from './authorizer.js'
import { NOT_FILED, type WheelEntry } from './deadline-wheel.js'

export type ConnectionState = 'connecting' | 'open' | 'closing' | 'closed'

// Described in engine.ts, where the control channel carries it between nodes.
export type { ConnectionDescription } from './engine.js'

/** One room subscription of one connection. */
interface Subscription {
  /** `recovering` while the subscribe command fetches history; live publications are buffered meanwhile. */
  state: 'recovering' | 'live'
  epoch: string
  /** Offset of the last publication delivered to this client (or the position it subscribed at). */
  offset: number
  buffer: Array<{ epoch: string, publication: Publication }>
  /** True once the connection counts in the room's presence (users only). */
  present: boolean
  /**
   * The room's current presenceEvents setting: from the grant of the subscribe, then from
   * every room update this node applies (roomSettingsChanged), so a join and a leave follow
   * the setting in force when they happen, not the one the subscription was made under.
   */
  presenceEvents: boolean
  /**
   * Made with a room token: when it stops granting (epoch ms, clock tolerance included); the
   * subscription ends there with `token_expired` unless a `room_token` command extends it.
   * Null for a subscription on the user's own standing.
   */
  tokenExpiresAt: number | null
}

/** Commands queued on one connection beyond this are refused: the client is not waiting for replies. */
const MAX_PENDING_COMMANDS = 64
/** Consecutive rate-limited frames after which the client is cut off (4029). */
const MAX_RATE_STRIKES = 20
/** A connection that does not finish closing within this time is destroyed. */
const CLOSE_TIMEOUT_MS = 1000

/**
 * The recovery buffer of every live subscription: empty and never written (only a recovering
 * subscription buffers, into an array of its own), so a held subscription costs no array.
 */
const NO_BUFFER: Array<{ epoch: string, publication: Publication }> = []

/** The start of every connection's command chain: one settled promise shared by all. */
const SETTLED: Promise<void> = Promise.resolve()

/**
 * What a Connection may use of the node that hosts it. The connection owns this interface so
 * that it never imports the node (which imports it): the node implements it, a test can fake it.
 */
export interface ConnectionHost {
  readonly engine: Engine
  readonly limits: RealtimeLimits
  readonly metrics: RealtimeMetrics
  readonly log: Logger
  now(): number
  prepareFrame: PrepareFrame
  verifyToken: (token: string) => Promise<UserPrincipal>
  /**
   * The grant for one operation, by the principal's standing or, with `roomToken`, by that
   * token (and then when it stops granting, epoch ms).
   */
  grantFor(principal: Principal, room: string, operation: RoomOperation, roomToken: string | undefined): Promise<{ grant: RoomGrant, expiresAt: number | null }>
  /** Grows with every change that drops grants (room changes, kicks, revocations, an engine reset): a subscribe compares it across its authorization. */
  readonly revision: number
  /** Publishes a payload: JSON text (serialised once by the caller, kept as it is) or bytes. */
  publish(principal: Principal, room: string, payload: Payload, idempotencyKey?: string, roomToken?: string): Promise<PublishResult>
  history(principal: Principal, room: string, query: HistoryQuery, roomToken?: string): Promise<HistoryResult>
  page(principal: Principal, room: string, query: PageQuery, roomToken?: string): Promise<HistoryPage>
  presence(principal: Principal, room: string, roomToken?: string): Promise<PresenceInfo>
  /** The backend's subscribe hook (src/realtime/room-hooks.ts): rejects with its refusal. */
  subscribeHook(connection: Connection, room: string): Promise<void>
  joinRoom(connection: Connection, room: string): Promise<void>
  leaveRoom(connection: Connection, room: string): void
  /** Counts the connection in the room's presence; `announce`: push a user's first join to the room (with `info`, the connect hook's, when given). */
  presenceJoin(room: string, connectionId: string, userId: string, announce: boolean, info?: unknown): Promise<void>
  /** Uncounts it; `announce`: push a user's last leave to the room. */
  presenceLeave(room: string, connectionId: string, userId: string, announce: boolean): void
  /** The connection closed with `code`: it leaves the node (and the backend's disconnect hook hears of it). */
  unregister(connection: Connection, code: number): void
  /**
   * One of the connection's deadlines may have moved earlier: its `tick` must run no later
   * than `at` (ms). A deadline that moved later needs no call (see DeadlineWheel).
   */
  tickBy(connection: Connection, at: number): void
}

/** Who is on the other end: shown by the admin API, and the codec its subprotocol chose. */
export interface ConnectionMeta {
  ip: string
  userAgent?: string
  /** How this connection's frames are written and read; JSON text when absent. */
  codec?: FrameCodec
  /** What the backend's connect hook attached (docs/integration.md#hooks): in the welcome and the backend's later hooks. */
  info?: unknown
}

/** A command result the codec renders itself (publications inside): history answers and pages. */
class HistoryReply {
  constructor (readonly result: { page: false, value: HistoryResult } | { page: true, value: HistoryPage }) {}

  render (codec: FrameCodec, id: CommandId): WireMessage {
    const { result } = this
    return result.page ? codec.historyPage(id, result.value) : codec.history(id, result.value)
  }
}

/**
 * One client connection: a small state machine (connecting → open → closing → closed) that
 * owns its subscriptions, its deadlines (heartbeat, idle, token expiry: checked by the node's
 * sweep, `tick`) and its outbound budget.
 * Commands run one at a time in arrival order, so replies come back in order. A bug in any
 * handler closes this connection with 1011 and never reaches the process.
 */
export class Connection implements WheelEntry {
  state: ConnectionState = 'connecting'
  /** Where the node's deadline wheel filed this connection (the wheel owns these). */
  wheelSlot = NOT_FILED
  wheelIndex = 0
  readonly connectedAt: number
  readonly subscriptions = new Map<string, Subscription>()
  private childLog: Logger | undefined
  /** When the next ping is due (ms). */
  private pingAt = 0
  /** When an idle connection is closed (ms); 0 while it is not idle (a subscription holds it). */
  private idleAt = 0
  /** When the token expires, clock tolerance included (ms); Infinity for API keys. */
  private expiresAt = Infinity
  /** The earliest `tokenExpiresAt` of the subscriptions (ms); Infinity when none was made with a room token. */
  private roomTokensExpireAt = Infinity
  private terminateTimer: NodeJS.Timeout | undefined
  private awaitingPong = false
  private pingSentAt = 0
  private tokens: number
  private lastRefill: number
  private strikes = 0
  private pending = 0
  private chain: Promise<void> = SETTLED
  private closeCode: number = CloseCodes.NORMAL
  /** The codec of this connection's subprotocol: every frame it sends and reads goes through it. */
  readonly codec: FrameCodec

  constructor (
    readonly id: string,
    public principal: Principal,
    readonly transport: Transport,
    readonly meta: ConnectionMeta,
    private readonly node: ConnectionHost
  ) {
    this.codec = meta.codec ?? jsonCodec
    this.connectedAt = node.now()
    this.tokens = node.limits.messagesBurst
    this.lastRefill = this.connectedAt
  }

  /**
   * This connection's logger, made on first use: most connections never log, and a pino
   * child per connection would cost memory for every idle one.
   */
  private get log (): Logger {
    this.childLog ??= this.node.log.child({ connId: this.id, principal: principalId(this.principal) })
    return this.childLog
  }

  /**
   * Debug lines come on every close: asked first, so that a connection that never logs at a
   * level in use never builds its logger (a pino child costs microseconds and memory).
   */
  private debugEnabled (): boolean {
    return this.node.log.isLevelEnabled?.('debug') ?? true
  }

  /** The id other users see: the user id, or `key:<name>` for an API key. */
  get publicId (): string {
    return principalId(this.principal)
  }

  get userId (): string | null {
    return this.principal.kind === 'user' ? this.principal.userId : null
  }

  /** Sends the welcome frame and sets the deadlines. */
  open (): void {
    if (this.state !== 'connecting') return
    this.state = 'open'
    const { limits } = this.node
    const user: WelcomeUser = { id: this.publicId, role: this.principal.kind === 'user' ? this.principal.role : 'apiKey' }
    if (this.meta.info !== undefined) user.info = this.meta.info
    const tokenExpiresAt = this.principal.kind === 'user' ? this.principal.expiresAt * 1000 : null
    this.send(this.codec.welcome(this.id, user, limits, tokenExpiresAt))
    // The first ping is jittered so connections opened together do not ping together forever.
    this.pingAt = this.node.now() + Math.floor(limits.heartbeatMs * (0.5 + Math.random() * 0.5))
    this.armIdle()
    this.armExpiry()
    this.fileDeadlines()
  }

  // -------------------------------------------------------------------------------------
  // Inbound

  /** A text frame from the client. Never throws. */
  handleText (text: string): void {
    this.handleFrame(text)
  }

  /** A binary frame from the client. Never throws. */
  handleBinary (bytes: Uint8Array): void {
    this.handleFrame(bytes)
  }

  /**
   * One frame, read by this connection's codec: a frame of the other kind (binary on JSON,
   * text on MessagePack) is a `bad_request` like any frame that does not decode. Every frame
   * counts against the message rate, so a flood of either kind is cut off (4029).
   */
  private handleFrame (frame: WireMessage): void {
    if (this.state !== 'open') return
    try {
      this.armIdle()
      if (!this.admitFrame(() => {
        const parsed = this.codec.parse(frame)
        return parsed.ok ? parsed.command.id : parsed.id
      })) return
      const parsed = this.codec.parse(frame)
      if (!parsed.ok) {
        this.node.metrics.messageIn('invalid')
        this.sendError(parsed.id, new RealtimeError('bad_request', parsed.message))
        return
      }
      const command = parsed.command
      this.node.metrics.messageIn(command.type)
      if (this.pending >= MAX_PENDING_COMMANDS) {
        this.sendError(command.id, new RealtimeError('rate_limited', 'Too many commands waiting for replies'))
        return
      }
      this.pending++
      this.chain = this.chain.then(() => this.run(command)).catch((err: unknown) => this.fail(err)).finally(() => { this.pending-- })
    } catch (err) {
      this.fail(err)
    }
  }

  /**
   * The per-connection rate limit for one inbound frame: true when it may be processed. Over
   * the rate, the frame is answered with `rate_limited` (with its id, read only then), and
   * after MAX_RATE_STRIKES such frames in a row the client is cut off with 4029.
   */
  private admitFrame (idOf: () => CommandId | undefined): boolean {
    if (this.takeToken()) {
      this.strikes = 0
      return true
    }
    this.node.metrics.rateLimited('messages')
    if (++this.strikes > MAX_RATE_STRIKES) {
      this.close(CloseCodes.RATE_LIMITED)
      return false
    }
    this.sendError(idOf(), new RealtimeError('rate_limited', `Over ${this.node.limits.messagesPerSecond} messages per second; slow down`))
    return false
  }

  /** A socket error (a reset, a protocol violation): the close event follows and cleans up. */
  handleError (err: Error): void {
    if (this.debugEnabled()) this.log.debug({ err }, 'socket error')
  }

  /** A pong to our ping: the peer is alive. */
  handlePong (): void {
    if (!this.awaitingPong) return
    this.awaitingPong = false
    this.node.metrics.pingRtt((this.node.now() - this.pingSentAt) / 1000)
  }

  /** The transport closed (handshake done, peer gone, or terminated). Cleans everything up once. */
  handleClose (code: number): void {
    if (this.state === 'closed') return
    if (this.state === 'open' || this.state === 'connecting') this.closeCode = code
    this.state = 'closed'
    this.clearTimers()
    for (const room of [...this.subscriptions.keys()]) this.dropSubscription(room)
    this.node.unregister(this, this.closeCode)
    this.node.metrics.connectionClosed(this.closeCode)
    if (this.debugEnabled()) this.log.debug({ code: this.closeCode }, 'connection closed')
  }

  private async run (command: ClientCommand): Promise<void> {
    if (this.state !== 'open') return
    try {
      const result = await this.execute(command)
      if (this.state !== 'open' || result === undefined) return
      this.send(result instanceof HistoryReply ? result.render(this.codec, command.id) : this.codec.reply(command.id, result))
    } catch (err) {
      if (err instanceof AppError) {
        if (this.state === 'open') this.sendError(command.id, err)
        return
      }
      this.fail(err)
    }
  }

  private async execute (command: ClientCommand): Promise<unknown> {
    switch (command.type) {
      case 'subscribe': return await this.subscribe(command)
      case 'unsubscribe': {
        this.dropSubscription(command.room)
        return {}
      }
      case 'publish': {
        // Serialised (or decoded from base64) here, once: history keeps it as it is.
        const payload = publishPayload(command)
        const bytes = typeof payload.payload === 'string' ? Buffer.byteLength(payload.payload) : payload.payload.byteLength
        if (bytes > this.node.limits.maxMessageBytes) {
          throw new Errors.PayloadTooLarge(`/data: the payload is ${bytes} bytes; the limit is maxMessageBytes (${this.node.limits.maxMessageBytes})`)
        }
        const result = await this.node.publish(this.principal, command.room, payload, command.idempotencyKey, command.token)
        return { epoch: result.epoch, offset: result.offset }
      }
      case 'history': return await this.history(command)
      case 'presence': return await this.node.presence(this.principal, command.room, command.token)
      case 'ping': return {}
      case 'refresh': return await this.refresh(command.token)
      case 'room_token': return await this.renewRoomToken(command.room, command.token)
    }
  }

  // -------------------------------------------------------------------------------------
  // Commands

  /**
   * Subscribes, recovering what the client missed when it sends `since`. The connection joins
   * the room's fan-out before reading history, buffering live publications meanwhile, so that
   * nothing published during the read is lost; the buffer is then merged by offset, so nothing
   * is delivered twice.
   */
  private async subscribe (command: SubscribeCommand): Promise<unknown> {
    const { room, since } = command
    if (this.subscriptions.has(room)) throw new RealtimeError('conflict', `Already subscribed to ${room}`)
    if (this.subscriptions.size >= this.node.limits.maxSubscriptions) {
      throw new RealtimeError('forbidden', `Subscription limit reached (${this.node.limits.maxSubscriptions})`)
    }
    const revision = this.node.revision
    const authorized = await this.node.grantFor(this.principal, room, 'subscribe', command.token)
    let { grant } = authorized
    const { expiresAt } = authorized
    if (this.state !== 'open') return undefined
    // After the room's own grant, before the subscription exists: a refusal leaves nothing to undo.
    await this.node.subscribeHook(this, room)
    if (this.state !== 'open') return undefined
    const sub: Subscription = { state: 'recovering', epoch: '', offset: 0, buffer: [], present: false, presenceEvents: grant.presenceEvents, tokenExpiresAt: expiresAt }
    this.subscriptions.set(room, sub)
    this.noteRoomTokenExpiry(expiresAt)
    this.clearIdle()
    try {
      await this.node.joinRoom(this, room)
      // A room change applied while we were authorizing found no subscription to revoke; from
      // here on this one is registered and would be revoked, so check once more if one came.
      if (this.node.revision !== revision) {
        grant = (await this.node.grantFor(this.principal, room, 'subscribe', command.token)).grant
        sub.presenceEvents = grant.presenceEvents
      }
      let position: StreamPosition
      let publications: Publication[] = []
      let recovered = false
      if (since === undefined) {
        position = await this.node.engine.history.position(room)
      } else {
        const result = await this.node.engine.history.history(room, { since, limit: this.node.limits.maxRecoveryPublications, maxBytes: this.pageBytes }, grant.stream)
        recovered = result.complete
        publications = recovered ? result.publications : []
        position = result
        this.node.metrics.recovery(recovered)
      }
      if (this.state !== 'open') return undefined
      // Revoked while recovering: the client got `unsubscribed` with the reason; its command still gets an answer.
      if (this.subscriptions.get(room) !== sub) throw new RealtimeError('unavailable', `The subscription to ${room} ended while it was being set up; see the unsubscribed frame`)

      // Everything up to `position` is in this reply; buffered live publications continue it.
      sub.epoch = position.epoch
      sub.offset = position.offset
      this.send(this.codec.subscribed(command.id, room, position, recovered, publications))
      sub.state = 'live'
      const buffered = sub.buffer
      sub.buffer = NO_BUFFER
      for (const { epoch, publication } of buffered) this.deliver(room, epoch, publication, null)

      if (this.principal.kind === 'user' && this.subscriptions.get(room) === sub) {
        sub.present = true
        await this.node.presenceJoin(room, this.id, this.principal.userId, sub.presenceEvents, this.meta.info)
      }
      return undefined
    } catch (err) {
      if (this.subscriptions.get(room) === sub) this.dropSubscription(room)
      throw err
    }
  }

  private async history (command: HistoryCommand): Promise<HistoryReply> {
    const request = historyRequest({ ...command, limit: command.limit ?? 50, maxBytes: this.pageBytes })
    if (request.page) return new HistoryReply({ page: true, value: await this.node.page(this.principal, command.room, request.query, command.token) })
    return new HistoryReply({ page: false, value: await this.node.history(this.principal, command.room, request.query, command.token) })
  }

  /**
   * Bytes of publications one reply (a history page, a recovery) may carry: the page cap, and
   * at most half the outbound budget, so that a reply fits beside the fan-out already queued
   * instead of cutting its asker off as a slow consumer.
   */
  private get pageBytes (): number {
    const { historyPageBytes, maxBufferedBytes } = this.node.limits
    return Math.min(historyPageBytes, Math.floor(maxBufferedBytes / 2))
  }

  /**
   * A fresh token for the same user: the connection takes its expiry and its session, so a
   * revocation of that session (not of the one it connected with) closes it from now on.
   */
  private async refresh (token: string): Promise<unknown> {
    if (this.principal.kind !== 'user') throw new RealtimeError('bad_request', 'API key connections do not expire; nothing to refresh')
    let fresh
    try {
      fresh = await this.node.verifyToken(token)
    } catch (err) {
      if (err instanceof RealtimeError) throw err
      throw new RealtimeError('unauthorized', 'Invalid or expired token')
    }
    if (this.state !== 'open') return undefined
    if (fresh.userId !== this.principal.userId) throw new RealtimeError('forbidden', 'The token belongs to another user')
    this.principal = fresh
    this.armExpiry()
    return { tokenExpiresAt: fresh.expiresAt * 1000 }
  }

  /**
   * A fresh room token for a live subscription made with one: checked as a subscribe with it
   * would be (the token, the room, a ban), it moves the subscription's end to its expiry.
   */
  private async renewRoomToken (room: string, token: string): Promise<unknown> {
    const sub = this.subscriptions.get(room)
    if (sub === undefined) throw new RealtimeError('conflict', `Not subscribed to ${room}`)
    if (sub.tokenExpiresAt === null) throw new RealtimeError('conflict', `The subscription to ${room} was not made with a room token; nothing to renew`)
    const { expiresAt } = await this.node.grantFor(this.principal, room, 'subscribe', token)
    // Ended (expired, revoked, unsubscribed) while the token was checked: nothing to extend.
    if (this.state !== 'open' || this.subscriptions.get(room) !== sub) throw new RealtimeError('conflict', `Not subscribed to ${room}`)
    sub.tokenExpiresAt = expiresAt
    this.roomTokensExpireAt = this.earliestRoomTokenExpiry()
    this.fileDeadlines()
    return { tokenExpiresAt: expiresAt }
  }

  // -------------------------------------------------------------------------------------
  // Outbound

  /**
   * A live publication for a room this connection subscribed to. `frame` gives the shared
   * pre-framed bytes for a codec (built once per publication and codec for all subscribers);
   * null means "encode for me".
   * Enforces continuity: a duplicate offset is skipped, a gap ends the subscription with an
   * explicit `resubscribe` so the client recovers instead of silently missing messages.
   */
  deliver (room: string, epoch: string, publication: Publication, frame: ((codec: FrameCodec) => PreparedFrame) | null): void {
    const sub = this.subscriptions.get(room)
    if (sub === undefined || this.state !== 'open') return
    if (sub.state === 'recovering') {
      sub.buffer.push({ epoch, publication })
      // A recovery that stalls while the room is busy must not grow memory without bound.
      if (sub.buffer.length > this.node.limits.maxRecoveryPublications) this.revoke(room, 'resubscribe')
      return
    }
    if (epoch === sub.epoch && publication.offset <= sub.offset) return
    if (epoch !== sub.epoch || publication.offset !== sub.offset + 1) {
      this.revoke(room, 'resubscribe')
      return
    }
    sub.offset = publication.offset
    this.write(frame === null ? this.node.prepareFrame(this.codec.message(room, epoch, publication)) : frame(this.codec))
  }

  /**
   * A presence event (join or leave) to a subscribed, live connection, unless the room has
   * its pushes off. The node publishes none for such a room; this check is for the events an
   * engine announces on its own and without the room's settings (the Redis engine's leaves
   * of a dead node's connections, the joins of a late node's entries it re-adds).
   */
  pushToRoom (room: string, frame: (codec: FrameCodec) => PreparedFrame): void {
    const sub = this.subscriptions.get(room)
    if (sub === undefined || sub.state !== 'live' || !sub.presenceEvents || this.state !== 'open') return
    this.write(frame(this.codec))
  }

  /** What the subscription to `room` stands on: a room token, or the user's own standing. */
  grantBasisOf (room: string): GrantBasis {
    return (this.subscriptions.get(room)?.tokenExpiresAt ?? null) === null ? 'standing' : 'roomToken'
  }

  /** The room's settings changed (a room update, from any node): later joins and leaves follow them. */
  roomSettingsChanged (room: string, settings: { presenceEvents: boolean }): void {
    const sub = this.subscriptions.get(room)
    if (sub !== undefined) sub.presenceEvents = settings.presenceEvents
  }

  /** Ends one subscription from the server side and tells the client why. */
  revoke (room: string, reason: UnsubscribeReason): void {
    if (!this.subscriptions.has(room)) return
    this.dropSubscription(room)
    if (this.state === 'open') this.send(this.codec.unsubscribed(room, reason))
  }

  /** An error of the table as an `error` frame, answering command `id` (or none when it could not be read). */
  private sendError (id: CommandId | undefined, err: AppError): void {
    this.send(this.codec.error(id, protocolErrorOf(err)))
  }

  /** A frame for this client alone (a reply, an error, a notice), in its codec: flushed ahead of fan-out. */
  send (message: WireMessage): void {
    this.write(this.node.prepareFrame(message), true)
  }

  /**
   * Writes a frame within the outbound budget. A client that does not read fast enough is cut
   * off (4008) rather than allowed to grow the server's memory; the frame is dropped, and the
   * client learns of the loss from the close code and recovers from history on reconnect.
   */
  write (frame: PreparedFrame, answer = false): void {
    if (this.state !== 'open') return
    if (this.transport.bufferedAmount + frame.byteLength > this.node.limits.maxBufferedBytes) {
      this.node.metrics.slowConsumer()
      this.log.info({ buffered: this.transport.bufferedAmount }, 'slow consumer cut off')
      this.close(CloseCodes.SLOW_CONSUMER)
      return
    }
    this.transport.write(frame, answer)
  }

  // -------------------------------------------------------------------------------------
  // Closing

  /**
   * Starts closing with `code`. Idempotent. The transport closes first; cleanup runs when it
   * reports the close, or after CLOSE_TIMEOUT_MS when the peer never answers (then destroyed).
   */
  close (code: CloseCode, reason: string = CloseReasons[code]): void {
    if (this.state === 'closing' || this.state === 'closed') return
    this.state = 'closing'
    this.closeCode = code
    this.clearTimers()
    try {
      this.transport.close(code, reason)
    } catch (err) {
      this.log.warn({ err }, 'transport close failed')
    }
    this.terminateTimer = setTimeout(() => this.terminate(), CLOSE_TIMEOUT_MS)
    this.terminateTimer.unref()
  }

  /** Destroys the socket without a handshake and cleans up. */
  terminate (): void {
    try {
      this.transport.terminate()
    } catch (err) {
      this.log.warn({ err }, 'transport terminate failed')
    }
    this.handleClose(1006)
  }

  /** An unexpected exception: log it, close this connection only. */
  private fail (err: unknown): void {
    this.log.error({ err }, 'connection handler failed')
    this.close(CloseCodes.INTERNAL_ERROR)
  }

  private dropSubscription (room: string): void {
    const sub = this.subscriptions.get(room)
    if (sub === undefined) return
    this.subscriptions.delete(room)
    this.node.leaveRoom(this, room)
    if (sub.present && this.principal.kind === 'user') this.node.presenceLeave(room, this.id, this.principal.userId, sub.presenceEvents)
    if (this.subscriptions.size === 0) this.armIdle()
  }

  // -------------------------------------------------------------------------------------
  // Deadlines: plain numbers, checked by the node's deadline wheel (one timer for every
  // connection, DeadlineWheel), so a connection costs no timer objects, an inbound frame only
  // moves a number, and a turn of the wheel touches only the connections with a deadline due.

  /**
   * Called by the node's wheel with the current time, at or after the connection's earliest
   * deadline (and harmless before it): closes an idle connection (4002) or one whose token
   * expired (4001), and pings every heartbeatMs — a peer that has not answered the previous
   * ping is terminated. Never throws.
   */
  tick (now: number): void {
    if (this.state !== 'open') return
    if (this.idleAt !== 0 && now >= this.idleAt) {
      this.close(CloseCodes.IDLE_TIMEOUT)
      return
    }
    if (now >= this.expiresAt) {
      this.close(CloseCodes.TOKEN_EXPIRED)
      return
    }
    if (now >= this.roomTokensExpireAt) this.expireRoomTokens(now)
    if (now < this.pingAt) return
    if (this.awaitingPong) {
      this.log.info({}, 'no pong within a heartbeat: terminating')
      this.terminate()
      return
    }
    this.awaitingPong = true
    this.pingSentAt = now
    this.pingAt = now + this.node.limits.heartbeatMs
    try {
      this.transport.ping()
    } catch (err) {
      this.fail(err)
    }
  }

  /**
   * Ends the subscriptions whose room token expired (`unsubscribed`, `token_expired`). Runs
   * only when the earliest such expiry has passed: other ticks cost one comparison.
   */
  private expireRoomTokens (now: number): void {
    for (const [room, sub] of [...this.subscriptions]) {
      if (sub.tokenExpiresAt !== null && now >= sub.tokenExpiresAt) this.revoke(room, 'token_expired')
    }
    this.roomTokensExpireAt = this.earliestRoomTokenExpiry()
  }

  private noteRoomTokenExpiry (expiresAt: number | null): void {
    if (expiresAt !== null && expiresAt < this.roomTokensExpireAt) {
      this.roomTokensExpireAt = expiresAt
      this.fileDeadlines()
    }
  }

  /** The earliest of the connection's deadlines (ms); Infinity once it is closing. */
  nextDeadline (): number {
    const at = Math.min(this.pingAt, this.expiresAt, this.roomTokensExpireAt)
    return this.idleAt !== 0 && this.idleAt < at ? this.idleAt : at
  }

  /** Tells the node when this connection's next deadline falls (it may have moved earlier). */
  private fileDeadlines (): void {
    if (this.state === 'open') this.node.tickBy(this, this.nextDeadline())
  }

  private earliestRoomTokenExpiry (): number {
    let earliest = Infinity
    for (const sub of this.subscriptions.values()) if (sub.tokenExpiresAt !== null && sub.tokenExpiresAt < earliest) earliest = sub.tokenExpiresAt
    return earliest
  }

  /** Idle: no command and no subscription for idleTimeoutMs → 4002. */
  private armIdle (): void {
    this.idleAt = this.subscriptions.size > 0 || this.state !== 'open' ? 0 : this.node.now() + this.node.limits.idleTimeoutMs
    // Moved later (a frame from a client with no subscription) it needs no filing; it moves
    // earlier only when the last subscription ends.
    if (this.idleAt !== 0 && this.idleAt < this.pingAt) this.fileDeadlines()
  }

  private clearIdle (): void {
    this.idleAt = 0
  }

  /** Token expiry: closed with 4001 at `exp` plus the clock tolerance unless refreshed first. */
  private armExpiry (): void {
    if (this.principal.kind !== 'user') return
    this.expiresAt = this.principal.expiresAt * 1000 + this.node.limits.tokenClockToleranceMs
    if (this.expiresAt <= this.node.now()) this.close(CloseCodes.TOKEN_EXPIRED)
    else this.fileDeadlines()
  }

  private clearTimers (): void {
    this.idleAt = 0
    this.expiresAt = Infinity
    this.roomTokensExpireAt = Infinity
    this.pingAt = Infinity
    if (this.state === 'closed') clearTimeout(this.terminateTimer)
  }

  /** Token bucket: messagesPerSecond refill, messagesBurst capacity. */
  private takeToken (): boolean {
    const now = this.node.now()
    const { messagesPerSecond, messagesBurst } = this.node.limits
    this.tokens = Math.min(messagesBurst, this.tokens + (now - this.lastRefill) * messagesPerSecond / 1000)
    this.lastRefill = now
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** Summary for the admin API. */
  describe (): ConnectionDescription {
    return {
      id: this.id,
      principal: this.publicId,
      kind: this.principal.kind,
      ip: this.meta.ip,
      userAgent: this.meta.userAgent ?? null,
      rooms: [...this.subscriptions.keys()],
      connectedAt: this.connectedAt
    }
  }
}

export function principalId (principal: Principal): string {
  return principal.kind === 'user' ? principal.userId : `key:${principal.name}`
}

export type { CommandId }
