import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createMemoryRateLimiter } from '../../src/limits/rate-limiter.js'

/** The in-memory rate limiter on an injected clock. Shared through Redis, and through the app: test/limits.test.ts. */

describe('rate limiter (GCRA), in memory', () => {
  it('allows the burst at once, then one unit per interval, and says when the next one is allowed', async () => {
    let now = 1_000_000
    const limiter = createMemoryRateLimiter({ ratePerSecond: 10, burst: 3, now: () => now })
    for (let i = 0; i < 3; i++) assert.equal((await limiter.take('u')).allowed, true, `unit ${i + 1} of the burst`)
    const refused = await limiter.take('u')
    assert.equal(refused.allowed, false)
    assert.equal(refused.retryAfterMs, 100, 'one interval (1000 ms / 10) until the next unit')
    assert.equal((await limiter.take('other')).allowed, true, 'keys do not share a budget')
    now += 100
    assert.equal((await limiter.take('u')).allowed, true)
    assert.equal((await limiter.take('u')).allowed, false)
    now += 1000
    for (let i = 0; i < 3; i++) assert.equal((await limiter.take('u')).allowed, true, 'a rested key has its whole burst back')
  })

  it('when full, a key at rest makes room even when a key still in debt is older', async () => {
    let now = 0
    const limiter = createMemoryRateLimiter({ ratePerSecond: 1, burst: 3, maxKeys: 2, now: () => now })
    for (let i = 0; i < 3; i++) await limiter.take('a') // the oldest entry, in debt until 3000
    await limiter.take('b') // in debt until 1000
    now = 1500 // b at rest, a not: a has earned 1.5 units back, not its whole burst
    assert.equal((await limiter.take('c')).allowed, true)
    // Dropped (the oldest), a would come back with its whole burst of 3.
    let allowed = 0
    for (let i = 0; i < 3; i++) if ((await limiter.take('a')).allowed) allowed++
    assert.equal(allowed, 1, 'a kept its debt: b (at rest) made room, not a (the oldest)')
  })

  it('when full, a key at rest makes room before a key still in debt; with none at rest, the oldest goes', async () => {
    let now = 0
    const limiter = createMemoryRateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 2, now: () => now })
    await limiter.take('a') // in debt until 1000
    now = 900
    await limiter.take('b') // in debt until 1900
    now = 1500 // a at rest, b not
    await limiter.take('c')
    assert.equal((await limiter.take('b')).allowed, false, 'b kept its debt: a (at rest) made room')
    now = 1600 // b and c both in debt, the map full
    await limiter.take('d')
    assert.equal((await limiter.take('b')).allowed, true, 'b, the oldest entry, was dropped with its debt')
  })
})
