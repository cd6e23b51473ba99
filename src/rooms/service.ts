import { Errors } from '../errors.js'
import type { Principal } from '../auth/principal.js'
import { apiKeyAllows, roomTokenAllows, mayBan, mayChangeMember, mayUnban, standingAllows, standingOf, type RoomAction, type Standing } from '../auth/room-access.js'
import type { Ban, Membership, MembershipFailure, NewRoom, Page, Room, RoomPatch, RoomRole, Store } from '../store/types.js'
import { isPersonalRoom } from './personal.js'
import { isExternalUserId } from '../auth/external-claims.js'
import { NO_PASSWORD } from '../auth/passwords.js'
import { isActiveAccount } from '../auth/account-status.js'
import type { MembershipEvent, MembershipEventRoom, RoomRemovedReason } from '@switchboard/protocol/membership-events'
import { ARCHIVE_DAYS_MAX, ROOM_DEFAULTS, USER_HISTORY_SIZE_MAX, USER_HISTORY_TTL_MAX_SECONDS } from '../schemas/rooms.js'

export interface RoomAccess {
  room: Room
  /** The caller's standing; API keys have none (null) and act by scope. */
  standing: Standing | null
}

export type RoomService = ReturnType<typeof createRoomService>

/** Outcome of a membership change, for routes to pick 200 vs 201. */
export interface MemberChange { membership: Membership, created: boolean }

/**
 * A change that may take rights away from open connections. Listeners (the real-time core)
 * run before the HTTP request answers, so once a removal is acknowledged no further message
 * reaches the removed user.
 */
export type RoomChange =
  | { type: 'member_removed', room: Room, userId: string }
  | { type: 'member_role_changed', room: Room, userId: string, role: RoomRole }
  | { type: 'banned', room: Room, userId: string }
  | { type: 'room_updated', room: Room }
  | { type: 'room_deleted', room: Room }

export type RoomChangeListener = (change: RoomChange) => Promise<void> | void

/**
 * One user's access to a room changed: what their personal room is told (packages/protocol/src/
 * membership-events.ts), with who made the change. Listeners run before the HTTP request answers.
 */
export interface MembershipNotice { userId: string, by: Principal, event: MembershipEvent }

export type MembershipListener = (notice: MembershipNotice) => Promise<void> | void

/** Members read per page when a deleted room's members are told. */
const MEMBER_PAGE = 500

export interface RoomLimits {
  /** Rooms an ordinary user may have created (MAX_ROOMS_PER_USER); admins are exempt. */
  maxRoomsPerUser: number
  /** New rooms archive unless their creator says (ARCHIVE_BY_DEFAULT); absent: off. */
  archiveByDefault?: boolean
  /** Most archiveDays an ordinary user may set (ARCHIVE_MAX_DAYS); absent: the schema's bound. */
  archiveMaxDays?: number
}

function isAdmin (principal: Principal): boolean {
  return principal.kind === 'user' && principal.role === 'admin'
}

type HistorySettings = Pick<RoomPatch, 'historySize' | 'historyTtlSeconds' | 'archiveDays'>

/**
 * History settings beyond what an ordinary user may choose are refused (admins may go up to
 * the schema's bounds): history costs the node memory, and a room is a user's to create. On
 * a room an admin set beyond them, its owner may keep or lower the values, never raise them.
 */
function checkHistorySettings (principal: Principal, settings: HistorySettings, archiveMaxDays: number, current: HistorySettings = {}): void {
  if (isAdmin(principal)) return
  if (settings.archiveDays !== undefined && settings.archiveDays > archiveMaxDays && settings.archiveDays > (current.archiveDays ?? 0)) {
    throw new Errors.HistoryLimit(`archiveDays above ${archiveMaxDays} needs an admin`)
  }
  if (settings.historySize !== undefined && settings.historySize > USER_HISTORY_SIZE_MAX && settings.historySize > (current.historySize ?? 0)) {
    throw new Errors.HistoryLimit(`historySize above ${USER_HISTORY_SIZE_MAX} needs an admin`)
  }
  if (settings.historyTtlSeconds !== undefined && settings.historyTtlSeconds > USER_HISTORY_TTL_MAX_SECONDS && settings.historyTtlSeconds > (current.historyTtlSeconds ?? 0)) {
    throw new Errors.HistoryLimit(`historyTtlSeconds above ${USER_HISTORY_TTL_MAX_SECONDS} (7 days) needs an admin`)
  }
}

/**
 * Rooms, members and bans with every rule of docs/authorization.md applied. Each method
 * takes the caller's principal and throws the typed HTTP errors of src/errors.ts, so REST
 * routes and the real-time core authorize the same way.
 */
export function createRoomService (deps: { store: Store, limits: RoomLimits, externalUserPrefix?: string | null }) {
  const { store, limits } = deps
  const archiveMaxDays = limits.archiveMaxDays ?? ARCHIVE_DAYS_MAX
  const externalUserPrefix = deps.externalUserPrefix ?? null
  const listeners: RoomChangeListener[] = []
  const membershipListeners: MembershipListener[] = []

  /**
   * Users of the identity provider connect without a row; the first time one becomes a
   * member, an owner (creating a room) or the subject of a ban, a row is written (no password,
   * role `user`), so memberships and bans reference it as they do any account and every rule
   * of docs/authorization.md applies unchanged. An id under another prefix is nobody's: the
   * store then answers `user_not_found` as for any unknown user.
   */
  async function recordIfExternal (userId: string): Promise<void> {
    if (externalUserPrefix === null || !isExternalUserId(userId, externalUserPrefix)) return
    // null: the row exists already (the insert is idempotent).
    await store.createUser({ id: userId, passwordHash: NO_PASSWORD, role: 'user' })
  }

  async function changed (change: RoomChange): Promise<void> {
    for (const listener of listeners) await listener(change)
  }

  async function notify (by: Principal, userIds: string[], event: MembershipEvent): Promise<void> {
    for (const userId of userIds) {
      for (const listener of membershipListeners) await listener({ userId, by, event })
    }
  }

  function removed (room: Room, reason: RoomRemovedReason): MembershipEvent {
    return { type: 'room.removed', room: summary(room), reason }
  }

  /** Every member's id, read before the room (and its memberships) is deleted. */
  async function memberIds (roomId: string): Promise<string[]> {
    const ids: string[] = []
    let after: string | undefined
    for (;;) {
      const page = await store.listMembers(roomId, { limit: MEMBER_PAGE, ...(after === undefined ? {} : { after }) })
      for (const m of page) ids.push(m.userId)
      if (page.length < MEMBER_PAGE) return ids
      after = page[page.length - 1]!.userId
    }
  }

  /**
   * Loads a room the caller may see. A private room the caller may not see answers 404, as if
   * it did not exist, so room ids cannot be probed; a public room the caller is banned from
   * answers 403 (the caller knows it exists).
   */
  async function access (principal: Principal, roomId: string): Promise<RoomAccess> {
    const room = await store.getRoom(roomId)
    if (room === undefined) throw new Errors.RoomNotFound()
    if (principal.kind === 'apiKey') {
      if (!apiKeyAllows(principal.scopes, 'read', room)) throw new Errors.RoomNotFound()
      return { room, standing: null }
    }
    const [membership, ban] = await Promise.all([
      store.getMembership(roomId, principal.userId),
      store.getBan(roomId, principal.userId)
    ])
    const standing = standingOf(principal, membership, ban)
    if (!standingAllows(standing, 'read', room)) {
      if (standing === 'banned' && room.visibility === 'public') throw new Errors.Banned()
      throw new Errors.RoomNotFound()
    }
    return { room, standing }
  }

  function allowed (principal: Principal, ctx: RoomAccess, action: RoomAction): boolean {
    if (principal.kind === 'apiKey') return apiKeyAllows(principal.scopes, action, ctx.room)
    return ctx.standing !== null && standingAllows(ctx.standing, action, ctx.room)
  }

  /**
   * Loads the room and checks one action, throwing 404/403 as appropriate. With `roomToken`
   * the caller has checked a room token that grants `action` here to this user (plugins/auth.ts
   * checkRoomToken): the room must exist, and anyone but a banned user may (roomTokenAllows).
   */
  async function authorize (principal: Principal, roomId: string, action: RoomAction, roomToken = false): Promise<RoomAccess> {
    if (roomToken) return await authorizeByRoomToken(principal, roomId)
    const ctx = await access(principal, roomId)
    if (!allowed(principal, ctx, action)) throw new Errors.Forbidden(`Not allowed to ${describe(action)} in this room`)
    return ctx
  }

  async function authorizeByRoomToken (principal: Principal, roomId: string): Promise<RoomAccess> {
    if (principal.kind !== 'user') throw new Errors.Forbidden('Room tokens are for users')
    const [room, membership, ban] = await Promise.all([
      store.getRoom(roomId),
      store.getMembership(roomId, principal.userId),
      store.getBan(roomId, principal.userId)
    ])
    if (room === undefined) throw new Errors.RoomNotFound()
    const standing = standingOf(principal, membership, ban)
    if (!roomTokenAllows(standing)) throw new Errors.Banned()
    return { room, standing }
  }

  function userStanding (principal: Principal, ctx: RoomAccess): Standing {
    // Keys never manage rooms; treat them as outsiders for management checks.
    return principal.kind === 'apiKey' ? 'nonMember' : ctx.standing ?? 'nonMember'
  }

  return {
    access,
    authorize,

    /** Registers a listener for changes that can revoke rights (see RoomChange). */
    onChange (listener: RoomChangeListener): void {
      listeners.push(listener)
    },

    /** Registers a listener for membership notices (a room added to or removed from a user's list). */
    onMembership (listener: MembershipListener): void {
      membershipListeners.push(listener)
    },

    async create (principal: Principal, input: Partial<NewRoom> & { id: string }): Promise<Room> {
      if (principal.kind !== 'user') throw new Errors.Forbidden('Only users create rooms')
      // Personal rooms are virtual (src/rooms/personal.ts): nobody may create a stored one.
      if (isPersonalRoom(input.id)) throw new Errors.Forbidden('The user: namespace is reserved for personal rooms')
      checkHistorySettings(principal, input, archiveMaxDays)
      const room: NewRoom = {
        id: input.id,
        name: input.name ?? null,
        visibility: input.visibility ?? ROOM_DEFAULTS.visibility,
        publish: input.publish ?? ROOM_DEFAULTS.publish,
        historySize: input.historySize ?? ROOM_DEFAULTS.historySize,
        historyTtlSeconds: input.historyTtlSeconds ?? ROOM_DEFAULTS.historyTtlSeconds,
        maxMembers: input.maxMembers ?? ROOM_DEFAULTS.maxMembers,
        presenceEvents: input.presenceEvents ?? ROOM_DEFAULTS.presenceEvents,
        archive: input.archive ?? limits.archiveByDefault ?? false,
        archiveDays: input.archiveDays ?? Math.min(ROOM_DEFAULTS.archiveDays, archiveMaxDays),
        createdBy: principal.userId
      }
      await recordIfExternal(principal.userId)
      const created = await (isAdmin(principal) ? store.createRoom(room) : store.createRoom(room, { maxCreatedBy: limits.maxRoomsPerUser }))
        .catch(async (err: unknown) => {
          // An account deleted or disabled since its token was last checked (ACCOUNT_CACHE_MS)
          // fails the insert. That is a dead token, not a bug.
          if (!isActiveAccount(await store.getUser(principal.userId))) throw new Errors.InvalidToken()
          throw err
        })
      if (created === 'room_limit') throw new Errors.RoomLimit(`You have created ${limits.maxRoomsPerUser} rooms, the most allowed; delete one first`)
      if (created === null) throw new Errors.RoomExists()
      // The creator's other tabs and devices list it too.
      await notify(principal, [principal.userId], { type: 'room.added', room: summary(created), role: 'owner' })
      return created
    },

    async list (principal: Principal, page: Page): Promise<Room[]> {
      if (principal.kind !== 'user') throw new Errors.Forbidden('Only users list rooms')
      return await store.listVisibleRooms({ userId: principal.userId, isAdmin: principal.role === 'admin' }, page)
    },

    async update (principal: Principal, roomId: string, patch: RoomPatch): Promise<Room> {
      const { room: current } = await authorize(principal, roomId, 'update')
      checkHistorySettings(principal, patch, archiveMaxDays, current)
      const room = await store.updateRoom(roomId, patch)
      if (room === undefined) throw new Errors.RoomNotFound()
      await changed({ type: 'room_updated', room })
      return room
    },

    async remove (principal: Principal, roomId: string): Promise<void> {
      const { room } = await authorize(principal, roomId, 'delete')
      const members = membershipListeners.length === 0 ? [] : await memberIds(roomId)
      if (!(await store.deleteRoom(roomId))) throw new Errors.RoomNotFound()
      await changed({ type: 'room_deleted', room })
      await notify(principal, members, removed(room, 'deleted'))
    },

    async members (principal: Principal, roomId: string, page: Page): Promise<Membership[]> {
      await authorize(principal, roomId, 'listMembers')
      return await store.listMembers(roomId, page)
    },

    async setMember (principal: Principal, roomId: string, userId: string, role: RoomRole): Promise<MemberChange> {
      const ctx = await access(principal, roomId)
      const current = await store.getMembership(roomId, userId)
      const self = principal.kind === 'user' && principal.userId === userId
      if (!mayChangeMember(userStanding(principal, ctx), { self, current: current?.role ?? null, next: role }, ctx.room)) {
        throw new Errors.Forbidden(self ? 'You may not take this role in this room' : 'Not allowed to manage this member')
      }
      await recordIfExternal(userId)
      const result = await store.setMember(roomId, userId, role)
      if (!result.ok) throw membershipError(result.reason)
      if (!result.created && current?.role !== role) await changed({ type: 'member_role_changed', room: ctx.room, userId, role })
      if (result.created) {
        await notify(principal, [userId], { type: 'room.added', room: summary(ctx.room), role })
      }
      return { membership: result.membership, created: result.created }
    },

    async removeMember (principal: Principal, roomId: string, userId: string): Promise<void> {
      const ctx = await access(principal, roomId)
      const current = await store.getMembership(roomId, userId)
      const self = principal.kind === 'user' && principal.userId === userId
      if (!mayChangeMember(userStanding(principal, ctx), { self, current: current?.role ?? null, next: null }, ctx.room)) {
        throw new Errors.Forbidden('Not allowed to remove this member')
      }
      if (current === undefined) throw new Errors.MemberNotFound()
      const result = await store.removeMember(roomId, userId)
      if (!result.ok) throw membershipError(result.reason)
      if (!result.removed) throw new Errors.MemberNotFound()
      await changed({ type: 'member_removed', room: ctx.room, userId })
      await notify(principal, [userId], removed(ctx.room, self ? 'left' : 'removed'))
    },

    async bans (principal: Principal, roomId: string, page: Page): Promise<Ban[]> {
      await authorize(principal, roomId, 'listBans')
      return await store.listBans(roomId, page)
    },

    async ban (principal: Principal, roomId: string, userId: string, reason: string | null): Promise<{ ban: Ban, created: boolean }> {
      const ctx = await access(principal, roomId)
      const current = await store.getMembership(roomId, userId)
      const self = principal.kind === 'user' && principal.userId === userId
      if (!mayBan(userStanding(principal, ctx), { self, current: current?.role ?? null })) {
        throw new Errors.Forbidden(self ? 'You cannot ban yourself' : 'Not allowed to ban this user')
      }
      const bannedBy = principal.kind === 'user' ? principal.userId : principal.keyId
      await recordIfExternal(userId)
      const result = await store.banUser({ roomId, userId, bannedBy, reason })
      if (!result.ok) throw membershipError(result.reason)
      await changed({ type: 'banned', room: ctx.room, userId })
      await notify(principal, [userId], removed(ctx.room, 'banned'))
      return { ban: result.ban, created: result.created }
    },

    async unban (principal: Principal, roomId: string, userId: string): Promise<void> {
      const ctx = await access(principal, roomId)
      if (!mayUnban(userStanding(principal, ctx))) throw new Errors.Forbidden('Not allowed to lift bans in this room')
      if (!(await store.unbanUser(roomId, userId))) throw new Errors.BanNotFound()
    }
  }
}

function summary (room: Room): MembershipEventRoom {
  return { id: room.id, name: room.name, visibility: room.visibility }
}

function membershipError (reason: MembershipFailure): Error {
  switch (reason) {
    case 'room_not_found': return new Errors.RoomNotFound()
    case 'user_not_found': return new Errors.UserNotFound()
    case 'banned': return new Errors.UserBanned()
    case 'room_full': return new Errors.RoomFull()
    case 'last_owner': return new Errors.LastOwner()
  }
}

function describe (action: RoomAction): string {
  const words: Record<RoomAction, string> = {
    read: 'read', subscribe: 'subscribe', history: 'read history', presence: 'see presence', publish: 'publish',
    listMembers: 'list members', listBans: 'list bans', update: 'change settings', delete: 'delete the room'
  }
  return words[action]
}
