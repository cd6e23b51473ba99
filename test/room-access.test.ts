import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import { build, skipUnlessStore, STORE_KINDS, type TestApp, type TestResponse } from './helper.js'
import type { ApiKeyPrincipal, UserPrincipal } from '../src/auth/principal.js'
import type { PublishPolicy, RoomRole, RoomVisibility, UserRole } from '../src/store/types.js'

/*
 * Every cell of the room authorization table (docs/authorization.md), through the HTTP API
 * where a route exists and through app.rooms.authorize where one does not yet (publish,
 * subscribe, history, presence). The expected table is written out here on purpose instead of
 * being imported from src/auth/room-access.ts: a test that reads its answers from the code under
 * test cannot fail when that code is wrong.
 */

type Standing = 'admin' | 'owner' | 'moderator' | 'member' | 'nonMember' | 'banned'
const STANDINGS: Standing[] = ['admin', 'owner', 'moderator', 'member', 'nonMember', 'banned']
const VISIBILITIES: RoomVisibility[] = ['public', 'private']

/**
 * What a caller gets, named as in the doc:
 * ok         the operation's success status (200, 201 or 204)
 * hidden     404 SB_ERR_ROOM_NOT_FOUND: the room is not shown to this caller at all
 * denied     403 SB_ERR_FORBIDDEN
 * banned     403 SB_ERR_BANNED
 * notMember  404 SB_ERR_MEMBER_NOT_FOUND
 * listed / unlisted  whether GET /rooms includes the room
 */
type Outcome = 'ok' | 'hidden' | 'denied' | 'banned' | 'notMember' | 'listed' | 'unlisted'
/** One outcome for both visibilities, or [public, private]; null where the cell does not apply. */
type Cell = Outcome | [Outcome, Outcome] | null
type Row = Record<Standing, Cell>

// Who plays each standing in every fixture room. `nonMember` and `banned` are ordinary users
// with no membership, the second one banned; `admin` is a server admin with no membership.
const ACTOR: Record<Standing, string> = {
  admin: 'admin1',
  owner: 'owner1',
  moderator: 'mod1',
  member: 'member1',
  nonMember: 'outsider1',
  banned: 'banned1'
}
// Targets are never the actor, so "a moderator removes a moderator" means someone else.
const CO_OWNER = 'owner2'
const OTHER_MOD = 'mod2'
const OTHER_MEMBER = 'member2'
const NEWCOMER = 'newbie'
const OTHER_BANNED = 'banned2'

const USERS: Array<[string, UserRole]> = [
  ['admin1', 'admin'], ['owner1', 'user'], [CO_OWNER, 'user'], ['mod1', 'user'], [OTHER_MOD, 'user'],
  ['member1', 'user'], [OTHER_MEMBER, 'user'], ['outsider1', 'user'], [NEWCOMER, 'user'],
  ['banned1', 'user'], [OTHER_BANNED, 'user']
]
/** Members of every fixture room besides its creator, owner1. */
const FIXTURE_MEMBERS: Array<[string, RoomRole]> = [
  [CO_OWNER, 'owner'], ['mod1', 'moderator'], [OTHER_MOD, 'moderator'], ['member1', 'member'], [OTHER_MEMBER, 'member']
]
const FIXTURE_BANS = ['banned1', OTHER_BANNED]

interface Env {
  t: TestApp
  tokens: Record<string, string>
  /** A fresh fixture room (see FIXTURE_MEMBERS), for cases that change state. */
  room: (visibility: RoomVisibility, options?: { id?: string, publish?: PublishPolicy, maxMembers?: number | null, members?: Array<[string, RoomRole]>, bans?: string[] }) => Promise<string>
  /** Shared fixture rooms, never changed, for read-only cases. */
  shared: (visibility: RoomVisibility, publish: PublishPolicy) => string
}

interface Op {
  name: string
  /** Read-only operations run against the shared rooms; the others each get a fresh room. */
  mutates: boolean
  publish?: PublishPolicy
  act: (env: Env, actor: string, roomId: string) => Promise<Outcome | string>
  expect: Row
}

const userPrincipal = (userId: string, role: UserRole): UserPrincipal => ({ kind: 'user', userId, role, tokenId: 't', expiresAt: 0, sessionId: 's' })
const keyPrincipal = (scopes: string[]): ApiKeyPrincipal => ({ kind: 'apiKey', keyId: 'k', name: 'k', scopes })
const roleOf = (userId: string): UserRole => USERS.find(([id]) => id === userId)?.[1] ?? 'user'

/** Maps a response to an Outcome, or to "<status> <code>" when it is none of them, so a failure says what came back. */
function outcomeOf (res: TestResponse, success: number): Outcome | string {
  if (res.status === success) return 'ok'
  if (res.status >= 400) {
    // Every error carries the documented shape, whatever the cell.
    assert.equal(res.body?.statusCode, res.status, `error body: ${res.text}`)
    assert.equal(typeof res.body?.error, 'string', `error body: ${res.text}`)
    assert.equal(typeof res.body?.message, 'string', `error body: ${res.text}`)
  }
  const code: unknown = res.body?.code
  if (res.status === 404 && code === 'SB_ERR_ROOM_NOT_FOUND') return 'hidden'
  if (res.status === 404 && code === 'SB_ERR_MEMBER_NOT_FOUND') return 'notMember'
  if (res.status === 403 && code === 'SB_ERR_FORBIDDEN') return 'denied'
  if (res.status === 403 && code === 'SB_ERR_BANNED') return 'banned'
  return `${res.status} ${String(code)}: ${String(res.body?.message)}`
}

/** Same mapping for a service call, which resolves or rejects with a typed HTTP error. */
async function serviceOutcome (call: Promise<unknown>): Promise<Outcome | string> {
  try {
    await call
    return 'ok'
  } catch (err) {
    const { statusCode, code } = err as { statusCode?: number, code?: string }
    if (statusCode === 404 && code === 'SB_ERR_ROOM_NOT_FOUND') return 'hidden'
    if (statusCode === 403 && code === 'SB_ERR_FORBIDDEN') return 'denied'
    if (statusCode === 403 && code === 'SB_ERR_BANNED') return 'banned'
    return `${String(statusCode)} ${String(code)}`
  }
}

async function listAll (env: Env, token: string): Promise<string[]> {
  const ids: string[] = []
  let after: string | null = null
  do {
    const res = await env.t.request('GET', `/rooms?limit=100${after === null ? '' : `&after=${encodeURIComponent(after)}`}`, { token })
    assert.equal(res.status, 200, res.text)
    ids.push(...(res.body.items as Array<{ id: string }>).map(r => r.id))
    after = res.body.nextCursor as string | null
  } while (after !== null)
  return ids
}

const rest = (method: string, path: (roomId: string, actor: string) => string, success: number, body?: unknown) =>
  async (env: Env, actor: string, roomId: string) =>
    outcomeOf(await env.t.request(method, path(roomId, actor), { token: env.tokens[actor]!, ...(body === undefined ? {} : { body }) }), success)

const authorize = (action: 'subscribe' | 'history' | 'presence' | 'publish') =>
  async (env: Env, actor: string, roomId: string) =>
    await serviceOutcome(env.t.app.rooms.authorize(userPrincipal(actor, roleOf(actor)), roomId, action))

// The expected table. Rows read like docs/authorization.md; [public, private] where they differ.
const SEE: Row = { admin: 'ok', owner: 'ok', moderator: 'ok', member: 'ok', nonMember: ['ok', 'hidden'], banned: ['banned', 'hidden'] }
const OWNERS: Row = { admin: 'ok', owner: 'ok', moderator: 'denied', member: 'denied', nonMember: ['denied', 'hidden'], banned: ['banned', 'hidden'] }
const MODERATORS: Row = { ...OWNERS, moderator: 'ok' }

const OPS: Op[] = [
  { name: 'see the room (GET /rooms/:id)', mutates: false, act: rest('GET', id => `/rooms/${id}`, 200), expect: SEE },
  {
    name: 'find it in GET /rooms',
    mutates: false,
    act: async (env, actor, roomId) => (await listAll(env, env.tokens[actor]!)).includes(roomId) ? 'listed' : 'unlisted',
    expect: { admin: 'listed', owner: 'listed', moderator: 'listed', member: 'listed', nonMember: ['listed', 'unlisted'], banned: 'unlisted' }
  },
  { name: 'list members', mutates: false, act: rest('GET', id => `/rooms/${id}/members`, 200), expect: SEE },
  { name: 'list bans', mutates: false, act: rest('GET', id => `/rooms/${id}/bans`, 200), expect: { ...MODERATORS, member: 'denied' } },
  { name: 'update settings (PATCH)', mutates: true, act: rest('PATCH', id => `/rooms/${id}`, 200, { name: 'Renamed' }), expect: OWNERS },
  { name: 'delete the room', mutates: true, act: rest('DELETE', id => `/rooms/${id}`, 204), expect: OWNERS },
  { name: 'add a member', mutates: true, act: rest('PUT', id => `/rooms/${id}/members/${NEWCOMER}`, 201, { role: 'member' }), expect: MODERATORS },
  { name: 'add a moderator', mutates: true, act: rest('PUT', id => `/rooms/${id}/members/${NEWCOMER}`, 201, { role: 'moderator' }), expect: OWNERS },
  { name: 'promote a member to owner', mutates: true, act: rest('PUT', id => `/rooms/${id}/members/${OTHER_MEMBER}`, 200, { role: 'owner' }), expect: OWNERS },
  { name: 'remove a member', mutates: true, act: rest('DELETE', id => `/rooms/${id}/members/${OTHER_MEMBER}`, 204), expect: MODERATORS },
  { name: 'remove a moderator', mutates: true, act: rest('DELETE', id => `/rooms/${id}/members/${OTHER_MOD}`, 204), expect: OWNERS },
  { name: 'remove an owner (not the last)', mutates: true, act: rest('DELETE', id => `/rooms/${id}/members/${CO_OWNER}`, 204), expect: OWNERS },
  { name: 'ban a member', mutates: true, act: rest('PUT', id => `/rooms/${id}/bans/${OTHER_MEMBER}`, 201, { reason: 'spam' }), expect: MODERATORS },
  { name: 'ban a moderator', mutates: true, act: rest('PUT', id => `/rooms/${id}/bans/${OTHER_MOD}`, 201, {}), expect: OWNERS },
  { name: 'ban an owner (not the last)', mutates: true, act: rest('PUT', id => `/rooms/${id}/bans/${CO_OWNER}`, 201, {}), expect: OWNERS },
  { name: 'ban a non-member', mutates: true, act: rest('PUT', id => `/rooms/${id}/bans/${NEWCOMER}`, 201), expect: MODERATORS },
  { name: 'lift a ban', mutates: true, act: rest('DELETE', id => `/rooms/${id}/bans/${OTHER_BANNED}`, 204), expect: MODERATORS },
  {
    name: 'join (add oneself as member)',
    mutates: true,
    act: rest('PUT', (id, actor) => `/rooms/${id}/members/${actor}`, 201, { role: 'member' }),
    // Joining is for people outside the room; members already have a role.
    expect: { admin: 'ok', owner: null, moderator: null, member: null, nonMember: ['ok', 'hidden'], banned: ['banned', 'hidden'] }
  },
  {
    name: 'leave (remove oneself)',
    mutates: true,
    act: rest('DELETE', (id, actor) => `/rooms/${id}/members/${actor}`, 204),
    // The fixture has a second owner, so the owner may leave; the last owner is an invariant below.
    expect: { admin: 'notMember', owner: 'ok', moderator: 'ok', member: 'ok', nonMember: ['notMember', 'hidden'], banned: ['banned', 'hidden'] }
  },
  {
    name: 'step down to member (or repeat it: a no-op)',
    mutates: true,
    act: rest('PUT', (id, actor) => `/rooms/${id}/members/${actor}`, 200, { role: 'member' }),
    // For people already in the room; outsiders joining is the row above.
    expect: { admin: null, owner: 'ok', moderator: 'ok', member: 'ok', nonMember: null, banned: ['banned', 'hidden'] }
  },
  {
    name: 'promote oneself to moderator',
    mutates: true,
    act: rest('PUT', (id, actor) => `/rooms/${id}/members/${actor}`, 200, { role: 'moderator' }),
    expect: { admin: null, owner: 'ok', moderator: 'ok', member: 'denied', nonMember: ['denied', 'hidden'], banned: ['banned', 'hidden'] }
  },
  { name: 'subscribe', mutates: false, act: authorize('subscribe'), expect: SEE },
  { name: 'read history', mutates: false, act: authorize('history'), expect: SEE },
  { name: 'see presence', mutates: false, act: authorize('presence'), expect: SEE },
  {
    name: 'publish (policy: members)',
    mutates: false,
    publish: 'members',
    act: authorize('publish'),
    expect: { admin: 'ok', owner: 'ok', moderator: 'ok', member: 'ok', nonMember: ['denied', 'hidden'], banned: ['banned', 'hidden'] }
  },
  {
    name: 'publish (policy: moderators)',
    mutates: false,
    publish: 'moderators',
    act: authorize('publish'),
    expect: { admin: 'ok', owner: 'ok', moderator: 'ok', member: 'denied', nonMember: ['denied', 'hidden'], banned: ['banned', 'hidden'] }
  }
]

function expected (cell: Cell, visibility: RoomVisibility): Outcome | null {
  if (cell === null || typeof cell === 'string') return cell
  return visibility === 'public' ? cell[0] : cell[1]
}

/**
 * build() hangs its teardown on a TestContext's after(), but suite-level before() hooks get a
 * SuiteContext without one; this stand-in collects the teardown and runs it, newest first, in
 * the suite's after().
 */
function suiteLifetime (): { context: TestContext, close: () => Promise<void> } {
  const cleanups: Array<() => unknown> = []
  const context = { after: (fn: () => unknown) => { cleanups.push(fn) } } as unknown as TestContext
  return { context, close: async () => { for (const fn of cleanups.reverse()) await fn() } }
}

for (const kind of STORE_KINDS) {
  describe(`room access (${kind})`, { skip: await skipUnlessStore(kind) }, () => {
    const lifetime = suiteLifetime()
    let env: Env
    let counter = 0

    before(async () => {
      const t = await build(lifetime.context, { store: kind })
      const tokens: Record<string, string> = {}
      for (const [id, role] of USERS) tokens[id] = await t.userToken(id, role)

      const room: Env['room'] = async (visibility, options = {}) => {
        const id = options.id ?? `case.${++counter}`
        const created = await t.app.store.createRoom({
          id, name: null, visibility, publish: options.publish ?? 'members',
          historySize: 100, historyTtlSeconds: 3600, maxMembers: options.maxMembers ?? null, presenceEvents: true, archive: false, archiveDays: 30, createdBy: ACTOR.owner
        })
        assert.ok(created, `fixture room ${id}`)
        for (const [userId, role] of options.members ?? FIXTURE_MEMBERS) {
          const result = await t.app.store.setMember(id, userId, role)
          assert.ok(result.ok, `fixture member ${userId}`)
        }
        for (const userId of options.bans ?? FIXTURE_BANS) {
          const result = await t.app.store.banUser({ roomId: id, userId, bannedBy: ACTOR.owner, reason: null })
          assert.ok(result.ok, `fixture ban ${userId}`)
        }
        return id
      }

      const sharedIds = new Map<string, string>()
      for (const visibility of VISIBILITIES) {
        for (const publish of ['members', 'moderators'] as const) {
          const id = `shared.${visibility}${publish === 'moderators' ? '.mods' : ''}`
          await room(visibility, { publish, id })
          sharedIds.set(`${visibility}/${publish}`, id)
        }
      }
      env = { t, tokens, room, shared: (visibility, publish) => sharedIds.get(`${visibility}/${publish}`)! }
    })
    after(() => lifetime.close())

    describe('table', () => {
      for (const op of OPS) {
        for (const standing of STANDINGS) {
          for (const visibility of VISIBILITIES) {
            const want = expected(op.expect[standing], visibility)
            if (want === null) continue
            it(`${standing}: ${op.name} in a ${visibility} room → ${want}`, async () => {
              const roomId = op.mutates ? await env.room(visibility) : env.shared(visibility, op.publish ?? 'members')
              assert.equal(await op.act(env, ACTOR[standing], roomId), want)
            })
          }
        }
      }
    })

    describe('API keys', () => {
      const keys: Record<string, string> = {}
      before(async () => {
        // Exact room, prefix pattern, and a key that touches every room (to show it still manages none).
        for (const [name, scopes] of [['exact', ['subscribe:shared.public']], ['prefix', ['publish:shared.private*']], ['all', ['subscribe:*']]] as const) {
          const res = await env.t.request('POST', '/api-keys', { token: env.tokens[ACTOR.admin]!, body: { name, scopes } })
          assert.equal(res.status, 201, res.text)
          keys[name] = res.body.key as string
        }
      })
      const viaKey = (key: string, method: string, path: string, success: number, body?: unknown) =>
        async () => outcomeOf(await env.t.request(method, path, { apiKey: keys[key]!, ...(body === undefined ? {} : { body }) }), success)

      const readCases: Array<[string, () => Promise<string>, Outcome]> = [
        ['scope names the room: see a public room', viaKey('exact', 'GET', '/rooms/shared.public', 200), 'ok'],
        ['scope names the room: list its members', viaKey('exact', 'GET', '/rooms/shared.public/members', 200), 'ok'],
        ['prefix scope matches: see a private room (keys ignore visibility)', viaKey('prefix', 'GET', '/rooms/shared.private', 200), 'ok'],
        ['prefix scope matches: list a private room\'s members', viaKey('prefix', 'GET', '/rooms/shared.private.mods/members', 200), 'ok'],
        ['no scope matches: a public room is hidden', viaKey('exact', 'GET', '/rooms/shared.public.mods', 200), 'hidden'],
        ['no scope matches: a private room is hidden', viaKey('exact', 'GET', '/rooms/shared.private', 200), 'hidden'],
        ['no scope matches: its members are hidden', viaKey('prefix', 'GET', '/rooms/shared.public/members', 200), 'hidden'],
        ['an unknown room is hidden', viaKey('all', 'GET', '/rooms/nowhere', 200), 'hidden'],
        // Refused before the room is looked up, so 403 here reveals nothing about the room.
        ['a management route on a room outside its scopes is denied, not hidden', viaKey('exact', 'PATCH', '/rooms/shared.private', 200, { name: 'x' }), 'denied']
      ]
      for (const [name, act, want] of readCases) it(`${name} → ${want}`, async () => assert.equal(await act(), want))

      // A key may not manage anything, even in rooms its scopes cover; refused before the room is looked up.
      const manageCases: Array<[string, string, (id: string) => string, number, unknown]> = [
        ['create a room', 'POST', () => '/rooms', 201, { id: 'made.by.key' }],
        ['list rooms', 'GET', () => '/rooms', 200, undefined],
        ['update a room', 'PATCH', id => `/rooms/${id}`, 200, { name: 'x' }],
        ['delete a room', 'DELETE', id => `/rooms/${id}`, 204, undefined],
        ['add a member', 'PUT', id => `/rooms/${id}/members/${NEWCOMER}`, 201, { role: 'member' }],
        ['remove a member', 'DELETE', id => `/rooms/${id}/members/${OTHER_MEMBER}`, 204, undefined],
        ['list bans', 'GET', id => `/rooms/${id}/bans`, 200, undefined],
        ['ban a user', 'PUT', id => `/rooms/${id}/bans/${OTHER_MEMBER}`, 201, {}],
        ['lift a ban', 'DELETE', id => `/rooms/${id}/bans/${OTHER_BANNED}`, 204, undefined]
      ]
      for (const [name, method, path, success, body] of manageCases) {
        it(`a key touching every room: ${name} → denied`, async () => {
          const id = await env.room('public')
          assert.equal(await viaKey('all', method, path(id), success, body)(), 'denied')
        })
      }

      // Real-time actions follow the scope's action, not just the room; a key bypasses the publish policy.
      const serviceCases: Array<[string[], string, 'subscribe' | 'history' | 'presence' | 'publish', Outcome]> = [
        [['subscribe:shared.public'], 'shared.public', 'subscribe', 'ok'],
        [['subscribe:shared.public'], 'shared.public', 'history', 'denied'],
        [['subscribe:shared.public'], 'shared.public', 'presence', 'denied'],
        [['subscribe:shared.public'], 'shared.public', 'publish', 'denied'],
        [['subscribe:shared.public'], 'shared.private', 'subscribe', 'hidden'],
        [['history:shared.*', 'presence:shared.*'], 'shared.private', 'history', 'ok'],
        [['history:shared.*', 'presence:shared.*'], 'shared.private', 'presence', 'ok'],
        [['publish:shared.private*'], 'shared.private.mods', 'publish', 'ok'],
        [['publish:shared.private*'], 'shared.private', 'subscribe', 'denied'],
        [['publish:*'], 'nowhere', 'publish', 'hidden']
      ]
      for (const [scopes, roomId, action, want] of serviceCases) {
        it(`key [${scopes.join(', ')}]: ${action} in ${roomId} → ${want}`, async () => {
          assert.equal(await serviceOutcome(env.t.app.rooms.authorize(keyPrincipal(scopes), roomId, action)), want)
        })
      }
    })

    describe('invariants', () => {
      const as = (actor: string) => ({
        request: (method: string, path: string, body?: unknown) =>
          env.t.request(method, path, { token: env.tokens[actor]!, ...(body === undefined ? {} : { body }) })
      })
      const expectError = (res: TestResponse, status: number, code: string) => {
        assert.equal(res.status, status, res.text)
        assert.equal(res.body.code, code, res.text)
      }
      const memberIds = async (roomId: string): Promise<string[]> => {
        const res = await as(ACTOR.admin).request('GET', `/rooms/${roomId}/members?limit=100`)
        assert.equal(res.status, 200, res.text)
        return (res.body.items as Array<{ userId: string }>).map(m => m.userId)
      }
      const soleOwnerRoom = () => env.room('public', { members: [['member1', 'member']], bans: [] })

      it('the last owner cannot leave', async () => {
        const id = await soleOwnerRoom()
        expectError(await as('owner1').request('DELETE', `/rooms/${id}/members/owner1`), 409, 'SB_ERR_LAST_OWNER')
        // Once someone else owns it too, leaving is fine.
        assert.equal((await as('owner1').request('PUT', `/rooms/${id}/members/member1`, { role: 'owner' })).status, 200)
        assert.equal((await as('owner1').request('DELETE', `/rooms/${id}/members/owner1`)).status, 204)
      })

      it('the last owner cannot be demoted, by themselves or an admin', async () => {
        const id = await soleOwnerRoom()
        expectError(await as('owner1').request('PUT', `/rooms/${id}/members/owner1`, { role: 'member' }), 409, 'SB_ERR_LAST_OWNER')
        expectError(await as('admin1').request('PUT', `/rooms/${id}/members/owner1`, { role: 'moderator' }), 409, 'SB_ERR_LAST_OWNER')
      })

      it('the last owner cannot be removed or banned, even by an admin', async () => {
        const id = await soleOwnerRoom()
        expectError(await as('admin1').request('DELETE', `/rooms/${id}/members/owner1`), 409, 'SB_ERR_LAST_OWNER')
        expectError(await as('admin1').request('PUT', `/rooms/${id}/bans/owner1`, {}), 409, 'SB_ERR_LAST_OWNER')
        assert.ok((await memberIds(id)).includes('owner1'))
      })

      it('nobody bans themselves', async () => {
        const id = await env.room('public')
        expectError(await as('owner1').request('PUT', `/rooms/${id}/bans/owner1`, {}), 403, 'SB_ERR_FORBIDDEN')
        expectError(await as('mod1').request('PUT', `/rooms/${id}/bans/mod1`, {}), 403, 'SB_ERR_FORBIDDEN')
      })

      it('a full room takes no new members, by invitation or by joining; role changes still work', async () => {
        const id = await env.room('public', { maxMembers: 3, members: [['member1', 'member'], [OTHER_MEMBER, 'member']], bans: [] })
        expectError(await as('owner1').request('PUT', `/rooms/${id}/members/${NEWCOMER}`, { role: 'member' }), 409, 'SB_ERR_ROOM_FULL')
        expectError(await as('outsider1').request('PUT', `/rooms/${id}/members/outsider1`, { role: 'member' }), 409, 'SB_ERR_ROOM_FULL')
        assert.equal((await as('owner1').request('PUT', `/rooms/${id}/members/member1`, { role: 'moderator' })).status, 200)
        assert.equal((await as('owner1').request('DELETE', `/rooms/${id}/members/${OTHER_MEMBER}`)).status, 204)
        assert.equal((await as('owner1').request('PUT', `/rooms/${id}/members/${NEWCOMER}`, { role: 'member' })).status, 201)
      })

      it('a banned user cannot be added until the ban is lifted', async () => {
        const id = await env.room('public')
        expectError(await as('owner1').request('PUT', `/rooms/${id}/members/banned1`, { role: 'member' }), 409, 'SB_ERR_USER_BANNED')
        expectError(await as('admin1').request('PUT', `/rooms/${id}/members/banned1`, { role: 'moderator' }), 409, 'SB_ERR_USER_BANNED')
        assert.equal((await as('owner1').request('DELETE', `/rooms/${id}/bans/banned1`)).status, 204)
        assert.equal((await as('owner1').request('PUT', `/rooms/${id}/members/banned1`, { role: 'member' })).status, 201)
      })

      it('banning removes the membership, and lifting the ban does not restore it', async () => {
        const id = await env.room('private')
        assert.equal((await as('member1').request('GET', `/rooms/${id}`)).status, 200)
        assert.equal((await as('mod1').request('PUT', `/rooms/${id}/bans/member1`, { reason: 'spam' })).status, 201)
        assert.ok(!(await memberIds(id)).includes('member1'))
        expectError(await as('member1').request('GET', `/rooms/${id}`), 404, 'SB_ERR_ROOM_NOT_FOUND')
        assert.ok(!(await listAll(env, env.tokens.member1!)).includes(id))
        const bans = await as('owner1').request('GET', `/rooms/${id}/bans?limit=100`)
        assert.ok((bans.body.items as Array<{ userId: string }>).some(b => b.userId === 'member1'))

        assert.equal((await as('owner1').request('DELETE', `/rooms/${id}/bans/member1`)).status, 204)
        assert.ok(!(await memberIds(id)).includes('member1'))
        expectError(await as('member1').request('GET', `/rooms/${id}`), 404, 'SB_ERR_ROOM_NOT_FOUND')
      })

      it('a ban on a server admin does not limit them', async () => {
        const id = await env.room('private')
        assert.equal((await as('owner1').request('PUT', `/rooms/${id}/bans/admin1`, {})).status, 201)
        assert.equal((await as('admin1').request('GET', `/rooms/${id}`)).status, 200)
        assert.equal((await as('admin1').request('GET', `/rooms/${id}/bans`)).status, 200)
        assert.equal((await as('admin1').request('PATCH', `/rooms/${id}`, { name: 'Still mine' })).status, 200)
        assert.equal(await serviceOutcome(env.t.app.rooms.authorize(userPrincipal('admin1', 'admin'), id, 'publish')), 'ok')
      })

      it('deleting a room removes its members and bans with it', async () => {
        const id = await env.room('public')
        assert.equal((await as('owner1').request('DELETE', `/rooms/${id}`)).status, 204)
        for (const actor of ['owner1', 'admin1', 'member1']) {
          expectError(await as(actor).request('GET', `/rooms/${id}`), 404, 'SB_ERR_ROOM_NOT_FOUND')
          expectError(await as(actor).request('GET', `/rooms/${id}/members`), 404, 'SB_ERR_ROOM_NOT_FOUND')
        }
        assert.ok(!(await listAll(env, env.tokens.member1!)).includes(id))
        // A new room under the same id starts clean: only its creator, no bans left behind.
        assert.equal((await as('outsider1').request('POST', '/rooms', { id })).status, 201)
        assert.deepEqual(await memberIds(id), ['outsider1'])
        assert.equal((await as('banned1').request('GET', `/rooms/${id}`)).status, 200)
        const bans = await as('outsider1').request('GET', `/rooms/${id}/bans`)
        assert.deepEqual(bans.body.items, [])
      })
    })
  })
}
