import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { build, skipUnlessStore, STORE_KINDS } from './helper.js'

for (const kind of STORE_KINDS) {
  describe(`rooms routes (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    it('creates a room with defaults; the creator is its owner; ids are unique', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      const res = await request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
      assert.equal(res.status, 201)
      assert.deepEqual({ ...res.body, createdAt: 0, updatedAt: 0 }, {
        id: 'lobby', name: null, visibility: 'public', publish: 'members', historySize: 100, historyTtlSeconds: 3600,
        // No archive by default where none is kept (in-memory history); embedded defaults turn it on.
        maxMembers: null, presenceEvents: true, archive: false, archiveDays: 30, createdBy: 'alice', createdAt: 0, updatedAt: 0
      })
      const members = await request('GET', '/rooms/lobby/members', { token: alice })
      assert.deepEqual(members.body.items.map((m: { userId: string, role: string }) => [m.userId, m.role]), [['alice', 'owner']])

      const dup = await request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
      assert.equal(dup.status, 409)
      assert.equal(dup.body.code, 'SB_ERR_ROOM_EXISTS')
    })

    it('validates room bodies strictly', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      for (const body of [
        { id: 'Lobby' },
        { id: '-lobby' },
        { id: 'a'.repeat(65) },
        { id: 'lobby', visibility: 'secret' },
        { id: 'lobby', publish: 'everyone' },
        { id: 'lobby', historySize: -1 },
        { id: 'lobby', historySize: 1e9 },
        { id: 'lobby', historyTtlSeconds: 0 },
        { id: 'lobby', maxMembers: 0 },
        { id: 'lobby', presenceEvents: 'false' },
        { id: 'lobby', presenceEvents: 0 },
        { id: 'lobby', presenceEvents: null },
        { id: 'lobby', owner: 'mallory' },
        { name: 'no id' }
      ]) {
        const res = await request('POST', '/rooms', { token: alice, body })
        assert.equal(res.status, 400, JSON.stringify(body))
        assert.equal(res.body.code, 'SB_ERR_VALIDATION')
      }
      const notJson = await request('POST', '/rooms', { token: alice, body: '{"id": ', headers: { 'content-type': 'application/json' } })
      assert.equal(notJson.status, 400)
      const proto = await request('POST', '/rooms', { token: alice, body: '{"id":"x1","__proto__":{"admin":true}}' })
      assert.equal(proto.status, 400)
      assert.equal(({} as Record<string, unknown>).admin, undefined)
      assert.equal((await request('POST', '/rooms', { body: { id: 'lobby' } })).status, 401)
    })

    it('accepts namespaced ids and every setting', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      const body = { id: 'chat:general', name: 'General', visibility: 'private', publish: 'moderators', historySize: 0, historyTtlSeconds: 60, maxMembers: 10, presenceEvents: false }
      const res = await request('POST', '/rooms', { token: alice, body })
      assert.equal(res.status, 201)
      const got = await request('GET', '/rooms/chat:general', { token: alice })
      assert.equal(got.status, 200)
      for (const [key, value] of Object.entries(body)) assert.deepEqual(got.body[key], value, key)
    })

    it('updates settings with PATCH and refuses an empty or unknown patch', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      await request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
      const res = await request('PATCH', '/rooms/lobby', { token: alice, body: { name: 'Lobby', maxMembers: 5, visibility: 'private' } })
      assert.equal(res.status, 200)
      assert.equal(res.body.name, 'Lobby')
      assert.equal(res.body.maxMembers, 5)
      assert.equal(res.body.visibility, 'private')
      assert.ok(res.body.updatedAt >= res.body.createdAt)
      assert.equal((await request('PATCH', '/rooms/lobby', { token: alice, body: {} })).status, 400)
      assert.equal((await request('PATCH', '/rooms/lobby', { token: alice, body: { id: 'other' } })).status, 400)
      assert.equal((await request('PATCH', '/rooms/nope', { token: alice, body: { name: 'x' } })).status, 404)
      const cleared = await request('PATCH', '/rooms/lobby', { token: alice, body: { maxMembers: null, name: null } })
      assert.equal(cleared.body.maxMembers, null)
      assert.equal(cleared.body.name, null)
    })

    it('turns presenceEvents off and on with PATCH, and refuses a non-boolean with a 400 that names it', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      await request('POST', '/rooms', { token: alice, body: { id: 'stage' } })
      const off = await request('PATCH', '/rooms/stage', { token: alice, body: { presenceEvents: false } })
      assert.equal(off.status, 200)
      assert.equal(off.body.presenceEvents, false)
      assert.equal((await request('GET', '/rooms/stage', { token: alice })).body.presenceEvents, false)
      // Another setting leaves it as it is.
      assert.equal((await request('PATCH', '/rooms/stage', { token: alice, body: { name: 'Stage' } })).body.presenceEvents, false)
      for (const presenceEvents of ['true', 1, null, {}]) {
        const bad = await request('PATCH', '/rooms/stage', { token: alice, body: { presenceEvents } })
        assert.equal(bad.status, 400, JSON.stringify(presenceEvents))
        assert.equal(bad.body.code, 'SB_ERR_VALIDATION')
        assert.match(bad.body.message, /presenceEvents/)
      }
      assert.equal((await request('GET', '/rooms/stage', { token: alice })).body.presenceEvents, false, 'a refused patch changes nothing')
      const on = await request('PATCH', '/rooms/stage', { token: alice, body: { presenceEvents: true } })
      assert.equal(on.body.presenceEvents, true)
      // A member who may not change settings may not change this one either.
      const bob = await userToken('bob')
      assert.equal((await request('PUT', '/rooms/stage/members/bob', { token: alice, body: { role: 'member' } })).status, 201)
      assert.equal((await request('PATCH', '/rooms/stage', { token: bob, body: { presenceEvents: false } })).status, 403)
      assert.equal((await request('GET', '/rooms/stage', { token: alice })).body.presenceEvents, true)
    })

    it('deletes a room and everything in it', async (t) => {
      const { request, userToken, createUser } = await build(t, { store: kind })
      const alice = await userToken('alice')
      await createUser('bob')
      await request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
      await request('PUT', '/rooms/lobby/members/bob', { token: alice, body: { role: 'member' } })
      assert.equal((await request('DELETE', '/rooms/lobby', { token: alice })).status, 204)
      assert.equal((await request('GET', '/rooms/lobby', { token: alice })).status, 404)
      assert.equal((await request('DELETE', '/rooms/lobby', { token: alice })).status, 404)
      // The id is free again and the new room starts empty.
      await request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
      const members = await request('GET', '/rooms/lobby/members', { token: alice })
      assert.deepEqual(members.body.items.map((m: { userId: string }) => m.userId), ['alice'])
    })

    it('lists visible rooms with keyset pagination', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      const bob = await userToken('bob')
      for (const id of ['r1', 'r2', 'r3', 'r4', 'r5']) await request('POST', '/rooms', { token: alice, body: { id } })
      await request('POST', '/rooms', { token: alice, body: { id: 'secret', visibility: 'private' } })
      const seen: string[] = []
      let after: string | null = null
      do {
        const page: { body: { items: Array<{ id: string }>, nextCursor: string | null } } =
          await request('GET', `/rooms?limit=2${after === null ? '' : `&after=${after}`}`, { token: bob })
        seen.push(...page.body.items.map(r => r.id))
        after = page.body.nextCursor
      } while (after !== null)
      assert.deepEqual(seen, ['r1', 'r2', 'r3', 'r4', 'r5'])
      const mine = await request('GET', '/rooms?limit=100', { token: alice })
      assert.deepEqual(mine.body.items.map((r: { id: string }) => r.id), ['r1', 'r2', 'r3', 'r4', 'r5', 'secret'])
      assert.equal((await request('GET', '/rooms?limit=0', { token: alice })).status, 400)
      assert.equal((await request('GET', '/rooms?limit=101', { token: alice })).status, 400)
    })

    it('manages members: add, change role (200 vs 201), remove, unknown user, last owner', async (t) => {
      const { request, userToken, createUser } = await build(t, { store: kind })
      const alice = await userToken('alice')
      await createUser('bob')
      await request('POST', '/rooms', { token: alice, body: { id: 'lobby', maxMembers: 2 } })
      const added = await request('PUT', '/rooms/lobby/members/bob', { token: alice, body: { role: 'member' } })
      assert.equal(added.status, 201)
      assert.deepEqual({ ...added.body, createdAt: 0 }, { roomId: 'lobby', userId: 'bob', role: 'member', createdAt: 0 })
      const promoted = await request('PUT', '/rooms/lobby/members/bob', { token: alice, body: { role: 'moderator' } })
      assert.equal(promoted.status, 200)
      assert.equal(promoted.body.role, 'moderator')

      await createUser('carol')
      const full = await request('PUT', '/rooms/lobby/members/carol', { token: alice, body: { role: 'member' } })
      assert.equal(full.status, 409)
      assert.equal(full.body.code, 'SB_ERR_ROOM_FULL')

      const ghost = await request('PUT', '/rooms/lobby/members/ghost', { token: alice, body: { role: 'member' } })
      assert.equal(ghost.status, 404)
      assert.equal(ghost.body.code, 'SB_ERR_USER_NOT_FOUND')
      assert.equal((await request('PUT', '/rooms/lobby/members/bob', { token: alice, body: { role: 'king' } })).status, 400)
      assert.equal((await request('PUT', '/rooms/nope/members/bob', { token: alice, body: { role: 'member' } })).status, 404)

      const lastOwner = await request('DELETE', '/rooms/lobby/members/alice', { token: alice })
      assert.equal(lastOwner.status, 409)
      assert.equal(lastOwner.body.code, 'SB_ERR_LAST_OWNER')
      const demote = await request('PUT', '/rooms/lobby/members/alice', { token: alice, body: { role: 'member' } })
      assert.equal(demote.status, 409)

      assert.equal((await request('DELETE', '/rooms/lobby/members/bob', { token: alice })).status, 204)
      const gone = await request('DELETE', '/rooms/lobby/members/bob', { token: alice })
      assert.equal(gone.status, 404)
      assert.equal(gone.body.code, 'SB_ERR_MEMBER_NOT_FOUND')
    })

    it('bans: ban removes membership, a banned user cannot be added, unban, listing', async (t) => {
      const { request, userToken } = await build(t, { store: kind })
      const alice = await userToken('alice')
      const bob = await userToken('bob')
      await request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })
      assert.equal((await request('PUT', '/rooms/lobby/members/bob', { token: bob, body: { role: 'member' } })).status, 201)
      const ban = await request('PUT', '/rooms/lobby/bans/bob', { token: alice, body: { reason: 'spam' } })
      assert.equal(ban.status, 201)
      assert.equal(ban.body.reason, 'spam')
      assert.equal(ban.body.bannedBy, 'alice')
      assert.equal((await request('PUT', '/rooms/lobby/bans/bob', { token: alice })).status, 200)
      const members = await request('GET', '/rooms/lobby/members', { token: alice })
      assert.deepEqual(members.body.items.map((m: { userId: string }) => m.userId), ['alice'])
      const readd = await request('PUT', '/rooms/lobby/members/bob', { token: alice, body: { role: 'member' } })
      assert.equal(readd.status, 409)
      assert.equal(readd.body.code, 'SB_ERR_USER_BANNED')
      const banned = await request('GET', '/rooms/lobby', { token: bob })
      assert.equal(banned.status, 403)
      assert.equal(banned.body.code, 'SB_ERR_BANNED')
      const list = await request('GET', '/rooms/lobby/bans', { token: alice })
      assert.deepEqual(list.body.items.map((b: { userId: string }) => b.userId), ['bob'])
      assert.equal((await request('PUT', '/rooms/lobby/bans/ghost', { token: alice })).status, 404)
      assert.equal((await request('PUT', '/rooms/lobby/bans/bob', { token: alice, body: { reason: 'x'.repeat(501) } })).status, 400)

      assert.equal((await request('DELETE', '/rooms/lobby/bans/bob', { token: alice })).status, 204)
      const again = await request('DELETE', '/rooms/lobby/bans/bob', { token: alice })
      assert.equal(again.status, 404)
      assert.equal(again.body.code, 'SB_ERR_BAN_NOT_FOUND')
      assert.equal((await request('GET', '/rooms/lobby', { token: bob })).status, 200)
    })
  })
}
