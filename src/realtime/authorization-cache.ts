import type { Principal } from '../auth/principal.js'
import type { RoomGrant } from './authorizer.js'

/**
 * Remembers granted room operations for a short while, so a busy publisher does not cost
 * two or three store queries per message (what they cost: docs/performance.md).
 *
 * Only grants are kept: a refusal is asked again every time, so access given a moment ago
 * works at once. Every room change (removal, ban, role change, room update or deletion —
 * this node's own and, through the control channel, other nodes') drops the room's grants
 * before the change is acknowledged, and a grant read while a change was being applied is
 * not kept (the revision check), so a revocation is never undone by a stale answer. What no
 * room change announces (a deleted user, a changed API key) lasts at most `ttlMs`.
 *
 * A grant used in the second half of its life asks to be renewed ahead of expiry (`renew`,
 * once per grant): the caller checks the store in the background and sets the answer, so a
 * busy publisher never waits for the store, and no answer older than `ttlMs` is ever used.
 */
export class AuthorizationCache {
  /** room → grant key → grant. Per room, so a room change drops its grants in one step. */
  private readonly rooms = new Map<string, Map<string, Grant>>()
  private size = 0

  constructor (private readonly ttlMs: number, private readonly maxEntries: number, private readonly now: () => number) {}

  /** Grants held, expired ones included until they are swept or read. */
  get entries (): number {
    return this.size
  }

  get enabled (): boolean {
    return this.ttlMs > 0
  }

  /** The grant, while it lives; `renew` is true on the first use past the middle of its life. */
  get (principal: Principal, room: string, operation: string): { grant: RoomGrant, renew: boolean } | undefined {
    const grants = this.rooms.get(room)
    const key = grantKey(principal, operation)
    const grant = grants?.get(key)
    if (grant === undefined) return undefined
    const at = this.now()
    if (grant.expiresAt > at) {
      const renew = !grant.renewing && at >= grant.renewAt
      if (renew) grant.renewing = true
      return { grant: grant.answer, renew }
    }
    this.remove(room, grants!, key)
    return undefined
  }

  set (principal: Principal, room: string, operation: string, answer: RoomGrant): void {
    if (!this.enabled) return
    const at = this.now()
    // Full: expired grants stay until they are next read, so a busy node fills up with them;
    // they go first. If that frees less than a tenth, the grants nearest their expiry go
    // until a tenth is free: those granted or renewed longest ago, so the grants in use stay
    // (each use past half a grant's life renews it). The tenth keeps this rare: each time is
    // a pass over every grant (and a sort of their expiries, a few ms at 100,000).
    if (this.size >= this.maxEntries) {
      this.sweep(at)
      this.evictNearestExpiry(Math.floor(this.maxEntries * 0.9))
    }
    let grants = this.rooms.get(room)
    if (grants === undefined) this.rooms.set(room, grants = new Map())
    const key = grantKey(principal, operation)
    if (!grants.has(key)) this.size++
    grants.set(key, { answer, expiresAt: at + this.ttlMs, renewAt: at + this.ttlMs / 2, renewing: false })
  }

  /** A renewal found the grant gone (the store refused): forget it now, not at expiry. */
  drop (principal: Principal, room: string, operation: string): void {
    const grants = this.rooms.get(room)
    const key = grantKey(principal, operation)
    if (grants?.has(key) === true) this.remove(room, grants, key)
  }

  private remove (room: string, grants: Map<string, Grant>, key: string): void {
    grants.delete(key)
    this.size--
    if (grants.size === 0) this.rooms.delete(room)
  }

  dropRoom (room: string): void {
    const grants = this.rooms.get(room)
    if (grants === undefined) return
    this.size -= grants.size
    this.rooms.delete(room)
  }

  /** A user's (or an API key's) grants in every room: kicked, deleted, revoked. */
  dropPrincipal (prefix: string): void {
    for (const [room, grants] of this.rooms) {
      for (const key of grants.keys()) if (key.startsWith(prefix)) this.remove(room, grants, key)
    }
  }

  clear (): void {
    this.rooms.clear()
    this.size = 0
  }

  /**
   * Lets go of every expired grant. Without it, the grants of connections that subscribed once
   * and stayed (the usual case) would be kept until the cache fills, long after any use.
   */
  sweep (at: number = this.now()): void {
    for (const [room, grants] of this.rooms) {
      for (const [key, grant] of grants) if (grant.expiresAt <= at) this.remove(room, grants, key)
    }
  }

  /** Lets go of the grants nearest their expiry until `keep` are left. */
  private evictNearestExpiry (keep: number): void {
    let excess = this.size - keep
    if (excess <= 0) return
    const expiries = new Float64Array(this.size)
    let i = 0
    for (const grants of this.rooms.values()) for (const grant of grants.values()) expiries[i++] = grant.expiresAt
    expiries.sort()
    const last = expiries[excess - 1]!
    for (const [room, grants] of this.rooms) {
      for (const [key, grant] of grants) {
        if (excess === 0) return
        if (grant.expiresAt <= last) {
          this.remove(room, grants, key)
          excess--
        }
      }
    }
  }
}

interface Grant {
  /** The store's answer, room settings included: a room change drops it with the room's grants. */
  answer: RoomGrant
  expiresAt: number
  /** From here on, a use asks for a renewal (once: `renewing`). */
  renewAt: number
  renewing: boolean
}

/**
 * Everything a decision depends on besides the room: who (user id and role from the token,
 * or the API key id — its scopes are fixed for its life) and the operation.
 */
function grantKey (principal: Principal, operation: string): string {
  return `${principalPrefix(principal)}${principal.kind === 'user' ? principal.role : ''}\u0000${operation}`
}

/** One grant's identity across rooms: the key of a store ask in flight. */
export function grantAsk (principal: Principal, room: string, operation: string): string {
  return `${room}\u0000${grantKey(principal, operation)}`
}

export function principalPrefix (principal: Principal | { kind: 'user', userId: string } | { kind: 'apiKey', keyId: string }): string {
  return principal.kind === 'user' ? `u\u0000${principal.userId}\u0000` : `k\u0000${principal.keyId}\u0000`
}
