import type { AccountStatus } from './account-status.js'
import type { SessionDenylist } from './session-denylist.js'

/**
 * What ending access looks like beyond the store: the realtime node registers here and closes
 * the sockets concerned, on this node and (through its control channel) on every other.
 */
export interface RevocationListener {
  /** These sessions of `userId` were revoked, denied until `until` (ms): close their sockets with 4001. */
  sessionsRevoked(userId: string, sessionIds: string[], until: number): Promise<void>
  /** The account is gone or disabled: close every socket of it with 4504. */
  accountClosed(userId: string): Promise<void>
  /** These API keys were deleted (with the account that created them): close their sockets with 4503. */
  apiKeysRevoked(keyIds: string[]): void
}

/**
 * Revocation, the mechanism (issue 19): the session denylist, the account check, and the
 * listener that carries both to open sockets. The auth service calls it on logout, refresh-
 * token reuse, sign out everywhere, password change, role removal, disabling and deletion; docs/security.md,
 * "Revocation", says what each does and how long each takes.
 */
export interface Revocations {
  readonly sessions: SessionDenylist
  readonly accounts: AccountStatus
  /** Denies the sessions' access tokens and closes their sockets, before resolving. */
  revokeSessions(userId: string, sessionIds: string[]): Promise<void>
  /** Forgets the account as active and closes its sockets, before resolving. */
  closeAccount(userId: string): Promise<void>
  /** Closes the sockets of deleted API keys (the store refuses the keys already). */
  revokeApiKeys(keyIds: string[]): void
  onRevocation(listener: RevocationListener): void
}

export function createRevocations (deps: { sessions: SessionDenylist, accounts: AccountStatus }): Revocations {
  const { sessions, accounts } = deps
  const listeners: RevocationListener[] = []
  return {
    sessions,
    accounts,
    async revokeSessions (userId, sessionIds) {
      if (sessionIds.length === 0) return
      const until = await sessions.revoke(sessionIds)
      for (const listener of listeners) await listener.sessionsRevoked(userId, sessionIds, until)
    },
    async closeAccount (userId) {
      accounts.forget(userId)
      for (const listener of listeners) await listener.accountClosed(userId)
    },
    revokeApiKeys (keyIds) {
      if (keyIds.length === 0) return
      for (const listener of listeners) listener.apiKeysRevoked(keyIds)
    },
    onRevocation (listener) {
      listeners.push(listener)
    }
  }
}
