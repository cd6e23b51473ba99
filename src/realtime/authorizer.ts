import type { Principal } from '../auth/principal.js'
import type { StreamOptions } from './engine.js'

export type RoomOperation = 'subscribe' | 'publish' | 'history' | 'presence'

/**
 * What a granted operation learns of the room: the settings the real-time core acts on. The
 * stream's (history) go to the engine; the others are the node's own business, kept apart
 * so that the engine's stream options stay about streams.
 */
export interface RoomGrant {
  stream: StreamOptions
  /**
   * Join/leave pushes to the room's subscribers. Off, a join or leave is still counted in
   * presence, but no event is published (on any engine, so no node pushes it).
   */
  presenceEvents: boolean
}

/**
 * What an operation is claimed on: the principal's own standing in the room (membership,
 * visibility, scopes), or a room token that the node checked grants it to this user
 * (docs/authorization.md, "Room tokens"): then only the room's existence and a ban count.
 */
export type GrantBasis = 'standing' | 'roomToken'

/**
 * Decides whether `principal` may perform `operation` on `room`, and returns the room's
 * settings (RoomGrant). Throws an error of the table (src/errors.ts: a RealtimeError, or `Errors.X`)
 * when not, answered with its protocol code (`not_found`, `forbidden`, …).
 */
export type Authorizer = (principal: Principal, room: string, operation: RoomOperation, basis?: GrantBasis) => Promise<RoomGrant>

/**
 * Checks a room token for `principal`'s `operation` in `room` (its signature, user, ops and
 * rooms; not the room itself): the time (epoch ms) past which it grants nothing. Throws an
 * error of the table when it does not grant this.
 */
export type RoomTokenCheck = (token: string, principal: Principal, room: string, operation: RoomOperation) => Promise<number>
