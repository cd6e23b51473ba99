/**
 * Every WebSocket close code the server sends, in one table. Clients decide from the range:
 * 4000–4499 and 1012 mean "reconnect" (after `retryAfterMs` when a `reconnect` push came
 * first), 4500–4999 mean "do not reconnect" (see isReconnectCode for the rest).
 * docs/protocol.md has the same table.
 */
export const CloseCodes = {
  /** Normal closure: the client or server finished on purpose. */
  NORMAL: 1000,
  /** The frame was not valid UTF-8 text or was otherwise unreadable (sent by ws). */
  INVALID_PAYLOAD: 1007,
  /** The frame was larger than the frame limit: room for a WS_MAX_MESSAGE_BYTES payload as base64 and its envelope (sent by ws). */
  MESSAGE_TOO_BIG: 1009,
  /** A bug on the server side affected this one connection; others are unharmed. */
  INTERNAL_ERROR: 1011,
  /** The node is restarting or draining: reconnect (to any node), after retryAfterMs. */
  SERVICE_RESTART: 1012,
  /**
   * The access token expired without a `refresh`, or its session was revoked (logout,
   * refresh-token reuse, sign out everywhere): get a new token, then reconnect.
   */
  TOKEN_EXPIRED: 4001,
  /** No command and no subscription for WS_IDLE_TIMEOUT_MS. */
  IDLE_TIMEOUT: 4002,
  /** The client did not read fast enough and its outbound buffer passed WS_MAX_BUFFERED_BYTES. */
  SLOW_CONSUMER: 4008,
  /** The client kept sending over its message rate after being told. */
  RATE_LIMITED: 4029,
  /** The client broke the protocol badly enough that retrying cannot help. */
  PROTOCOL_VIOLATION: 4500,
  /** An administrator disconnected this connection or user. */
  KICKED: 4503,
  /** The account was deleted or disabled: signing in again cannot help. */
  ACCOUNT_CLOSED: 4504
} as const

export type CloseCode = typeof CloseCodes[keyof typeof CloseCodes]

/** Short reasons sent with each close code (a close reason is limited to 123 bytes). */
export const CloseReasons: Record<CloseCode, string> = {
  1000: 'normal',
  1007: 'invalid payload',
  1009: 'message too big',
  1011: 'internal error',
  1012: 'service restart',
  4001: 'token expired',
  4002: 'idle timeout',
  4008: 'slow consumer',
  4029: 'rate limited',
  4500: 'protocol violation',
  4503: 'kicked',
  4504: 'account closed'
}

/**
 * True when a client should reconnect after this code. Terminal: 4500–4999 (told not to), 1000
 * (closed on purpose) and the client's own bad frames (1007, 1009: retrying repeats them).
 * Everything else reconnects with backoff, including codes the server never sends (1001,
 * 1005, 1006: the transport failed, not the session) and 1011 (a fault in one connection).
 */
export function isReconnectCode (code: number): boolean {
  if (code >= 4500 && code <= 4999) return false
  return code !== CloseCodes.NORMAL && code !== CloseCodes.INVALID_PAYLOAD && code !== CloseCodes.MESSAGE_TOO_BIG
}
