/**
 * What the real-time core counts. The core calls these; plugins/metrics.ts implements them
 * with prom-client and serves GET /metrics. Tests and tools can pass `noopMetrics`.
 */
export type AuthFailureReason = 'missing' | 'invalid' | 'expired' | 'origin'
export type RateLimitScope = 'messages' | 'publishes_per_user' | 'handshakes' | 'connections_per_user' | 'connections_per_ip'

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
  pingRtt () {}
}
