import { AppError, ERRORS, ERROR_OF_PROTOCOL_CODE, isUnavailableError } from '../errors.js'
import type { ErrorCode } from '@switchboard/protocol/messages'
import type { Logger } from './logger.js'

/**
 * A command error of the real-time core, known by its protocol code: an error of the one table
 * (src/errors.ts), that code's own row (ERROR_OF_PROTOCOL_CODE: `forbidden` is SB_ERR_FORBIDDEN
 * over REST). The core speaks protocol codes: what reaches it from a service is reduced to
 * one (toRealtimeError). Outside the core, throw a row of the table (`new Errors.X()`).
 */
export class RealtimeError extends AppError {
  constructor (code: ErrorCode, message: string, retryAfterMs?: number) {
    super(ERRORS[ERROR_OF_PROTOCOL_CODE[code]], message)
    this.name = 'RealtimeError'
    this.retryAfterMs = retryAfterMs
  }
}

/** A dependency (engine, store) did not answer: temporary, the client may retry. */
export class UnavailableError extends RealtimeError {
  constructor (message = 'Temporarily unavailable, retry') {
    super('unavailable', message)
  }
}

/**
 * The core speaks protocol codes: a service's error reaches it as its protocol code's own
 * error (a ban is `forbidden`, which REST answers SB_ERR_FORBIDDEN, as it always has), a
 * dependency that cannot be reached as the temporary `unavailable`. Anything that is not an
 * error of the table is a bug and is rethrown as it is: it must surface as one (1011 on the
 * socket, 500 over REST, logged at error), not pass for a passing outage that clients retry
 * forever.
 */
export function toRealtimeError (err: unknown): RealtimeError {
  if (err instanceof RealtimeError) return err
  if (isUnavailableError(err)) return new UnavailableError()
  if (err instanceof AppError) return new RealtimeError(err.protocolCode, err.message, err.retryAfterMs)
  throw err
}

/**
 * Runs an engine call so that its failure reaches the client as a temporary error it may
 * retry (logged here), never as a bug; errors of the table pass through as they are.
 */
export async function viaEngine<T> (log: Logger, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    if (err instanceof AppError) throw err
    log.warn({ err }, 'engine call failed')
    throw new UnavailableError()
  }
}
