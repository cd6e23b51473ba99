import type { Static } from '@sinclair/typebox'
import type {
  ErrorCode,
  HistoryPageSchema,
  HistoryResultSchema,
  MessageFrameSchema,
  PresenceResultSchema,
  PublicationSchema,
  PublishResultSchema,
  StreamPositionSchema,
  SubscribeResultSchema,
  UnsubscribeReason,
  WelcomeFrameSchema
} from '@switchboard/protocol/messages'

/*
 * The SDK's public types. Wire shapes come from the protocol's TypeBox schemas (type-only
 * imports: nothing of TypeBox ends up in a browser bundle); the rest describes the client.
 */

export type { ErrorCode, UnsubscribeReason }
export type WelcomeFrame = Static<typeof WelcomeFrameSchema>
export type StreamPosition = Static<typeof StreamPositionSchema>

/**
 * What the application sees of a payload, on either codec: `data` is the published JSON
 * value, or a `Uint8Array` when the publication is raw bytes. The wire's `encoding` (base64 on
 * JSON frames) is decoded by the SDK and never shows.
 */
type WithData<T> = Omit<T, 'data' | 'encoding'> & {
  /** The published JSON value, or a `Uint8Array` for raw bytes. */
  data: unknown
}

/** One publication of a history page or a recovery: `data` is a JSON value or a `Uint8Array`. */
export type Publication = WithData<Static<typeof PublicationSchema>>
/** A publication as the subscription handler sees it: live or recovered, always with its room and epoch; `data` is a JSON value or a `Uint8Array`. */
export type MessageFrame = WithData<Static<typeof MessageFrameSchema>>
export type SubscribeResult = Omit<Static<typeof SubscribeResultSchema>, 'publications'> & { publications: Publication[] }
export type PublishResult = Static<typeof PublishResultSchema>
export type HistoryResult = Omit<Static<typeof HistoryResultSchema>, 'publications'> & { publications: Publication[] }
/** A page read back (`before`) or forward (`after`): continue with `next` until it is null. */
export type HistoryPage = Omit<Static<typeof HistoryPageSchema>, 'publications'> & { publications: Publication[] }
export type PresenceResult = Static<typeof PresenceResultSchema>

/**
 * The subscription could not be continued from its last position: publications between
 * `previous` and (`epoch`, `offset`) are lost to this client (the server restarted with
 * in-memory history, the history expired, or too much was missed). Delivery continues with
 * the publication after `offset`; reload whatever you derive from the room.
 */
export interface GapEvent {
  type: 'gap'
  room: string
  /** The room's position the subscription continues from. */
  epoch: string
  offset: number
  /** The last position this client had processed (null when it had none). */
  previous: StreamPosition | null
}

/** What a subscription handler receives: publications in offset order, and explicit gaps. */
export type SubscriptionEvent = MessageFrame | GapEvent
export type SubscriptionHandler = (event: SubscriptionEvent) => void

/**
 * `connecting`: the first connection is being set up (including its retries); `open`: the
 * welcome frame arrived; `reconnecting`: an open connection was lost and the client is
 * waiting to (or trying to) connect again; `closed`: final (close(), a terminal close code,
 * or retries exhausted).
 */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed'

export interface DisconnectEvent {
  code: number
  reason: string
  willReconnect: boolean
}

export interface RetryEvent {
  /** 0 for the first retry after a loss, counting up until a connection opens. */
  attempt: number
  /** The wait before this attempt: `retryAfterMs` of a `reconnect` push, else full-jitter backoff. */
  delayMs: number
  /** Why the previous connection or attempt ended. */
  code: number
  reason: string
}

export interface ClientEvents {
  state: ConnectionState
  welcome: WelcomeFrame
  disconnect: DisconnectEvent
  retry: RetryEvent
  /** Problems that no promise reports: token refresh failures, failed handshakes, listener exceptions, errors without an id. */
  error: Error
}

/** `end` reasons: the server's (except `resubscribe`, which the client handles), or the client's own. */
export type EndReason = Exclude<UnsubscribeReason, 'resubscribe'> | 'unsubscribed' | 'closed' | 'error'

export interface SubscriptionEvents {
  /** `user.info`: what the application's backend attached to the connection that joined (its connect hook), if anything. */
  join: { room: string, user: { id: string, info?: unknown } }
  leave: { room: string, user: { id: string } }
  /** After every successful (re)subscribe: where the subscription continues and whether nothing was missed. */
  subscribed: { room: string, epoch: string, offset: number, recovered: boolean }
  /** The subscription is over; no more events. `error` is set when the reason is `error`. */
  end: { room: string, reason: EndReason, error?: Error }
}

export type SubscriptionState = 'subscribing' | 'subscribed' | 'recovering' | 'ended'

export interface ReconnectOptions {
  /** First backoff bound in ms (default 500). */
  baseMs?: number
  /** Largest backoff bound in ms (default 10000). */
  capMs?: number
  /** Failed attempts in a row before giving up (default Infinity; 0: never reconnect). */
  maxAttempts?: number
  /**
   * The jitter's source: a number in [0, 1) per delay (default Math.random). For tests and
   * simulations that need a known schedule; a value outside [0, 1) is clamped into it.
   */
  random?: () => number
}

/** The part of the WebSocket interface the client uses: browsers' WebSocket and `ws` both have it. */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: never) => void) | null
  onmessage: ((event: never) => void) | null
  onclose: ((event: never) => void) | null
  onerror: ((event: never) => void) | null
  /** Set to `arraybuffer` on MessagePack sockets, so binary frames arrive as ArrayBuffers. */
  binaryType?: string
  /** A string on `switchboard.v1`, bytes on `switchboard.v1.msgpack`. */
  send (data: string | Uint8Array): void
  close (code?: number, reason?: string): void
}

/** A WebSocket constructor: the browser's (two arguments) or `ws`'s (the third carries headers). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: { headers?: Record<string, string> }) => WebSocketLike

/**
 * The wire codec: `json` (subprotocol `switchboard.v1`, text frames; bytes travel as base64)
 * or `msgpack` (`switchboard.v1.msgpack`, binary MessagePack frames; bytes travel as they are).
 */
export type CodecName = 'json' | 'msgpack'

export interface TokenContext {
  /** The current token was refused or is suspected to be: a cached token will not do. */
  stale: boolean
}

export interface SwitchboardClientOptions {
  /** `ws://host:port/ws` or `wss://…`; `http(s)://` is accepted, and a bare origin gets `/ws`. */
  url: string
  /** An access token (JWT). With `getToken` too, it is used for the first connection. */
  token?: string
  /**
   * Returns an access token: called before the first connection (without `token`), before the
   * token expires (sent as `refresh`), and after a 4001 close or a 401 handshake. With
   * `stale: true` the token in use was refused, or (in a browser, which cannot see a
   * handshake's HTTP status) may have been: return a new one, not a cached copy.
   */
  getToken?: (context: TokenContext) => string | Promise<string>
  /**
   * Returns a room token for `room` (docs/integration.md, "Room tokens"), minted by your
   * backend: asked before each subscribe (return null for a room that needs none: the
   * subscription then stands on the user's membership), before a room token expires (sent as
   * `room_token`, at half its remaining life, at most a minute ahead), and after the server
   * ended a subscription with `token_expired` (then subscribed again with the new token, from
   * the last position). With `stale: true` the token in use was refused or expired: return a
   * new one.
   */
  getRoomToken?: (room: string, context: TokenContext) => string | null | Promise<string | null>
  /** An API key (`sbk_…`): Node only, browsers cannot send the header. */
  apiKey?: string
  /** A WebSocket constructor to use instead of the browser's or `ws`. */
  WebSocket?: WebSocketConstructor
  /**
   * How credentials travel. `node`: `Authorization` / `X-API-Key` headers (needs `ws` or a
   * constructor taking `{ headers }`); `browser`: the `bearer.<token>` subprotocol. Default:
   * `node` under Node.js, `browser` elsewhere.
   */
  transport?: 'node' | 'browser'
  /**
   * `json` (default) or `msgpack`. Either carries JSON values and raw bytes alike; `msgpack`
   * sends bytes as they are (base64 on `json` adds a third to their size, and the work of encoding). The welcome must name the
   * same protocol, or the client stops with an `error` event.
   */
  codec?: CodecName
  reconnect?: ReconnectOptions
  /** Per-command timeout in ms, counted from when the command is written (default 10000). */
  requestTimeoutMs?: number
  /** How long a connection attempt may take until the welcome frame (default 10000). */
  connectTimeoutMs?: number
  /** Commands waiting for a connection (default 1000); beyond it, calls reject with `queue_full`. */
  maxQueuedCommands?: number
}

export interface SubscribeOptions {
  /** Resume after this position: recovered publications reach the handler first (or a gap event). */
  since?: StreamPosition
  /**
   * A room token to subscribe with (instead of asking `getRoomToken` first). Renewed through
   * `getRoomToken` when the client has it; without it the subscription ends with
   * `token_expired` at the token's expiry.
   */
  roomToken?: string
}

export interface PublishOptions {
  /** Deduplicates retries (1–128 characters). Generated (a random UUID) when absent. */
  idempotencyKey?: string
  /** A room token granting `publish` in the room. */
  roomToken?: string
}

export interface HistoryOptions {
  since?: StreamPosition
  /** 1–1000, the server's default is 50. */
  limit?: number
  /** A room token granting `history` in the room. */
  roomToken?: string
}

export interface PresenceOptions {
  /** A room token granting `presence` in the room. */
  roomToken?: string
}

/**
 * Reading back (`before`: newest first) or forward (`after`: oldest first) through a room's
 * archive, in `epoch` (default: the current one); a page's `next` is the options of the next
 * page. `before: NEWEST` starts at the newest publication.
 */
export type PageOptions = ({ before: number, after?: undefined } | { after: number, before?: undefined }) & {
  epoch?: string
  /** 1–1000, the server's default is 50. */
  limit?: number
  /** A room token granting `history` in this room (issue 22), when the user's standing does not. */
  roomToken?: string
}

/** `before` this offset starts a backward read at the newest publication (any offset above the top does). */
export const NEWEST = Number.MAX_SAFE_INTEGER
