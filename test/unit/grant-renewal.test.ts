/**
 * The grant cache's renewal rules (AUTHORIZATION_CACHE_MS), on the node's injected clock: the
 * test moves time past half a grant's life or past its expiry instead of sleeping there. The
 * same rules over real sockets and the real clock: test/authorization-cache.test.ts.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import type { UserPrincipal } from '../../src/auth/principal.js'
import { jsonPayload } from '../../src/realtime/engine.js'
import type { Logger } from '../../src/realtime/logger.js'
import { createMemoryEngine } from '../../src/realtime/memory-engine.js'
import { noopMetrics, type RealtimeMetrics } from '../../src/realtime/metrics.js'
import { createRealtimeNode, type RealtimeNode } from '../../src/realtime/node.js'
import { RealtimeError } from '../../src/realtime/errors.js'
import type { Authorizer, RoomGrant } from '../../src/realtime/authorizer.js'
import { prepareWsFrame } from '../../src/realtime/ws-frames.js'

const LIFETIME_MS = 4000
const OPTIONS: RoomGrant = { stream: { historySize: 100, historyTtlSeconds: 300 }, presenceEvents: true }
const bob: UserPrincipal = { kind: 'user', userId: 'bob', role: 'user', tokenId: 't', expiresAt: Number.MAX_SAFE_INTEGER, sessionId: 's' }

interface Harness {
  node: RealtimeNode
  /** Moves the node's clock forward. */
  advance(ms: number): void
  /** Store asks made so far (foreground and renewals). */
  asks(): number
  /** While on, every store ask waits for release(): a publish answered meanwhile came from the cache. */
  hold(): void
  release(): void
  /** Resolves once every store ask made so far has finished and the node has used its answer. */
  settled(): Promise<void>
  /** Whether bob is still a member: the store's answer at the time it is asked. */
  member: { value: boolean }
  /** Who answered each check (store, cache, shared) and how renewals ended, as the metrics count them. */
  counted: Record<string, number>
  publish(data: string): Promise<'ok' | string>
}

function harness (t: TestContext): Harness {
  let clock = 1_000_000
  const counted: Record<string, number> = {}
  const bump = (name: string): void => { counted[name] = (counted[name] ?? 0) + 1 }
  const metrics: RealtimeMetrics = { ...noopMetrics, roomAuthorization: bump, grantRenewal: bump }
  const member = { value: true }
  const calls: Array<Promise<unknown>> = []
  let gate: Promise<void> | null = null
  let open = (): void => {}
  let asks = 0
  const authorize: Authorizer = async () => {
    asks++
    const call = (async () => {
      if (gate !== null) await gate
      if (!member.value) throw new RealtimeError('not_found', 'no such room')
      return OPTIONS
    })()
    calls.push(call.catch(() => {}))
    return await call
  }
  const silent: Logger = { debug () {}, info () {}, warn () {}, error () {}, child: () => silent }
  const engine = createMemoryEngine({ now: () => clock })
  const node = createRealtimeNode({
    engine,
    authorize,
    verifyToken: () => { throw new Error('no refresh here') },
    prepareFrame: prepareWsFrame,
    limits: {
      maxMessageBytes: 65_536,
      messagesPerSecond: 100_000,
      messagesBurst: 100_000,
      maxSubscriptions: 100,
      maxBufferedBytes: 1_048_576,
      heartbeatMs: 25_000,
      idleTimeoutMs: 60_000,
      tokenClockToleranceMs: 0,
      maxConnectionsPerUser: 1000,
      maxConnectionsPerIp: 10_000,
      maxRecoveryPublications: 1000,
      historyPageBytes: 1_048_576,
      authorizationCacheMs: LIFETIME_MS
    },
    metrics,
    log: silent,
    now: () => clock
  })
  t.after(async () => {
    node.close()
    await engine.close()
  })
  return {
    node,
    advance (ms) { clock += ms },
    asks: () => asks,
    hold () { gate = new Promise(resolve => { open = resolve }) },
    release () { gate = null; open() },
    async settled () {
      await Promise.all(calls)
      // The node's own continuation of the last ask runs after it.
      await new Promise(resolve => setImmediate(resolve))
    },
    member,
    counted,
    async publish (data) {
      try {
        await node.publish(bob, 'team', jsonPayload(data))
        return 'ok'
      } catch (err) {
        if (err instanceof RealtimeError) return err.protocolCode
        throw err
      }
    }
  }
}

describe('grant renewal (injected clock)', () => {
  it('a grant past half its life is renewed in the background: no publish waits for the store, and the renewed grant outlives the first', async (t) => {
    const h = harness(t)
    assert.equal(await h.publish('asks the store'), 'ok')
    assert.equal(h.asks(), 1)
    h.advance(LIFETIME_MS / 2 + 1)
    h.hold()
    // Answered while the store is held: from the cache; the renewal waits behind the gate.
    assert.equal(await h.publish('past half its life'), 'ok')
    assert.equal(await h.publish('renewal already asked'), 'ok')
    assert.equal(h.asks(), 2, 'one renewal, asked once')
    h.release()
    await h.settled()
    // Past the first grant's expiry (granted at 0, it ended at 4000; now 4002): only the renewed grant can
    // answer while the store is held.
    h.advance(LIFETIME_MS / 2 + 1)
    h.hold()
    assert.equal(await h.publish('after the first grant expired'), 'ok')
    h.release()
    await h.settled()
    // The last publish found the renewed grant past half its life too: a second renewal.
    assert.deepEqual([h.counted.store, h.counted.cache, h.counted.renewed, h.asks()], [1, 3, 2, 3])
  })

  it('before half its life a grant is not renewed, and past its expiry the store is asked in the foreground', async (t) => {
    const h = harness(t)
    assert.equal(await h.publish('asks the store'), 'ok')
    h.advance(LIFETIME_MS / 2 - 1)
    assert.equal(await h.publish('young grant'), 'ok')
    assert.equal(h.asks(), 1, 'no renewal before half the life')
    h.advance(LIFETIME_MS / 2 + 1)
    assert.equal(await h.publish('expired grant'), 'ok')
    assert.equal(h.asks(), 2)
    assert.deepEqual([h.counted.store, h.counted.cache, h.counted.renewed], [2, 1, undefined])
  })

  it('a renewal that finds access gone drops the grant: a change nothing announces ends at the first renewal', async (t) => {
    const h = harness(t)
    assert.equal(await h.publish('asks the store'), 'ok')
    // In the store, past any room change the node would hear of.
    h.member.value = false
    assert.equal(await h.publish('the grant still answers'), 'ok')
    h.advance(LIFETIME_MS / 2 + 1)
    assert.equal(await h.publish('answered from the cache; the renewal is refused'), 'ok')
    await h.settled()
    assert.equal(h.asks(), 2)
    assert.equal(await h.publish('after the renewal'), 'not_found')
    assert.equal(h.asks(), 3, 'the refusal came from the store: the renewal dropped the grant')
    assert.deepEqual([h.counted.refused, h.counted.renewed], [1, undefined])
  })

  it('a renewal answered after the user was kicked is not kept: the kick is not undone by an answer from before it', async (t) => {
    const h = harness(t)
    assert.equal(await h.publish('asks the store'), 'ok')
    h.advance(LIFETIME_MS / 2 + 1)
    h.hold()
    assert.equal(await h.publish('starts the renewal'), 'ok')
    await h.node.kickUser('bob')
    // The renewal, asked before the kick, answers after it: still a member, so a grant.
    h.release()
    await h.settled()
    assert.equal(await h.publish('after the kick'), 'ok')
    assert.equal(h.asks(), 3, 'asked the store: neither the old grant nor the renewal outlived the kick')
    assert.deepEqual([h.counted.superseded, h.counted.renewed], [1, undefined])
  })
})
