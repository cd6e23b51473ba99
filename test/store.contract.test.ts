import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect, sql } from 'kysely'
import { Migrator } from 'kysely'
import pg from 'pg'
import { migrationProvider } from '../src/store/migrations.js'
import { createStore, type ArchivedPublication, type NewRoom, type RefreshTokenRecord, type Store } from '../src/store/index.js'

/*
 * One contract, run against every implementation: each test gets a fresh, empty store
 * (an in-memory SQLite database, or a PostgreSQL schema of its own that is dropped afterwards).
 */

const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
// Checked before any test is registered, so a required-but-missing server fails the file outright.
const pgSkip = await pgUnreachableReason(PG_URL)
if (pgSkip !== null && process.env.REQUIRE_SERVICES === '1') {
  throw new Error(`${pgSkip} (REQUIRE_SERVICES=1, so this is a failure; set TEST_DATABASE_URL to point at a running server)`)
}

interface Backend {
  name: string
  skip: string | false
  before?: () => Promise<void>
  after?: () => Promise<void>
  open: () => Promise<{ store: Store, dispose: () => Promise<void> }>
}

const ALL = { limit: 1000 }

function storeContract (backend: Backend): void {
  describe(`Store contract: ${backend.name}`, { skip: backend.skip }, () => {
    let store: Store
    let dispose: () => Promise<void>

    if (backend.before !== undefined) before(backend.before)
    if (backend.after !== undefined) after(backend.after)
    beforeEach(async () => { ({ store, dispose } = await backend.open()) })
    afterEach(async () => { await dispose() })

    async function user (id: string, role: 'admin' | 'user' = 'user') {
      const created = await store.createUser({ id, passwordHash: `hash-of-${id}`, role })
      assert.ok(created, `user ${id} should be created`)
      return created
    }

    async function room (id: string, createdBy: string, settings: Partial<NewRoom> = {}) {
      const created = await store.createRoom({
        id, name: `Room ${id}`, visibility: 'public', publish: 'members', historySize: 100, historyTtlSeconds: 3600, maxMembers: null, presenceEvents: true, archive: false, archiveDays: 30, createdBy, ...settings
      })
      assert.ok(created, `room ${id} should be created`)
      return created
    }

    function token (id: string, overrides: Partial<RefreshTokenRecord> = {}): RefreshTokenRecord {
      return { id, tokenHash: `hash-${id}`, userId: 'alice', familyId: 'family-1', expiresAt: 2_000_000_000_000, createdAt: 1_700_000_000_000, usedAt: null, revokedAt: null, ...overrides }
    }

    describe('the cluster archive', () => {
      const row = (epoch: string, offset: number, storedAt: number, payload: string | Buffer = `{"n":${offset}}`): ArchivedPublication => ({
        room: 'log', epoch, offset, publisher: 'alice', ts: storedAt - 1, storedAt, bytes: 150, kind: typeof payload === 'string' ? 'json' : 'binary', payload
      })

      it('inserts each position once: a second insert of the same rows changes nothing', async () => {
        await store.archivePublications([row('e1', 1, 1000), row('e1', 2, 1001)])
        await store.archivePublications([row('e1', 2, 1001, '"other"'), row('e1', 3, 1002)])
        const rows = await store.archivePage('log', 'e1', { after: 0, limit: 10, notBefore: 0 })
        assert.deepEqual(rows.map(r => [r.offset, r.payload]), [[1, '{"n":1}'], [2, '{"n":2}'], [3, '{"n":3}']])
        assert.deepEqual(rows[0], row('e1', 1, 1000))
      })

      it('pages backward and forward within an epoch, skipping what archiveDays expired, bytes kept as bytes', async () => {
        await store.archivePublications([row('e1', 1, 1000), row('e1', 2, 2000), row('e1', 3, 3000, Buffer.from([0, 255, 1])), row('e2', 1, 4000)])
        assert.deepEqual((await store.archivePage('log', 'e1', { before: 3, limit: 10, notBefore: 0 })).map(r => r.offset), [2, 1])
        assert.deepEqual((await store.archivePage('log', 'e1', { limit: 2, notBefore: 0 })).map(r => r.offset), [3, 2])
        assert.deepEqual((await store.archivePage('log', 'e1', { after: 0, limit: 10, notBefore: 1500 })).map(r => r.offset), [2, 3])
        const binary = (await store.archivePage('log', 'e1', { after: 2, limit: 1, notBefore: 0 }))[0]
        assert.equal(binary?.kind, 'binary')
        assert.deepEqual(binary?.payload, Buffer.from([0, 255, 1]))
      })

      it('finds the epoch before and after another by when their rows were stored, and purges a room', async () => {
        await store.archivePublications([row('old', 1, 1000), row('old', 2, 1100), row('mid', 1, 2000), row('mid', 5, 2500), row('new', 1, 3000)])
        assert.deepEqual(await store.archiveEpochBeside('log', 'mid', 'older'), { epoch: 'old', first: 1, last: 2 })
        assert.deepEqual(await store.archiveEpochBeside('log', 'mid', 'newer'), { epoch: 'new', first: 1, last: 1 })
        assert.equal(await store.archiveEpochBeside('log', 'old', 'older'), null)
        // An epoch with nothing archived yet (the current one): the newest archived is before it.
        assert.deepEqual(await store.archiveEpochBeside('log', 'current', 'older'), { epoch: 'new', first: 1, last: 1 })
        await store.purgeArchive('log')
        assert.deepEqual(await store.archivePage('log', 'mid', { after: 0, limit: 10, notBefore: 0 }), [])
      })
    })

    describe('lifecycle', () => {
      it('migrate() is idempotent and keeps data', async () => {
        await user('alice')
        await store.migrate()
        await store.migrate()
        assert.equal((await store.getUser('alice'))?.id, 'alice')
      })

      it('ping() answers while open and rejects once closed', async () => {
        await store.ping()
        await store.close()
        await assert.rejects(store.ping())
      })
    })

    describe('users', () => {
      it('creates a user, and returns null for a taken id', async () => {
        const before = Date.now()
        const created = await store.createUser({ id: 'alice', passwordHash: 'h1', role: 'admin' })
        assert.ok(created)
        assert.deepEqual(Object.keys(created).sort(), ['createdAt', 'disabled', 'id', 'role'])
        assert.equal(created.id, 'alice')
        assert.equal(created.role, 'admin')
        assert.ok(created.createdAt >= before && created.createdAt <= Date.now())
        assert.equal(await store.createUser({ id: 'alice', passwordHash: 'h2', role: 'user' }), null)
        assert.deepEqual(await store.getUser('alice'), { ...created, passwordHash: 'h1' })
      })

      it('lets exactly one of two concurrent creations with one id win', async () => {
        const results = await Promise.all([1, 2].map(n => store.createUser({ id: 'racer', passwordHash: `h${n}`, role: 'user' })))
        assert.equal(results.filter(r => r !== null).length, 1)
      })

      it('getUser returns undefined for an unknown id', async () => {
        assert.equal(await store.getUser('nobody'), undefined)
      })

      it('setUserPassword changes the hash of known users only', async () => {
        await user('alice')
        assert.equal(await store.setUserPassword('alice', 'new-hash'), true)
        assert.equal((await store.getUser('alice'))?.passwordHash, 'new-hash')
        assert.equal(await store.setUserPassword('nobody', 'x'), false)
      })

      it('deleteUser deletes once, with the user\'s memberships, bans, refresh tokens and API keys; rooms stay; the name is a tombstone', async () => {
        await user('alice')
        await user('bob')
        await room('r1', 'bob')
        await room('r2', 'alice')
        assert.equal((await store.setMember('r1', 'alice', 'member')).ok, true)
        await store.insertRefreshToken(token('t1'))
        const key = await store.createApiKey({ id: '00000000-0000-4000-8000-000000000001', name: 'k', prefix: 'sbk_x', keyHash: 'kh', scopes: ['subscribe:*'], createdBy: 'alice' })
        await store.createApiKey({ id: '00000000-0000-4000-8000-000000000002', name: 'b', prefix: 'sbk_y', keyHash: 'kh2', scopes: ['subscribe:*'], createdBy: 'bob' })
        const deleted = await store.deleteUser('alice')
        assert.ok(deleted.ok)
        assert.deepEqual(deleted.apiKeyIds, [key.id])
        assert.equal(deleted.user.id, 'alice')
        assert.deepEqual(await store.deleteUser('alice'), { ok: false, reason: 'user_not_found' })
        assert.equal(await store.getUser('alice'), undefined)
        assert.equal(await store.getMembership('r1', 'alice'), undefined)
        assert.equal(await store.getRefreshTokenByHash('hash-t1'), undefined)
        assert.equal(await store.getApiKeyByHash('kh'), undefined)
        assert.ok(await store.getApiKeyByHash('kh2'))
        assert.equal((await store.getRoom('r2'))?.createdBy, 'alice')
        assert.ok(await store.getUser('bob'))

        // The tombstone: invisible to every read, but the name cannot be taken again.
        assert.equal(await store.isUsernameRetired('alice'), true)
        assert.equal(await store.isUsernameRetired('bob'), false)
        assert.equal(await store.isUsernameRetired('nobody'), false)
        assert.equal(await store.createUser({ id: 'alice', passwordHash: 'h', role: 'user' }), null)
        assert.deepEqual(await store.getUsers(['alice', 'bob']).then(users => users.map(u => u.id)), ['bob'])
        assert.deepEqual((await store.searchUsers('', ALL)).map(u => u.id), ['bob'])
        assert.equal(await store.setUserPassword('alice', 'x'), false)
        assert.deepEqual(await store.updateUser('alice', { disabled: false }), { ok: false, reason: 'user_not_found' })
        assert.deepEqual(await store.setMember('r1', 'alice', 'member'), { ok: false, reason: 'user_not_found' })
      })

      it('deleteUser without a tombstone removes the row: the id may come back', async () => {
        await user('ext:abc')
        assert.ok((await store.deleteUser('ext:abc', { tombstone: false })).ok)
        assert.equal(await store.isUsernameRetired('ext:abc'), false)
        assert.ok(await store.createUser({ id: 'ext:abc', passwordHash: '!', role: 'user' }))
      })

      it('updateUser disables, enables and changes roles, and answers for unknown users', async () => {
        await user('alice')
        const disabled = await store.updateUser('alice', { disabled: true })
        assert.ok(disabled.ok)
        assert.equal(disabled.user.disabled, true)
        assert.equal(disabled.before.disabled, false)
        assert.equal((await store.getUser('alice'))?.disabled, true)
        assert.equal((await store.getUsers(['alice']))[0]?.disabled, true, 'disabled accounts are still read')
        const both = await store.updateUser('alice', { disabled: false, role: 'admin' })
        assert.ok(both.ok)
        assert.deepEqual([both.user.disabled, both.user.role], [false, 'admin'])
        assert.deepEqual([both.before.disabled, both.before.role], [true, 'user'])
        const stored = await store.getUser('alice')
        assert.deepEqual([stored?.disabled, stored?.role, stored?.passwordHash], [false, 'admin', 'hash-of-alice'])
        assert.deepEqual(await store.updateUser('nobody', { disabled: true }), { ok: false, reason: 'user_not_found' })
      })

      it('the last enabled admin cannot be demoted, disabled or deleted; with another one it can', async () => {
        await user('root', 'admin')
        await user('alice')
        for (const patch of [{ role: 'user' as const }, { disabled: true }]) {
          assert.deepEqual(await store.updateUser('root', patch), { ok: false, reason: 'last_admin' })
        }
        assert.deepEqual(await store.deleteUser('root'), { ok: false, reason: 'last_admin' })
        assert.ok((await store.updateUser('root', { role: 'admin', disabled: false })).ok, 'a change that keeps it an admin is fine')
        assert.ok((await store.updateUser('alice', { role: 'admin', disabled: true })).ok)
        assert.deepEqual(await store.updateUser('root', { disabled: true }), { ok: false, reason: 'last_admin' }, 'a disabled admin does not count')
        assert.ok((await store.updateUser('alice', { disabled: false })).ok)
        assert.ok((await store.updateUser('root', { role: 'user' })).ok)
        assert.deepEqual(await store.deleteUser('alice'), { ok: false, reason: 'last_admin' })
      })

      it('createRoom rejects a creator that is deleted or disabled, as the foreign key did', async () => {
        await user('alice')
        await user('bob')
        assert.ok((await store.deleteUser('alice')).ok)
        assert.ok((await store.updateUser('bob', { disabled: true })).ok)
        for (const creator of ['alice', 'bob']) {
          await assert.rejects(store.createRoom({ id: `r-${creator}`, name: null, visibility: 'public', publish: 'members', historySize: 0, historyTtlSeconds: 60, maxMembers: null, presenceEvents: true, archive: false, archiveDays: 30, createdBy: creator }))
          assert.equal(await store.getRoom(`r-${creator}`), undefined)
        }
      })

      it('of two admins demoting each other at once, exactly one succeeds', async () => {
        await user('root', 'admin')
        await user('alice', 'admin')
        const results = await Promise.all([store.updateUser('root', { role: 'user' }), store.deleteUser('alice')])
        assert.equal(results.filter(r => r.ok).length, 1, JSON.stringify(results))
        assert.equal((await store.searchUsers('', ALL)).filter(u => u.role === 'admin' && !u.disabled).length, 1)
      })

      it('getUsers returns the users among the ids that exist', async () => {
        await user('alice')
        await user('bob', 'admin')
        assert.deepEqual(await store.getUsers([]), [])
        const found = await store.getUsers(['bob', 'nobody', 'alice'])
        assert.deepEqual(found.map(u => [u.id, u.role]).sort(), [['alice', 'user'], ['bob', 'admin']])
        assert.deepEqual(Object.keys(found[0]!).sort(), ['createdAt', 'disabled', 'id', 'role'])
      })

      it('searchUsers matches by prefix, ordered by id, with keyset pagination', async () => {
        for (const id of ['bob', 'alice', 'alan', 'albert', 'carol']) await user(id)
        const ids = async (prefix: string, page: { limit: number, after?: string } = ALL) => (await store.searchUsers(prefix, page)).map(u => u.id)
        assert.deepEqual(await ids('al'), ['alan', 'albert', 'alice'])
        assert.deepEqual(await ids(''), ['alan', 'albert', 'alice', 'bob', 'carol'])
        assert.deepEqual(await ids('zz'), [])
        assert.deepEqual(await ids('AL'), [], 'prefix search is case-sensitive')
        assert.deepEqual(await ids('', { limit: 2 }), ['alan', 'albert'])
        assert.deepEqual(await ids('', { limit: 2, after: 'albert' }), ['alice', 'bob'])
        assert.deepEqual(await ids('al', { limit: 2, after: 'albert' }), ['alice'])
        const [found] = await store.searchUsers('bob', ALL)
        assert.deepEqual(found && Object.keys(found).sort(), ['createdAt', 'disabled', 'id', 'role'])
      })

      it('searchUsers treats %, _ and \\ in the prefix literally', async () => {
        for (const id of ['a_b', 'axb', 'a%c', 'abc', 'a\\d', 'aad']) await user(id)
        const ids = async (prefix: string) => (await store.searchUsers(prefix, ALL)).map(u => u.id).sort()
        assert.deepEqual(await ids('a_'), ['a_b'])
        assert.deepEqual(await ids('a%'), ['a%c'])
        assert.deepEqual(await ids('a\\'), ['a\\d'])
        assert.deepEqual(await ids('%'), [])
        assert.deepEqual(await ids('_'), [])
      })
    })

    describe('refresh tokens', () => {
      beforeEach(async () => { await user('alice') })

      it('round-trips a token by its hash', async () => {
        const record = token('t1', { usedAt: 1_700_000_000_500 })
        await store.insertRefreshToken(record)
        assert.deepEqual(await store.getRefreshTokenByHash('hash-t1'), record)
        await store.insertRefreshToken(token('t2'))
        assert.deepEqual(await store.getRefreshTokenByHash('hash-t2'), token('t2'))
        assert.equal(await store.getRefreshTokenByHash('unknown'), undefined)
      })

      it('markRefreshTokenUsed succeeds once, and never on a revoked token', async () => {
        await store.insertRefreshToken(token('t1'))
        assert.equal(await store.markRefreshTokenUsed('t1', 1000), true)
        assert.equal(await store.markRefreshTokenUsed('t1', 2000), false)
        assert.equal((await store.getRefreshTokenByHash('hash-t1'))?.usedAt, 1000)

        await store.insertRefreshToken(token('t2', { tokenHash: 'hash-t2' }))
        await store.revokeRefreshToken('t2', 500)
        assert.equal(await store.markRefreshTokenUsed('t2', 1000), false)
        assert.equal(await store.markRefreshTokenUsed('unknown', 1000), false)
      })

      it('markRefreshTokenUsed lets exactly one of two concurrent callers win', async () => {
        await store.insertRefreshToken(token('t1'))
        const results = await Promise.all([store.markRefreshTokenUsed('t1', 1000), store.markRefreshTokenUsed('t1', 1001)])
        assert.deepEqual(results.filter(Boolean), [true])
      })

      it('revokeRefreshToken revokes one token and keeps the first revocation time', async () => {
        await store.insertRefreshToken(token('t1'))
        await store.insertRefreshToken(token('t2'))
        await store.revokeRefreshToken('t1', 1000)
        await store.revokeRefreshToken('t1', 2000)
        assert.equal((await store.getRefreshTokenByHash('hash-t1'))?.revokedAt, 1000)
        assert.equal((await store.getRefreshTokenByHash('hash-t2'))?.revokedAt, null)
      })

      it('revokeRefreshFamily revokes every token of the family and no other', async () => {
        await store.insertRefreshToken(token('t1'))
        await store.insertRefreshToken(token('t2', { usedAt: 900 }))
        await store.insertRefreshToken(token('t3', { revokedAt: 500 }))
        await store.insertRefreshToken(token('other', { familyId: 'family-2' }))
        await store.revokeRefreshFamily('family-1', 1000)
        assert.equal((await store.getRefreshTokenByHash('hash-t1'))?.revokedAt, 1000)
        assert.equal((await store.getRefreshTokenByHash('hash-t2'))?.revokedAt, 1000)
        assert.equal((await store.getRefreshTokenByHash('hash-t3'))?.revokedAt, 500)
        assert.equal((await store.getRefreshTokenByHash('hash-other'))?.revokedAt, null)
      })

      it('revokeUserRefreshTokens revokes every token of the user and names the families issued since', async () => {
        await user('bob')
        await store.insertRefreshToken(token('old', { familyId: 'f-old', createdAt: 1000 }))
        await store.insertRefreshToken(token('new1', { familyId: 'f-new', createdAt: 5000 }))
        await store.insertRefreshToken(token('new2', { familyId: 'f-new', createdAt: 6000, revokedAt: 100 }))
        await store.insertRefreshToken(token('bobs', { userId: 'bob', familyId: 'f-bob', createdAt: 6000 }))
        assert.deepEqual(await store.revokeUserRefreshTokens('alice', 7000, 5000), ['f-new'])
        assert.equal((await store.getRefreshTokenByHash('hash-old'))?.revokedAt, 7000)
        assert.equal((await store.getRefreshTokenByHash('hash-new1'))?.revokedAt, 7000)
        assert.equal((await store.getRefreshTokenByHash('hash-new2'))?.revokedAt, 100)
        assert.equal((await store.getRefreshTokenByHash('hash-bobs'))?.revokedAt, null)
        assert.deepEqual(await store.revokeUserRefreshTokens('nobody', 7000, 0), [])
      })

      it('revokeUserRefreshTokens leaves the family it is told to keep', async () => {
        await store.insertRefreshToken(token('mine', { familyId: 'f-mine', createdAt: 5000 }))
        await store.insertRefreshToken(token('other', { familyId: 'f-other', createdAt: 5000 }))
        assert.deepEqual(await store.revokeUserRefreshTokens('alice', 7000, 0, 'f-mine'), ['f-other'])
        assert.equal((await store.getRefreshTokenByHash('hash-mine'))?.revokedAt, null)
        assert.equal((await store.getRefreshTokenByHash('hash-other'))?.revokedAt, 7000)
      })

      it('deleteExpiredRefreshTokens drops tokens expired at `now` and counts them', async () => {
        await store.insertRefreshToken(token('old', { expiresAt: 1000 }))
        await store.insertRefreshToken(token('edge', { expiresAt: 2000 }))
        await store.insertRefreshToken(token('live', { expiresAt: 3000 }))
        assert.equal(await store.deleteExpiredRefreshTokens(2000), 2)
        assert.equal(await store.getRefreshTokenByHash('hash-old'), undefined)
        assert.equal(await store.getRefreshTokenByHash('hash-edge'), undefined)
        assert.ok(await store.getRefreshTokenByHash('hash-live'))
        assert.equal(await store.deleteExpiredRefreshTokens(2000), 0)
      })
    })

    describe('API keys', () => {
      const key = (id: string, scopes = ['publish:chat:*', 'subscribe:*']) =>
        ({ id, name: `key ${id}`, prefix: `sb_${id}`, keyHash: `hash-${id}`, scopes, createdBy: 'admin' })

      it('creates a key without exposing its hash, and finds it by hash', async () => {
        const before = Date.now()
        const created = await store.createApiKey(key('k1'))
        assert.equal('keyHash' in created, false)
        assert.deepEqual({ ...created, createdAt: 0 }, { id: 'k1', name: 'key k1', prefix: 'sb_k1', scopes: ['publish:chat:*', 'subscribe:*'], createdBy: 'admin', createdAt: 0, lastUsedAt: null })
        assert.ok(created.createdAt >= before)
        assert.deepEqual(await store.getApiKeyByHash('hash-k1'), created)
        assert.equal(await store.getApiKeyByHash('unknown'), undefined)
      })

      it('round-trips empty and unusual scopes', async () => {
        await store.createApiKey(key('k1', []))
        await store.createApiKey(key('k2', ['a "quoted" scope', 'ünïcode', 'x,y']))
        assert.deepEqual((await store.getApiKeyByHash('hash-k1'))?.scopes, [])
        assert.deepEqual((await store.getApiKeyByHash('hash-k2'))?.scopes, ['a "quoted" scope', 'ünïcode', 'x,y'])
      })

      it('lists keys by id with keyset pagination', async () => {
        for (const id of ['k3', 'k1', 'k2']) await store.createApiKey(key(id))
        assert.deepEqual((await store.listApiKeys(ALL)).map(k => k.id), ['k1', 'k2', 'k3'])
        assert.deepEqual((await store.listApiKeys({ limit: 2 })).map(k => k.id), ['k1', 'k2'])
        assert.deepEqual((await store.listApiKeys({ limit: 2, after: 'k2' })).map(k => k.id), ['k3'])
        assert.equal((await store.listApiKeys(ALL)).some(k => 'keyHash' in k), false)
      })

      it('touchApiKey records the last use', async () => {
        await store.createApiKey(key('k1'))
        await store.touchApiKey('k1', 1_700_000_000_123)
        assert.equal((await store.getApiKeyByHash('hash-k1'))?.lastUsedAt, 1_700_000_000_123)
        await store.touchApiKey('unknown', 1)
      })

      it('deleteApiKey deletes once', async () => {
        await store.createApiKey(key('k1'))
        assert.equal(await store.deleteApiKey('k1'), true)
        assert.equal(await store.deleteApiKey('k1'), false)
        assert.equal(await store.getApiKeyByHash('hash-k1'), undefined)
      })
    })

    describe('rooms', () => {
      beforeEach(async () => { await user('alice'); await user('bob') })

      it('creates a room with its creator as owner, and returns null for a taken id', async () => {
        const before = Date.now()
        const created = await store.createRoom({ id: 'lobby', name: null, visibility: 'private', publish: 'moderators', historySize: 0, historyTtlSeconds: 60, maxMembers: 5, presenceEvents: false, archive: true, archiveDays: 400, createdBy: 'alice' })
        assert.ok(created)
        assert.deepEqual({ ...created, createdAt: 0, updatedAt: 0 }, { id: 'lobby', name: null, visibility: 'private', publish: 'moderators', historySize: 0, historyTtlSeconds: 60, maxMembers: 5, presenceEvents: false, archive: true, archiveDays: 400, createdBy: 'alice', createdAt: 0, updatedAt: 0 })
        assert.ok(created.createdAt >= before)
        assert.equal(created.updatedAt, created.createdAt)
        assert.deepEqual(await store.getRoom('lobby'), created)
        assert.equal((await store.getMembership('lobby', 'alice'))?.role, 'owner')

        assert.equal(await store.createRoom(created), null)
        assert.equal(await store.createRoom({ ...created, createdBy: 'bob' }), null)
        assert.equal(await store.getMembership('lobby', 'bob'), undefined)
        assert.equal((await store.getRoom('lobby'))?.createdBy, 'alice')
      })

      it('createRoom with a limit counts the creator\'s rooms, concurrent creates included', async () => {
        const settings = { name: null, visibility: 'public' as const, publish: 'members' as const, historySize: 10, historyTtlSeconds: 60, maxMembers: null, presenceEvents: true, archive: false, archiveDays: 30 }
        const limit = { maxCreatedBy: 3 }
        await room('first', 'alice')
        // A burst of creates by one user: exactly as many as the cap leaves room for pass.
        const burst = await Promise.all(['b1', 'b2', 'b3', 'b4'].map(id => store.createRoom({ id, ...settings, createdBy: 'alice' }, limit)))
        assert.equal(burst.filter(r => r === 'room_limit').length, 2)
        assert.equal(burst.filter(r => r !== 'room_limit' && r !== null).length, 2)
        // Another user's rooms do not count, and a taken id is still null.
        assert.notEqual(await store.createRoom({ id: 'bobs', ...settings, createdBy: 'bob' }, limit), 'room_limit')
        assert.equal(await store.createRoom({ id: 'bobs', ...settings, createdBy: 'bob' }, limit), null)
        // A deleted room frees its place.
        assert.equal(await store.deleteRoom('first'), true)
        const again = await store.createRoom({ id: 'again', ...settings, createdBy: 'alice' }, limit)
        assert.equal(typeof again === 'object' && again !== null ? again.id : again, 'again')
      })

      it('getRoom returns undefined for an unknown id', async () => {
        assert.equal(await store.getRoom('nowhere'), undefined)
      })

      it('updateRoom applies a partial patch', async () => {
        const created = await room('lobby', 'alice', { maxMembers: 10 })
        const updated = await store.updateRoom('lobby', { name: null, visibility: 'private', maxMembers: null, historySize: 5, archive: true, archiveDays: 7 })
        assert.ok(updated)
        assert.deepEqual({ ...updated, updatedAt: 0 }, { ...created, name: null, visibility: 'private', maxMembers: null, historySize: 5, archive: true, archiveDays: 7, updatedAt: 0 })
        assert.ok(updated.updatedAt >= created.updatedAt)
        assert.deepEqual(await store.getRoom('lobby'), updated)
        assert.deepEqual(await store.updateRoom('lobby', {}), updated)
        assert.equal(await store.updateRoom('nowhere', { name: 'x' }), undefined)
        assert.equal(await store.updateRoom('nowhere', {}), undefined)
      })

      it('updateRoom turns presenceEvents off and on again, and keeps it through other patches', async () => {
        const created = await room('stage', 'alice')
        assert.equal(created.presenceEvents, true)
        assert.equal((await store.updateRoom('stage', { presenceEvents: false }))?.presenceEvents, false)
        assert.equal((await store.updateRoom('stage', { historySize: 7 }))?.presenceEvents, false)
        assert.equal((await store.getRoom('stage'))?.presenceEvents, false)
        assert.equal((await store.updateRoom('stage', { presenceEvents: true }))?.presenceEvents, true)
        assert.equal((await store.getRoom('stage'))?.presenceEvents, true)
        const listed = await store.listVisibleRooms({ userId: 'alice', isAdmin: false }, ALL)
        assert.equal(listed.find(r => r.id === 'stage')?.presenceEvents, true)
      })

      it('deleteRoom deletes the room with its memberships and bans', async () => {
        await room('lobby', 'alice')
        await user('carol')
        assert.equal((await store.setMember('lobby', 'bob', 'member')).ok, true)
        assert.equal((await store.banUser({ roomId: 'lobby', userId: 'carol', bannedBy: 'alice', reason: null })).ok, true)
        assert.equal(await store.deleteRoom('lobby'), true)
        assert.equal(await store.getRoom('lobby'), undefined)
        assert.deepEqual(await store.listMembers('lobby', ALL), [])
        assert.deepEqual(await store.listBans('lobby', ALL), [])
        assert.deepEqual(await store.listMembershipsOfUser('alice', ALL), [])
        assert.equal(await store.deleteRoom('lobby'), false)
        // The id is free again, without leftovers.
        await room('lobby', 'bob')
        assert.deepEqual((await store.listMembers('lobby', ALL)).map(m => m.userId), ['bob'])
      })

      it('listVisibleRooms: admins see all; others see public rooms they are not banned from and rooms they belong to', async () => {
        await user('root', 'admin')
        await user('carol')
        await room('a-public', 'alice')
        await room('b-private', 'alice', { visibility: 'private' })
        await room('c-private-with-bob', 'alice', { visibility: 'private' })
        await room('d-public-bob-banned', 'alice')
        await room('e-private-bob-banned', 'alice', { visibility: 'private' })
        assert.equal((await store.setMember('c-private-with-bob', 'bob', 'member')).ok, true)
        assert.equal((await store.banUser({ roomId: 'd-public-bob-banned', userId: 'bob', bannedBy: 'alice', reason: 'spam' })).ok, true)
        assert.equal((await store.banUser({ roomId: 'e-private-bob-banned', userId: 'bob', bannedBy: 'alice', reason: null })).ok, true)

        const visible = async (userId: string, isAdmin = false) => (await store.listVisibleRooms({ userId, isAdmin }, ALL)).map(r => r.id)
        const all = ['a-public', 'b-private', 'c-private-with-bob', 'd-public-bob-banned', 'e-private-bob-banned']
        assert.deepEqual(await visible('root', true), all)
        assert.deepEqual(await visible('alice'), all)
        assert.deepEqual(await visible('bob'), ['a-public', 'c-private-with-bob'])
        assert.deepEqual(await visible('carol'), ['a-public', 'd-public-bob-banned'])
        assert.deepEqual(await visible('stranger'), ['a-public', 'd-public-bob-banned'])
        const [first] = await store.listVisibleRooms({ userId: 'bob', isAdmin: false }, ALL)
        assert.deepEqual(first, await store.getRoom('a-public'))
      })

      it('listVisibleRooms paginates by id', async () => {
        for (const id of ['r4', 'r1', 'r3', 'r2', 'r5']) await room(id, 'alice', { visibility: id === 'r3' ? 'private' : 'public' })
        const page = async (isAdmin: boolean, limit: number, after?: string) => (await store.listVisibleRooms({ userId: 'bob', isAdmin }, { limit, after })).map(r => r.id)
        assert.deepEqual(await page(true, 2), ['r1', 'r2'])
        assert.deepEqual(await page(true, 2, 'r2'), ['r3', 'r4'])
        assert.deepEqual(await page(true, 2, 'r4'), ['r5'])
        assert.deepEqual(await page(false, 2, 'r2'), ['r4', 'r5'])
        assert.deepEqual(await page(false, 2, 'r5'), [])
      })
    })

    describe('memberships', () => {
      beforeEach(async () => {
        for (const id of ['alice', 'bob', 'carol', 'dave']) await user(id)
        await room('lobby', 'alice')
      })

      it('setMember adds a member, then changes the role', async () => {
        const before = Date.now()
        const added = await store.setMember('lobby', 'bob', 'member')
        assert.ok(added.ok)
        assert.equal(added.created, true)
        assert.deepEqual({ ...added.membership, createdAt: 0 }, { roomId: 'lobby', userId: 'bob', role: 'member', createdAt: 0 })
        assert.ok(added.membership.createdAt >= before)

        const promoted = await store.setMember('lobby', 'bob', 'moderator')
        assert.deepEqual(promoted, { ok: true, created: false, membership: { ...added.membership, role: 'moderator' } })
        assert.deepEqual(await store.getMembership('lobby', 'bob'), promoted.ok ? promoted.membership : undefined)

        const same = await store.setMember('lobby', 'bob', 'moderator')
        assert.deepEqual(same, promoted)
      })

      it('setMember fails for an unknown room or user', async () => {
        assert.deepEqual(await store.setMember('nowhere', 'bob', 'member'), { ok: false, reason: 'room_not_found' })
        assert.deepEqual(await store.setMember('lobby', 'nobody', 'member'), { ok: false, reason: 'user_not_found' })
      })

      it('setMember refuses banned users', async () => {
        assert.equal((await store.banUser({ roomId: 'lobby', userId: 'bob', bannedBy: 'alice', reason: null })).ok, true)
        assert.deepEqual(await store.setMember('lobby', 'bob', 'member'), { ok: false, reason: 'banned' })
        assert.equal(await store.getMembership('lobby', 'bob'), undefined)
      })

      it('setMember refuses to exceed maxMembers, but still changes roles in a full room', async () => {
        await room('small', 'alice', { maxMembers: 2 })
        assert.equal((await store.setMember('small', 'bob', 'member')).ok, true)
        assert.deepEqual(await store.setMember('small', 'carol', 'member'), { ok: false, reason: 'room_full' })
        assert.equal((await store.setMember('small', 'bob', 'moderator')).ok, true)
        assert.equal((await store.removeMember('small', 'bob')).ok, true)
        assert.equal((await store.setMember('small', 'carol', 'member')).ok, true)
      })

      it('setMember refuses to demote the last owner, but demotes one of two', async () => {
        assert.deepEqual(await store.setMember('lobby', 'alice', 'moderator'), { ok: false, reason: 'last_owner' })
        assert.equal((await store.getMembership('lobby', 'alice'))?.role, 'owner')
        assert.equal((await store.setMember('lobby', 'bob', 'owner')).ok, true)
        assert.equal((await store.setMember('lobby', 'alice', 'member')).ok, true)
        assert.deepEqual(await store.setMember('lobby', 'bob', 'member'), { ok: false, reason: 'last_owner' })
      })

      it('removeMember removes, reports absent members, and keeps the last owner', async () => {
        assert.equal((await store.setMember('lobby', 'bob', 'member')).ok, true)
        assert.deepEqual(await store.removeMember('lobby', 'bob'), { ok: true, removed: true })
        assert.deepEqual(await store.removeMember('lobby', 'bob'), { ok: true, removed: false })
        assert.deepEqual(await store.removeMember('nowhere', 'bob'), { ok: false, reason: 'room_not_found' })
        assert.deepEqual(await store.removeMember('lobby', 'alice'), { ok: false, reason: 'last_owner' })
        assert.equal((await store.setMember('lobby', 'bob', 'owner')).ok, true)
        assert.deepEqual(await store.removeMember('lobby', 'alice'), { ok: true, removed: true })
        assert.deepEqual((await store.listMembers('lobby', ALL)).map(m => [m.userId, m.role]), [['bob', 'owner']])
      })

      it('lists members by user id and a user\'s memberships by room id, with pagination', async () => {
        await room('attic', 'bob')
        await room('cellar', 'carol')
        for (const id of ['dave', 'carol', 'bob']) assert.equal((await store.setMember('lobby', id, 'member')).ok, true)
        assert.equal((await store.setMember('cellar', 'bob', 'moderator')).ok, true)

        const members = async (limit: number, after?: string) => (await store.listMembers('lobby', { limit, after })).map(m => m.userId)
        assert.deepEqual(await members(10), ['alice', 'bob', 'carol', 'dave'])
        assert.deepEqual(await members(2), ['alice', 'bob'])
        assert.deepEqual(await members(2, 'bob'), ['carol', 'dave'])
        assert.deepEqual(await store.listMembers('nowhere', ALL), [])

        const rooms = async (limit: number, after?: string) => (await store.listMembershipsOfUser('bob', { limit, after })).map(m => [m.roomId, m.role])
        assert.deepEqual(await rooms(10), [['attic', 'owner'], ['cellar', 'moderator'], ['lobby', 'member']])
        assert.deepEqual(await rooms(1, 'attic'), [['cellar', 'moderator']])
        assert.deepEqual(await store.listMembershipsOfUser('nobody', ALL), [])
      })

      it('concurrent joins never exceed maxMembers', async () => {
        const users = Array.from({ length: 10 }, (_, i) => `joiner${i}`)
        for (const id of users) await user(id)
        await room('tiny', 'alice', { maxMembers: 3 })
        const results = await Promise.all(users.map(id => store.setMember('tiny', id, 'member')))
        assert.equal(results.filter(r => r.ok).length, 2)
        assert.ok(results.every(r => r.ok || r.reason === 'room_full'))
        assert.equal((await store.listMembers('tiny', ALL)).length, 3)
      })

      it('concurrent demotions of two owners leave one owner', async () => {
        assert.equal((await store.setMember('lobby', 'bob', 'owner')).ok, true)
        const results = await Promise.all([store.setMember('lobby', 'alice', 'member'), store.setMember('lobby', 'bob', 'member')])
        assert.deepEqual(results.map(r => r.ok).sort(), [false, true])
        assert.equal((await store.listMembers('lobby', ALL)).filter(m => m.role === 'owner').length, 1)
      })

      it('concurrent removals and bans of two owners leave one owner', async () => {
        assert.equal((await store.setMember('lobby', 'bob', 'owner')).ok, true)
        const results = await Promise.all([store.removeMember('lobby', 'alice'), store.banUser({ roomId: 'lobby', userId: 'bob', bannedBy: 'carol', reason: null })])
        assert.deepEqual(results.map(r => r.ok).sort(), [false, true])
        assert.equal((await store.listMembers('lobby', ALL)).filter(m => m.role === 'owner').length, 1)
      })
    })

    describe('bans', () => {
      beforeEach(async () => {
        for (const id of ['alice', 'bob', 'carol']) await user(id)
        await room('lobby', 'alice')
      })

      it('banUser removes the membership and records the ban', async () => {
        assert.equal((await store.setMember('lobby', 'bob', 'moderator')).ok, true)
        const before = Date.now()
        const result = await store.banUser({ roomId: 'lobby', userId: 'bob', bannedBy: 'alice', reason: 'spam' })
        assert.ok(result.ok)
        assert.equal(result.created, true)
        assert.equal(result.removedMembership, true)
        assert.deepEqual({ ...result.ban, createdAt: 0 }, { roomId: 'lobby', userId: 'bob', bannedBy: 'alice', reason: 'spam', createdAt: 0 })
        assert.ok(result.ban.createdAt >= before)
        assert.equal(await store.getMembership('lobby', 'bob'), undefined)
        assert.deepEqual(await store.getBan('lobby', 'bob'), result.ban)
      })

      it('banning again keeps the original ban', async () => {
        const first = await store.banUser({ roomId: 'lobby', userId: 'bob', bannedBy: 'alice', reason: 'spam' })
        assert.ok(first.ok)
        assert.equal(first.removedMembership, false)
        const again = await store.banUser({ roomId: 'lobby', userId: 'bob', bannedBy: 'carol', reason: 'other' })
        assert.deepEqual(again, { ok: true, ban: first.ban, created: false, removedMembership: false })
      })

      it('banUser fails for an unknown room or user, and for the last owner', async () => {
        assert.deepEqual(await store.banUser({ roomId: 'nowhere', userId: 'bob', bannedBy: 'alice', reason: null }), { ok: false, reason: 'room_not_found' })
        assert.deepEqual(await store.banUser({ roomId: 'lobby', userId: 'nobody', bannedBy: 'alice', reason: null }), { ok: false, reason: 'user_not_found' })
        assert.deepEqual(await store.banUser({ roomId: 'lobby', userId: 'alice', bannedBy: 'bob', reason: null }), { ok: false, reason: 'last_owner' })
        assert.equal((await store.getMembership('lobby', 'alice'))?.role, 'owner')
        assert.equal(await store.getBan('lobby', 'alice'), undefined)

        assert.equal((await store.setMember('lobby', 'bob', 'owner')).ok, true)
        const banned = await store.banUser({ roomId: 'lobby', userId: 'alice', bannedBy: 'bob', reason: null })
        assert.ok(banned.ok && banned.removedMembership)
      })

      it('unbanUser lifts a ban once, after which the user may join', async () => {
        assert.equal((await store.banUser({ roomId: 'lobby', userId: 'bob', bannedBy: 'alice', reason: null })).ok, true)
        assert.equal(await store.unbanUser('lobby', 'bob'), true)
        assert.equal(await store.unbanUser('lobby', 'bob'), false)
        assert.equal(await store.getBan('lobby', 'bob'), undefined)
        assert.equal((await store.setMember('lobby', 'bob', 'member')).ok, true)
      })

      it('listBans orders by user id with pagination', async () => {
        for (const id of ['carol', 'bob']) assert.equal((await store.banUser({ roomId: 'lobby', userId: id, bannedBy: 'alice', reason: null })).ok, true)
        assert.deepEqual((await store.listBans('lobby', ALL)).map(b => b.userId), ['bob', 'carol'])
        assert.deepEqual((await store.listBans('lobby', { limit: 1 })).map(b => b.userId), ['bob'])
        assert.deepEqual((await store.listBans('lobby', { limit: 1, after: 'bob' })).map(b => b.userId), ['carol'])
        assert.deepEqual(await store.listBans('nowhere', ALL), [])
      })
    })
  })
}

/** Closing twice is harmless here: the ping test closes the store itself. */
async function closeQuietly (store: Store): Promise<void> {
  await store.close().catch(() => {})
}

storeContract({
  name: 'SQLite',
  skip: false,
  async open () {
    const store = await createStore('sqlite::memory:')
    return { store, dispose: async () => { await closeQuietly(store) } }
  }
})

describe('createStore', () => {
  it('rejects an unsupported URL, naming DATABASE_URL and the accepted forms', async () => {
    for (const url of ['mysql://localhost/db', 'sqlite:', '', './data/db.sqlite']) {
      await assert.rejects(createStore(url), (error: Error) => /DATABASE_URL/.test(error.message) && /sqlite:/.test(error.message) && /postgres:\/\//.test(error.message))
    }
  })

  it('opens a SQLite file, creating its directory, and keeps data across reopening', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-store-'))
    try {
      const url = `sqlite:${join(dir, 'nested', 'db.sqlite')}`
      const first = await createStore(url)
      assert.equal(first.kind, 'sqlite')
      await first.createUser({ id: 'alice', passwordHash: 'h', role: 'user' })
      await first.close()
      assert.ok(existsSync(join(dir, 'nested', 'db.sqlite')))
      const second = await createStore(url)
      assert.equal((await second.getUser('alice'))?.id, 'alice')
      await second.close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a room stored before presenceEvents existed (migration 0004) reads it as true, pushes on as before', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-store-'))
    try {
      const file = join(dir, 'db.sqlite')
      const database = new SqliteDatabase(file)
      const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database }) })
      const migrator = new Migrator({ db, provider: migrationProvider })
      const { error } = await migrator.migrateTo('0003_rooms_created_by')
      assert.equal(error, undefined)
      await sql`insert into users (id, role, password_hash, created_at) values ('alice', 'user', 'h', 1)`.execute(db)
      await sql`insert into rooms (id, name, visibility, publish, history_size, history_ttl_seconds, max_members, created_by, created_at, updated_at)
        values ('old', null, 'public', 'members', 100, 3600, null, 'alice', 1, 1)`.execute(db)
      await db.destroy()
      const store = await createStore(`sqlite:${file}`)
      try {
        assert.equal((await store.getRoom('old'))?.presenceEvents, true)
      } finally {
        await store.close()
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('fails promptly when PostgreSQL is not there', async () => {
    await assert.rejects(createStore('postgres://postgres@127.0.0.1:1/test'))
  })

  it('PostgreSQL: the pool grows to its maximum for a burst, closes what stays idle, keeps one open, and names its sessions', { skip: pgSkip ?? false }, async () => {
    const name = `pool_test_${randomBytes(4).toString('hex')}`
    const schema = `store_test_${randomBytes(6).toString('hex')}`
    const probe = new pg.Client({ connectionString: PG_URL })
    await probe.connect()
    const sessions = async (applicationName: string): Promise<number> =>
      Number((await probe.query('select count(*) as n from pg_stat_activity where application_name = $1', [applicationName])).rows[0].n)
    const named = await createStore(`${PG_URL}${PG_URL.includes('?') ? '&' : '?'}application_name=${name}`, { pgSchema: schema, pgPool: { max: 4, idleMs: 200 } })
    const unnamed = await createStore(PG_URL, { pgSchema: schema })
    try {
      assert.ok(await sessions('switchboard') >= 1, 'without a name in DATABASE_URL the sessions are called switchboard')
      await Promise.all(Array.from({ length: 12 }, async (_, i) => await named.getUser(`user-${i}`)))
      assert.equal(await sessions(name), 4, 'the burst opened the pool\'s maximum')
      const deadline = Date.now() + 10_000
      while (await sessions(name) > 1 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
      assert.equal(await sessions(name), 1, 'idle connections closed down to one')
      // This sleep stays: pg's pool closes idle clients on its own timers (no clock to inject, no
      // event for a close that does not happen), and outliving two idle periods is the claim.
      await new Promise(resolve => setTimeout(resolve, 500))
      assert.equal(await sessions(name), 1, 'the last one stays open')
      assert.equal(await named.getUser('user-0'), undefined, 'and answers on it')
    } finally {
      await closeQuietly(named)
      await closeQuietly(unnamed)
      await probe.query(`drop schema if exists "${schema}" cascade`)
      await probe.end()
    }
  })
})

function redacted (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return url
  }
}

async function pgUnreachableReason (url: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 })
  try {
    await client.connect()
    await client.query('select 1')
    return null
  } catch (error) {
    return `PostgreSQL not reachable at ${redacted(url)}: ${(error as Error).message}`
  } finally {
    await client.end().catch(() => {})
  }
}

let admin: pg.Pool | undefined
storeContract({
  name: 'PostgreSQL',
  skip: pgSkip ?? false,
  async before () { admin = new pg.Pool({ connectionString: PG_URL, max: 2 }) },
  async after () { await admin?.end() },
  async open () {
    const schema = `store_test_${randomBytes(6).toString('hex')}`
    const store = await createStore(PG_URL, { pgSchema: schema })
    return {
      store,
      dispose: async () => {
        await closeQuietly(store)
        await admin?.query(`drop schema if exists "${schema}" cascade`)
      }
    }
  }
})
