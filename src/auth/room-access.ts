import type { Ban, Membership, Room, RoomRole } from '../store/types.js'
import type { Principal } from './principal.js'
import { scopeAllows, scopeTouches } from './scopes.js'

/**
 * The room authorization table, in one place. docs/authorization.md shows the same table for
 * people, and test/room-access.test.ts checks every cell through the HTTP API.
 *
 * A user's standing in a room is decided in this order: a server admin is `admin` everywhere;
 * a banned user is `banned` (bans remove membership); then the membership role; else `nonMember`.
 */
export type Standing = 'admin' | RoomRole | 'nonMember' | 'banned'

export type RoomAction =
  | 'read' // see the room's settings and find it in listings
  | 'subscribe' // receive its messages live (WebSocket)
  | 'history' // read past messages
  | 'presence' // see who is online
  | 'publish' // send a message
  | 'listMembers'
  | 'listBans'
  | 'update' // change settings
  | 'delete'

type Rule = boolean | ((room: Room) => boolean)
const publicOnly: Rule = room => room.visibility === 'public'
const membersMayPublish: Rule = room => room.publish === 'members'

const TABLE: Record<RoomAction, Record<Standing, Rule>> = {
  read: { admin: true, owner: true, moderator: true, member: true, nonMember: publicOnly, banned: false },
  subscribe: { admin: true, owner: true, moderator: true, member: true, nonMember: publicOnly, banned: false },
  history: { admin: true, owner: true, moderator: true, member: true, nonMember: publicOnly, banned: false },
  presence: { admin: true, owner: true, moderator: true, member: true, nonMember: publicOnly, banned: false },
  publish: { admin: true, owner: true, moderator: true, member: membersMayPublish, nonMember: false, banned: false },
  listMembers: { admin: true, owner: true, moderator: true, member: true, nonMember: publicOnly, banned: false },
  listBans: { admin: true, owner: true, moderator: true, member: false, nonMember: false, banned: false },
  update: { admin: true, owner: true, moderator: false, member: false, nonMember: false, banned: false },
  delete: { admin: true, owner: true, moderator: false, member: false, nonMember: false, banned: false }
}

export function standingOf (principal: Principal, membership: Membership | undefined, ban: Ban | undefined): Standing {
  if (principal.kind === 'user' && principal.role === 'admin') return 'admin'
  if (ban !== undefined) return 'banned'
  return membership?.role ?? 'nonMember'
}

/** Whether a user with this standing may perform `action` on `room`. */
export function standingAllows (standing: Standing, action: RoomAction, room: Room): boolean {
  const rule = TABLE[action][standing]
  return typeof rule === 'function' ? rule(room) : rule
}

/** API keys act by scope: the room operations their scopes name, and reading rooms (settings, members) they touch. */
export function apiKeyAllows (scopes: readonly string[], action: RoomAction, room: Room): boolean {
  switch (action) {
    // A service acting on a room needs its settings and who is in it, but never its bans.
    case 'read':
    case 'listMembers':
      return scopeTouches(scopes, room.id)
    case 'subscribe':
    case 'history':
    case 'presence':
    case 'publish':
      return scopeAllows(scopes, action, room.id)
    default:
      return false
  }
}

/**
 * A room token (src/auth/room-token.ts) grants its operations in an existing room, public or
 * private, to anyone but a banned user: a ban always wins over a token. The token's own
 * checks (its user, its ops, its rooms) come first, in plugins/auth.ts.
 */
export function roomTokenAllows (standing: Standing): boolean {
  return standing !== 'banned'
}

/**
 * Membership changes: `next` is the role to set, or null to remove. Owners and admins manage
 * everyone; moderators add and remove plain members only. About themselves, anyone may leave,
 * step down to a lower role (or repeat their current one: a no-op), and anyone not banned may
 * join a public room as a plain member.
 */
export function mayChangeMember (actor: Standing, change: { self: boolean, current: RoomRole | null, next: RoomRole | null }, room: Room): boolean {
  if (actor === 'admin' || actor === 'owner') return true
  if (actor === 'banned') return false
  if (change.self) {
    if (change.next === null) return true
    if (change.current === null) return change.next === 'member' && room.visibility === 'public'
    return ROLE_RANK[change.next] <= ROLE_RANK[change.current]
  }
  if (actor === 'moderator') {
    return (change.current === null || change.current === 'member') && (change.next === null || change.next === 'member')
  }
  return false
}

const ROLE_RANK: Record<RoomRole, number> = { member: 1, moderator: 2, owner: 3 }

/** Bans: owners and admins ban anyone; moderators ban plain members and outsiders; nobody bans themselves. */
export function mayBan (actor: Standing, target: { self: boolean, current: RoomRole | null }): boolean {
  if (target.self) return false
  if (actor === 'admin' || actor === 'owner') return true
  if (actor === 'moderator') return target.current === null || target.current === 'member'
  return false
}

/** Lifting a ban: the same people who may ban an outsider. */
export function mayUnban (actor: Standing): boolean {
  return actor === 'admin' || actor === 'owner' || actor === 'moderator'
}
