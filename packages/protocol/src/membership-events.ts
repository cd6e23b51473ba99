/*
 * Membership events: what the server publishes to a user's personal room (`user:<id>`) when
 * their access to a room changes, so that every app of theirs updates its room list at once
 * (docs/protocol.md §11). Part of the wire contract: the server writes them, apps (the web app,
 * yours) read them. The publication's `from.id` is who made the change.
 */

/** The room as a room list shows it. */
export interface MembershipEventRoom {
  id: string
  name: string | null
  visibility: 'public' | 'private'
}

/** Why a room left a user's list. */
export type RoomRemovedReason = 'removed' | 'left' | 'banned' | 'deleted'

export type MembershipEvent =
  /** The user became a member (added by someone, or joined a public room). */
  | { type: 'room.added', room: MembershipEventRoom, role: 'owner' | 'moderator' | 'member' }
  /** The user is no longer a member, or may no longer see the room. */
  | { type: 'room.removed', room: MembershipEventRoom, reason: RoomRemovedReason }

const REASONS: ReadonlySet<unknown> = new Set<RoomRemovedReason>(['removed', 'left', 'banned', 'deleted'])
const ROLES: ReadonlySet<unknown> = new Set(['owner', 'moderator', 'member'])

/**
 * True for the data of a membership event. Anyone allowed to publish to a personal room (an
 * admin, an API key with `publish:user:*`) can publish this shape too: treat it as a hint to
 * read the room list again, not as proof of a change.
 */
export function isMembershipEvent (data: unknown): data is MembershipEvent {
  if (typeof data !== 'object' || data === null) return false
  const { type, room, role, reason } = data as Record<string, unknown>
  if (typeof room !== 'object' || room === null || typeof (room as { id?: unknown }).id !== 'string') return false
  if (type === 'room.added') return ROLES.has(role)
  if (type === 'room.removed') return REASONS.has(reason)
  return false
}
