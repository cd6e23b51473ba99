import type { ErrorCode } from './protocol.js'

/**
 * An expected failure of a command, sent to the client as an `error` frame with this code.
 * Anything else thrown by a command handler is a bug: it closes that one connection with 1011.
 */
export class RealtimeError extends Error {
  override name = 'RealtimeError'
  constructor (readonly code: ErrorCode, message: string, readonly retryAfterMs?: number) {
    super(message)
  }
}

/** A dependency (engine, store) did not answer: temporary, the client may retry. */
export class UnavailableError extends RealtimeError {
  constructor (message = 'Temporarily unavailable, retry') {
    super('unavailable', message)
  }
}
