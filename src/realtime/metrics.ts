/**
 * What the real-time core counts. The core calls these; src/metrics.ts implements them
 * with prom-client and serves GET /metrics. Tests and tools can pass `noopMetrics`.
 */
/** `revoked`: the token's session was revoked; `account_closed`: its user is gone or disabled. */
export type AuthFailureReason = 'missing' | 'invalid' | 'expired' | 'revoked' | 'account_closed' | 'origin'
export type RateLimitScope = 'messages' | 'publishes_per_user' | 'handshakes' | 'connections_per_user' | 'connections_per_ip'
/**
 * Who answered a room access check of a publish, history or presence (docs/authorization.md,
 * "The grant cache"): a kept grant, the store, or the store's answer to a check of the same
 * grant already in flight.
 */
export type GrantSource = 'cache' | 'store' | 'shared'
/**
 * A background renewal of a grant past half its life: kept, not kept because a change that
 * drops grants came meanwhile, refused (the grant ends now), or failed (the store could not
 * answer: the grant lasts until it expires).
 */
export type GrantRenewal = 'renewed' | 'superseded' | 'refused' | 'failed'

export interface RealtimeMetrics {
  connectionOpened(): void
  /** `code` is the close code the connection ended with (1006 when the peer vanished). */
  connectionClosed(code: number): void
  /** One client command received, by type (`invalid` for frames that failed to parse). */
  messageIn(type: string): void
  /** Frames and bytes handed to sockets. */
  messagesOut(frames: number, bytes: number): void
  /** Seconds from a publish being accepted to its frame being written to the local subscribers. */
  publishToWrite(seconds: number): void
  slowConsumer(): void
  authFailure(reason: AuthFailureReason): void
  rateLimited(scope: RateLimitScope): void
  /** A subscribe with `since`: whether everything missed was recovered. */
  recovery(recovered: boolean): void
  pingRtt(seconds: number): void
  roomAuthorization(source: GrantSource): void
  grantRenewal(outcome: GrantRenewal): void
}

export const noopMetrics: RealtimeMetrics = {
  connectionOpened () {},
  connectionClosed () {},
  messageIn () {},
  messagesOut () {},
  publishToWrite () {},
  slowConsumer () {},
  authFailure () {},
  rateLimited () {},
  recovery () {},
  pingRtt () {},
  roomAuthorization () {},
  grantRenewal () {}
}

export interface MetricTotals {
  /** WebSocket connections open now on this node. */
  connections: number
  /** Client commands received since start (every type). */
  messagesIn: number
  /** Publication frames written to subscribers since start. */
  messagesOut: number
}

const MAX_RATE_SAMPLES = 100

export interface Rates {
  messagesInPerSecond: number
  messagesOutPerSecond: number
  /** The span the rates are averaged over. */
  windowSeconds: number
}

/**
 * Per-second rates of the totals, computed when read, so the metrics need no timer per app. Reads
 * are kept as samples (at most one per `windowMs / MAX_RATE_SAMPLES`, so a flood of reads keeps
 * the list short); a rate is averaged from the newest sample at least `windowMs` old (the
 * start, before there is one) to now, so a page polling every few seconds sees the last
 * `windowMs` or a little more, and two admins polling do not disturb each other.
 */
export function createRateMeter (read: () => MetricTotals, windowMs = 10_000, now: () => number = Date.now): () => Rates {
  const spacing = windowMs / MAX_RATE_SAMPLES
  const samples = [{ at: now(), ...read() }]
  return () => {
    const current = { at: now(), ...read() }
    while (samples.length > 1 && samples[1]!.at <= current.at - windowMs) samples.shift()
    if (current.at - samples[samples.length - 1]!.at >= spacing) samples.push(current)
    const base = samples[0]!
    const seconds = (current.at - base.at) / 1000
    const rate = (value: number): number => seconds <= 0 ? 0 : Math.max(0, value) / seconds
    return {
      messagesInPerSecond: rate(current.messagesIn - base.messagesIn),
      messagesOutPerSecond: rate(current.messagesOut - base.messagesOut),
      windowSeconds: seconds
    }
  }
}
