import type { Store, User } from '../store/types.js'
import { isBuiltinUserId } from './external-claims.js'

/**
 * Whether the user a valid access token names still has an active account, asked on every
 * authenticated request and handshake. A signature proves who was signed in, not that the
 * account still exists: a deleted user's token must not create rooms (a foreign-key error,
 * issue 19 finding 8) or keep a socket.
 *
 * As the grant cache (src/realtime/authorization-cache.ts), only good answers are kept, for
 * `ttlMs`: a handshake or request of a known-active user is a Map lookup, a user not known
 * (or gone) asks the store each time. Closing an account through the auth service forgets it
 * on every node at once (the control channel); an account removed behind the service's back
 * (straight in the database) is noticed within `ttlMs`, on REST and by the realtime node's
 * periodic check of its connected users (`closedAmong`).
 * Bounded: at most `maxEntries`; when full, the oldest answers go first.
 */
export interface AccountStatus {
  /** True while the account exists and is active: from memory within `ttlMs`, else from the store. */
  isActive(userId: string): boolean | Promise<boolean>
  /** The account was closed (or changed): the next check asks the store. */
  forget(userId: string): void
  /** Of these users, those whose accounts are gone or inactive now, asked of the store in batches. */
  closedAmong(userIds: string[]): Promise<string[]>
}

export interface AccountStatusOptions {
  store: Pick<Store, 'getUser' | 'getUsers'>
  ttlMs: number
  maxEntries: number
  now?: () => number
}

/** Users asked of the store in one query by closedAmong. */
const BATCH = 500

/** The one place that says what an active account is: it exists (not deleted) and is not disabled. */
export function isActiveAccount (user: User | undefined): user is User {
  return user !== undefined && !user.disabled
}

/**
 * Whether `userId`'s tokens may be used, given its row (undefined: none). A built-in account
 * must be active. A user of the identity provider needs no row (it has no account here, and
 * gets one only when it joins a room); only a row an admin disabled refuses it (issue 25).
 */
export function accountAllows (userId: string, user: User | undefined): boolean {
  return isBuiltinUserId(userId) ? isActiveAccount(user) : user?.disabled !== true
}

export function createAccountStatus (options: AccountStatusOptions): AccountStatus {
  const { store, ttlMs, maxEntries } = options
  const now = options.now ?? Date.now
  /** userId → when the good answer stops counting (ms), oldest first. */
  const active = new Map<string, number>()

  function remember (userId: string): void {
    active.delete(userId)
    if (active.size >= maxEntries) {
      const oldest = active.keys().next()
      if (oldest.done !== true) active.delete(oldest.value)
    }
    active.set(userId, now() + ttlMs)
  }

  return {
    isActive (userId) {
      const until = active.get(userId)
      if (until !== undefined && until > now()) return true
      return store.getUser(userId).then((user) => {
        if (!accountAllows(userId, user)) {
          active.delete(userId)
          return false
        }
        remember(userId)
        return true
      })
    },

    forget (userId) {
      active.delete(userId)
    },

    async closedAmong (userIds) {
      const closed: string[] = []
      for (let i = 0; i < userIds.length; i += BATCH) {
        const batch = userIds.slice(i, i + BATCH)
        const rows = new Map<string, User>()
        for (const user of await store.getUsers(batch)) rows.set(user.id, user)
        for (const userId of batch) {
          if (accountAllows(userId, rows.get(userId))) {
            remember(userId)
          } else {
            active.delete(userId)
            closed.push(userId)
          }
        }
      }
      return closed
    }
  }
}
