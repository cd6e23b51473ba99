import type { Principal } from '../auth/principal.js'
import { scopeAllows } from '../auth/scopes.js'
import { ROOM_DEFAULTS } from '../schemas/rooms.js'
import type { RoomGrant, RoomOperation } from '../realtime/authorizer.js'
import { RealtimeError } from '../realtime/errors.js'

/**
 * Personal rooms, `user:<id>`: one per user, with no row in the store (docs/protocol.md §11).
 * They are how a service reaches one person on all their devices. This module is their one
 * rule: the room service refuses to create a stored room in the namespace, and the real-time
 * authorizer (plugins/realtime.ts) asks `authorizePersonal` instead of the store.
 */
export const PERSONAL_ROOM_PREFIX = 'user:'

/**
 * Personal rooms have no row: they get the default settings, join/leave pushes included (a
 * personal room's subscribers are one user's devices and admins, never a crowd).
 */
export const PERSONAL_GRANT: RoomGrant = {
  stream: { historySize: ROOM_DEFAULTS.historySize, historyTtlSeconds: ROOM_DEFAULTS.historyTtlSeconds },
  presenceEvents: ROOM_DEFAULTS.presenceEvents
}

export function isPersonalRoom (room: string): boolean {
  return room.startsWith(PERSONAL_ROOM_PREFIX)
}

/**
 * Only that user and admins read a personal room; admins and API keys with a matching publish
 * scope write to it (the user does not: it is a channel to them, not a chat). Throws
 * `forbidden` otherwise; the room's settings when allowed.
 */
export function authorizePersonal (principal: Principal, room: string, operation: RoomOperation): RoomGrant {
  const owner = room.slice(PERSONAL_ROOM_PREFIX.length)
  const admin = principal.kind === 'user' && principal.role === 'admin'
  const allowed = operation === 'publish'
    ? admin || (principal.kind === 'apiKey' && scopeAllows(principal.scopes, 'publish', room))
    : admin || (principal.kind === 'user' && principal.userId === owner)
  if (!allowed) throw new RealtimeError('forbidden', `Not allowed to ${operation} in ${room}`)
  return PERSONAL_GRANT
}
