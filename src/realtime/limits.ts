/**
 * Room in one frame for a command's envelope beside its payload: ids, room name, idempotency
 * key and keys, with margin (the schemas bound each of them far below this).
 */
export const ENVELOPE_BYTES = 1024

/**
 * The largest WebSocket frame a client may send: a payload of `maxMessageBytes` as base64
 * (4 characters per 3 bytes) plus its envelope. A larger frame closes the socket (1009); a
 * payload over `maxMessageBytes` in a smaller frame is refused with an error and the socket
 * stays open.
 */
export function maxFrameBytes (maxMessageBytes: number): number {
  return 4 * Math.ceil(maxMessageBytes / 3) + ENVELOPE_BYTES
}

/** The per-connection and per-node limits a node enforces, from the server's configuration. */
export interface RealtimeLimits {
  maxMessageBytes: number
  messagesPerSecond: number
  messagesBurst: number
  maxSubscriptions: number
  maxBufferedBytes: number
  heartbeatMs: number
  idleTimeoutMs: number
  tokenClockToleranceMs: number
  /** How long a granted room operation is remembered (0: ask the authorizer every time). */
  authorizationCacheMs?: number
  maxConnectionsPerUser: number
  maxConnectionsPerIp: number
  /** Most publications one recovery (or one subscribe's live buffer) may carry. */
  maxRecoveryPublications: number
  /** Bytes of publications one history page may carry (HISTORY_PAGE_BYTES; see Connection.pageBytes). */
  historyPageBytes: number
}
