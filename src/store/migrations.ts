import { sql, SqliteAdapter, type Kysely } from 'kysely'
import type { Migration, MigrationProvider } from 'kysely'

/*
 * Written once for both dialects, so only portable column types: `text`, `integer`, and
 * `bigint` for epoch-millisecond timestamps (SQLite stores it as INTEGER; PostgreSQL's int8
 * comes back as a string and is converted in the mapping layer).
 * Migrations are append-only: never edit one that has shipped, add the next instead.
 */
const initial: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.createTable('users')
      .addColumn('id', 'text', col => col.primaryKey())
      .addColumn('role', 'text', col => col.notNull())
      .addColumn('password_hash', 'text', col => col.notNull())
      .addColumn('created_at', 'bigint', col => col.notNull())
      .execute()

    await db.schema.createTable('refresh_tokens')
      .addColumn('id', 'text', col => col.primaryKey())
      .addColumn('token_hash', 'text', col => col.notNull().unique())
      .addColumn('user_id', 'text', col => col.notNull().references('users.id').onDelete('cascade'))
      .addColumn('family_id', 'text', col => col.notNull())
      .addColumn('expires_at', 'bigint', col => col.notNull())
      .addColumn('created_at', 'bigint', col => col.notNull())
      .addColumn('used_at', 'bigint')
      .addColumn('revoked_at', 'bigint')
      .execute()
    // Reuse detection revokes a whole family at once.
    await db.schema.createIndex('refresh_tokens_family_id_idx').on('refresh_tokens').column('family_id').execute()
    // The periodic sweep deletes by expiry.
    await db.schema.createIndex('refresh_tokens_expires_at_idx').on('refresh_tokens').column('expires_at').execute()

    await db.schema.createTable('api_keys')
      .addColumn('id', 'text', col => col.primaryKey())
      .addColumn('name', 'text', col => col.notNull())
      .addColumn('prefix', 'text', col => col.notNull())
      .addColumn('key_hash', 'text', col => col.notNull().unique())
      // A JSON array: a join table would buy nothing, scopes are only ever read whole.
      .addColumn('scopes', 'text', col => col.notNull())
      .addColumn('created_by', 'text', col => col.notNull())
      .addColumn('created_at', 'bigint', col => col.notNull())
      .addColumn('last_used_at', 'bigint')
      .execute()

    await db.schema.createTable('rooms')
      .addColumn('id', 'text', col => col.primaryKey())
      .addColumn('name', 'text')
      .addColumn('visibility', 'text', col => col.notNull())
      .addColumn('publish', 'text', col => col.notNull())
      .addColumn('history_size', 'integer', col => col.notNull())
      .addColumn('history_ttl_seconds', 'integer', col => col.notNull())
      .addColumn('max_members', 'integer')
      .addColumn('created_by', 'text', col => col.notNull())
      .addColumn('created_at', 'bigint', col => col.notNull())
      .addColumn('updated_at', 'bigint', col => col.notNull())
      .execute()

    await db.schema.createTable('memberships')
      .addColumn('room_id', 'text', col => col.notNull().references('rooms.id').onDelete('cascade'))
      .addColumn('user_id', 'text', col => col.notNull().references('users.id').onDelete('cascade'))
      .addColumn('role', 'text', col => col.notNull())
      .addColumn('created_at', 'bigint', col => col.notNull())
      .addPrimaryKeyConstraint('memberships_pk', ['room_id', 'user_id'])
      .execute()
    // The primary key serves lookups by room; this one serves "rooms of a user".
    await db.schema.createIndex('memberships_user_id_idx').on('memberships').column('user_id').execute()

    await db.schema.createTable('bans')
      .addColumn('room_id', 'text', col => col.notNull().references('rooms.id').onDelete('cascade'))
      .addColumn('user_id', 'text', col => col.notNull().references('users.id').onDelete('cascade'))
      .addColumn('banned_by', 'text', col => col.notNull())
      .addColumn('reason', 'text')
      .addColumn('created_at', 'bigint', col => col.notNull())
      .addPrimaryKeyConstraint('bans_pk', ['room_id', 'user_id'])
      .execute()
  },

  async down (db: Kysely<unknown>) {
    for (const table of ['bans', 'memberships', 'rooms', 'api_keys', 'refresh_tokens', 'users']) {
      await db.schema.dropTable(table).ifExists().execute()
    }
  }
}

/**
 * Signing a user out everywhere revokes their refresh tokens by user, and deleting a user
 * cascades to them: without this index both scan every session of every user.
 */
const refreshTokensByUser: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.createIndex('refresh_tokens_user_id_idx').on('refresh_tokens').column('user_id').execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.dropIndex('refresh_tokens_user_id_idx').ifExists().execute()
  }
}

/**
 * Creating a room counts the rooms its creator already made (MAX_ROOMS_PER_USER), inside the
 * insert's transaction: without this index every room creation scans the rooms table.
 */
const roomsByCreator: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.createIndex('rooms_created_by_idx').on('rooms').column('created_by').execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.dropIndex('rooms_created_by_idx').ifExists().execute()
  }
}

/**
 * A room may turn its join/leave pushes off (a broadcast room with many subscribers would
 * push every join and leave to all of them). An integer 0/1, not a boolean: SQLite has no
 * boolean type, and one column type for both dialects keeps the mapping in one place. Rows
 * from before keep today's behaviour: the default is 1 (pushes on).
 */
const roomsPresenceEvents: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.alterTable('rooms').addColumn('presence_events', 'integer', col => col.notNull().defaultTo(1)).execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.alterTable('rooms').dropColumn('presence_events').execute()
  }
}

/**
 * Durable history (src/realtime/sqlite-history.ts): each room's stream (its epoch, the last
 * offset handed out and the recovery window it was last published with) and its publications,
 * keyed by (room, epoch, offset) so that reading back a page before or after a position is one
 * range of the primary key. Created on both dialects in one shape, so the PostgreSQL archive
 * can keep its rows in the same table; today only the embedded engine on SQLite writes them.
 * No foreign key to rooms: personal rooms (`user:<id>`) have no row there, and a deleted room's
 * rows are removed by the history sweep in bounded batches rather than by one cascade.
 */
const durableHistory: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.createTable('history_streams')
      .addColumn('room', 'text', col => col.primaryKey())
      .addColumn('epoch', 'text', col => col.notNull())
      .addColumn('top_offset', 'bigint', col => col.notNull())
      .addColumn('history_size', 'integer', col => col.notNull())
      .addColumn('history_ttl_seconds', 'integer', col => col.notNull())
      .execute()

    // SQLite names raw bytes `blob`, PostgreSQL `bytea`; nothing else differs.
    const bytes = db.getExecutor().adapter instanceof SqliteAdapter ? sql`blob` : sql`bytea`
    await db.schema.createTable('history_publications')
      .addColumn('room', 'text', col => col.notNull())
      .addColumn('epoch', 'text', col => col.notNull())
      // Not `offset`: a keyword in both dialects.
      .addColumn('stream_offset', 'bigint', col => col.notNull())
      .addColumn('publisher', 'text', col => col.notNull())
      .addColumn('ts', 'bigint', col => col.notNull())
      // When the server stored it (the TTL's clock), apart from `ts`, which the publisher's request carries.
      .addColumn('stored_at', 'bigint', col => col.notNull())
      // publicationBytes, counted once at publish: the room's byte cap is enforced without re-measuring.
      .addColumn('bytes', 'integer', col => col.notNull())
      // 'json' (payload_text holds the JSON text) or 'binary' (payload_bytes holds the bytes).
      .addColumn('kind', 'text', col => col.notNull())
      .addColumn('payload_text', 'text')
      .addColumn('payload_bytes', bytes)
      .addPrimaryKeyConstraint('history_publications_pk', ['room', 'epoch', 'stream_offset'])
      .execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.dropTable('history_publications').ifExists().execute()
    await db.schema.dropTable('history_streams').ifExists().execute()
  }
}

/**
 * Account administration (issue 25): a disabled flag, and deletion as a tombstone. A deleted
 * built-in account keeps its row, emptied (no password, role `user`) and marked `deleted_at`,
 * so the primary key itself refuses the username forever: a new account cannot inherit the old
 * one's personal room or history, and no separate table can race a registration. Every read of
 * users skips tombstones. Integers 0/1 for the flag, as for presence_events (0004).
 * The index on role serves the last-admin check, which counts the active admins in every
 * transaction that could remove one.
 */
const accountAdmin: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.alterTable('users').addColumn('disabled', 'integer', col => col.notNull().defaultTo(0)).execute()
    await db.schema.alterTable('users').addColumn('deleted_at', 'bigint').execute()
    await db.schema.createIndex('users_role_idx').on('users').column('role').execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.dropIndex('users_role_idx').ifExists().execute()
    await db.schema.alterTable('users').dropColumn('deleted_at').execute()
    await db.schema.alterTable('users').dropColumn('disabled').execute()
  }
}

/**
 * The archive (issue #21): a room may keep its publications beyond the recovery window, for
 * `archive_days` days, so that users scroll back through them. Rooms from before keep today's
 * behaviour (archive 0: only the window). The history stream row learns the setting its room
 * was last published with (the sweep has no room row to read, and personal rooms have none)
 * and the bytes its current epoch holds, kept as a running count so that the archive byte cap
 * is enforced without summing a large archive on every sweep. Epochs dropped with their room
 * are queued in `history_purges` and deleted by the sweep in bounded batches.
 */
const roomArchive: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.alterTable('rooms').addColumn('archive', 'integer', col => col.notNull().defaultTo(0)).execute()
    await db.schema.alterTable('rooms').addColumn('archive_days', 'integer', col => col.notNull().defaultTo(30)).execute()
    await db.schema.alterTable('history_streams').addColumn('archive_days', 'integer', col => col.notNull().defaultTo(0)).execute()
    await db.schema.alterTable('history_streams').addColumn('held_bytes', 'bigint', col => col.notNull().defaultTo(0)).execute()
    await sql`UPDATE history_streams SET held_bytes = (SELECT coalesce(sum(p.bytes), 0) FROM history_publications p
      WHERE p.room = history_streams.room AND p.epoch = history_streams.epoch)`.execute(db)
    await db.schema.createTable('history_purges')
      .addColumn('room', 'text', col => col.notNull())
      .addColumn('epoch', 'text', col => col.notNull())
      .addPrimaryKeyConstraint('history_purges_pk', ['room', 'epoch'])
      .execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.dropTable('history_purges').ifExists().execute()
    await db.schema.alterTable('history_streams').dropColumn('held_bytes').execute()
    await db.schema.alterTable('history_streams').dropColumn('archive_days').execute()
    await db.schema.alterTable('rooms').dropColumn('archive_days').execute()
    await db.schema.alterTable('rooms').dropColumn('archive').execute()
  }
}

/**
 * The cluster archive (PostgreSQL) pages across epochs: the epoch before (or after) another is
 * the one whose rows were stored just before (after) it, one lookup by (room, stored_at)
 * rather than a scan of the room's archive. The same index serves deleting what archiveDays
 * expired, oldest first.
 */
const archiveByTime: Migration = {
  async up (db: Kysely<unknown>) {
    await db.schema.createIndex('history_publications_room_stored_idx').on('history_publications').columns(['room', 'stored_at']).execute()
  },
  async down (db: Kysely<unknown>) {
    await db.schema.dropIndex('history_publications_room_stored_idx').ifExists().execute()
  }
}

export const migrations: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_refresh_tokens_user_id': refreshTokensByUser,
  '0003_rooms_created_by': roomsByCreator,
  '0004_rooms_presence_events': roomsPresenceEvents,
  '0005_durable_history': durableHistory,
  '0006_account_admin': accountAdmin,
  '0007_room_archive': roomArchive,
  '0008_archive_by_time': archiveByTime
}

export const migrationProvider: MigrationProvider = {
  async getMigrations () { return migrations }
}
