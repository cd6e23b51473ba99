import { Type } from '@sinclair/typebox'
import { RoomIdSchema, TimestampSchema, UserIdSchema } from './common.js'

const Visibility = Type.Union([Type.Literal('public'), Type.Literal('private')], { description: 'public: any user may find, read and join; private: members only' })
const PublishPolicy = Type.Union([Type.Literal('members'), Type.Literal('moderators')], { description: 'Who may publish: every member, or moderators and owners only' })
export const RoomRoleSchema = Type.Union([Type.Literal('owner'), Type.Literal('moderator'), Type.Literal('member')])

/** Bounds on what an admin may ask for: history lives in memory (or Redis) per room. */
export const HISTORY_SIZE_MAX = 10_000
export const HISTORY_TTL_MAX_SECONDS = 30 * 86400
/**
 * What an ordinary user may ask for (the room service checks it; the schema states the admin
 * bounds). Bytes are bounded apart from these (HISTORY_ROOM_BYTES, HISTORY_MEMORY_BYTES).
 */
export const USER_HISTORY_SIZE_MAX = 1000
export const USER_HISTORY_TTL_MAX_SECONDS = 7 * 86400
const HistorySize = Type.Integer({ minimum: 0, maximum: HISTORY_SIZE_MAX, description: 'Publications kept for recovery (0: none); at most 1000 unless an admin sets it' })
const HistoryTtl = Type.Integer({ minimum: 1, maximum: HISTORY_TTL_MAX_SECONDS, description: 'Seconds a publication stays in history; at most 7 days unless an admin sets it' })
/** Bounds on archiveDays an admin may set; ordinary users up to ARCHIVE_MAX_DAYS (the room service checks it). */
export const ARCHIVE_DAYS_MAX = 3650
const Archive = Type.Boolean({ description: 'Keep publications beyond the recovery window for `archiveDays`, to page back through (GET /rooms/{id}/messages?before=). Default: ARCHIVE_BY_DEFAULT (on with embedded defaults). Kept by the SQLite history store; elsewhere recorded for the cluster archive' })
const ArchiveDays = Type.Integer({ minimum: 1, maximum: ARCHIVE_DAYS_MAX, description: 'Days the archive keeps a publication (default 30, or ARCHIVE_MAX_DAYS if lower); at most ARCHIVE_MAX_DAYS (90) unless an admin sets it' })
const MaxMembers = Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()], { description: 'Member cap; null for none' })
const PresenceEvents = Type.Boolean({ description: 'Push join and leave events to the room\'s subscribers (default true). Off, presence still counts and answers on request: for broadcast rooms, where every join would be pushed to every subscriber' })
const RoomName = Type.Union([Type.String({ minLength: 1, maxLength: 100 }), Type.Null()])

export const ROOM_DEFAULTS = { visibility: 'public', publish: 'members', historySize: 100, historyTtlSeconds: 3600, maxMembers: null, presenceEvents: true, archiveDays: 30 } as const

export const RoomSchema = Type.Object({
  id: RoomIdSchema,
  name: RoomName,
  visibility: Visibility,
  publish: PublishPolicy,
  historySize: HistorySize,
  historyTtlSeconds: HistoryTtl,
  maxMembers: MaxMembers,
  presenceEvents: PresenceEvents,
  archive: Archive,
  archiveDays: ArchiveDays,
  createdBy: Type.String(),
  createdAt: TimestampSchema,
  updatedAt: TimestampSchema
}, { $id: 'Room', title: 'Room' })

/** The settings an owner chooses; create takes any of them (defaults: ROOM_DEFAULTS), update at least one. */
const RoomSettingsSchema = Type.Object({
  name: RoomName,
  visibility: Visibility,
  publish: PublishPolicy,
  historySize: HistorySize,
  historyTtlSeconds: HistoryTtl,
  maxMembers: MaxMembers,
  presenceEvents: PresenceEvents,
  archive: Archive,
  archiveDays: ArchiveDays
})

export const CreateRoomBodySchema = Type.Composite([Type.Object({ id: RoomIdSchema }), Type.Partial(RoomSettingsSchema)], { additionalProperties: false })

export const UpdateRoomBodySchema = Type.Partial(RoomSettingsSchema, { additionalProperties: false, minProperties: 1 })

export const RoomParamsSchema = Type.Object({ id: RoomIdSchema })
export const RoomUserParamsSchema = Type.Object({ id: RoomIdSchema, userId: UserIdSchema })

export const MembershipSchema = Type.Object({
  roomId: RoomIdSchema,
  userId: UserIdSchema,
  role: RoomRoleSchema,
  createdAt: TimestampSchema
}, { $id: 'Membership', title: 'Membership' })

export const SetMemberBodySchema = Type.Object({ role: RoomRoleSchema }, { additionalProperties: false })

export const BanSchema = Type.Object({
  roomId: RoomIdSchema,
  userId: UserIdSchema,
  bannedBy: Type.String(),
  reason: Type.Union([Type.String(), Type.Null()]),
  createdAt: TimestampSchema
}, { $id: 'Ban', title: 'Ban' })

export const BanBodySchema = Type.Object({ reason: Type.Optional(Type.String({ maxLength: 500 })) }, { additionalProperties: false })
