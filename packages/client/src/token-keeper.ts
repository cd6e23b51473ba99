import { systemClock, type Clock } from './clock.js'
import { toError, type SwitchboardError } from './errors.js'
import { tokenExpiry } from './transport.js'
import type { TokenContext } from './types.js'

/** Refresh at most this long before the token expires (and at half its remaining life for short tokens). */
const REFRESH_AHEAD_MS = 60_000

export type GetToken = (context: TokenContext) => string | Promise<string>

/** What the token keeper needs from its client (it owns no connection of its own). */
export interface TokenKeeperHost {
  /** True while the connection is open, so that a `refresh` can go out on it. */
  isOpen (): boolean
  /**
   * Sends `refresh` with `token` on the open connection, ahead of queued commands. `done` gets
   * the server's new `tokenExpiresAt` (epoch ms), or the error (and null); it is not called
   * when the connection is lost first.
   */
  sendRefresh (token: string, done: (error: SwitchboardError | null, tokenExpiresAt: number | null) => void): void
  /** Failures no promise reports: `getToken` threw, the server refused a refresh. */
  reportError (err: Error): void
}

/**
 * Keeps the client's access token: fetches one from `getToken` before an attempt that has
 * none, or whose token expired or was refused (`stale`); on the open connection, sends
 * `refresh` with a new one at half the token's remaining life, at most a minute before the
 * server's `tokenExpiresAt`, and retries a failed refresh every few seconds until the token
 * expires (then the server closes with 4001 and the next attempt fetches a token). Without
 * `getToken` it only holds the token it was given.
 */
export class TokenKeeper {
  private current: string | undefined
  /** Epoch ms: the token's `exp` until a welcome or refresh reply gives the server's. */
  private expiresAt: number | null
  private stale = false
  private fresh = false
  /** Bumped by each attempt and by stop(): a refresh from an earlier one sees it changed. */
  private epoch = 0
  private stopped = false
  private cancelTimer: (() => void) | undefined

  constructor (
    token: string | undefined,
    private readonly getToken: GetToken | undefined,
    private readonly host: TokenKeeperHost,
    private readonly clock: Clock = systemClock
  ) {
    this.current = token
    this.expiresAt = token === undefined ? null : tokenExpiry(token)
  }

  /** The token to connect with (undefined only before the first `getToken`, or with an API key). */
  get token (): string | undefined {
    return this.current
  }

  /** True with `getToken`: a refused or expired token can be replaced. */
  get canRenew (): boolean {
    return this.getToken !== undefined
  }

  /** True when the current attempt's token was fetched for it (a 401 then is final). */
  get fetchedForAttempt (): boolean {
    return this.fresh
  }

  /**
   * A connection attempt starts: returns the `getToken` call to await when the attempt needs a
   * new token (none yet, stale, or past its `exp`: a browser cannot tell a 401 from a network
   * failure, so it should not even try), else null. Pass the token to `useFetched` unless the
   * attempt was abandoned meanwhile. A synchronous throw of `getToken` is thrown from here.
   */
  beginAttempt (): Promise<string> | null {
    this.epoch++
    this.fresh = false
    const expired = this.expiresAt !== null && this.expiresAt <= this.clock.now()
    if (this.getToken === undefined || (this.current !== undefined && !this.stale && !expired)) return null
    return Promise.resolve(this.getToken({ stale: this.stale }))
  }

  /** The token `beginAttempt` fetched: the attempt connects with it. */
  useFetched (token: string): void {
    this.store(token)
    this.fresh = true
  }

  /** The token in use was refused, or may have been: the next attempt asks `getToken({ stale: true })`. */
  markStale (): void {
    this.stale = true
  }

  /** The server accepted the token (a welcome) and said when it expires by its own clock. */
  welcomed (tokenExpiresAt: number | null): void {
    this.stale = false
    this.expiresAt = tokenExpiresAt
  }

  /** The connection is open: schedule the first refresh (nothing without `getToken` or an expiry). */
  startRefreshing (): void {
    this.scheduleRefresh(null)
  }

  /** The connection was lost: no refresh until the next one is open. */
  connectionLost (): void {
    this.cancelRefresh()
  }

  /** The client closed for good: nothing is scheduled or kept any more. */
  stop (): void {
    this.epoch++
    this.stopped = true
    this.cancelRefresh()
  }

  private cancelRefresh (): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
  }

  private store (token: string): void {
    this.current = token
    this.stale = false
    this.expiresAt = tokenExpiry(token)
  }

  /**
   * Renews the token on the open connection before it expires: at half its remaining life,
   * at most a minute ahead. `previous` is the expiry before a refresh; a refresh that did not
   * extend it is retried later instead of at once.
   */
  private scheduleRefresh (previous: number | null): void {
    this.cancelRefresh()
    const { getToken, expiresAt } = this
    if (getToken === undefined || expiresAt === null || !this.host.isOpen()) return
    const remaining = expiresAt - this.clock.now()
    const delay = previous !== null && expiresAt <= previous
      ? retryDelay(remaining)
      : Math.max(0, remaining - Math.min(REFRESH_AHEAD_MS, remaining / 2))
    if (remaining <= 0 && previous !== null) return // too late: the server closes with 4001, and reconnecting fetches a token
    this.cancelTimer = this.clock.after(delay, () => { void this.refresh(getToken) })
  }

  private async refresh (getToken: GetToken): Promise<void> {
    const epoch = this.epoch
    const previous = this.expiresAt
    let token: string
    try {
      token = await getToken({ stale: false })
    } catch (err) {
      if (epoch !== this.epoch) return
      this.host.reportError(toError(err))
      this.retryRefresh()
      return
    }
    if (epoch !== this.epoch || !this.host.isOpen()) {
      // The connection was lost meanwhile: the next attempt connects with this token.
      if (!this.stopped) this.store(token)
      return
    }
    this.host.sendRefresh(token, (error, tokenExpiresAt) => {
      if (epoch !== this.epoch) return
      if (error !== null) {
        if (error.code !== 'closed') {
          this.host.reportError(error)
          this.retryRefresh()
        }
        return
      }
      this.current = token
      this.expiresAt = tokenExpiresAt
      this.scheduleRefresh(previous)
    })
  }

  private retryRefresh (): void {
    const { getToken, expiresAt } = this
    if (getToken === undefined || expiresAt === null || !this.host.isOpen()) return
    const remaining = expiresAt - this.clock.now()
    if (remaining <= 0) return
    this.cancelRefresh()
    this.cancelTimer = this.clock.after(retryDelay(remaining), () => { void this.refresh(getToken) })
  }
}

/** A failed refresh is retried every few seconds, at least four times before the token expires. */
function retryDelay (remaining: number): number {
  return Math.max(200, Math.min(5_000, remaining / 4))
}
