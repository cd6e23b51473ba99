/**
 * The persistence contract. Two implementations share it (SQLite for one embedded node,
 * PostgreSQL for many nodes), both through kysely, and one contract suite
 * (test/store.contract.test.ts) runs against each.
 *
 * Conventions:
 * - timestamps are epoch milliseconds (numbers) at this boundary, whatever the column type;
 * - list methods use keyset pagination: rows ordered by their id, `after` is the last id seen;
 * - rules that must hold under concurrency (room capacity, "a room keeps an owner", "a banned
 *   user is not a member") are checked inside the store's transaction, never by the caller,
 *   and reported as a typed failure rather than an exception.
 */
import type { Database as SqliteConnection } from 'better-sqlite3'

export type UserRole = 'admin' | 'user'
export type RoomRole = 'owner' | 'moderator' | 'member'
export type RoomVisibility = 'public' | 'private'
/** Who may publish in a room: every member, or only moderators and owners. */
export type PublishPolicy = 'members' | 'moderators'

export interface User {
  id: string
  role: UserRole
  createdAt: number
  /** A disabled account cannot sign in and its tokens are refused; its data stays (issue 25). */
  disabled: boolean
}

/** What an administrator may change on an account (PATCH /users/:id). */
export interface UserPatch {
  disabled?: boolean
  role?: UserRole
}

export type UserUpdateResult =
  | { ok: true, user: User, before: User }
  | { ok: false, reason: 'user_not_found' | 'last_admin' }

export type UserDeletionResult =
  | { ok: true, user: User, apiKeyIds: string[] }
  | { ok: false, reason: 'user_not_found' | 'last_admin' }

export interface UserCredentials extends User {
  passwordHash: string
}

export interface Room {
  id: string
  name: string | null
  visibility: RoomVisibility
  publish: PublishPolicy
  /** Publications kept for recovery (0 disables history). */
  historySize: number
  /** How long a publication stays in history, in seconds. */
  historyTtlSeconds: number
  /** Member cap; null means unlimited. */
  maxMembers: number | null
  /** Join/leave pushes to the room's subscribers; presence is counted either way. */
  presenceEvents: boolean
  /** Keep publications beyond the recovery window, for `archiveDays`, to page back through. */
  archive: boolean
  /** Days the archive keeps a publication (with `archive` on). */
  archiveDays: number
  createdBy: string
  createdAt: number
  updatedAt: number
}

export type NewRoom = Omit<Room, 'createdAt' | 'updatedAt'>
export type RoomPatch = Partial<Pick<Room, 'name' | 'visibility' | 'publish' | 'historySize' | 'historyTtlSeconds' | 'maxMembers' | 'presenceEvents' | 'archive' | 'archiveDays'>>

/**
 * One publication as the cluster archive keeps it (PostgreSQL's history_publications, the
 * table the embedded history fills on SQLite): its position, who published it and when, what
 * it counts for (publicationBytes) and its payload, JSON text or raw bytes.
 */
export interface ArchivedPublication {
  room: string
  epoch: string
  offset: number
  publisher: string
  /** The publisher's time (the request's). */
  ts: number
  /** When the server stored it (the retention's clock). */
  storedAt: number
  bytes: number
  kind: 'json' | 'binary'
  payload: string | Buffer
}

/** What archivePage reads: one epoch of a room, below `before` (newest first) or above `after` (oldest first). */
export interface ArchiveRange {
  before?: number
  after?: number
  limit: number
  /** Rows stored before this time (epoch ms) are past the room's archiveDays: never answered. */
  notBefore: number
}

/** What one batch of the cluster archive's retention sweep did (Store.sweepArchive). */
export interface ArchiveSweepBatch {
  /** Rows deleted; fewer than the batch's limit means the walk reached the last room. */
  deleted: number
  /** The last room the batch deleted from: the next batch starts there (it may hold more). */
  last: string | null
}

/** An epoch the archive holds rows of, with its first and last archived offsets. */
export interface ArchivedEpoch {
  epoch: string
  first: number
  last: number
}

export interface Membership {
  roomId: string
  userId: string
  role: RoomRole
  createdAt: number
}

export interface Ban {
  roomId: string
  userId: string
  bannedBy: string
  reason: string | null
  createdAt: number
}

export interface RefreshTokenRecord {
  id: string
  /** sha256 of the opaque token; the token itself is never stored. */
  tokenHash: string
  userId: string
  /** Every token descended from one login shares a family; reuse revokes the family. */
  familyId: string
  expiresAt: number
  createdAt: number
  /** Set when the token was exchanged for a new one (rotation). */
  usedAt: number | null
  revokedAt: number | null
}

export interface ApiKey {
  id: string
  name: string
  /** First characters of the key, shown in listings so an operator can tell keys apart. */
  prefix: string
  scopes: string[]
  createdBy: string
  createdAt: number
  lastUsedAt: number | null
}

export interface ApiKeyWithHash extends ApiKey {
  keyHash: string
}

export interface Page {
  limit: number
  after?: string
}

/** Who is asking, for queries whose answer depends on it. */
export interface Viewer {
  userId: string
  isAdmin: boolean
}

export type MembershipFailure =
  | 'room_not_found'
  | 'user_not_found'
  | 'banned'
  | 'room_full'
  | 'last_owner'

export type MembershipResult =
  | { ok: true, membership: Membership, created: boolean }
  | { ok: false, reason: MembershipFailure }

export type RemovalResult =
  | { ok: true, removed: boolean }
  | { ok: false, reason: 'room_not_found' | 'last_owner' }

export type BanResult =
  | { ok: true, ban: Ban, created: boolean, removedMembership: boolean }
  | { ok: false, reason: 'room_not_found' | 'user_not_found' | 'last_owner' }

/** PostgreSQL's pool unless configured (DATABASE_POOL_MAX, DATABASE_POOL_IDLE_MS). */
export const POOL_DEFAULTS = { max: 10, idleMs: 60_000 } as const

export interface PoolStats {
  /** Connections open, busy or idle. */
  open: number
  idle: number
  /** Queries waiting for a connection: the pool is at DATABASE_POOL_MAX and all are busy. */
  waiting: number
}

export interface Store {
  /** 'sqlite' or 'postgres', for logs and readiness output. */
  readonly kind: 'sqlite' | 'postgres'
  /** Applies pending migrations; idempotent, safe to run on every start. */
  migrate(): Promise<void>
  /** Cheap round trip used by readiness. Rejects when the database does not answer. */
  ping(): Promise<void>
  close(): Promise<void>
  /** PostgreSQL: the connection pool now (for metrics); absent on SQLite, which has no pool. */
  readonly poolStats?: () => PoolStats
  /**
   * SQLite: the store's own connection, which the durable history (src/realtime/sqlite-history.ts)
   * writes through too. One connection, not two: a second one would wait for the write lock
   * while a store transaction holds it across an `await`, and better-sqlite3 waits
   * synchronously, blocking the very event loop that transaction needs to finish.
   */
  readonly sqlite?: SqliteConnection

  // The cluster archive (src/realtime/redis-engine/archiver.ts writes it, history pages read it)
  /**
   * Inserts publications, each at most once per (room, epoch, offset): a row already there
   * stays as it is (a retry after a crash, or two nodes archiving the same entries).
   */
  archivePublications(rows: ArchivedPublication[]): Promise<void>
  /** Up to `limit` archived publications of one epoch, in the range's order. */
  archivePage(room: string, epoch: string, range: ArchiveRange): Promise<ArchivedPublication[]>
  /**
   * The archived epoch of `room` just before (`older`) or after (`newer`) `epoch` in time,
   * judged by when their rows were stored; null when there is none. `epoch` itself need not
   * have archived rows (the current one may not yet).
   */
  archiveEpochBeside(room: string, epoch: string, direction: 'older' | 'newer'): Promise<ArchivedEpoch | null>
  /** Deletes a room's archive (the room was deleted), every epoch. */
  purgeArchive(room: string): Promise<void>
  /**
   * One batch of the retention sweep (PostgreSQL only; the SQLite history sweeps its own
   * rows): deletes at most `limit` rows stored at or before `now` minus their room's
   * archiveDays, and every row of a room that no longer exists, walking rooms in order from
   * `from` (inclusive; '' for the first). Null, deleting nothing, while another session's
   * batch holds the sweep's advisory lock (another node sweeping).
   */
  sweepArchive(now: number, limit: number, from: string): Promise<ArchiveSweepBatch | null>

  // Users
  /** Returns null when the id is taken, by an account or by a deleted account's tombstone. */
  createUser(user: { id: string, passwordHash: string, role: UserRole }): Promise<User | null>
  /** The account, disabled or not; undefined for an unknown id and for a deleted account's tombstone. */
  getUser(id: string): Promise<UserCredentials | undefined>
  /** True when `id` belonged to an account that was deleted: it can never be registered again. */
  isUsernameRetired(id: string): Promise<boolean>
  setUserPassword(id: string, passwordHash: string): Promise<boolean>
  /**
   * Disables or enables an account, or changes its role. Refused with `last_admin` when the
   * change would leave no active (enabled, not deleted) admin account: checked inside the
   * transaction, with concurrent changes to admins serialised.
   */
  updateUser(id: string, patch: UserPatch): Promise<UserUpdateResult>
  /**
   * Deletes the user with its memberships, bans, refresh tokens and the API keys it created
   * (their ids are returned, so their sockets can be closed). With `tombstone` (the default)
   * the row stays, emptied and marked deleted, so the id is never reused; without, it goes
   * (an identity provider's user, whose id is that provider's to give). Rooms it created and
   * its publications stay, attributed to it. Refused with `last_admin` as updateUser. Open
   * sessions are not the store's concern: callers go through the auth service, which revokes
   * them (docs/security.md).
   */
  deleteUser(id: string, options?: { tombstone?: boolean }): Promise<UserDeletionResult>
  /** The users among `ids` that exist (disabled ones included, tombstones not), in no particular order (the periodic account check of connected users). */
  getUsers(ids: string[]): Promise<User[]>
  /** Users whose id starts with `prefix` (all when empty), ordered by id; tombstones are skipped. */
  searchUsers(prefix: string, page: Page): Promise<User[]>

  // Refresh tokens
  insertRefreshToken(token: RefreshTokenRecord): Promise<void>
  getRefreshTokenByHash(tokenHash: string): Promise<RefreshTokenRecord | undefined>
  /**
   * Marks a token as exchanged. Atomic: returns true only for the one caller that flipped
   * it from unused to used, so two concurrent refreshes with the same token cannot both win.
   */
  markRefreshTokenUsed(id: string, at: number): Promise<boolean>
  revokeRefreshToken(id: string, at: number): Promise<void>
  revokeRefreshFamily(familyId: string, at: number): Promise<void>
  /**
   * Revokes every refresh token of a user (sign out everywhere, password change) and returns
   * the families that issued a token at or after `issuedSince`: an access token is issued
   * with each refresh token, so only those sessions may still hold a live access token.
   * With `keepFamily`, that session is left alone (a password change keeps the caller's).
   */
  revokeUserRefreshTokens(userId: string, at: number, issuedSince: number, keepFamily?: string): Promise<string[]>
  /** Drops expired tokens; returns how many. */
  deleteExpiredRefreshTokens(now: number): Promise<number>

  // API keys
  createApiKey(key: Omit<ApiKeyWithHash, 'createdAt' | 'lastUsedAt'>): Promise<ApiKey>
  getApiKeyByHash(keyHash: string): Promise<ApiKey | undefined>
  listApiKeys(page: Page): Promise<ApiKey[]>
  deleteApiKey(id: string): Promise<boolean>
  touchApiKey(id: string, at: number): Promise<void>

  // Rooms
  /**
   * Creates the room and makes `room.createdBy` its owner in one transaction; null when the id
   * is taken. Rejects when `createdBy` has no active account (deleted or disabled since its
   * token was last checked): the caller treats that as a dead token.
   */
  createRoom(room: NewRoom): Promise<Room | null>
  /**
   * The same, refused with `room_limit` when `room.createdBy` already created `maxCreatedBy`
   * rooms that still exist: counted in the same transaction, with concurrent creates by one
   * user serialised, so a burst of creates cannot pass the cap.
   */
  createRoom(room: NewRoom, limit: { maxCreatedBy: number }): Promise<Room | null | 'room_limit'>
  getRoom(id: string): Promise<Room | undefined>
  updateRoom(id: string, patch: RoomPatch): Promise<Room | undefined>
  /** Deletes the room with its memberships and bans. */
  deleteRoom(id: string): Promise<boolean>
  /**
   * Rooms the viewer may see, ordered by id: admins see all; others see public rooms they are
   * not banned from and every room they are a member of.
   */
  listVisibleRooms(viewer: Viewer, page: Page): Promise<Room[]>

  // Memberships
  getMembership(roomId: string, userId: string): Promise<Membership | undefined>
  listMembers(roomId: string, page: Page): Promise<Membership[]>
  /** Rooms a user is a member of, ordered by room id. */
  listMembershipsOfUser(userId: string, page: Page): Promise<Membership[]>
  /**
   * Adds a member or changes a member's role. Fails with `banned` for a banned user,
   * `room_full` when adding would exceed maxMembers, `last_owner` when demoting the only owner.
   */
  setMember(roomId: string, userId: string, role: RoomRole): Promise<MembershipResult>
  /** Fails with `last_owner` when removing the only owner. */
  removeMember(roomId: string, userId: string): Promise<RemovalResult>

  // Bans
  getBan(roomId: string, userId: string): Promise<Ban | undefined>
  listBans(roomId: string, page: Page): Promise<Ban[]>
  /** Bans a user and removes their membership in the same transaction. */
  banUser(ban: Omit<Ban, 'createdAt'>): Promise<BanResult>
  unbanUser(roomId: string, userId: string): Promise<boolean>
}
