import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createAccountStatus } from '../../src/auth/account-status.js'
import { createSessionDenylist, type SessionDenylistOptions } from '../../src/auth/session-denylist.js'
import type { User } from '../../src/store/types.js'

/*
 * The two halves of revocation on their own, with an injected clock: the session denylist
 * (window, bound) and the account check (what it caches, what it asks). Sharing the denylist
 * through Redis: test/revocation-units.test.ts; end to end: test/hostile/revocation.test.ts.
 */

const silent = { warn: () => {} }

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let at = start
  return { now: () => at, advance: (ms) => { at += ms } }
}

function denylist (options: Partial<SessionDenylistOptions> & { now: () => number }) {
  return createSessionDenylist({ windowMs: 1000, maxEntries: 1000, redis: null, keyPrefix: 'x:', log: silent, ...options })
}

describe('session denylist', () => {
  it('denies a revoked session for the window and not after', async () => {
    const time = clock()
    const list = denylist({ now: time.now })
    assert.equal(await list.revoke(['s1']), time.now() + 1000)
    assert.equal(list.isRevoked('s1'), true)
    assert.equal(list.isRevoked('s2'), false)
    time.advance(999)
    assert.equal(list.isRevoked('s1'), true)
    time.advance(1)
    assert.equal(list.isRevoked('s1'), false)
  })

  it('mirrors another node\'s revocation until the end it was given; an earlier end never shortens a later one', () => {
    const time = clock()
    const list = denylist({ now: time.now })
    list.mirror(['s1'], time.now() + 5000)
    list.mirror(['s1'], time.now() + 10)
    list.mirror(['past'], time.now())
    time.advance(4999)
    assert.equal(list.isRevoked('s1'), true)
    assert.equal(list.isRevoked('past'), false)
  })

  it('stays within maxEntries: expired entries go first, then the oldest, with a warning', async () => {
    const time = clock()
    const warnings: string[] = []
    const list = denylist({ now: time.now, maxEntries: 1000, log: { warn: (_obj, msg) => { warnings.push(msg) } } })
    await list.revoke(Array.from({ length: 1000 }, (_, i) => `old${i}`))
    time.advance(1000)
    await list.revoke(Array.from({ length: 1000 }, (_, i) => `new${i}`))
    assert.equal(warnings.length, 0, 'expired entries made room')
    await list.revoke(['newest'])
    assert.equal(list.isRevoked('newest'), true)
    assert.equal(list.isRevoked('new0'), false, 'the oldest live entry lapsed')
    assert.equal(list.isRevoked('new1'), true)
    assert.equal(warnings.length, 1)
  })
})

describe('account status', () => {
  function fakeStore (users: string[]) {
    const present = new Set(users)
    const disabled = new Set<string>()
    const calls = { getUser: 0, getUsers: [] as number[] }
    const user = (id: string): User => ({ id, role: 'user', createdAt: 0, disabled: disabled.has(id) })
    return {
      present,
      disabled,
      calls,
      store: {
        getUser: async (id: string) => { calls.getUser++; return present.has(id) ? { ...user(id), passwordHash: 'h' } : undefined },
        getUsers: async (ids: string[]) => { calls.getUsers.push(ids.length); return ids.filter(id => present.has(id)).map(user) }
      }
    }
  }

  it('answers from memory within ttlMs, asks the store after it, and never keeps a refusal', async () => {
    const time = clock()
    const { store, calls, present } = fakeStore(['alice'])
    const accounts = createAccountStatus({ store, ttlMs: 100, maxEntries: 10, now: time.now })
    assert.equal(await accounts.isActive('alice'), true)
    assert.equal(accounts.isActive('alice'), true, 'a cached answer is synchronous')
    assert.equal(calls.getUser, 1)
    time.advance(100)
    assert.equal(await accounts.isActive('alice'), true)
    assert.equal(calls.getUser, 2)

    assert.equal(await accounts.isActive('bob'), false)
    present.add('bob')
    assert.equal(await accounts.isActive('bob'), true, 'an account that exists now works at once')

    present.delete('alice')
    assert.equal(accounts.isActive('alice'), true, 'until forgotten or expired')
    accounts.forget('alice')
    assert.equal(await accounts.isActive('alice'), false)
  })

  it('a disabled account is closed; a user of the identity provider needs no row, only a disabled one closes it', async () => {
    const { store, present, disabled } = fakeStore(['alice', 'bob'])
    const accounts = createAccountStatus({ store, ttlMs: 60_000, maxEntries: 10 })
    disabled.add('bob')
    assert.equal(await accounts.isActive('bob'), false)
    assert.equal(await accounts.isActive('ext:abc'), true, 'no row: the token is the identity')
    present.add('ext:def')
    disabled.add('ext:def')
    assert.equal(await accounts.isActive('ext:def'), false)
    assert.deepEqual((await accounts.closedAmong(['alice', 'bob', 'ext:abc', 'ext:def', 'carol'])).sort(), ['bob', 'carol', 'ext:def'])
  })

  it('closedAmong asks in batches of 500, names the missing, and refreshes the present', async () => {
    const time = clock()
    const ids = Array.from({ length: 1200 }, (_, i) => `user${i}`)
    const { store, calls } = fakeStore(ids.filter((_, i) => i % 100 !== 0))
    const accounts = createAccountStatus({ store, ttlMs: 100, maxEntries: 10_000, now: time.now })
    const closed = await accounts.closedAmong(ids)
    assert.deepEqual(calls.getUsers, [500, 500, 200])
    assert.deepEqual(closed, ids.filter((_, i) => i % 100 === 0))
    assert.equal(accounts.isActive('user1'), true)
    assert.equal(calls.getUser, 0)
  })

  it('stays within maxEntries, letting the oldest answer go', async () => {
    const { store, calls } = fakeStore(['a', 'b', 'c'])
    const accounts = createAccountStatus({ store, ttlMs: 60_000, maxEntries: 2 })
    for (const id of ['a', 'b', 'c']) await accounts.isActive(id)
    assert.equal(accounts.isActive('c'), true)
    assert.equal(accounts.isActive('b'), true)
    assert.equal(await accounts.isActive('a'), true)
    assert.equal(calls.getUser, 4, 'a was asked again')
  })
})
