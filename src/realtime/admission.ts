import { randomUUID } from 'node:crypto'
import type { Principal } from '../auth/principal.js'
import type { ConnectionCounter } from './engine.js'
import type { Logger } from './logger.js'

export type AdmissionRefusal = 'draining' | 'revoked' | 'connections_per_user' | 'connections_per_ip'

/** What admission reads of the hub: how many connections are here already. */
export interface AdmissionCounts {
  countOf: (principal: Principal) => number
  countAt: (ip: string) => number
}

export interface AdmissionDeps {
  counts: AdmissionCounts
  /** Counts across nodes (a shared engine); absent: only the local caps apply. */
  counter: ConnectionCounter | undefined
  limits: { maxConnectionsPerUser: number, maxConnectionsPerIp: number }
  /** True when the session's tokens were revoked (a handshake racing a revocation is refused). */
  isSessionRevoked: (sessionId: string) => boolean
  log: Logger
}

/**
 * Who may connect: the drain state, revoked sessions and the connection caps per user (or
 * API key) and per address, checked on this node (`admit`) and across nodes (`reserve`,
 * with an engine that counts). A reservation is released when its socket does not open
 * (`release`) or when its connection ends (`closed`).
 */
export class Admission {
  /** Set once the node drains or closes: every handshake is refused from then on. */
  draining = false

  constructor (private readonly deps: AdmissionDeps) {}

  /** Checks a handshake against the drain state and the connection caps, before the upgrade. */
  admit (principal: Principal, ip: string): AdmissionRefusal | null {
    const { counts, limits } = this.deps
    if (this.draining) return 'draining'
    if (principal.kind === 'user' && principal.sessionId !== null && this.deps.isSessionRevoked(principal.sessionId)) return 'revoked'
    if (counts.countOf(principal) >= limits.maxConnectionsPerUser) return 'connections_per_user'
    if (counts.countAt(ip) >= limits.maxConnectionsPerIp) return 'connections_per_ip'
    return null
  }

  /**
   * The cluster-wide caps per user and per address (with an engine that counts across
   * nodes), checked after `admit` and before the upgrade: resolves with the id the
   * connection will have, already counted, or the cap it is over. Counting failures let the
   * handshake through (the local caps still hold): Redis being away must not lock users out.
   */
  async reserve (principal: Principal, ip: string): Promise<{ id: string } | { refusal: 'connections_per_user' | 'connections_per_ip' }> {
    const id = randomUUID()
    const { counter, limits } = this.deps
    if (counter === undefined) return { id }
    const userKey = ownerKey(principal)
    try {
      const [user, address] = await Promise.allSettled([
        counter.reserve(userKey, id, limits.maxConnectionsPerUser),
        counter.reserve(ipKey(ip), id, limits.maxConnectionsPerIp)
      ])
      if (user.status === 'rejected') throw user.reason
      if (address.status === 'rejected') throw address.reason
      if (user.value && address.value) return { id }
      // One cap said no: the other's count must not keep the refused connection.
      if (user.value) this.releaseKey(userKey, id)
      if (address.value) this.releaseKey(ipKey(ip), id)
      return { refusal: user.value ? 'connections_per_ip' : 'connections_per_user' }
    } catch (err) {
      this.deps.log.warn({ err }, 'cluster-wide connection count unavailable: only the local caps apply')
      return { id }
    }
  }

  /** A reserved id whose socket will not open after all, or a connection that ended: it stops counting at once. */
  release (principal: Principal, ip: string, connectionId: string): void {
    this.releaseKey(ownerKey(principal), connectionId)
    this.releaseKey(ipKey(ip), connectionId)
  }

  private releaseKey (key: string, connectionId: string): void {
    this.deps.counter?.release(key, connectionId)
      // Not fatal: an entry that is not released stops counting when its refresh lapses.
      .catch((err: unknown) => this.deps.log.debug({ err, connId: connectionId }, 'connection count release failed'))
  }
}

/** The cluster-wide count key of a principal's owner; the same strings on every node. */
function ownerKey (principal: Principal): string {
  return principal.kind === 'user' ? `user:${principal.userId}` : `key:${principal.keyId}`
}

function ipKey (ip: string): string {
  return `ip:${ip}`
}
