import { sql, type ColumnType, type Kysely, type Selectable, type Transaction, type Updateable } from 'kysely'
import { Migrator } from 'kysely'
import { migrationProvider } from './migrations.js'
import { NO_PASSWORD } from '../auth/passwords.js'
import type {
  ApiKey, ApiKeyWithHash, ArchivedEpoch, ArchivedPublication, ArchiveRange, ArchiveSweepBatch, Ban, BanResult, Membership, MembershipResult, NewRoom, Page, PoolStats, PublishPolicy, RefreshTokenRecord,
  RemovalResult, Room, RoomPatch, RoomRole, RoomVisibility, Store, User, UserCredentials, UserDeletionResult, UserPatch, UserRole,
  UserUpdateResult, Viewer
} from './types.js'

/** Epoch milliseconds in a `bigint` column: PostgreSQL hands int8 back as a string. */
type Millis = ColumnType<number | string, number, number>
type NullableMillis = ColumnType<number | string | null, number | null | undefined, number | null>

export interface Database {
  users: {
    id: string
    role: UserRole
    password_hash: string
    created_at: Millis
    /** 0 or 1 (SQLite has no boolean): see the 0006 migration. */
    disabled: ColumnType<number, number | undefined, number>
    /** Set on a deleted account's tombstone, which every read skips. */
    deleted_at: NullableMillis
  }
  refresh_tokens: {
    id: string
    token_hash: string
    user_id: string
    family_id: string
    expires_at: Millis
    created_at: Millis
    used_at: NullableMillis
    revoked_at: NullableMillis
  }
  api_keys: {
    id: string
    name: string
    prefix: string
    key_hash: string
    scopes: string
    created_by: string
    created_at: Millis
    last_used_at: NullableMillis
  }
  rooms: {
    id: string
    name: string | null
    visibility: RoomVisibility
    publish: PublishPolicy
    history_size: number
    history_ttl_seconds: number
    max_members: number | null
    /** 0 or 1 (SQLite has no boolean): see the 0004 migration. */
    presence_events: number
    archive: number
    archive_days: number
    created_by: string
    created_at: Millis
    updated_at: Millis
  }
  history_publications: {
    room: string
    epoch: string
    stream_offset: ColumnType<number | string, number, number>
    publisher: string
    ts: Millis
    stored_at: Millis
    bytes: number
    kind: string
    payload_text: string | null
    payload_bytes: Buffer | null
  }
  memberships: { room_id: string, user_id: string, role: RoomRole, created_at: Millis }
  bans: { room_id: string, user_id: string, banned_by: string, reason: string | null, created_at: Millis }
}

type Row<T extends keyof Database> = Selectable<Database[T]>

const DAY_MS = 86_400_000
/** The first key of the retention sweep's advisory lock (the second is the schema's hash). */
export const ARCHIVE_SWEEP_LOCK = 0x5b_a7c4

const millis = (value: number | string): number => Number(value)
const millisOrNull = (value: number | string | null): number | null => value === null ? null : Number(value)

const toUser = (row: Pick<Row<'users'>, 'id' | 'role' | 'created_at' | 'disabled'>): User => ({
  id: row.id, role: row.role, createdAt: millis(row.created_at), disabled: row.disabled !== 0
})

const toRefreshToken = (row: Row<'refresh_tokens'>): RefreshTokenRecord => ({
  id: row.id,
  tokenHash: row.token_hash,
  userId: row.user_id,
  familyId: row.family_id,
  expiresAt: millis(row.expires_at),
  createdAt: millis(row.created_at),
  usedAt: millisOrNull(row.used_at),
  revokedAt: millisOrNull(row.revoked_at)
})

const toApiKey = (row: Row<'api_keys'>): ApiKey => ({
  id: row.id,
  name: row.name,
  prefix: row.prefix,
  scopes: JSON.parse(row.scopes) as string[],
  createdBy: row.created_by,
  createdAt: millis(row.created_at),
  lastUsedAt: millisOrNull(row.last_used_at)
})

const toRoom = (row: Row<'rooms'>): Room => ({
  id: row.id,
  name: row.name,
  visibility: row.visibility,
  publish: row.publish,
  historySize: row.history_size,
  historyTtlSeconds: row.history_ttl_seconds,
  maxMembers: row.max_members,
  presenceEvents: row.presence_events !== 0,
  archive: row.archive !== 0,
  archiveDays: row.archive_days,
  createdBy: row.created_by,
  createdAt: millis(row.created_at),
  updatedAt: millis(row.updated_at)
})

const toArchived = (row: Row<'history_publications'>): ArchivedPublication => ({
  room: row.room,
  epoch: row.epoch,
  offset: Number(row.stream_offset),
  publisher: row.publisher,
  ts: millis(row.ts),
  storedAt: millis(row.stored_at),
  bytes: row.bytes,
  ...(row.kind === 'binary' ? { kind: 'binary', payload: row.payload_bytes ?? Buffer.alloc(0) } : { kind: 'json', payload: row.payload_text ?? 'null' })
})

const toMembership = (row: Row<'memberships'>): Membership => ({
  roomId: row.room_id, userId: row.user_id, role: row.role, createdAt: millis(row.created_at)
})

const toBan = (row: Row<'bans'>): Ban => ({
  roomId: row.room_id, userId: row.user_id, bannedBy: row.banned_by, reason: row.reason, createdAt: millis(row.created_at)
})

/** An account that counts towards "the server keeps an admin": enabled, with the admin role. */
function isActiveAdmin (user: User): boolean {
  return user.role === 'admin' && !user.disabled
}

/** Escapes LIKE wildcards so user input matches literally (paired with `ESCAPE '\'`). */
export function escapeLike (text: string): string {
  return text.replace(/[\\%_]/g, char => '\\' + char)
}

export interface KyselyStoreOptions {
  kind: Store['kind']
  log?: { info: (obj: object, msg: string) => void }
  /** PostgreSQL schema holding the tables (and kysely's migration bookkeeping). */
  schema?: string
  poolStats?: () => PoolStats
  /** SQLite: the connection kysely runs on, exposed as Store.sqlite. */
  sqlite?: NonNullable<Store['sqlite']>
}

export class KyselyStore implements Store {
  readonly kind: Store['kind']
  readonly poolStats?: () => PoolStats
  readonly sqlite?: Store['sqlite']
  readonly #db: Kysely<Database>
  readonly #options: KyselyStoreOptions

  constructor (db: Kysely<Database>, options: KyselyStoreOptions) {
    this.#db = db
    this.kind = options.kind
    if (options.poolStats !== undefined) this.poolStats = options.poolStats
    if (options.sqlite !== undefined) this.sqlite = options.sqlite
    this.#options = options
  }

  async migrate (): Promise<void> {
    if (this.kind === 'postgres' && this.#options.schema !== undefined) {
      await sql`create schema if not exists ${sql.id(this.#options.schema)}`.execute(this.#db)
    }
    const migrator = new Migrator({
      db: this.#db,
      provider: migrationProvider,
      // Without an explicit schema kysely looks for its bookkeeping tables in every schema, and
      // would find another schema's copy (tests run one schema per case in one database).
      migrationTableSchema: this.kind === 'postgres' ? await this.#pgSchema() : undefined
    })
    const { error, results } = await migrator.migrateToLatest()
    for (const result of results ?? []) {
      if (result.status === 'Success') this.#options.log?.info({ migration: result.migrationName }, 'migration applied')
    }
    if (error !== undefined) throw error instanceof Error ? error : new Error(String(error))
  }

  async #pgSchema (): Promise<string> {
    if (this.#options.schema !== undefined) return this.#options.schema
    const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(this.#db)
    return rows[0]?.schema ?? 'public'
  }

  async ping (): Promise<void> {
    await sql`select 1`.execute(this.#db)
  }

  async close (): Promise<void> {
    await this.#db.destroy()
  }

  // Users

  async createUser (user: { id: string, passwordHash: string, role: UserRole }): Promise<User | null> {
    const row = { id: user.id, role: user.role, password_hash: user.passwordHash, created_at: Date.now(), disabled: 0 }
    try {
      await this.#db.insertInto('users').values(row).execute()
    } catch (error) {
      if (this.#isUniqueViolation(error)) return null
      throw error
    }
    return toUser(row)
  }

  async getUser (id: string): Promise<UserCredentials | undefined> {
    const row = await this.#db.selectFrom('users').selectAll().where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
    return row === undefined ? undefined : { ...toUser(row), passwordHash: row.password_hash }
  }

  async isUsernameRetired (id: string): Promise<boolean> {
    const row = await this.#db.selectFrom('users').select('id').where('id', '=', id).where('deleted_at', 'is not', null).executeTakeFirst()
    return row !== undefined
  }

  async setUserPassword (id: string, passwordHash: string): Promise<boolean> {
    const result = await this.#db.updateTable('users').set({ password_hash: passwordHash })
      .where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
    return result.numUpdatedRows > 0n
  }

  async updateUser (id: string, patch: UserPatch): Promise<UserUpdateResult> {
    return await this.#db.transaction().execute(async (trx): Promise<UserUpdateResult> => {
      const admins = await this.#lockActiveAdmins(trx)
      const row = await trx.selectFrom('users').selectAll().where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
      if (row === undefined) return { ok: false, reason: 'user_not_found' }
      const before = toUser(row)
      const after: User = { ...before, role: patch.role ?? before.role, disabled: patch.disabled ?? before.disabled }
      if (isActiveAdmin(before) && !isActiveAdmin(after) && admins.length <= 1) return { ok: false, reason: 'last_admin' }
      await trx.updateTable('users').set({ role: after.role, disabled: after.disabled ? 1 : 0 }).where('id', '=', id).execute()
      return { ok: true, user: after, before }
    })
  }

  async deleteUser (id: string, options: { tombstone?: boolean } = {}): Promise<UserDeletionResult> {
    return await this.#db.transaction().execute(async (trx): Promise<UserDeletionResult> => {
      const admins = await this.#lockActiveAdmins(trx)
      const row = await trx.selectFrom('users').selectAll().where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst()
      if (row === undefined) return { ok: false, reason: 'user_not_found' }
      const user = toUser(row)
      if (isActiveAdmin(user) && admins.length <= 1) return { ok: false, reason: 'last_admin' }
      const keys = await trx.deleteFrom('api_keys').where('created_by', '=', id).returning('id').execute()
      // A tombstone keeps no cascade from firing: what would have gone with the row goes by hand.
      await trx.deleteFrom('memberships').where('user_id', '=', id).execute()
      await trx.deleteFrom('bans').where('user_id', '=', id).execute()
      await trx.deleteFrom('refresh_tokens').where('user_id', '=', id).execute()
      if (options.tombstone === false) {
        await trx.deleteFrom('users').where('id', '=', id).execute()
      } else {
        await trx.updateTable('users').set({ password_hash: NO_PASSWORD, role: 'user', disabled: 1, deleted_at: Date.now() }).where('id', '=', id).execute()
      }
      return { ok: true, user, apiKeyIds: keys.map(key => key.id) }
    })
  }

  async getUsers (ids: string[]): Promise<User[]> {
    if (ids.length === 0) return []
    const rows = await this.#db.selectFrom('users').select(['id', 'role', 'created_at', 'disabled'])
      .where('id', 'in', ids).where('deleted_at', 'is', null).execute()
    return rows.map(toUser)
  }

  async searchUsers (prefix: string, page: Page): Promise<User[]> {
    const rows = await this.#db.selectFrom('users').select(['id', 'role', 'created_at', 'disabled'])
      .where(sql<boolean>`id like ${escapeLike(prefix) + '%'} escape '\\'`)
      .where('deleted_at', 'is', null)
      .$if(page.after !== undefined, qb => qb.where('id', '>', page.after as string))
      .orderBy('id').limit(page.limit).execute()
    return rows.map(toUser)
  }

  // Refresh tokens

  async insertRefreshToken (token: RefreshTokenRecord): Promise<void> {
    await this.#db.insertInto('refresh_tokens').values({
      id: token.id,
      token_hash: token.tokenHash,
      user_id: token.userId,
      family_id: token.familyId,
      expires_at: token.expiresAt,
      created_at: token.createdAt,
      used_at: token.usedAt,
      revoked_at: token.revokedAt
    }).execute()
  }

  async getRefreshTokenByHash (tokenHash: string): Promise<RefreshTokenRecord | undefined> {
    const row = await this.#db.selectFrom('refresh_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst()
    return row === undefined ? undefined : toRefreshToken(row)
  }

  async markRefreshTokenUsed (id: string, at: number): Promise<boolean> {
    // The WHERE clause is the whole check: of two racing callers only one can match the row.
    const result = await this.#db.updateTable('refresh_tokens').set({ used_at: at })
      .where('id', '=', id).where('used_at', 'is', null).where('revoked_at', 'is', null)
      .executeTakeFirst()
    return result.numUpdatedRows === 1n
  }

  async revokeRefreshToken (id: string, at: number): Promise<void> {
    await this.#db.updateTable('refresh_tokens').set({ revoked_at: at })
      .where('id', '=', id).where('revoked_at', 'is', null).execute()
  }

  async revokeRefreshFamily (familyId: string, at: number): Promise<void> {
    await this.#db.updateTable('refresh_tokens').set({ revoked_at: at })
      .where('family_id', '=', familyId).where('revoked_at', 'is', null).execute()
  }

  async revokeUserRefreshTokens (userId: string, at: number, issuedSince: number, keepFamily?: string): Promise<string[]> {
    return await this.#db.transaction().execute(async trx => {
      const recent = await trx.selectFrom('refresh_tokens').select('family_id').distinct()
        .where('user_id', '=', userId).where('created_at', '>=', issuedSince)
        .$if(keepFamily !== undefined, qb => qb.where('family_id', '!=', keepFamily as string)).execute()
      await trx.updateTable('refresh_tokens').set({ revoked_at: at })
        .where('user_id', '=', userId).where('revoked_at', 'is', null)
        .$if(keepFamily !== undefined, qb => qb.where('family_id', '!=', keepFamily as string)).execute()
      return recent.map(row => row.family_id)
    })
  }

  async deleteExpiredRefreshTokens (now: number): Promise<number> {
    const result = await this.#db.deleteFrom('refresh_tokens').where('expires_at', '<=', now).executeTakeFirst()
    return Number(result.numDeletedRows)
  }

  // API keys

  async createApiKey (key: Omit<ApiKeyWithHash, 'createdAt' | 'lastUsedAt'>): Promise<ApiKey> {
    const row = {
      id: key.id,
      name: key.name,
      prefix: key.prefix,
      key_hash: key.keyHash,
      scopes: JSON.stringify(key.scopes),
      created_by: key.createdBy,
      created_at: Date.now(),
      last_used_at: null
    }
    await this.#db.insertInto('api_keys').values(row).execute()
    return toApiKey(row)
  }

  async getApiKeyByHash (keyHash: string): Promise<ApiKey | undefined> {
    const row = await this.#db.selectFrom('api_keys').selectAll().where('key_hash', '=', keyHash).executeTakeFirst()
    return row === undefined ? undefined : toApiKey(row)
  }

  async listApiKeys (page: Page): Promise<ApiKey[]> {
    const rows = await this.#db.selectFrom('api_keys').selectAll()
      .$if(page.after !== undefined, qb => qb.where('id', '>', page.after as string))
      .orderBy('id').limit(page.limit).execute()
    return rows.map(toApiKey)
  }

  async deleteApiKey (id: string): Promise<boolean> {
    const result = await this.#db.deleteFrom('api_keys').where('id', '=', id).executeTakeFirst()
    return result.numDeletedRows > 0n
  }

  async touchApiKey (id: string, at: number): Promise<void> {
    await this.#db.updateTable('api_keys').set({ last_used_at: at }).where('id', '=', id).execute()
  }

  // Rooms

  async createRoom (room: NewRoom): Promise<Room | null>
  async createRoom (room: NewRoom, limit: { maxCreatedBy: number }): Promise<Room | null | 'room_limit'>
  async createRoom (room: NewRoom, limit?: { maxCreatedBy: number }): Promise<Room | null | 'room_limit'> {
    const now = Date.now()
    const row = {
      id: room.id,
      name: room.name,
      visibility: room.visibility,
      publish: room.publish,
      history_size: room.historySize,
      history_ttl_seconds: room.historyTtlSeconds,
      max_members: room.maxMembers,
      presence_events: room.presenceEvents ? 1 : 0,
      archive: room.archive ? 1 : 0,
      archive_days: room.archiveDays,
      created_by: room.createdBy,
      created_at: now,
      updated_at: now
    }
    try {
      const refused = await this.#db.transaction().execute(async trx => {
        // PostgreSQL, with a limit: the creator's row locked until commit, so one user's creates
        // count one after another (SQLite runs its transactions one at a time anyway).
        const creator = await trx.selectFrom('users').select('disabled').where('id', '=', room.createdBy).where('deleted_at', 'is', null)
          .$if(this.kind === 'postgres' && limit !== undefined, qb => qb.forUpdate()).executeTakeFirst()
        // What the owner membership's foreign key refused before deleted accounts became tombstones.
        if (creator === undefined || creator.disabled !== 0) throw new Error(`room creator ${room.createdBy} has no active account`)
        if (limit !== undefined) {
          const { count } = await trx.selectFrom('rooms').select(eb => eb.fn.countAll().as('count'))
            .where('created_by', '=', room.createdBy).executeTakeFirstOrThrow()
          if (Number(count) >= limit.maxCreatedBy) return true
        }
        await trx.insertInto('rooms').values(row).execute()
        await trx.insertInto('memberships').values({ room_id: room.id, user_id: room.createdBy, role: 'owner', created_at: now }).execute()
        return false
      })
      if (refused) return 'room_limit'
    } catch (error) {
      if (this.#isUniqueViolation(error)) return null
      throw error
    }
    return toRoom(row)
  }

  async getRoom (id: string): Promise<Room | undefined> {
    const row = await this.#db.selectFrom('rooms').selectAll().where('id', '=', id).executeTakeFirst()
    return row === undefined ? undefined : toRoom(row)
  }

  async updateRoom (id: string, patch: RoomPatch): Promise<Room | undefined> {
    const values: Updateable<Database['rooms']> = {}
    if (patch.name !== undefined) values.name = patch.name
    if (patch.visibility !== undefined) values.visibility = patch.visibility
    if (patch.publish !== undefined) values.publish = patch.publish
    if (patch.historySize !== undefined) values.history_size = patch.historySize
    if (patch.historyTtlSeconds !== undefined) values.history_ttl_seconds = patch.historyTtlSeconds
    if (patch.maxMembers !== undefined) values.max_members = patch.maxMembers
    if (patch.presenceEvents !== undefined) values.presence_events = patch.presenceEvents ? 1 : 0
    if (patch.archive !== undefined) values.archive = patch.archive ? 1 : 0
    if (patch.archiveDays !== undefined) values.archive_days = patch.archiveDays
    if (Object.keys(values).length === 0) return await this.getRoom(id)
    const row = await this.#db.updateTable('rooms').set({ ...values, updated_at: Date.now() })
      .where('id', '=', id).returningAll().executeTakeFirst()
    return row === undefined ? undefined : toRoom(row)
  }

  async archivePublications (rows: ArchivedPublication[]): Promise<void> {
    if (rows.length === 0) return
    await this.#db.insertInto('history_publications')
      .values(rows.map(row => ({
        room: row.room,
        epoch: row.epoch,
        stream_offset: row.offset,
        publisher: row.publisher,
        ts: row.ts,
        stored_at: row.storedAt,
        bytes: row.bytes,
        kind: row.kind,
        payload_text: typeof row.payload === 'string' ? row.payload : null,
        payload_bytes: typeof row.payload === 'string' ? null : row.payload
      })))
      // The position is the key: a publication archived twice (a retry, two nodes) stays one row.
      .onConflict(oc => oc.columns(['room', 'epoch', 'stream_offset']).doNothing())
      .execute()
  }

  async archivePage (room: string, epoch: string, range: ArchiveRange): Promise<ArchivedPublication[]> {
    const backward = range.after === undefined
    const rows = await this.#db.selectFrom('history_publications').selectAll()
      .where('room', '=', room).where('epoch', '=', epoch)
      .$if(backward && range.before !== undefined, qb => qb.where('stream_offset', '<', range.before ?? 0))
      .$if(!backward, qb => qb.where('stream_offset', '>', range.after ?? 0))
      .where('stored_at', '>', range.notBefore)
      .orderBy('stream_offset', backward ? 'desc' : 'asc')
      .limit(Math.max(0, Math.floor(range.limit)))
      .execute()
    return rows.map(toArchived)
  }

  async archiveEpochBeside (room: string, epoch: string, direction: 'older' | 'newer'): Promise<ArchivedEpoch | null> {
    const older = direction === 'older'
    // Offsets grow with time within an epoch: its first (last) row by offset is its oldest (newest).
    const edge = await this.#db.selectFrom('history_publications').select('stored_at')
      .where('room', '=', room).where('epoch', '=', epoch)
      .orderBy('stream_offset', older ? 'asc' : 'desc').limit(1).executeTakeFirst()
    if (edge === undefined && !older) return null
    // The nearest row of another epoch in time (the (room, stored_at) index of migration 0008).
    const near = await this.#db.selectFrom('history_publications').select('epoch')
      .where('room', '=', room).where('epoch', '<>', epoch)
      .$if(edge !== undefined, qb => qb.where('stored_at', older ? '<=' : '>=', edge?.stored_at ?? 0))
      .orderBy('stored_at', older ? 'desc' : 'asc').limit(1).executeTakeFirst()
    if (near === undefined) return null
    const bound = async (order: 'asc' | 'desc'): Promise<number> => {
      const row = await this.#db.selectFrom('history_publications').select('stream_offset')
        .where('room', '=', room).where('epoch', '=', near.epoch)
        .orderBy('stream_offset', order).limit(1).executeTakeFirstOrThrow()
      return Number(row.stream_offset)
    }
    return { epoch: near.epoch, first: await bound('asc'), last: await bound('desc') }
  }

  async purgeArchive (room: string): Promise<void> {
    await this.#db.deleteFrom('history_publications').where('room', '=', room).execute()
  }

  async sweepArchive (now: number, limit: number, from: string): Promise<ArchiveSweepBatch | null> {
    if (this.kind !== 'postgres') throw new Error('sweepArchive is PostgreSQL only: the SQLite history sweeps its own rows')
    return await this.#db.transaction().execute(async (trx): Promise<ArchiveSweepBatch | null> => {
      // Per schema, so deployments (and tests) sharing one database sweep independently. Held
      // until the batch commits: one node deletes at a time, and a node that dies mid-batch
      // releases it with its session.
      const { rows: [lock] } = await sql<{ locked: boolean }>`select pg_try_advisory_xact_lock(${sql.lit(ARCHIVE_SWEEP_LOCK)}, hashtext(current_schema())) as locked`.execute(trx)
      if (lock?.locked !== true) return null
      // The archive's rooms one by one through the (room, stored_at) index (a loose index scan:
      // a probe per room, never a scan of the table), from `from` on, so a batch costs what it
      // deletes plus one probe per room it passes. Per room, its oldest rows first, the cut-off
      // an index condition (a large room's fresh rows are never read); a room with no row in
      // rooms (deleted) has no cut-off (the coalesce) and loses them all.
      const { rows: [gone] } = await sql<{ deleted: number | string, last: string | null }>`
        with recursive archived(room) as (
          (select room from history_publications where room >= ${from} order by room limit 1)
          union all
          select (select p.room from history_publications p where p.room > a.room order by p.room limit 1)
          from archived a where a.room is not null
        ), doomed as (
          select e.room, e.epoch, e.stream_offset from archived a
          left join rooms r on r.id = a.room
          cross join lateral (
            select p.room, p.epoch, p.stream_offset from history_publications p
            where p.room = a.room and p.stored_at <= coalesce(${now} - r.archive_days::bigint * ${sql.lit(DAY_MS)}, 9223372036854775807)
            order by p.stored_at limit ${limit}
          ) e
          where a.room is not null
          limit ${limit}
        ), gone as (
          delete from history_publications h using doomed d
          where h.room = d.room and h.epoch = d.epoch and h.stream_offset = d.stream_offset
          returning h.room
        )
        select count(*) as deleted, max(room) as last from gone`.execute(trx)
      return { deleted: Number(gone?.deleted ?? 0), last: gone?.last ?? null }
    })
  }

  async deleteRoom (id: string): Promise<boolean> {
    const result = await this.#db.deleteFrom('rooms').where('id', '=', id).executeTakeFirst()
    return result.numDeletedRows > 0n
  }

  async listVisibleRooms (viewer: Viewer, page: Page): Promise<Room[]> {
    const rows = await this.#db.selectFrom('rooms').selectAll('rooms')
      .$if(!viewer.isAdmin, qb => qb.where(eb => eb.or([
        eb.and([
          eb('rooms.visibility', '=', 'public'),
          eb.not(eb.exists(eb.selectFrom('bans').select('bans.room_id')
            .whereRef('bans.room_id', '=', 'rooms.id').where('bans.user_id', '=', viewer.userId)))
        ]),
        eb.exists(eb.selectFrom('memberships').select('memberships.room_id')
          .whereRef('memberships.room_id', '=', 'rooms.id').where('memberships.user_id', '=', viewer.userId))
      ])))
      .$if(page.after !== undefined, qb => qb.where('rooms.id', '>', page.after as string))
      .orderBy('rooms.id').limit(page.limit).execute()
    return rows.map(toRoom)
  }

  // Memberships

  async getMembership (roomId: string, userId: string): Promise<Membership | undefined> {
    const row = await this.#membership(this.#db, roomId, userId)
    return row === undefined ? undefined : toMembership(row)
  }

  async listMembers (roomId: string, page: Page): Promise<Membership[]> {
    const rows = await this.#db.selectFrom('memberships').selectAll().where('room_id', '=', roomId)
      .$if(page.after !== undefined, qb => qb.where('user_id', '>', page.after as string))
      .orderBy('user_id').limit(page.limit).execute()
    return rows.map(toMembership)
  }

  async listMembershipsOfUser (userId: string, page: Page): Promise<Membership[]> {
    const rows = await this.#db.selectFrom('memberships').selectAll().where('user_id', '=', userId)
      .$if(page.after !== undefined, qb => qb.where('room_id', '>', page.after as string))
      .orderBy('room_id').limit(page.limit).execute()
    return rows.map(toMembership)
  }

  async setMember (roomId: string, userId: string, role: RoomRole): Promise<MembershipResult> {
    return await this.#db.transaction().execute(async (trx): Promise<MembershipResult> => {
      const room = await this.#lockRoom(trx, roomId)
      if (room === undefined) return { ok: false, reason: 'room_not_found' }
      if (!(await this.#userExists(trx, userId))) return { ok: false, reason: 'user_not_found' }
      if (await this.#ban(trx, roomId, userId) !== undefined) return { ok: false, reason: 'banned' }

      const existing = await this.#membership(trx, roomId, userId)
      if (existing !== undefined) {
        if (existing.role === role) return { ok: true, membership: toMembership(existing), created: false }
        if (existing.role === 'owner' && await this.#ownerCount(trx, roomId) <= 1) return { ok: false, reason: 'last_owner' }
        await trx.updateTable('memberships').set({ role }).where('room_id', '=', roomId).where('user_id', '=', userId).execute()
        return { ok: true, membership: toMembership({ ...existing, role }), created: false }
      }

      if (room.max_members !== null && await this.#memberCount(trx, roomId) >= room.max_members) {
        return { ok: false, reason: 'room_full' }
      }
      const row = { room_id: roomId, user_id: userId, role, created_at: Date.now() }
      await trx.insertInto('memberships').values(row).execute()
      return { ok: true, membership: toMembership(row), created: true }
    })
  }

  async removeMember (roomId: string, userId: string): Promise<RemovalResult> {
    return await this.#db.transaction().execute(async (trx): Promise<RemovalResult> => {
      if (await this.#lockRoom(trx, roomId) === undefined) return { ok: false, reason: 'room_not_found' }
      const existing = await this.#membership(trx, roomId, userId)
      if (existing === undefined) return { ok: true, removed: false }
      if (existing.role === 'owner' && await this.#ownerCount(trx, roomId) <= 1) return { ok: false, reason: 'last_owner' }
      await trx.deleteFrom('memberships').where('room_id', '=', roomId).where('user_id', '=', userId).execute()
      return { ok: true, removed: true }
    })
  }

  // Bans

  async getBan (roomId: string, userId: string): Promise<Ban | undefined> {
    const row = await this.#ban(this.#db, roomId, userId)
    return row === undefined ? undefined : toBan(row)
  }

  async listBans (roomId: string, page: Page): Promise<Ban[]> {
    const rows = await this.#db.selectFrom('bans').selectAll().where('room_id', '=', roomId)
      .$if(page.after !== undefined, qb => qb.where('user_id', '>', page.after as string))
      .orderBy('user_id').limit(page.limit).execute()
    return rows.map(toBan)
  }

  async banUser (ban: Omit<Ban, 'createdAt'>): Promise<BanResult> {
    return await this.#db.transaction().execute(async (trx): Promise<BanResult> => {
      if (await this.#lockRoom(trx, ban.roomId) === undefined) return { ok: false, reason: 'room_not_found' }
      if (!(await this.#userExists(trx, ban.userId))) return { ok: false, reason: 'user_not_found' }

      const membership = await this.#membership(trx, ban.roomId, ban.userId)
      if (membership?.role === 'owner' && await this.#ownerCount(trx, ban.roomId) <= 1) return { ok: false, reason: 'last_owner' }
      if (membership !== undefined) {
        await trx.deleteFrom('memberships').where('room_id', '=', ban.roomId).where('user_id', '=', ban.userId).execute()
      }
      const removedMembership = membership !== undefined

      // Banning again keeps the original record: who banned first and why stays on file.
      const existing = await this.#ban(trx, ban.roomId, ban.userId)
      if (existing !== undefined) return { ok: true, ban: toBan(existing), created: false, removedMembership }
      const row = { room_id: ban.roomId, user_id: ban.userId, banned_by: ban.bannedBy, reason: ban.reason, created_at: Date.now() }
      await trx.insertInto('bans').values(row).execute()
      return { ok: true, ban: toBan(row), created: true, removedMembership }
    })
  }

  async unbanUser (roomId: string, userId: string): Promise<boolean> {
    const result = await this.#db.deleteFrom('bans').where('room_id', '=', roomId).where('user_id', '=', userId).executeTakeFirst()
    return result.numDeletedRows > 0n
  }

  // Helpers shared by the transactional rules

  /**
   * Reads the room and, on PostgreSQL, locks its row until the transaction ends, so concurrent
   * membership changes on one room run one after another and their counts stay true.
   * SQLite needs no lock: kysely runs its single connection's transactions one at a time.
   */
  async #lockRoom (trx: Transaction<Database>, roomId: string): Promise<Row<'rooms'> | undefined> {
    return await trx.selectFrom('rooms').selectAll().where('id', '=', roomId)
      .$if(this.kind === 'postgres', qb => qb.forUpdate())
      .executeTakeFirst()
  }

  async #userExists (trx: Transaction<Database>, userId: string): Promise<boolean> {
    return await trx.selectFrom('users').select('id').where('id', '=', userId).where('deleted_at', 'is', null).executeTakeFirst() !== undefined
  }

  /**
   * The active admins' ids, locked on PostgreSQL until the transaction ends: two transactions
   * that could each remove an admin (demote, disable, delete) run one after the other, so both
   * cannot see the other admin still there. SQLite runs transactions one at a time anyway.
   */
  async #lockActiveAdmins (trx: Transaction<Database>): Promise<string[]> {
    const rows = await trx.selectFrom('users').select('id')
      .where('role', '=', 'admin').where('disabled', '=', 0).where('deleted_at', 'is', null)
      .$if(this.kind === 'postgres', qb => qb.forUpdate())
      .execute()
    return rows.map(row => row.id)
  }

  async #membership (db: Kysely<Database>, roomId: string, userId: string): Promise<Row<'memberships'> | undefined> {
    return await db.selectFrom('memberships').selectAll().where('room_id', '=', roomId).where('user_id', '=', userId).executeTakeFirst()
  }

  async #ban (db: Kysely<Database>, roomId: string, userId: string): Promise<Row<'bans'> | undefined> {
    return await db.selectFrom('bans').selectAll().where('room_id', '=', roomId).where('user_id', '=', userId).executeTakeFirst()
  }

  async #memberCount (trx: Transaction<Database>, roomId: string): Promise<number> {
    const row = await trx.selectFrom('memberships').select(eb => eb.fn.countAll().as('count'))
      .where('room_id', '=', roomId).executeTakeFirstOrThrow()
    return Number(row.count)
  }

  async #ownerCount (trx: Transaction<Database>, roomId: string): Promise<number> {
    const row = await trx.selectFrom('memberships').select(eb => eb.fn.countAll().as('count'))
      .where('room_id', '=', roomId).where('role', '=', 'owner').executeTakeFirstOrThrow()
    return Number(row.count)
  }

  #isUniqueViolation (error: unknown): boolean {
    const code = (error as { code?: unknown } | null)?.code
    return this.kind === 'postgres'
      ? code === '23505'
      : code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE'
  }
}
