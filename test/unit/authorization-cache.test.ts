import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Principal } from '../../src/auth/principal.js'
import { AuthorizationCache, principalPrefix } from '../../src/realtime/authorization-cache.js'

const OPTIONS = { stream: { historySize: 100, historyTtlSeconds: 300 }, presenceEvents: true }
const user = (id: string): Principal => ({ kind: 'user', userId: id, role: 'user' }) as unknown as Principal

describe('AuthorizationCache: what a full cache lets go', () => {
  it('a sweep lets go of the expired grants, nothing else', () => {
    let clock = 0
    const cache = new AuthorizationCache(1000, 100, () => clock)
    for (let i = 0; i < 6; i++) cache.set(user(`old-${i}`), `room-${i % 2}`, 'subscribe', OPTIONS)
    clock = 600
    cache.set(user('live'), 'room-0', 'subscribe', OPTIONS)
    clock = 1000
    cache.sweep()
    assert.equal(cache.entries, 1)
    assert.ok(cache.get(user('live'), 'room-0', 'subscribe') !== undefined)
  })

  it('a full cache drops its expired grants first and keeps the live ones', () => {
    let clock = 0
    const cache = new AuthorizationCache(1000, 10, () => clock)
    for (let i = 0; i < 6; i++) cache.set(user(`old-${i}`), 'lobby', 'publish', OPTIONS)
    clock = 600
    for (let i = 0; i < 4; i++) cache.set(user(`live-${i}`), `room-${i}`, 'publish', OPTIONS)
    clock = 1100
    // Full (10): the six from time 0 have expired; the four from 600 live on.
    cache.set(user('new'), 'lobby', 'publish', OPTIONS)
    for (let i = 0; i < 4; i++) assert.ok(cache.get(user(`live-${i}`), `room-${i}`, 'publish') !== undefined, `live-${i} was kept`)
    assert.ok(cache.get(user('new'), 'lobby', 'publish') !== undefined)
  })

  it('full of live grants, it lets go of the one nearest its expiry and keeps the rest, the renewed oldest among them', () => {
    let clock = 0
    const cache = new AuthorizationCache(1000, 10, () => clock)
    for (let i = 0; i < 10; i++) {
      clock = i
      cache.set(user(`u-${i}`), `room-${i % 3}`, 'publish', OPTIONS)
    }
    // u-0, the first granted, is renewed (a use past half its life sets it again): now u-1's
    // grant is the one nearest its expiry.
    clock = 10
    cache.set(user('u-0'), 'room-0', 'publish', OPTIONS)
    clock = 11
    cache.set(user('eleventh'), 'lobby', 'publish', OPTIONS)
    assert.equal(cache.get(user('u-1'), 'room-1', 'publish'), undefined, 'the grant nearest its expiry went')
    for (const i of [0, 2, 3, 4, 5, 6, 7, 8, 9]) assert.ok(cache.get(user(`u-${i}`), `room-${i % 3}`, 'publish') !== undefined, `u-${i} was kept`)
    assert.ok(cache.get(user('eleventh'), 'lobby', 'publish') !== undefined)
  })

  it('dropping a principal forgets the rooms it leaves empty', () => {
    const cache = new AuthorizationCache(1000, 10, () => 0)
    for (let i = 0; i < 10; i++) cache.set(user('kicked'), `room-${i}`, 'publish', OPTIONS)
    cache.dropPrincipal(principalPrefix(user('kicked')))
    // All ten were let go and counted out: ten new grants fit without anything evicted.
    for (let i = 0; i < 10; i++) cache.set(user(`u-${i}`), 'lobby', 'publish', OPTIONS)
    for (let i = 0; i < 10; i++) assert.ok(cache.get(user(`u-${i}`), 'lobby', 'publish') !== undefined, `u-${i} was kept`)
    assert.equal((cache as unknown as { rooms: Map<string, unknown> }).rooms.size, 1, 'only the lobby holds grants')
  })
})
