import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { CompiledQuery, Kysely, PostgresDialect, SqliteDialect } from 'kysely'
import pg from 'pg'
import { KyselyStore, type Database } from './kysely-store.js'
import { POOL_DEFAULTS, type Store } from './types.js'

import { isConnectionError, withUnavailableErrors } from './unavailable.js'

export type * from './types.js'
export { StoreUnavailableError, isConnectionError } from './unavailable.js'

/**
 * The database DATABASE_URL names cannot be opened at start (unreachable, missing, refusing the
 * sign-in, an unwritable file): one line naming the variable and what to check, for the
 * operator's terminal; the driver's error is its cause.
 */
export class StoreOpenError extends Error {
  override name = 'StoreOpenError'
}

export interface StoreOptions {
  log?: { info: (obj: object, msg: string) => void }
  /** PostgreSQL only: keep every table in this schema (created when missing). */
  pgSchema?: string
  /** PostgreSQL only: the pool's size and how long an idle connection stays open; POOL_DEFAULTS when absent. */
  pgPool?: { max: number, idleMs: number }
}

/**
 * Opens the database a URL names and migrates it:
 * `sqlite:<path>` (relative to the working directory, or `sqlite::memory:`), or
 * `postgres://…` / `postgresql://…`.
 */
export async function createStore (databaseUrl: string, options: StoreOptions = {}): Promise<Store> {
  let store: KyselyStore
  try {
    store = openStore(databaseUrl, options)
  } catch (error) {
    throw openFailure(error, databaseUrl) ?? error
  }
  try {
    await store.migrate()
  } catch (error) {
    await store.close().catch(() => {})
    throw openFailure(error, databaseUrl) ?? error
  }
  return withUnavailableErrors(store)
}

/** A StoreOpenError for the failures an operator fixes outside the server; null for the rest (bugs keep their stack). */
function openFailure (error: unknown, databaseUrl: string): StoreOpenError | null {
  const code = (error as { code?: unknown }).code
  if (databaseUrl.startsWith('sqlite:')) {
    if (code !== 'SQLITE_CANTOPEN' && code !== 'EACCES' && code !== 'EROFS') return null
    return new StoreOpenError(`DATABASE_URL: cannot open the SQLite file ${resolve(databaseUrl.slice('sqlite:'.length))} (${String(code)}); is its directory (DATA_DIR) writable?`, { cause: error })
  }
  // Not a URL the store opens (openStore said which forms it takes): that error stands.
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) return null
  // Host, port and database only: the URL's password never reaches the terminal.
  const url = new URL(databaseUrl)
  const where = `${url.hostname}:${url.port === '' ? '5432' : url.port}`
  const database = decodeURIComponent(url.pathname.slice(1)) || decodeURIComponent(url.username)
  if (code === '3D000') {
    return new StoreOpenError(`DATABASE_URL: database "${database}" does not exist on ${where}; create it (createdb -h ${url.hostname} ${database}) or name an existing one`, { cause: error })
  }
  if (code === '28P01' || code === '28000') {
    return new StoreOpenError(`DATABASE_URL: PostgreSQL at ${where} refused the sign-in (${(error as Error).message}); check the user and password`, { cause: error })
  }
  if (isConnectionError(error)) {
    const reason = typeof code === 'string' ? code : (error as Error).message
    return new StoreOpenError(`DATABASE_URL: cannot reach PostgreSQL at ${where} (${reason}); is it running, and are the host and port right?`, { cause: error })
  }
  return null
}

function openStore (databaseUrl: string, options: StoreOptions): KyselyStore {
  if (databaseUrl.startsWith('sqlite:') && databaseUrl.length > 'sqlite:'.length) {
    return openSqlite(databaseUrl.slice('sqlite:'.length), options)
  }
  if (databaseUrl.startsWith('postgres://') || databaseUrl.startsWith('postgresql://')) {
    return openPostgres(databaseUrl, options)
  }
  throw new Error('DATABASE_URL must be sqlite:<path> (e.g. sqlite:/var/lib/switchboard/switchboard.db, or sqlite::memory:), postgres://… or postgresql://…')
}

function openSqlite (path: string, options: StoreOptions): KyselyStore {
  const file = path === ':memory:' ? path : resolve(process.cwd(), path)
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true })
  const database = new SqliteDatabase(file)
  // SQLite leaves foreign keys off per connection, so cascades would silently not happen.
  database.pragma('foreign_keys = ON')
  // WAL lets readers (a backup, an operator's sqlite3 shell) work while the server writes.
  database.pragma('journal_mode = WAL')
  // In WAL mode NORMAL fsyncs at checkpoints, not on every commit: a commit survives the
  // process's death (kill -9, a crash) but not power loss. Durable history commits once per tick
  // on the event loop, and FULL would block every connection for an fsync each time
  // (docs/architecture.md, "Durable history"; measured in docs/performance.md).
  database.pragma('synchronous = NORMAL')
  database.pragma('busy_timeout = 5000')
  // SQLite's LIKE ignores ASCII case by default; PostgreSQL's does not, and prefix search must agree.
  database.pragma('case_sensitive_like = ON')
  return new KyselyStore(new Kysely<Database>({ dialect: new SqliteDialect({ database }) }), { kind: 'sqlite', log: options.log, sqlite: database })
}

function openPostgres (connectionString: string, options: StoreOptions): KyselyStore {
  const pool = new pg.Pool({
    connectionString,
    max: options.pgPool?.max ?? POOL_DEFAULTS.max,
    // Connections opened for a burst (a reconnect storm authorizing thousands of subscribes)
    // stay a minute, not pg's 10 s, and one always stays: opening one costs the database a
    // backend process and the caller a round of startup messages (far dearer than a query:
    // docs/performance.md), and closing a batch of them costs the database's host
    // CPU that the node may share.
    idleTimeoutMillis: options.pgPool?.idleMs ?? POOL_DEFAULTS.idleMs,
    min: 1,
    // Names the node's sessions in pg_stat_activity, unless DATABASE_URL's application_name does.
    fallback_application_name: 'switchboard',
    // Fail fast when the database is down, so readiness reports it instead of hanging.
    connectionTimeoutMillis: 5000
  })
  // An idle client losing its connection emits 'error' on the pool; unhandled, it would crash
  // the process. The pool drops that client and the next query opens a new one.
  pool.on('error', error => { options.log?.info({ err: error }, 'idle database connection failed') })
  // A client checked out by a query has no pool listener: when its connection dies mid-query,
  // the query rejects (and is answered 503) but the client also emits 'error', which must not
  // become an uncaught exception. Every client gets a permanent listener.
  pool.on('connect', (client) => {
    client.on('error', error => { options.log?.info({ err: error }, 'database connection failed') })
  })

  const schema = options.pgSchema
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({
      pool,
      onCreateConnection: schema === undefined
        ? undefined
        : async connection => {
          await connection.executeQuery(CompiledQuery.raw(`set search_path to "${schema.replaceAll('"', '""')}"`))
        }
    })
  })
  return new KyselyStore(db, {
    kind: 'postgres',
    log: options.log,
    schema,
    poolStats: () => ({ open: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount })
  })
}
