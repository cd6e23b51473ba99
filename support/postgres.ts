import pg from 'pg'

/** Drops a test's or a lab run's private PostgreSQL schema (and everything in it). */
export async function dropSchema (url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(`drop schema if exists ${schema} cascade`)
  } finally {
    await client.end()
  }
}
