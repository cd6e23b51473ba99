import { randomBytes } from 'node:crypto'
import type { TestContext } from 'node:test'
import { dropSchema } from '../support/postgres.js'
import { deleteRedisKeys } from '../support/redis.js'
import { redisCall, tempDir, TEST_DATABASE_URL, TEST_REDIS_URL } from './helper.js'
import { baseEnv, startServer, waitUntilReady, type ServerProcess } from './process.js'

/** The Redis the nodes share: the machine's one Redis (the default), or a private Redis Cluster. */
export interface RedisTarget {
  /** The Redis variables every node gets. */
  env: Record<string, string>
  /** One command, sent where its key lives. */
  call(...args: [string, ...string[]]): Promise<unknown>
  deleteKeys(prefix: string): Promise<void>
}

export const sharedRedis: RedisTarget = {
  env: { REDIS_URL: TEST_REDIS_URL },
  call: async (...args) => await redisCall(TEST_REDIS_URL, ...args),
  deleteKeys: async (prefix) => { await deleteRedisKeys(TEST_REDIS_URL, prefix) }
}

export interface ProcessCluster {
  servers: ServerProcess[]
  /** The nodes' REDIS_KEY_PREFIX. */
  keyPrefix: string
  /** The nodes' DATABASE_SCHEMA. */
  schema: string
}

/**
 * `count` real server processes (src/server.ts) on a fresh Redis key prefix and a fresh
 * PostgreSQL schema, as a cluster behind a load balancer shares them; killed, and both removed,
 * when the test ends. The first node starts alone (it runs the migrations and creates the
 * bootstrap admin), the others together, each ready before this resolves. `env` comes last:
 * it may name another DATABASE_URL or schema (the caller then removes that one).
 */
export async function startProcessCluster (t: TestContext, count: number, env: Record<string, string> = {}, redis: RedisTarget = sharedRedis): Promise<ProcessCluster> {
  const keyPrefix = `sbmn:${randomBytes(6).toString('hex')}:`
  const schema = `t_${randomBytes(6).toString('hex')}`
  const servers: ServerProcess[] = []
  t.after(async () => {
    // Processes first: a dropped schema must not be in use.
    await Promise.all(servers.map(async (s) => {
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL')
      await s.exited
    }))
    await redis.deleteKeys(keyPrefix).catch(() => {})
    await dropSchema(TEST_DATABASE_URL, schema)
  })
  const start = async (): Promise<ServerProcess> => {
    const server = await startServer(t, {
      ...baseEnv(tempDir(t)),
      DATABASE_URL: TEST_DATABASE_URL,
      DATABASE_SCHEMA: schema,
      ...redis.env,
      REDIS_KEY_PREFIX: keyPrefix,
      ...env
    })
    servers.push(server)
    await waitUntilReady(server)
    return server
  }
  await start()
  await Promise.all(Array.from({ length: count - 1 }, start))
  return { servers, keyPrefix, schema }
}
