import type { HookName } from '../config.js'

/**
 * How one hook call ended: `ok` (the backend answered 2xx and its answer was used), `refused`
 * (a refusing hook said no), `timeout`, `unreachable` (no connection, or it broke), `status`
 * (an answer other than 2xx), `invalid` (a body that is not the hook's answer), `busy`
 * (HOOKS_CONCURRENCY calls in flight: no request was made).
 */
export type HookOutcome = 'ok' | 'refused' | 'timeout' | 'unreachable' | 'status' | 'invalid' | 'busy'

/** Why an event was dropped: the queue was at HOOKS_QUEUE_BYTES, its retries ran out, or the backend answered 4xx (retrying would not help). */
export type HookDropReason = 'queue_full' | 'retries' | 'rejected'

/** What the hooks report; src/metrics.ts exports them. */
export interface HookMetrics {
  /** One call (one attempt of an event) ended; `seconds` is its latency, null when no request was made. */
  call(hook: HookName, outcome: HookOutcome, seconds: number | null): void
  /** An event will not be delivered. */
  dropped(hook: HookName, reason: HookDropReason): void
}
