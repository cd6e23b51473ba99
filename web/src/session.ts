import { ApiError, request, type TokenSource } from './api.js'

export interface User { id: string, role: 'admin' | 'user', createdAt: number, disabled: boolean }
interface TokenPair { accessToken: string, refreshToken: string, expiresIn: number, user: User }

/** sessionStorage key of the refresh token (docs/web.md: why there and not elsewhere). */
const REFRESH_KEY = 'switchboard.refreshToken'
/** Refresh tokens of sign-outs the server has not heard of yet (it could not be reached), as a JSON array. */
const PENDING_SIGN_OUTS_KEY = 'switchboard.pendingSignOuts'
/**
 * A token with less life left than this is replaced before use: more than the SDK's own lead
 * (it asks for a new token a minute before expiry, or at half the life of a short token), so
 * when the SDK asks it always gets a token that lives longer than the one it has.
 */
const RENEW_BEFORE_MS = 90_000
const RENEW_BEFORE_FRACTION = 0.6

/**
 * The signed-in user's credentials. The access token lives in memory only; the refresh token
 * in sessionStorage, so a reload of this tab stays signed in while other tabs, other windows
 * and the next browser session do not share it. Refresh tokens are single use and reusing one
 * revokes the whole sign-in, so every refresh goes through one promise at a time.
 */
export class Session implements TokenSource {
  user: User | null = null
  private access: string | null = null
  /** Also kept here: with storage disabled the session still works until the tab reloads. */
  private refreshMem: string | null = null
  private pendingSignOutsMem: string[] | null = null
  private renewAt = 0
  private refreshing: Promise<string> | null = null
  private readonly listeners = new Set<(user: User | null) => void>()

  /** Called with the user on sign-in and with null when the session ends (sign-out, refresh refused). */
  onChange (listener: (user: User | null) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  async login (username: string, password: string): Promise<User> {
    const pair = await request<TokenPair>('POST', '/auth/login', { body: { username, password } })
    return this.accept(pair)
  }

  async register (username: string, password: string): Promise<User> {
    await request('POST', '/auth/register', { body: { username, password } })
    return await this.login(username, password)
  }

  /**
   * After a reload: signs in again from the tab's refresh token. Null when there is none or the
   * server refused it (the sign-in is over). Any other failure (server unreachable, an error on
   * its side) is thrown: the token may well still be good, and a sign-in form would wrongly
   * tell the user they were signed out, so the page says what happened and offers to try again.
   */
  async restore (): Promise<User | null> {
    if (this.refreshToken() === null) return null
    try {
      await this.token(true)
      return this.user
    } catch (err) {
      // refresh() forgets the token when the server refused it.
      if (this.refreshToken() === null) return null
      throw err
    }
  }

  /** A valid access token, renewed through /auth/refresh when it is about to expire (or when `force`). */
  async token (force = false): Promise<string> {
    if (!force && this.access !== null && Date.now() < this.renewAt) return this.access
    this.refreshing ??= this.refresh().finally(() => { this.refreshing = null })
    return await this.refreshing
  }

  /**
   * Forgets everything here at once and ends the sign-in on the server (the refresh token stops
   * working). False when the server could not be told: its refresh token is kept aside (where
   * it was, this tab's storage) for endPendingSignOuts to deliver, since until then anyone
   * holding it could still use it.
   */
  async logout (): Promise<boolean> {
    const refreshToken = this.refreshToken()
    this.clear()
    if (refreshToken === null) return true
    this.keepPendingSignOuts([...this.pendingSignOuts(), refreshToken])
    return await this.endPendingSignOuts()
  }

  /**
   * Changes this user's password (POST /auth/password). The server signs every other session
   * out and keeps this one: nothing changes here.
   */
  async changePassword (currentPassword: string, newPassword: string): Promise<void> {
    await request('POST', '/auth/password', { auth: this, body: { currentPassword, newPassword } })
  }

  /** Ends every session of this account, this one included (POST /auth/logout-all), then forgets it here. */
  async logoutEverywhere (): Promise<void> {
    await request('POST', '/auth/logout-all', { auth: this })
    this.clear()
  }

  /** Whether a sign-out is waiting for the server to hear of it. */
  hasPendingSignOut (): boolean {
    return this.pendingSignOuts().length > 0
  }

  /** Tells the server of sign-outs it could not be told of before: true once none is waiting. */
  async endPendingSignOuts (): Promise<boolean> {
    for (const refreshToken of this.pendingSignOuts()) {
      try {
        await request('POST', '/auth/logout', { body: { refreshToken } })
      } catch (err) {
        // No answer, or the server failing: the sign-in still stands there; kept for another try.
        // Any other refusal (a malformed token) means there is nothing to end.
        if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) return false
      }
      this.keepPendingSignOuts(this.pendingSignOuts().filter(t => t !== refreshToken))
    }
    return true
  }

  private async refresh (): Promise<string> {
    const refreshToken = this.refreshToken()
    if (refreshToken === null) {
      this.clear()
      throw new ApiError(401, 'SB_ERR_SIGNED_OUT', 'Signed out')
    }
    try {
      const pair = await request<TokenPair>('POST', '/auth/refresh', { body: { refreshToken } })
      this.accept(pair)
      return pair.accessToken
    } catch (err) {
      // Refused (expired, revoked, reused): the session is over. A network failure is not.
      if (err instanceof ApiError && (err.status === 401 || err.status === 400)) this.clear()
      throw err
    }
  }

  private accept (pair: TokenPair): User {
    const wasSignedIn = this.user !== null
    this.access = pair.accessToken
    const lifetimeMs = pair.expiresIn * 1000
    this.renewAt = Date.now() + lifetimeMs - Math.min(RENEW_BEFORE_MS, lifetimeMs * RENEW_BEFORE_FRACTION)
    this.user = pair.user
    this.refreshMem = pair.refreshToken
    try { sessionStorage.setItem(REFRESH_KEY, pair.refreshToken) } catch { /* storage off: refreshMem */ }
    if (!wasSignedIn) this.emit()
    return pair.user
  }

  private clear (): void {
    const wasSignedIn = this.user !== null
    this.access = null
    this.renewAt = 0
    this.user = null
    this.refreshMem = null
    try { sessionStorage.removeItem(REFRESH_KEY) } catch { /* storage off */ }
    if (wasSignedIn) this.emit()
  }

  private refreshToken (): string | null {
    return this.refreshMem ?? stored(REFRESH_KEY)
  }

  private pendingSignOuts (): string[] {
    if (this.pendingSignOutsMem !== null) return this.pendingSignOutsMem
    try {
      const parsed: unknown = JSON.parse(stored(PENDING_SIGN_OUTS_KEY) ?? '[]')
      return Array.isArray(parsed) ? parsed.filter((t): t is string => typeof t === 'string') : []
    } catch {
      return []
    }
  }

  private keepPendingSignOuts (tokens: string[]): void {
    this.pendingSignOutsMem = tokens
    try {
      if (tokens.length === 0) sessionStorage.removeItem(PENDING_SIGN_OUTS_KEY)
      else sessionStorage.setItem(PENDING_SIGN_OUTS_KEY, JSON.stringify(tokens))
    } catch { /* storage off: pendingSignOutsMem */ }
  }

  private emit (): void {
    for (const listener of this.listeners) listener(this.user)
  }
}

/** This tab's stored value, or null (none, or storage turned off). */
function stored (key: string): string | null {
  try {
    return sessionStorage.getItem(key)
  } catch {
    return null
  }
}
