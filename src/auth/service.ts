import type { Config } from '../config.js'
import { Errors } from '../errors.js'
import type { ApiKey, Store, User, UserPatch, UserRole } from '../store/types.js'
import type { LoginThrottle } from '../limits/login-throttle.js'
import { isActiveAccount } from './account-status.js'
import { isBuiltinUserId, isExternalUserId } from './external-claims.js'
import { dummyPasswordHash, hashPassword, NO_PASSWORD, verifyPassword } from './passwords.js'
import type { ApiKeyPrincipal } from './principal.js'
import type { Revocations } from './revocation.js'
import { apiKeyDisplayPrefix, digest, newApiKey, newId, newRefreshToken } from './secrets.js'

export interface AccessClaims {
  sub: string
  role: UserRole
  jti: string
  /** The session: the refresh-token family the token was issued with (what revocation denies). */
  sid: string
}

export interface TokenPair {
  accessToken: string
  refreshToken: string
  /** Access token lifetime in seconds. */
  expiresIn: number
  tokenType: 'Bearer'
  user: User
}

export interface AuthServiceDeps {
  store: Store
  config: Pick<Config, 'jwt' | 'refreshTokenTtlSeconds' | 'allowRegistration' | 'passwordHashCost' | 'accounts' | 'idp'>
  /** Signs access-token claims (the auth plugin passes @fastify/jwt's signer: HS256, iss, exp). */
  signAccessToken: (claims: AccessClaims) => string
  /** Counts failed sign-ins per (address, username) and per address; cluster-wide with Redis. */
  loginThrottle: LoginThrottle
  /** Ends sessions and accounts now, on every node (logout, reuse, sign out everywhere, removal). */
  revocations: Revocations
  now?: () => number
}

export type AuthService = ReturnType<typeof createAuthService>

/**
 * Users, sessions and API keys: registration, login with refresh-token rotation, logout, and
 * API key issue and lookup. Framework-free; HTTP lives in routes/auth and routes/api-keys.
 */
export function createAuthService (deps: AuthServiceDeps) {
  const { store, config, signAccessToken, loginThrottle: throttle, revocations, now = Date.now } = deps
  /** A session that issued no token within this long holds no live access token. */
  const accessTokenLifeMs = (config.jwt.accessTokenTtlSeconds + config.jwt.clockToleranceSeconds) * 1000

  /**
   * Revokes every session of a user (but `keep`, when given): refresh tokens in the store, live
   * access tokens and sockets everywhere.
   */
  async function revokeUserSessions (userId: string, keep?: string): Promise<void> {
    const at = now()
    const sessionIds = await store.revokeUserRefreshTokens(userId, at, at - accessTokenLifeMs, keep)
    await revocations.revokeSessions(userId, sessionIds)
  }

  /** A user of the identity provider: no password here, its role comes from its token (docs/authorization.md). */
  function isExternal (userId: string): boolean {
    return !isBuiltinUserId(userId)
  }

  /**
   * An identity provider's user an admin acts on before it ever joined a room has no row: one
   * is recorded (without a password) so that the action has something to stick to.
   */
  async function recordExternalUser (userId: string): Promise<void> {
    const prefix = config.idp?.userPrefix
    if (prefix === undefined || !isExternalUserId(userId, prefix)) return
    await store.createUser({ id: userId, passwordHash: NO_PASSWORD, role: 'user' })
  }

  /** With AUTH_ACCOUNTS=external, Switchboard keeps no passwords and issues no tokens. */
  function requirePasswordAccounts (): void {
    if (config.accounts === 'external') throw new Errors.ExternalAccountsOnly()
  }

  async function issueTokens (user: User, familyId: string): Promise<TokenPair> {
    const refreshToken = newRefreshToken()
    const issuedAt = now()
    await store.insertRefreshToken({
      id: newId(),
      tokenHash: digest(refreshToken),
      userId: user.id,
      familyId,
      expiresAt: issuedAt + config.refreshTokenTtlSeconds * 1000,
      createdAt: issuedAt,
      usedAt: null,
      revokedAt: null
    })
    return {
      accessToken: signAccessToken({ sub: user.id, role: user.role, jti: newId(), sid: familyId }),
      refreshToken,
      expiresIn: config.jwt.accessTokenTtlSeconds,
      tokenType: 'Bearer',
      user: publicUser(user)
    }
  }

  return {
    async register (username: string, password: string, role: UserRole = 'user'): Promise<User> {
      requirePasswordAccounts()
      const user = await store.createUser({ id: username, passwordHash: await hashPassword(password, config.passwordHashCost), role })
      if (user === null) throw await store.isUsernameRetired(username) ? new Errors.UsernameRetired() : new Errors.UsernameTaken()
      return user
    },

    /**
     * Checks a password from the client at `address` and opens a session. Unknown users and
     * wrong passwords fail the same way, in the same time. An address that failed too often —
     * for this username, or for any — waits (429) before its next password is even checked;
     * other addresses are not slowed by its failures. A disabled account is told so, but only
     * after its password was checked: the answer reveals nothing to someone without it.
     */
    async login (username: string, password: string, address: string): Promise<TokenPair> {
      requirePasswordAccounts()
      const wait = await throttle.attempt(address, username)
      if (wait > 0) throw new Errors.TooManyLoginAttempts().withRetryAfter(wait * 1000)
      const user = await store.getUser(username)
      const ok = await verifyPassword(password, user?.passwordHash ?? await dummyPasswordHash(config.passwordHashCost))
      // The attempt was counted as a failure when it was let in: only a success takes it back.
      if (user === undefined || !ok) throw new Errors.InvalidCredentials()
      await throttle.succeeded(address, username)
      if (user.disabled) throw new Errors.AccountDisabled()
      return await issueTokens(user, newId())
    },

    /**
     * Exchanges a refresh token for a new pair. Each token works once: presenting a token that
     * was already exchanged means it was copied, so the whole family (every token descended
     * from that login) is revoked, with the access tokens it issued and the sockets opened with
     * them, and both holders must sign in again.
     */
    async refresh (refreshToken: string): Promise<TokenPair> {
      requirePasswordAccounts()
      const record = await store.getRefreshTokenByHash(digest(refreshToken))
      const at = now()
      if (record === undefined || record.revokedAt !== null || record.expiresAt <= at) throw new Errors.InvalidRefreshToken()
      if (record.usedAt !== null || !(await store.markRefreshTokenUsed(record.id, at))) {
        await store.revokeRefreshFamily(record.familyId, at)
        await revocations.revokeSessions(record.userId, [record.familyId])
        throw new Errors.InvalidRefreshToken()
      }
      const user = await store.getUser(record.userId)
      if (!isActiveAccount(user)) throw new Errors.InvalidRefreshToken()
      return await issueTokens(user, record.familyId)
    },

    /**
     * Ends the session the refresh token belongs to: its refresh tokens, the access tokens it
     * issued and the sockets opened with them (4001), on every node. Unknown tokens are ignored
     * (logout is idempotent).
     */
    async logout (refreshToken: string): Promise<void> {
      const record = await store.getRefreshTokenByHash(digest(refreshToken))
      if (record === undefined) return
      await store.revokeRefreshFamily(record.familyId, now())
      await revocations.revokeSessions(record.userId, [record.familyId])
    },

    /** Signs a user out everywhere (oneself, an admin's action): every session ends now, sockets closed with 4001. */
    async revokeUserSessions (userId: string): Promise<void> {
      await revokeUserSessions(userId)
    },

    /**
     * A user changes their own password (POST /auth/password). The current password is checked
     * under the login throttle, as a sign-in from `address` would be: a stolen access token
     * cannot be turned into a password guesser. Every other session ends at once; the caller's
     * (`sessionId`) stays, so the device that changed the password stays signed in.
     */
    async changeOwnPassword (userId: string, sessionId: string | null, current: string, next: string, address: string): Promise<void> {
      requirePasswordAccounts()
      if (isExternal(userId)) throw new Errors.ExternalUser()
      const wait = await throttle.attempt(address, userId)
      if (wait > 0) throw new Errors.TooManyLoginAttempts().withRetryAfter(wait * 1000)
      const user = await store.getUser(userId)
      if (user === undefined) throw new Errors.InvalidToken()
      if (!(await verifyPassword(current, user.passwordHash))) throw new Errors.WrongPassword()
      await throttle.succeeded(address, userId)
      await store.setUserPassword(userId, await hashPassword(next, config.passwordHashCost))
      await revokeUserSessions(userId, sessionId ?? undefined)
    },

    /** An admin sets a user's password: every session of that user ends (they sign in with the new one). */
    async resetPassword (userId: string, password: string): Promise<void> {
      if (isExternal(userId)) throw new Errors.ExternalUser()
      if (!(await store.setUserPassword(userId, await hashPassword(password, config.passwordHashCost)))) throw new Errors.UserNotFound()
      await revokeUserSessions(userId)
    },

    /**
     * An admin disables or enables an account, or changes its role (PATCH /users/:id).
     * Disabling closes the account now: its tokens get 401 and its sockets close with 4504 on
     * every node, and its sessions are revoked, so re-enabling asks for a fresh sign-in.
     * Losing the admin role revokes its sessions too (the role travels in the access token); a
     * new role is in the next token. Users of the identity provider can be disabled (recorded
     * here, refused whatever their token says) but their role is their token's.
     */
    async updateUser (userId: string, patch: UserPatch): Promise<User> {
      if (isExternal(userId)) {
        if (patch.role !== undefined) throw new Errors.ExternalUser()
        await recordExternalUser(userId)
      }
      const result = await store.updateUser(userId, patch)
      if (!result.ok) throw result.reason === 'last_admin' ? new Errors.LastAdmin() : new Errors.UserNotFound()
      const { user, before } = result
      if (user.disabled && !before.disabled) {
        await revocations.closeAccount(userId)
        await revokeUserSessions(userId)
      } else if (before.role === 'admin' && user.role !== 'admin') {
        await revokeUserSessions(userId)
      }
      return user
    },

    /**
     * Deletes an account: its tokens get 401 and its sockets are closed with 4504 on every node
     * before this resolves, as are the sockets of the API keys it created. A built-in username
     * is kept as a tombstone and never reused; an identity provider's user is removed outright
     * (its id is the provider's: it may come back with a new token, as a new user here; disable
     * it to keep it out). False when there was no such user.
     */
    async deleteUser (userId: string): Promise<boolean> {
      const result = await store.deleteUser(userId, { tombstone: !isExternal(userId) })
      if (!result.ok) {
        if (result.reason === 'last_admin') throw new Errors.LastAdmin()
        return false
      }
      await revocations.closeAccount(userId)
      revocations.revokeApiKeys(result.apiKeyIds)
      return true
    },

    /** Creates the bootstrap admin when it does not exist yet; never changes an existing user. */
    async ensureAdmin (username: string, password: string): Promise<boolean> {
      if (await store.getUser(username) !== undefined || await store.isUsernameRetired(username)) return false
      const created = await store.createUser({ id: username, passwordHash: await hashPassword(password, config.passwordHashCost), role: 'admin' })
      return created !== null
    },

    /** Issues a key; the plaintext is returned here once and never again. */
    async createApiKey (name: string, scopes: string[], createdBy: string): Promise<{ key: string, apiKey: ApiKey }> {
      const key = newApiKey()
      const apiKey = await store.createApiKey({ id: newId(), name, prefix: apiKeyDisplayPrefix(key), keyHash: digest(key), scopes, createdBy })
      return { key, apiKey }
    },

    async authenticateApiKey (key: string): Promise<ApiKeyPrincipal | null> {
      const apiKey = await store.getApiKeyByHash(digest(key))
      if (apiKey === undefined) return null
      const at = now()
      // Best effort and throttled: a busy device must not turn every request into a write.
      if (apiKey.lastUsedAt === null || at - apiKey.lastUsedAt > 60_000) void store.touchApiKey(apiKey.id, at).catch(() => {})
      return { kind: 'apiKey', keyId: apiKey.id, name: apiKey.name, scopes: apiKey.scopes }
    }
  }
}

/** What a user's own answers (sign-in, /auth/me) say of the account: the row without its secrets. */
export function publicUser (user: User): User {
  return { id: user.id, role: user.role, createdAt: user.createdAt, disabled: user.disabled }
}
