import type { Store, User } from '../store/types.js'

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

/**
 * The one place that says what an active account is. Today every stored user is; a disabled
 * flag (the operators' issue) is checked here.
 */
export function isActiveAccount (user: User | undefined): user is User {
  return user !== undefined
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
        if (!isActiveAccount(user)) {
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
        const found = new Set<string>()
        for (const user of await store.getUsers(batch)) if (isActiveAccount(user)) found.add(user.id)
        for (const userId of batch) {
          if (found.has(userId)) {
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
