import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis } from 'ioredis'
import { freePort } from './free-port.js'

/*
 * A private Redis Cluster (three primaries, three replicas) on free ports, for the tests and
 * the lab: never the machine's shared Redis. Started once per test file (it takes a few
 * seconds), stopped with everything it wrote.
 */

const PRIMARIES = 3
const START_TIMEOUT_MS = 15_000
/** How long the cluster may take to agree it is whole (create, a failover, a migration). */
const SETTLE_TIMEOUT_MS = 30_000
const POLL_MS = 100

export interface ClusterNode {
  port: number
  /** Kills the process at once (SIGKILL): what a crashed primary looks like. */
  kill(): Promise<void>
  /** Starts it again on the same port with the same node id (its nodes.conf). */
  start(): Promise<void>
  running(): boolean
}

export interface PrivateRedisCluster {
  /** Every node, primaries first as created (their roles change on failover: ask roles()). */
  nodes: ClusterNode[]
  /** Seeds for REDIS_CLUSTER_NODES: `127.0.0.1:port,…` of every node. */
  seeds: string
  /** One command to the node on `port` on a connection of its own. */
  call(port: number, ...args: [string, ...Array<string | number>]): Promise<unknown>
  /** One command sent where the cluster routes it (by its key), on a cluster connection of its own. */
  command(...args: [string, ...Array<string | number>]): Promise<unknown>
  /** The port of the primary that owns `slot` now, as the running nodes agree. */
  ownerOf(slot: number): Promise<number>
  /**
   * Moves `slot` to the primary on `toPort` the way `redis-cli --cluster reshard` does
   * (IMPORTING/MIGRATING, MIGRATE of its keys in batches, SETSLOT NODE on every primary), while
   * clients keep using it (they get ASK, then MOVED).
   */
  migrateSlot(slot: number, toPort: number): Promise<void>
  /** Ports of the running primaries and of the replicas, as the nodes see them now. */
  roles(): Promise<{ primaries: number[], replicas: number[] }>
  /** Resolves once every running node reports `cluster_state:ok` and the same primaries, each with an online replica when `replicas` is set. */
  settled(options?: { replicas?: boolean }): Promise<void>
  /** Deletes every key under `prefix` on every primary. */
  deleteKeys(prefix: string): Promise<void>
  /** Kills every node and removes their files. Idempotent. */
  stop(): Promise<void>
}

/** False when redis-server and redis-cli are on PATH, a reason when not (an error under REQUIRE_SERVICES=1). */
export function skipUnlessRedisCluster (): false | string {
  const missing = ['redis-server', 'redis-cli'].filter((bin) => spawnSync(bin, ['--version']).status !== 0)
  if (missing.length === 0) return false
  const reason = `${missing.join(' and ')} not found on PATH (needed for a private Redis Cluster)`
  if (process.env.REQUIRE_SERVICES === '1') throw new Error(`${reason} (REQUIRE_SERVICES=1)`)
  return reason
}

/**
 * Starts six `redis-server --cluster-enabled yes` on free ports and joins them with
 * `redis-cli --cluster create … --cluster-replicas 1`. Replicas of a fresh cluster would refuse
 * to fail over (their data looks too old), hence `cluster-replica-validity-factor 0`; a 2 s node
 * timeout lets a killed primary's replica take over within a few seconds.
 */
export async function startRedisCluster (): Promise<PrivateRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-cluster-'))
  const nodes: ClusterNode[] = []
  const stopNodes = async (): Promise<void> => { await Promise.all(nodes.map(async (n) => { await n.kill() })) }
  try {
    for (let i = 0; i < PRIMARIES * 2; i++) nodes.push(clusterNode(await freePort(), dir))
    await Promise.all(nodes.map(async (n) => { await n.start() }))
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'], { encoding: 'utf8', timeout: START_TIMEOUT_MS })
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`)
  } catch (err) {
    await stopNodes()
    rmSync(dir, { recursive: true, force: true })
    throw err
  }

  let stopped = false
  const cluster: PrivateRedisCluster = {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    call: (port, ...args) => callNode(port, args),
    async command (...args) {
      const conn = new Cluster(nodes.filter((n) => n.running()).map((n) => ({ host: '127.0.0.1', port: n.port })), { lazyConnect: true, clusterRetryStrategy: () => null, redisOptions: { maxRetriesPerRequest: 0 } })
      conn.on('error', () => {})
      try {
        await conn.connect()
        return await conn.call(args[0], ...args.slice(1))
      } finally {
        await conn.quit().catch(() => { conn.disconnect() })
      }
    },
    async ownerOf (slot) {
      const { primaries } = await cluster.roles()
      for (const port of primaries) {
        const shape = await clusterNodes(port)
        const me = shape.find((n) => n.flags.includes('myself'))
        if (me?.slots.some(([from, to]) => slot >= from && slot <= to) === true) return port
      }
      throw new Error(`no primary owns slot ${slot}`)
    },
    async migrateSlot (slot, toPort) {
      const fromPort = await cluster.ownerOf(slot)
      if (fromPort === toPort) return
      const idOf = async (port: number): Promise<string> => String(await callNode(port, ['CLUSTER', 'MYID']))
      const [fromId, toId] = [await idOf(fromPort), await idOf(toPort)]
      await callNode(toPort, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId])
      await callNode(fromPort, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId])
      for (;;) {
        const keys = await callNode(fromPort, ['CLUSTER', 'GETKEYSINSLOT', slot, 100]) as string[]
        if (keys.length === 0) break
        await callNode(fromPort, ['MIGRATE', '127.0.0.1', toPort, '', 0, 5000, 'KEYS', ...keys])
      }
      // The new owner first, then the old one (which then drops the slot's shard subscribers),
      // then every other primary, as redis-cli does.
      await callNode(toPort, ['CLUSTER', 'SETSLOT', slot, 'NODE', toId])
      await callNode(fromPort, ['CLUSTER', 'SETSLOT', slot, 'NODE', toId])
      const { primaries } = await cluster.roles()
      for (const port of primaries.filter((p) => p !== fromPort && p !== toPort)) await callNode(port, ['CLUSTER', 'SETSLOT', slot, 'NODE', toId])
    },
    async roles () {
      const primaries: number[] = []
      const replicas: number[] = []
      for (const node of nodes.filter((n) => n.running())) {
        const role = await callNode(node.port, ['ROLE']).catch(() => null) as [string] | null
        if (role?.[0] === 'master') primaries.push(node.port)
        else if (role?.[0] === 'slave') replicas.push(node.port)
      }
      return { primaries, replicas }
    },
    async settled ({ replicas = true } = {}) {
      const deadline = Date.now() + SETTLE_TIMEOUT_MS
      let last = ''
      while (Date.now() < deadline) {
        last = await unsettled(nodes, replicas)
        if (last === '') return
        await sleep(POLL_MS)
      }
      throw new Error(`redis cluster did not settle within ${SETTLE_TIMEOUT_MS} ms: ${last}`)
    },
    async deleteKeys (prefix) {
      const { primaries } = await cluster.roles()
      await Promise.all(primaries.map(async (port) => { await deleteKeysOn(port, prefix) }))
    },
    async stop () {
      if (stopped) return
      stopped = true
      await stopNodes()
      rmSync(dir, { recursive: true, force: true })
    }
  }
  try {
    await cluster.settled()
  } catch (err) {
    await cluster.stop()
    throw err
  }
  return cluster
}

/** What keeps the cluster from being whole, or '' when nothing does. */
async function unsettled (nodes: ClusterNode[], replicas: boolean): Promise<string> {
  const running = nodes.filter((n) => n.running())
  const views = new Set<string>()
  for (const node of running) {
    let info: string
    let shape: string
    try {
      info = String(await callNode(node.port, ['CLUSTER', 'INFO']))
      shape = String(await callNode(node.port, ['CLUSTER', 'NODES']))
    } catch (err) {
      return `${node.port}: ${(err as Error).message}`
    }
    if (!info.includes('cluster_state:ok')) return `${node.port}: cluster_state not ok`
    // Every node must agree on which primaries own slots (a failover is seen by all), and no
    // node may still be flagged as failing or in a handshake.
    const lines = shape.trim().split('\n').map((l) => l.split(' '))
    const live = lines.filter((l) => !l[2]!.includes('fail') && !l[2]!.includes('handshake') && !l[2]!.includes('noaddr'))
    const owners = live.filter((l) => l[2]!.includes('master') && l.length > 8).map((l) => l[1]!.split('@')[0]).sort()
    views.add(owners.join(','))
    if (owners.length !== PRIMARIES) return `${node.port}: ${owners.length} primaries own slots`
  }
  if (views.size > 1) return `nodes disagree on the primaries: ${[...views].join(' | ')}`
  if (replicas) {
    for (const node of running) {
      const info = String(await callNode(node.port, ['INFO', 'replication']).catch(() => ''))
      if (info.includes('role:master') && !/slave0:.*state=online/.test(info)) return `${node.port}: primary without an online replica`
    }
  }
  return ''
}

/** CLUSTER NODES as the node on `port` sees it. */
async function clusterNodes (port: number): Promise<Array<{ id: string, flags: string, slots: Array<[number, number]> }>> {
  const text = String(await callNode(port, ['CLUSTER', 'NODES']))
  return text.trim().split('\n').map((line) => {
    const fields = line.split(' ')
    const slots = fields.slice(8).filter((f) => !f.startsWith('[')).map((f): [number, number] => {
      const [from, to] = f.split('-').map(Number)
      return [from!, to ?? from!]
    })
    return { id: fields[0]!, flags: fields[2]!, slots }
  })
}

function clusterNode (port: number, parent: string): ClusterNode {
  const dir = join(parent, String(port))
  let child: ChildProcess | null = null
  const running = (): boolean => child !== null && child.exitCode === null && child.signalCode === null
  return {
    port,
    running,
    async start () {
      mkdirSync(dir, { recursive: true })
      const proc = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
        '--cluster-config-file', join(dir, 'nodes.conf'), '--dir', dir, '--save', '', '--appendonly', 'no',
        '--cluster-node-timeout', '2000', '--cluster-replica-validity-factor', '0', '--daemonize', 'no'
      ], { stdio: ['ignore', 'pipe', 'pipe'] })
      child = proc
      let output = ''
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`redis-server :${port} did not start: ${output}`)) }, START_TIMEOUT_MS)
        proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
          output += chunk
          if (output.includes('Ready to accept connections')) { clearTimeout(timer); output = ''; resolve() }
        })
        proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server :${port} exited (${String(code)}): ${output}`)) })
      })
      proc.stdout?.resume()
    },
    async kill () {
      const proc = child
      if (proc === null || !running()) return
      const exited = new Promise((resolve) => proc.once('exit', resolve))
      proc.kill('SIGKILL')
      await exited
    }
  }
}

async function withNode<T> (port: number, fn: (conn: Redis) => Promise<T>): Promise<T> {
  const conn = new Redis({ host: '127.0.0.1', port, lazyConnect: true, connectTimeout: 2000, commandTimeout: 5000, maxRetriesPerRequest: 0, retryStrategy: () => null })
  conn.on('error', () => {})
  try {
    await conn.connect()
    const result = await fn(conn)
    // QUIT rather than disconnect(): it leaves no close timer behind (some tests count timers).
    await conn.quit()
    return result
  } catch (err) {
    conn.disconnect()
    throw err
  }
}

async function callNode (port: number, args: Array<string | number>): Promise<unknown> {
  return await withNode(port, async (conn) => await conn.call(String(args[0]), ...args.slice(1)))
}

async function deleteKeysOn (port: number, prefix: string): Promise<void> {
  await withNode(port, async (conn) => {
    let cursor = '0'
    do {
      const [next, keys] = await conn.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`, 'COUNT', 1000)
      cursor = next
      // One UNLINK per key: keys of different slots cannot go in one command on a cluster node.
      for (const key of keys) await conn.unlink(key)
    } while (cursor !== '0')
  })
}
