import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { TestContext } from 'node:test'
import { build, wsConnect, type TestApp } from './helper.js'

/*
 * The grant cache (AUTHORIZATION_CACHE_MS): a busy publisher is authorized once, not per
 * message, and no revocation waits for the cache — each kind of room change drops the
 * room's grants before the HTTP answer, and a refusal is never remembered.
 */

/** Counts the store-backed authorizations the real-time node asks for, by operation. */
function countAuthorizations (srv: TestApp): Record<string, number> {
  const counts: Record<string, number> = {}
  const original = srv.app.rooms.authorize.bind(srv.app.rooms)
  srv.app.rooms.authorize = async (principal, room, action) => {
    counts[action] = (counts[action] ?? 0) + 1
    return await original(principal, room, action)
  }
  return counts
}

/**
 * Store-backed authorizations that can be held: while `hold()` is on, every call waits until
 * `release()`, so a publish answered meanwhile was answered from the cache. `settled()`
 * resolves once every call made so far has finished.
 */
function gateAuthorizations (srv: TestApp): { counts: Record<string, number>, hold(): void, release(): void, settled(): Promise<void> } {
  const counts: Record<string, number> = {}
  const calls: Array<Promise<unknown>> = []
  let gate: Promise<void> | null = null
  let open = (): void => {}
  const original = srv.app.rooms.authorize.bind(srv.app.rooms)
  srv.app.rooms.authorize = async (principal, room, action) => {
    counts[action] = (counts[action] ?? 0) + 1
    const call = (async () => {
      if (gate !== null) await gate
      return await original(principal, room, action)
    })()
    calls.push(call.catch(() => {}))
    return await call
  }
  return {
    counts,
    hold () { gate = new Promise(resolve => { open = resolve }) },
    release () { gate = null; open() },
    async settled () {
      await Promise.all(calls)
      // The node's own continuation of the last call runs after it.
      await new Promise(resolve => setImmediate(resolve))
    }
  }
}

interface Setup { srv: TestApp, alice: string, bob: string, counts: Record<string, number> }

/** alice owns the private room `team`; bob is a member. */
async function setup (t: TestContext, env: Record<string, string> = {}): Promise<Setup> {
  const srv = await build(t, { env })
  const alice = await srv.userToken('alice')
  const bob = await srv.userToken('bob')
  assert.equal((await srv.request('POST', '/rooms', { token: alice, body: { id: 'team', visibility: 'private' } })).status, 201)
  assert.equal((await srv.request('PUT', '/rooms/team/members/bob', { token: alice, body: { role: 'member' } })).status, 201)
  return { srv, alice, bob, counts: countAuthorizations(srv) }
}

/** The grant cache's counters on GET /metrics: who answered each check, how renewals ended. */
async function grantMetrics (srv: TestApp): Promise<Record<string, number>> {
  const text = (await srv.request('GET', '/metrics')).text
  const out: Record<string, number> = {}
  for (const match of text.matchAll(/^switchboard_(?:room_authorizations|grant_renewals)_total\{(?:source|outcome)="(\w+)"\} (\d+)$/gm)) out[match[1]!] = Number(match[2])
  return out
}

async function publishAs (srv: TestApp, token: string, data: unknown): Promise<number> {
  return (await srv.request('POST', '/rooms/team/messages', { token, body: { data } })).status
}

describe('authorization cache', () => {
  it('a busy publisher is authorized once, over WebSocket and REST alike', async (t) => {
    const { srv, bob, counts } = await setup(t)
    const client = await wsConnect(t, srv, { token: bob })
    for (let i = 0; i < 20; i++) assert.equal((await client.command({ type: 'publish', room: 'team', data: i })).type, 'reply')
    for (let i = 0; i < 5; i++) assert.equal(await publishAs(srv, bob, i), 201)
    assert.equal(counts.publish, 1, JSON.stringify(counts))
    const answered = await grantMetrics(srv)
    assert.deepEqual([answered.store, answered.cache, answered.shared], [1, 24, 0])
  })

  it('asks of one grant while the store answers share its answer: twenty publishes at once, one store query', async (t) => {
    const { srv, bob } = await setup(t)
    const store = gateAuthorizations(srv)
    const node = srv.app.realtime
    const publish = node.publish.bind(node)
    let entered = 0
    node.publish = async (...args: Parameters<typeof publish>) => { entered++; return await publish(...args) }
    store.hold()
    const publishes = Array.from({ length: 20 }, async (_, i) => await publishAs(srv, bob, i))
    try {
      const deadline = Date.now() + 10_000
      while (entered < 20 && Date.now() < deadline) await sleep(10)
      assert.equal(entered, 20)
      // Past the per-user budget, each is at its store ask by now.
      for (let i = 0; i < 10; i++) await new Promise(resolve => setImmediate(resolve))
      assert.equal(store.counts.publish, 1, 'twenty waiting on one store query')
    } finally {
      store.release()
    }
    assert.deepEqual(await Promise.all(publishes), Array(20).fill(201))
    assert.equal(store.counts.publish, 1)
    const answered = await grantMetrics(srv)
    assert.deepEqual([answered.store, answered.shared, answered.cache], [1, 19, 0])
  })

  it('AUTHORIZATION_CACHE_MS=0 asks the store every time', async (t) => {
    const { srv, bob, counts } = await setup(t, { AUTHORIZATION_CACHE_MS: '0' })
    for (let i = 0; i < 5; i++) assert.equal(await publishAs(srv, bob, i), 201)
    assert.equal(counts.publish, 5)
    assert.deepEqual([(await grantMetrics(srv)).store, (await grantMetrics(srv)).cache], [5, 0])
  })

  it('a refusal is not remembered: access granted a moment later works at once', async (t) => {
    const { srv, alice } = await setup(t)
    const carol = await srv.userToken('carol')
    assert.equal(await publishAs(srv, carol, 'knock'), 404, 'not a member of a private room')
    assert.equal((await srv.request('PUT', '/rooms/team/members/carol', { token: alice, body: { role: 'member' } })).status, 201)
    assert.equal(await publishAs(srv, carol, 'in'), 201)
  })

  const revocations: Array<[string, (s: Setup) => Promise<number>, number]> = [
    ['member removed', async ({ srv, alice }) => (await srv.request('DELETE', '/rooms/team/members/bob', { token: alice })).status, 404],
    ['banned', async ({ srv, alice }) => (await srv.request('PUT', '/rooms/team/bans/bob', { token: alice, body: {} })).status, 404],
    ['publishing limited to moderators (room updated)', async ({ srv, alice }) => (await srv.request('PATCH', '/rooms/team', { token: alice, body: { publish: 'moderators' } })).status, 403],
    ['room deleted', async ({ srv, alice }) => (await srv.request('DELETE', '/rooms/team', { token: alice })).status, 404]
  ]
  for (const [change, apply, refusedWith] of revocations) {
    it(`${change}: the very next publish is refused although the grant was cached`, async (t) => {
      const s = await setup(t)
      assert.equal(await publishAs(s.srv, s.bob, 'cached'), 201)
      assert.equal(await publishAs(s.srv, s.bob, 'from the cache'), 201)
      assert.equal(s.counts.publish, 1, 'the second publish came from the cache')
      const status = await apply(s)
      assert.ok(status >= 200 && status < 300, `${change}: ${status}`)
      assert.equal(await publishAs(s.srv, s.bob, 'after'), refusedWith)
    })
  }

  it('moderator demoted to member in a moderators-only room: the next publish is refused although the grant was cached', async (t) => {
    const s = await setup(t)
    assert.equal((await s.srv.request('PATCH', '/rooms/team', { token: s.alice, body: { publish: 'moderators' } })).status, 200)
    assert.equal((await s.srv.request('PUT', '/rooms/team/members/bob', { token: s.alice, body: { role: 'moderator' } })).status, 200)
    assert.equal(await publishAs(s.srv, s.bob, 'as moderator'), 201)
    assert.equal(await publishAs(s.srv, s.bob, 'cached'), 201)
    // Without this the test would pass with no cache at all: the grant must be held first.
    assert.equal(s.counts.publish, 1, 'the second publish came from the cache')
    assert.equal((await s.srv.request('PUT', '/rooms/team/members/bob', { token: s.alice, body: { role: 'member' } })).status, 200)
    assert.equal(await publishAs(s.srv, s.bob, 'demoted'), 403)
    assert.equal(s.counts.publish, 2, 'the refusal came from the store: the demotion dropped the cached grant')
  })

  // Renewal ahead of expiry over real sockets and the real clock, with a 2 s lifetime: renewed
  // from 1 s on. No test sleeps to a boundary: each publishes until the store is asked (the
  // poll's own bound is generous), which leaves a second before the grant would expire. The
  // exact boundaries are tested on an injected clock in test/unit/grant-renewal.test.ts.
  const LIFETIME = { AUTHORIZATION_CACHE_MS: '2000' }

  /**
   * Publishes (each must succeed) until the store has been asked `asks` times in all: the
   * publish that finds the grant past half its life starts the renewal and is itself answered
   * from the cache. Returns how many publishes it made.
   */
  async function publishUntilAsked (srv: TestApp, token: string, store: { counts: Record<string, number> }, asks: number): Promise<number> {
    const deadline = Date.now() + 10_000
    let published = 0
    while ((store.counts.publish ?? 0) < asks) {
      assert.ok(Date.now() < deadline, `the store was not asked ${asks} times within 10 s`)
      assert.equal(await publishAs(srv, token, `until ask ${asks}`), 201)
      published++
      if ((store.counts.publish ?? 0) < asks) await sleep(25)
    }
    return published
  }

  it('a grant past half its life is renewed in the background: no publish waits for the store, and the renewed grant outlives the first', async (t) => {
    const { srv, bob } = await setup(t, LIFETIME)
    const store = gateAuthorizations(srv)
    assert.equal(await publishAs(srv, bob, 'asks the store'), 201)
    assert.equal(store.counts.publish, 1)
    store.hold()
    // Answered while the store is held: from the cache; the renewal waits behind the gate.
    let fromCache = await publishUntilAsked(srv, bob, store, 2)
    assert.equal(await publishAs(srv, bob, 'renewal already asked'), 201)
    fromCache++
    assert.equal(store.counts.publish, 2, 'one renewal, asked once')
    store.release()
    await store.settled()
    // The renewed grant was set after the first reached half its life, so it reaches half its
    // own life no earlier than the first grant's expiry: the publish that asks the second
    // renewal, answered while the store is held, was answered by the renewed grant.
    store.hold()
    fromCache += await publishUntilAsked(srv, bob, store, 3)
    store.release()
    await store.settled()
    const counted = await grantMetrics(srv)
    assert.deepEqual([counted.store, counted.cache, counted.renewed], [1, fromCache, 2])
  })

  it('a renewal that finds access gone drops the grant: a change nothing announces ends at the first renewal', async (t) => {
    const { srv, bob } = await setup(t, LIFETIME)
    const store = gateAuthorizations(srv)
    assert.equal(await publishAs(srv, bob, 'asks the store'), 201)
    // Straight in the store, past the room service: no room change is announced.
    assert.deepEqual(await srv.app.store.removeMember('team', 'bob'), { ok: true, removed: true })
    assert.equal(await publishAs(srv, bob, 'the grant still answers'), 201)
    // The last of these is answered from the cache; the renewal it starts is refused.
    await publishUntilAsked(srv, bob, store, 2)
    await store.settled()
    assert.equal(store.counts.publish, 2)
    assert.equal(await publishAs(srv, bob, 'after the renewal'), 404)
    assert.equal(store.counts.publish, 3, 'the refusal came from the store: the renewal dropped the grant')
    const counted = await grantMetrics(srv)
    assert.deepEqual([counted.refused, counted.renewed], [1, 0])
  })

  it('a renewal answered after the user was kicked is not kept: the kick is not undone by an answer from before it', async (t) => {
    const { srv, bob } = await setup(t, LIFETIME)
    const root = await srv.userToken('root', 'admin')
    const store = gateAuthorizations(srv)
    assert.equal(await publishAs(srv, bob, 'asks the store'), 201)
    store.hold()
    // The last of these starts the renewal, held at the gate.
    await publishUntilAsked(srv, bob, store, 2)
    assert.equal((await srv.request('DELETE', '/admin/users/bob/connections', { token: root })).status, 200)
    // The renewal, asked before the kick, answers after it: still a member, so a grant.
    store.release()
    await store.settled()
    assert.equal(await publishAs(srv, bob, 'after the kick'), 201)
    assert.equal(store.counts.publish, 3, 'asked the store: neither the old grant nor the renewal outlived the kick')
    const counted = await grantMetrics(srv)
    assert.deepEqual([counted.superseded, counted.renewed], [1, 0])
  })
})
