import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
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
  })

  it('AUTHORIZATION_CACHE_MS=0 asks the store every time', async (t) => {
    const { srv, bob, counts } = await setup(t, { AUTHORIZATION_CACHE_MS: '0' })
    for (let i = 0; i < 5; i++) assert.equal(await publishAs(srv, bob, i), 201)
    assert.equal(counts.publish, 5)
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
})
