import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import {
  createMemoryLoginThrottle, createRedisLoginThrottle, PAIR_MEMORY_MS,
  type LoginThrottle, type LoginThrottleOptions, type LoginThrottlePolicy
} from '../src/limits/login-throttle.js'
import { createRedisConnection, quitRedis } from '../src/redis.js'
import { deleteRedisKeys } from '../support/redis.js'
import { skipUnlessRedis, TEST_REDIS_URL } from './helper.js'

/*
 * The sign-in throttle's policy, on an injected clock, against both implementations: process
 * memory and Redis (a private key prefix, deleted afterwards). No test sleeps. The memory
 * throttle's bound and addressBlock need no service: test/unit/login-throttle.test.ts.
 */

const MINUTE = 60_000
const POLICY: LoginThrottlePolicy = { failuresBeforeDelay: 3, maxDelayMs: 10_000, failuresPerAddress: 100, addressWindowMs: 15 * MINUTE }
/** The same with an address budget a test can spend in a few calls. */
const SMALL_ADDRESS_BUDGET: LoginThrottlePolicy = { ...POLICY, failuresPerAddress: 8 }

interface Implementation {
  name: string
  skip: false | string
  create: (t: TestContext, options: LoginThrottleOptions) => Promise<LoginThrottle>
}

const IMPLEMENTATIONS: Implementation[] = [
  { name: 'in memory', skip: false, create: async (_t, options) => createMemoryLoginThrottle(options) },
  {
    name: 'in Redis',
    skip: await skipUnlessRedis(),
    create: async (t, options) => {
      const prefix = `sbtest:${randomBytes(6).toString('hex')}:`
      t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
      const redis = createRedisConnection({ url: TEST_REDIS_URL }, { name: 'switchboard-test', log: { info () {}, warn () {} }, timeoutMs: 2000 })
      t.after(() => quitRedis(redis))
      await redis.connect()
      // No fallback: a Redis failure must fail the test, not be answered from memory.
      return createRedisLoginThrottle({ ...options, redis, prefix, log: { warn (_obj, msg) { throw new Error(msg) } } })
    }
  }
]

for (const implementation of IMPLEMENTATIONS) {
  describe(`login throttle, ${implementation.name}`, { skip: implementation.skip }, () => {
    let clock = 0
    async function throttle (t: TestContext, policy: LoginThrottlePolicy = POLICY): Promise<LoginThrottle> {
      clock = 1_765_000_000_000
      return await implementation.create(t, { ...policy, now: () => clock })
    }
    /** Attempts that must be let in (and so count as failures). */
    async function fail (limiter: LoginThrottle, address: string, username: string, times = 1): Promise<void> {
      for (let i = 0; i < times; i++) assert.equal(await limiter.attempt(address, username), 0, `${address} ${username}: attempt ${i + 1} let in`)
    }

    it('lets a pair\'s first attempts in at once, then waits 1 s, 2 s, 4 s … up to the cap', async (t) => {
      const limiter = await throttle(t)
      await fail(limiter, '203.0.113.1', 'alice', 3)
      const waits = []
      for (let i = 0; i < 6; i++) {
        const wait = await limiter.attempt('203.0.113.1', 'alice')
        waits.push(wait)
        clock += wait * 1000 - 1
        assert.equal(await limiter.attempt('203.0.113.1', 'alice'), 1, 'a refused attempt is not counted: the wait does not grow')
        clock += 1
        await fail(limiter, '203.0.113.1', 'alice')
      }
      assert.deepEqual(waits, [1, 2, 4, 8, 10, 10])
    })

    it('a pair\'s failures slow no one else: the same user from another address, another user from this one', async (t) => {
      const limiter = await throttle(t)
      await fail(limiter, '203.0.113.1', 'alice', 3)
      assert.ok(await limiter.attempt('203.0.113.1', 'alice') > 0)
      await fail(limiter, '198.51.100.7', 'alice')
      await fail(limiter, '203.0.113.1', 'bob')
    })

    it('an address that spent its failure budget waits for the end of its window, whatever the username', async (t) => {
      const limiter = await throttle(t, SMALL_ADDRESS_BUDGET)
      for (let i = 0; i < SMALL_ADDRESS_BUDGET.failuresPerAddress - 1; i++) await fail(limiter, '203.0.113.2', `user${i}`)
      clock += 5 * MINUTE
      await fail(limiter, '203.0.113.2', 'last')
      assert.equal(await limiter.attempt('203.0.113.2', 'fresh'), 10 * 60, 'the window is fixed from the first failure, not moved by later ones')
      await fail(limiter, '198.51.100.7', 'fresh')
      clock += 10 * MINUTE - 1000
      assert.equal(await limiter.attempt('203.0.113.2', 'fresh'), 1)
      clock += 1000
      for (let i = 0; i < SMALL_ADDRESS_BUDGET.failuresPerAddress; i++) await fail(limiter, '203.0.113.2', `next${i}`)
      assert.equal(await limiter.attempt('203.0.113.2', 'fresh'), 15 * 60, 'a new window, with a whole budget')
    })

    it('attempts let in count at once, so guesses sent together get no more than the budget', async (t) => {
      const limiter = await throttle(t, SMALL_ADDRESS_BUDGET)
      const waits = await Promise.all(Array.from({ length: 30 }, (_, i) => limiter.attempt('203.0.113.7', `user${i}`)))
      assert.equal(waits.filter(wait => wait === 0).length, SMALL_ADDRESS_BUDGET.failuresPerAddress)
    })

    it('a success forgets the pair\'s failures and takes its own attempt back, not the address\'s other failures', async (t) => {
      const limiter = await throttle(t, SMALL_ADDRESS_BUDGET)
      await fail(limiter, '203.0.113.3', 'alice', 3)
      clock += 1000
      await fail(limiter, '203.0.113.3', 'alice') // the right password, this time
      await limiter.succeeded('203.0.113.3', 'alice')
      await fail(limiter, '203.0.113.3', 'alice', 3) // free attempts again
      await fail(limiter, '203.0.113.3', 'bob', 2) // 3 + 3 + 2: the address's budget of 8 is spent
      assert.ok(await limiter.attempt('203.0.113.3', 'carol') > 0)
    })

    it('a pair\'s failures are remembered for a day after the latest, past the longest wait', async (t) => {
      const limiter = await throttle(t)
      await fail(limiter, '203.0.113.4', 'alice', 3)
      clock += PAIR_MEMORY_MS - 1
      await fail(limiter, '203.0.113.4', 'alice')
      assert.equal(await limiter.attempt('203.0.113.4', 'alice'), 2, 'the count went on (4 failures: 2 s): no free attempts back')
      clock += PAIR_MEMORY_MS
      await fail(limiter, '203.0.113.4', 'alice', 3)
      assert.equal(await limiter.attempt('203.0.113.4', 'alice'), 1, 'a day later the pair started over')
    })

    it('counts an IPv6 /64 as one address, and an IPv4-mapped address as its IPv4 client', async (t) => {
      const limiter = await throttle(t)
      for (let i = 0; i < 3; i++) await fail(limiter, `2001:db8:1:2::${i + 1}`, 'alice')
      assert.ok(await limiter.attempt('2001:db8:1:2:ffff:ffff:ffff:ffff', 'alice') > 0, 'another address in the same /64')
      await fail(limiter, '2001:db8:1:3::1', 'alice')
      await fail(limiter, '::ffff:203.0.113.5', 'bob', 3)
      assert.ok(await limiter.attempt('203.0.113.5', 'bob') > 0)
    })

    it('usernames that look like key syntax are just usernames', async (t) => {
      const limiter = await throttle(t)
      const odd = ['a}{b', '*', 'a:b', 'x\u0000y', '{sb:}login-failures:', '%7B']
      for (const username of odd) await fail(limiter, '203.0.113.6', username, 3)
      for (const username of odd) assert.equal(await limiter.attempt('203.0.113.6', username), 1, username)
      await fail(limiter, '203.0.113.6', 'ab')
    })
  })
}
