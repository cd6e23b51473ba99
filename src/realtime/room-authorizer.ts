import type { Principal } from '../auth/principal.js'
import { AppError } from '../errors.js'
import { AuthorizationCache, grantAsk, principalPrefix } from './authorization-cache.js'
import type { Authorizer, GrantBasis, RoomGrant, RoomOperation } from './authorizer.js'
import type { Logger } from './logger.js'
import type { RealtimeMetrics } from './metrics.js'

/** Grants the cache holds at most (users × rooms × operations in use within its TTL). */
const AUTHORIZATION_CACHE_ENTRIES = 100_000

export interface RoomAuthorizerDeps {
  /** The store's answer (the room service): asked on a miss, and to renew a grant. */
  authorize: Authorizer
  /** How long a grant is kept (0: the store is asked every time). */
  cacheMs: number
  metrics: Pick<RealtimeMetrics, 'roomAuthorization' | 'grantRenewal'>
  log: Logger
  now: () => number
}

/**
 * Who may do what in a room, answered from a cache of grants in front of the store. Asks of
 * one grant while the store answers it share that answer; a grant used past half its life is
 * renewed in the background. A `revision` counts the changes that drop grants (room changes,
 * kicks, revocations, an engine reset): an answer asked before such a change may predate it,
 * so it is used once and not kept, and later asks do not share it.
 */
export class RoomAuthorizer {
  private readonly grants: AuthorizationCache
  /** Store asks in flight, by grant (grantAsk), with the revision they were asked at. */
  private readonly asking = new Map<string, { revision: number, answer: Promise<RoomGrant> }>()
  private currentRevision = 0
  private readonly ask: Authorizer
  private readonly metrics: RoomAuthorizerDeps['metrics']
  private readonly log: Logger

  constructor (deps: RoomAuthorizerDeps) {
    this.ask = deps.authorize
    this.metrics = deps.metrics
    this.log = deps.log
    this.grants = new AuthorizationCache(deps.cacheMs, AUTHORIZATION_CACHE_ENTRIES, deps.now)
  }

  /** Lets go of the cached grants that expired (the node calls it about once per grant lifetime). */
  sweepExpired (): void {
    this.grants.sweep()
  }

  /** Grows with every change that drops grants: a subscribe compares it across its authorization. */
  get revision (): number {
    return this.currentRevision
  }

  /**
   * The room's settings (RoomGrant) when `principal` may perform `operation` in `room`; rejects
   * with the store's refusal otherwise. A kept grant answers at once (and, past the middle of
   * its life, is renewed in the background, so a busy publisher never waits for the store);
   * on a miss the store is asked, once for all concurrent asks of the same grant unless a
   * change that drops grants came between. The answer is kept only if no such change was
   * applied while the store answered.
   */
  async authorize (principal: Principal, room: string, operation: RoomOperation, basis: GrantBasis = 'standing'): Promise<RoomGrant> {
    // A grant on a room token is kept apart from the same user's own: neither answers for the other.
    const kept = cacheOperation(operation, basis)
    const cached = this.grants.get(principal, room, kept)
    if (cached !== undefined) {
      this.metrics.roomAuthorization('cache')
      if (cached.renew) this.renew(principal, room, operation, basis)
      return cached.grant
    }
    if (!this.grants.enabled) {
      this.metrics.roomAuthorization('store')
      return await this.ask(principal, room, operation, basis)
    }
    const key = grantAsk(principal, room, kept)
    const asked = this.asking.get(key)
    if (asked !== undefined && asked.revision === this.currentRevision) {
      this.metrics.roomAuthorization('shared')
      return await asked.answer
    }
    this.metrics.roomAuthorization('store')
    const before = this.currentRevision
    const answer = this.ask(principal, room, operation, basis)
    this.asking.set(key, { revision: before, answer })
    try {
      const grant = await answer
      if (this.currentRevision === before) this.grants.set(principal, room, kept, grant)
      return grant
    } finally {
      if (this.asking.get(key)?.answer === answer) this.asking.delete(key)
    }
  }

  /**
   * Asks the store past every cache (a re-check after a room became private): the answer is
   * not kept, and it does not count as a grant use.
   */
  async recheck (principal: Principal, room: string, operation: RoomOperation, basis: GrantBasis = 'standing'): Promise<RoomGrant> {
    return await this.ask(principal, room, operation, basis)
  }

  /** A room changed (member removed, ban, role, update, deletion): its grants go. */
  roomChanged (room: string): void {
    this.currentRevision++
    this.grants.dropRoom(room)
  }

  /** A user's (kicked, account closed) or an API key's (revoked) grants go, in every room. */
  principalChanged (owner: { kind: 'user', userId: string } | { kind: 'apiKey', keyId: string }): void {
    this.currentRevision++
    this.grants.dropPrincipal(principalPrefix(owner))
  }

  /** Room changes may have been missed (the engine lost its control channel): no grant from before survives. */
  reset (): void {
    this.currentRevision++
    this.grants.clear()
  }

  private renew (principal: Principal, room: string, operation: RoomOperation, basis: GrantBasis): void {
    const before = this.currentRevision
    const kept = cacheOperation(operation, basis)
    this.ask(principal, room, operation, basis).then((grant) => {
      if (this.currentRevision !== before) return this.metrics.grantRenewal('superseded')
      this.grants.set(principal, room, kept, grant)
      this.metrics.grantRenewal('renewed')
    }, (err: unknown) => {
      // A refusal ends the grant now; a store that cannot answer leaves it to its expiry,
      // after which the next use asks in the foreground (and is answered `unavailable`).
      if (err instanceof AppError && err.protocolCode !== 'unavailable') {
        this.grants.drop(principal, room, kept)
        this.metrics.grantRenewal('refused')
      } else {
        this.log.debug({ err, room, operation }, 'grant renewal failed; the grant lasts until it expires')
        this.metrics.grantRenewal('failed')
      }
    })
  }
}

/** The operation as the cache keys it: a room token's grant under a name of its own. */
function cacheOperation (operation: RoomOperation, basis: GrantBasis): string {
  return basis === 'standing' ? operation : `${operation}\u0000token`
}
