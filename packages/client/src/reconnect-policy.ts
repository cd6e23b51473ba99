import { isReconnectCode } from '@switchboard/protocol/close-codes'
import { backoffDelay } from './backoff.js'
import type { TransportMode } from './transport.js'
import type { ReconnectOptions } from './types.js'

/** `ReconnectOptions` with the defaults filled in and the jitter source made safe. */
export interface BackoffSettings {
  baseMs: number
  capMs: number
  maxAttempts: number
  /** Always in [0, 1). */
  random: () => number
}

/** The HTTP status of a refused handshake (seen with `ws` only) and its `Retry-After`. */
export interface HandshakeFailure {
  status: number
  retryAfterMs: number | undefined
}

/** Everything the decision looks at when a connection, or an attempt at one, ended. */
export interface ConnectionEnd {
  /** The WebSocket close code (1006 when the client gave up on the socket itself). */
  code: number
  reason: string
  /** Set when the handshake was refused with an HTTP status. */
  handshake: HandshakeFailure | undefined
  /** `retryAfterMs` of a `reconnect` push that came before the close, else null. */
  retryAfterMs: number | null
  /** Retries since the last welcome (0 for the first one after a loss). */
  attempt: number
  /** Attempts in a row whose socket closed before the welcome with no HTTP status seen. */
  closedBeforeWelcome: number
  mode: TransportMode
  /** The client has `getToken`, so a token can be replaced. */
  canRenewToken: boolean
  /** The token of this attempt was fetched for it: a refusal is not cured by fetching again. */
  tokenFresh: boolean
  backoff: BackoffSettings
}

/** An `error` event the client emits for a refused handshake, before acting on the decision. */
export interface HandshakeReport {
  code: 'unauthorized' | 'forbidden' | 'unavailable'
  message: string
  temporary: boolean
}

export type ReconnectDecision =
  | {
    action: 'stop'
    /** Why the client stops: the `disconnect` event's reason and the `closed` errors' message. */
    reason: string
    handshake?: HandshakeReport
  }
  | {
    action: 'retry'
    delayMs: number
    /** The reason to report in `disconnect` and `retry` (a refused handshake names its status). */
    reason: string
    /** Ask `getToken({ stale: true })` before the next attempt. */
    newToken: boolean
    /** 4002 (idle): if nothing is subscribed or waiting, wait for the next command instead. */
    waitForCommand: boolean
    handshake?: HandshakeReport
  }

/** The first backoff bound (ms). */
export const DEFAULT_BACKOFF_BASE_MS = 500
/**
 * The largest backoff bound (ms). A node that comes back after an outage sees its clients
 * return within about this long of being ready, plus what its handshake rate takes: each
 * client is then waiting out a delay drawn from [0, cap]. Lower would spread a storm of
 * retries against a dead address over too short a window; higher leaves a node ready and idle
 * while its clients still wait (docs/capacity.md, reconnect storms).
 */
export const DEFAULT_BACKOFF_CAP_MS = 10_000

/**
 * Fills in the reconnect defaults (500 ms base, 10 s cap, no attempt limit, Math.random). The
 * jitter source is clamped into [0, 1): a value outside it would wait longer than the bound,
 * or a negative time.
 */
export function backoffSettings (options: ReconnectOptions = {}): BackoffSettings {
  const random = options.random ?? Math.random
  return {
    baseMs: options.baseMs ?? DEFAULT_BACKOFF_BASE_MS,
    capMs: options.capMs ?? DEFAULT_BACKOFF_CAP_MS,
    maxAttempts: options.maxAttempts ?? Infinity,
    random: () => Math.min(Math.max(Number(random()) || 0, 0), 1 - Number.EPSILON)
  }
}

/**
 * Decides what the client does after a connection (or an attempt) ended without being asked
 * to: stop for good, or reconnect after a delay, maybe with a new token first. Pure apart from
 * `backoff.random`, which is drawn once, and only for a retry without a server-given delay.
 *
 * Stops: a close code `isReconnectCode` calls terminal (4500–4999, 1000, 1007, 1009); 4001
 * without `getToken`; a refused handshake other than 401, 408, 429 and 5xx; a 401 without
 * `getToken` or with a token fetched for this very attempt; `maxAttempts` reached. A retry
 * waits `retryAfterMs` of a `reconnect` push, else full-jitter backoff, and at least the
 * handshake's `Retry-After`. `close()` never comes here: it is final at once.
 */
export function decideReconnect (end: ConnectionEnd): ReconnectDecision {
  const { code, handshake, backoff } = end
  let reason = end.reason
  let terminal: string | null = null
  let newToken = false
  let report: HandshakeReport | undefined
  if (handshake !== undefined) {
    reason = `handshake refused with HTTP ${handshake.status}`
    if (handshake.status === 401) {
      // Refresh the token once; a fresh token refused too is final.
      if (end.canRenewToken && !end.tokenFresh) newToken = true
      else terminal = 'credentials refused (HTTP 401)'
    } else if (handshake.status >= 400 && handshake.status < 500 && handshake.status !== 408 && handshake.status !== 429) {
      terminal = reason
    }
    const reportCode = handshake.status === 401 ? 'unauthorized' : handshake.status === 403 ? 'forbidden' : 'unavailable'
    // Temporary means "the credentials or the server may accept a later attempt", which an
    // exhausted attempt budget below does not change.
    report = { code: reportCode, message: reason, temporary: terminal === null }
  } else if (end.mode === 'browser' && end.canRenewToken && isPowerOfTwo(end.closedBeforeWelcome) && end.closedBeforeWelcome >= 2) {
    // A browser cannot see why a handshake failed: a 401 (a token refused before its `exp`,
    // e.g. after the server's secret changed) looks like a network failure. After 2, 4, 8, …
    // such failures in a row, ask for a new token, so a refused one is not retried until it
    // expires, while an outage costs only a few token requests.
    newToken = true
  } else if (code === 4001) {
    // Without getToken the token cannot be renewed, and reconnecting with it would get 401.
    if (end.canRenewToken) newToken = true
    else terminal = reason === '' ? 'token expired' : reason
  } else if (!isReconnectCode(code)) {
    terminal = reason === '' ? `closed with code ${code}` : reason
  }
  if (terminal === null && end.attempt >= backoff.maxAttempts) {
    terminal = backoff.maxAttempts === 0 ? `connection lost (${code}${reason === '' ? '' : ' ' + reason})` : `gave up after ${end.attempt} reconnect attempts`
  }
  const extra = report === undefined ? {} : { handshake: report }
  if (terminal !== null) return { action: 'stop', reason: terminal, ...extra }

  let delayMs = end.retryAfterMs ?? backoffDelay(end.attempt, backoff.baseMs, backoff.capMs, backoff.random)
  if (handshake?.retryAfterMs !== undefined) delayMs = Math.max(delayMs, handshake.retryAfterMs)
  return { action: 'retry', delayMs, reason, newToken, waitForCommand: code === 4002, ...extra }
}

function isPowerOfTwo (n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0
}
