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
