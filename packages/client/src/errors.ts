import type { ErrorCode } from '@switchboard/protocol/messages'

/**
 * Codes of failures the client detects itself, next to the server's error codes:
 * - `timeout`: no reply within `requestTimeoutMs` (a publish may or may not have happened:
 *   retry it with the same `idempotencyKey`);
 * - `queue_full`: more than `maxQueuedCommands` commands are waiting for a connection;
 * - `closed`: the client was closed, or stopped reconnecting (terminal close code, retries
 *   exhausted, credentials refused);
 * - `cancelled`: the subscription was ended (unsubscribe, or by the server) before it was set up.
 */
export type ClientErrorCode = 'timeout' | 'queue_full' | 'closed' | 'cancelled'
export type SwitchboardErrorCode = ErrorCode | ClientErrorCode

/**
 * Every rejection of the client's promises. `code` is one of the server's error codes
 * (docs/protocol.md, section 6) or one of the client's own; `temporary` is true when the same
 * call may succeed later. A failed publish carries the `idempotencyKey` it was sent with, so
 * it can be retried without doubling the message.
 */
export class SwitchboardError extends Error {
  override name = 'SwitchboardError'
  readonly code: SwitchboardErrorCode
  readonly temporary: boolean
  readonly idempotencyKey: string | undefined

  constructor (code: SwitchboardErrorCode, message: string, temporary = false, idempotencyKey?: string) {
    super(message)
    this.code = code
    this.temporary = temporary
    this.idempotencyKey = idempotencyKey
  }
}

/** A thrown value as an Error, for the `error` event (getToken and listeners may throw anything). */
export function toError (err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}
