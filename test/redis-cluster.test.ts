import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Publication, StreamOptions } from '../src/realtime/engine.js'
import type { Logger } from '../src/realtime/logger.js'
import { createRedisEngine, type RedisEngine, type RedisEngineOptions } from '../src/realtime/redis-engine/index.js'
import { keyLayout } from '../src/realtime/redis-engine/keys.js'
import { keySlot } from '../src/redis.js'
import { skipUnlessRedisCluster, startRedisCluster, type PrivateRedisCluster } from '../support/redis-cluster.js'
import { waitFor as waitForCondition } from './ws-support.js'

/*
 * The Redis engine on a private Redis Cluster while its topology changes: a primary killed (its
 * replica takes over) and a slot migrated, both while publishing. Two engines stand for two
 * Switchboard nodes. Waits are bounded generously and never asserted on.
 */

const KEEP: StreamOptions = { historySize: 10_000, historyTtlSeconds: 3600 }
const WAIT_MS = 30_000
const quietLog: Logger = process.env.DEBUG_CLUSTER === '1'
  ? { debug () {}, info (o: unknown, m?: string) { console.log('info', m, o) }, warn (o: unknown, m?: string) { console.log('warn', m, o) }, error (o: unknown, m?: string) { console.log('error', m, o) }, child () { return quietLog } }
  : { debug () {}, info () {}, warn () {}, error () {}, child () { return quietLog } }

const skip = skipUnlessRedisCluster()
const cluster: PrivateRedisCluster | null = skip === false ? await startRedisCluster() : null
after(async () => { await cluster?.stop() })

function theCluster (): PrivateRedisCluster {
  assert.ok(cluster !== null)
  return cluster
}

/** Polls `check` until it holds, within WAIT_MS (a node or the database answers in its own time). */
async function waitFor (check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await waitForCondition(check, what, WAIT_MS)
}

interface Node {
  engine: RedisEngine
  /** Live publications per room, in arrival order. */
  live: Map<string, Publication[]>
  /** Each onReset's rooms (undefined: all). */
  resets: Array<readonly string[] | undefined>
}

/** Two engines under one fresh key prefix, closed (and their keys deleted) after the test. */
async function nodes (t: { after: (fn: () => Promise<void>) => void }, options: Partial<RedisEngineOptions> = {}): Promise<{ prefix: string, a: Node, b: Node }> {
  const c = theCluster()
  const prefix = `sbcl:${randomBytes(6).toString('hex')}:`
  const make = async (): Promise<Node> => {
    const engine = await createRedisEngine({
      url: `redis://${c.seeds.split(',')[0]}`,
      clusterNodes: c.seeds.split(',').map((seed) => ({ host: '127.0.0.1', port: Number(seed.split(':')[1]) })),
      keyPrefix: prefix,
      log: quietLog,
      ...options
    })
    const node: Node = { engine, live: new Map(), resets: [] }
    engine.broker.setHandler({
      onPublication (room, _epoch, publication) {
        let list = node.live.get(room)
        if (list === undefined) node.live.set(room, list = [])
        list.push(publication)
      },
      onEvent () {},
      onReset (rooms) { node.resets.push(rooms) }
    })
    return node
  }
  const a = await make()
  const b = await make()
  t.after(async () => {
    await Promise.all([a.engine.close(), b.engine.close()])
    await c.deleteKeys(prefix).catch(() => {})
  })
  return { prefix, a, b }
}

/**
 * Two room names whose slots are owned by two different primaries now, the first (the one the
 * test disturbs) not on the control channel's shard: a gap there would reset every room.
 */
async function roomsOnTwoShards (prefix: string): Promise<{ hit: string, spared: string, hitSlot: number, hitOwner: number, sparedOwner: number }> {
  const c = theCluster()
  const keys = keyLayout(prefix)
  const controlOwner = await c.ownerOf(keySlot(keys.control))
  let hit = ''
  let hitSlot = 0
  let hitOwner = controlOwner
  for (let i = 0; hitOwner === controlOwner; i++) {
    hit = `hit-${i}`
    hitSlot = keySlot(keys.room(hit).channel)
    hitOwner = await c.ownerOf(hitSlot)
  }
  for (let i = 0; ; i++) {
    const spared = `spared-${i}`
    const sparedOwner = await c.ownerOf(keySlot(keys.room(spared).channel))
    if (sparedOwner !== hitOwner) return { hit, spared, hitSlot, hitOwner, sparedOwner }
  }
}

/**
 * Publishes `data` numbers to `room` through `node` one after the other until `stop()` says so,
 * recording which were acknowledged; a failed publish (the shard away) is retried with the same
 * idempotency key, as the SDK does.
 */
function publishLoop (node: Node, room: string): { acknowledged: number[], stop: () => Promise<void>, count: () => number } {
  const acknowledged: number[] = []
  let running = true
  let n = 0
  const loop = (async () => {
    while (running) {
      const data = ++n
      for (;;) {
        try {
          await node.engine.broker.publish(room, { payload: JSON.stringify(data), kind: 'json', from: { id: 'u' }, ts: Date.now(), idempotencyKey: `k${data}` }, KEEP)
          acknowledged.push(data)
          break
        } catch {
          await sleep(50)
        }
      }
    }
  })()
  return { acknowledged, count: () => acknowledged.length, stop: async () => { running = false; await loop } }
}

async function historyData (node: Node, room: string): Promise<number[]> {
  const result = await node.engine.history.history(room, { limit: 100_000 }, KEEP)
  return result.publications.map((p) => JSON.parse(p.kind === 'json' ? p.payload : '0') as number)
}

describe('Redis engine on Redis Cluster: topology changes', { skip, concurrency: false }, () => {
  it('hash slots: keySlot agrees with CLUSTER KEYSLOT, hash tags included', async () => {
    const c = theCluster()
    for (const key of ['sb:{lobby}:ch', 'plain', '{}x', 'a{b}c{d}', 'sb:{r%7Boom}:meta', 'émoji{ü}']) {
      assert.equal(keySlot(key), Number(await c.call(c.nodes[0]!.port, 'CLUSTER', 'KEYSLOT', key)), key)
    }
  })

  it('a slot migrated while publishing: the room is followed to its new primary, reset alone, and nothing acknowledged is lost', async (t) => {
    const c = theCluster()
    const { prefix, a, b } = await nodes(t)
    const { hit, spared, hitSlot, hitOwner, sparedOwner } = await roomsOnTwoShards(prefix)
    await b.engine.broker.subscribe(hit)
    await b.engine.broker.subscribe(spared)
    const loop = publishLoop(a, hit)
    await waitFor(() => loop.count() >= 20, 'publications before the migration')

    await c.migrateSlot(hitSlot, sparedOwner)
    await waitFor(() => b.resets.some((rooms) => rooms?.includes(hit) === true), 'the migrated room reset on node B')
    const atReset = loop.count()
    await waitFor(() => loop.count() >= atReset + 20, 'publications after the migration')
    await loop.stop()

    assert.equal(await c.ownerOf(hitSlot), sparedOwner, 'the slot moved')
    assert.notEqual(hitOwner, sparedOwner)
    assert.ok(b.resets.every((rooms) => rooms !== undefined && !rooms.includes(spared)), `only the moved room reset: ${JSON.stringify(b.resets)}`)
    // Every acknowledged publication is in history, once, in order: nothing lost, nothing twice.
    assert.deepEqual(await historyData(b, hit), loop.acknowledged)
    // Live delivery goes on from the new owner: the last publication reached node B live.
    const last = loop.acknowledged.at(-1)
    await waitFor(() => b.live.get(hit)?.some((p) => p.kind === 'json' && JSON.parse(p.payload) === last) === true, 'the last publication live on node B')
  })

  for (const waitReplicas of [1, 0]) {
    it(`a primary killed while publishing (REDIS_WAIT_REPLICAS=${waitReplicas}): its replica takes over, the room is followed and reset alone; ${waitReplicas === 1 ? 'nothing acknowledged is lost' : 'what is lost is reported'}`, async (t) => {
      const c = theCluster()
      await c.settled()
      const { prefix, a, b } = await nodes(t, waitReplicas > 0 ? { waitReplicas, waitTimeoutMs: 500 } : {})
      const { hit, spared, hitSlot, hitOwner } = await roomsOnTwoShards(prefix)
      await b.engine.broker.subscribe(hit)
      await b.engine.broker.subscribe(spared)
      const loop = publishLoop(a, hit)
      await waitFor(() => loop.count() >= 20, 'publications before the kill')

      const victim = c.nodes.find((n) => n.port === hitOwner)
      assert.ok(victim !== undefined)
      await victim.kill()
      t.after(async () => {
        // The next test starts from a whole cluster.
        if (!victim.running()) await victim.start()
        await c.settled()
      })
      await waitFor(async () => (await c.ownerOf(hitSlot).catch(() => hitOwner)) !== hitOwner, 'the replica promoted')
      await waitFor(() => b.resets.some((rooms) => rooms?.includes(hit) === true), 'the room of the lost shard reset on node B')
      // Back as a replica of the promoted primary: with REDIS_WAIT_REPLICAS=1 the shard refuses
      // publishes until it has a replica again.
      await victim.start()
      const atReset = loop.count()
      await waitFor(() => loop.count() >= atReset + 20, 'publications after the failover')
      await loop.stop()

      assert.ok(b.resets.every((rooms) => rooms !== undefined && !rooms.includes(spared)), `only the lost shard's room reset: ${JSON.stringify(b.resets)}`)
      const stored = new Set(await historyData(b, hit))
      const lost = loop.acknowledged.filter((n) => !stored.has(n))
      if (waitReplicas > 0) {
        assert.deepEqual(lost, [], 'with WAIT for a replica, every acknowledged publication survived the failover')
      } else {
        // Asynchronous replication: what the primary acknowledged in its last moment may be gone.
        t.diagnostic(`REDIS_WAIT_REPLICAS=0: ${lost.length} of ${loop.acknowledged.length} acknowledged publications lost in the failover`)
      }
      const last = loop.acknowledged.at(-1)
      await waitFor(() => b.live.get(hit)?.some((p) => p.kind === 'json' && JSON.parse(p.payload) === last) === true, 'the last publication live on node B')
    })
  }
})
