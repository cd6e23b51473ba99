import { AppError, ERRORS } from '../errors.js'
import type { Store } from './types.js'

/**
 * The database did not answer (down, unreachable, restarting, out of connections). The table's
 * Unavailable error (src/errors.ts), with its own message: REST answers 503 SB_ERR_UNAVAILABLE and the
 * real-time core answers `unavailable` (temporary) instead of reporting an internal error.
 */
export class StoreUnavailableError extends AppError {
  override name = 'StoreUnavailableError'
  constructor (cause: unknown) {
    super(ERRORS.Unavailable, 'The database is unavailable; retry shortly', { cause })
  }
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])
// PostgreSQL: admin/crash shutdown, cannot connect now, too many connections.
const SERVER_CODES = new Set(['57P01', '57P02', '57P03', '53300'])
const MESSAGES = /Connection terminated|timeout exceeded when trying to connect|connection error|Connection ended unexpectedly/i

/** True for failures of the connection to the database, as opposed to failures of a query. */
export function isConnectionError (err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && (NETWORK_CODES.has(code) || SERVER_CODES.has(code) || code.startsWith('08'))) return true
  const errors = (err as { errors?: unknown }).errors
  if (Array.isArray(errors) && errors.some(isConnectionError)) return true // AggregateError from a multi-address connect
  return err instanceof Error && MESSAGES.test(err.message)
}

/** Store members that read no database and answer synchronously: left as they are. */
const SYNCHRONOUS = new Set<PropertyKey>(['poolStats'] satisfies Array<keyof Store>)

/** Wraps every store method so connection failures surface as StoreUnavailableError. */
export function withUnavailableErrors (store: Store): Store {
  return new Proxy(store, {
    get (target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver)
      if (typeof value !== 'function' || SYNCHRONOUS.has(property)) return value
      return async (...args: unknown[]) => {
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
        } catch (err) {
          throw isConnectionError(err) ? new StoreUnavailableError(err) : err
        }
      }
    }
  })
}
