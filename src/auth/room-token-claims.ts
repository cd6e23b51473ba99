/**
 * The claims of a room token (docs/integration.md, "Room tokens"), read from a payload whose
 * signature was already checked (room-token.ts). Pure functions: what a token may name, and
 * whether what it names covers one operation in one room.
 *
 * A room token grants operations in rooms to one user, without a membership row:
 * `{ "typ": "room", "sub": "<user id>", "rooms": ["game:42", "game:43:*"], "ops": ["subscribe"], "exp": … }`.
 */

/** The `typ` claim that makes a token a room token; access tokens never carry it (both verifiers refuse the confusion). */
export const ROOM_TOKEN_TYPE = 'room'

export const ROOM_TOKEN_OPS = ['subscribe', 'publish', 'history', 'presence'] as const
export type RoomTokenOp = typeof ROOM_TOKEN_OPS[number]

/** Entries of `rooms` at most: a token is for one game, one match, not a whole namespace list. */
export const MAX_ROOM_TOKEN_ROOMS = 16
/** A room token longer than this is refused unparsed (16 rooms of 64 characters fit with room to spare). */
export { MAX_ROOM_TOKEN_LENGTH } from '@switchboard/protocol/messages'

/** A room name (packages/protocol/src/messages.ts RoomNameSchema). */
const ROOM_NAME = /^[a-z0-9][a-z0-9_.:-]{0,63}$/
/**
 * A pattern: a namespace prefix ending in `:` and one trailing `*` (`game:42:*`). The star
 * matches the rest of a room name after that colon, never across a partial segment: `game:4*`
 * (which would also grant `game:40`…`game:49x`) and a bare `*` are refused.
 */
const ROOM_PATTERN = /^[a-z0-9][a-z0-9_.:-]{0,61}:\*$/
/** User ids as the server knows them: usernames and `<prefix>:<subject>` of the identity provider. */
const USER_ID = /^[A-Za-z0-9._~@|+=:-]{1,200}$/
/** Personal rooms (src/rooms/personal.ts) have their own rule: no token names one. */
const PERSONAL_PREFIX = 'user:'

export interface RoomTokenGrant {
  /** The user the token is for: a connection or request of anyone else is refused. */
  userId: string
  /** Room names and `prefix:*` patterns. */
  rooms: readonly string[]
  ops: ReadonlySet<RoomTokenOp>
  /** Epoch seconds. */
  expiresAt: number
}

/**
 * The grant a verified payload carries, or why it is unusable (for the debug log): not a
 * room token, a bad `sub`, `rooms` or `ops`, or an `exp` further off than `maxExpiresAt`.
 */
export function readRoomClaims (payload: Record<string, unknown>, maxExpiresAt: number): RoomTokenGrant | string {
  if (payload.typ !== ROOM_TOKEN_TYPE) return 'typ'
  const { sub, rooms, ops, exp } = payload
  if (typeof sub !== 'string' || !USER_ID.test(sub)) return 'sub'
  if (!Array.isArray(rooms) || rooms.length === 0 || rooms.length > MAX_ROOM_TOKEN_ROOMS) return 'rooms'
  for (const room of rooms) {
    if (typeof room !== 'string' || room.startsWith(PERSONAL_PREFIX) || !(ROOM_NAME.test(room) || ROOM_PATTERN.test(room))) return 'rooms'
  }
  if (!Array.isArray(ops) || ops.length === 0 || ops.length > ROOM_TOKEN_OPS.length) return 'ops'
  const granted = new Set<RoomTokenOp>()
  for (const op of ops) {
    if (!(ROOM_TOKEN_OPS as readonly unknown[]).includes(op) || granted.has(op as RoomTokenOp)) return 'ops'
    granted.add(op as RoomTokenOp)
  }
  // jose checked that `exp` is a number in the future; its distance is ours to bound.
  if (typeof exp !== 'number' || exp > maxExpiresAt) return 'exp'
  return { userId: sub, rooms: rooms as string[], ops: granted, expiresAt: exp }
}

/** Whether `grant` covers `op` in `room`: the op is listed, and a name equals the room or a pattern's prefix starts it. */
export function roomTokenCovers (grant: RoomTokenGrant, room: string, op: RoomTokenOp): boolean {
  if (!grant.ops.has(op)) return false
  return grant.rooms.some(entry => entry.endsWith('*')
    ? room.length >= entry.length && room.startsWith(entry.slice(0, -1))
    : entry === room)
}
