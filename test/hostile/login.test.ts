import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { TestContext } from 'node:test'
import { EnvSchema } from '../../src/config.js'
import { deleteRedisKeys } from '../../support/redis.js'
import { build, PASSWORD, skipUnlessRedis, TEST_REDIS_URL, type TestApp, type TestResponse } from '../helper.js'
import { assertRssBack, settledRss } from './support.js'

/*
 * Finding 5 of the hardening issue: sign-in throttling turned against the victim. Guessers
 * spread over many addresses must not lock the real user out; they stay throttled themselves.
 * Addresses are simulated as a proxy would report them: X-Forwarded-For from a trusted
 * loopback hop.
 */

/** The sign-in throttle as it ships: the test environment's generous overrides taken back. */
function shippedThrottle (): Record<string, string> {
  const names = ['LOGIN_FAILURES_BEFORE_DELAY', 'LOGIN_MAX_DELAY', 'LOGIN_FAILURES_PER_ADDRESS', 'LOGIN_FAILURE_WINDOW'] as const
  return Object.fromEntries(names.map(name => [name, String(EnvSchema.properties[name].default)]))
}

/** Where the counts live: this process, or Redis under a private key prefix (deleted afterwards). */
const ENGINES = [
  { name: 'counted in memory', skip: false as const, env: (): Record<string, string> => ({}) },
  {
    name: 'counted in Redis',
    skip: await skipUnlessRedis(),
    env: (t: TestContext): Record<string, string> => {
      const prefix = `sbtest:${randomBytes(6).toString('hex')}:`
      t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
      return { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix }
    }
  }
]

function signIn (srv: TestApp, address: string, username: string, password: string): Promise<TestResponse> {
  return srv.request('POST', '/auth/login', { body: { username, password }, headers: { 'x-forwarded-for': address } })
}

/**
 * Wrong passwords from `address` until refused, the i-th for `usernames[i]` (the last one
 * repeated): the refusal, and the failures before it.
 */
async function guessUntilRefused (srv: TestApp, address: string, usernames: string[]): Promise<{ refusal: TestResponse, failures: number }> {
  // The per-address failure budget ends every guesser's run well before this bound.
  for (let failures = 0; failures < 100; failures++) {
    const username = usernames[Math.min(failures, usernames.length - 1)]!
    const res = await signIn(srv, address, username, `not the password ${failures}`)
    if (res.status !== 401) return { refusal: res, failures }
  }
  throw new Error(`${address}: 100 wrong passwords and never refused`)
}

const SHIPPED_FAILURES_BEFORE_DELAY = EnvSchema.properties.LOGIN_FAILURES_BEFORE_DELAY.default
const SHIPPED_FAILURES_PER_ADDRESS = EnvSchema.properties.LOGIN_FAILURES_PER_ADDRESS.default
const manyUsernames = (tag: string): string[] => Array.from({ length: 100 }, (_, i) => `${tag}${i}`)

function assertThrottled (res: TestResponse, who: string): void {
  assert.equal(res.status, 429, `${who}: ${res.status} ${res.text}`)
  assert.equal(res.body.code, 'SB_ERR_TOO_MANY_LOGIN_ATTEMPTS', `${who}: ${res.text}`)
  assert.ok(Number(res.headers.get('retry-after')) >= 1, `${who}: Retry-After ${res.headers.get('retry-after')}`)
}

for (const engine of ENGINES) {
  describe(`hostile: sign-in throttling, ${engine.name}`, { skip: engine.skip }, () => {
    it('guessing a user\'s password from ten addresses does not lock the user out; each guesser is throttled', async (t) => {
      const srv = await build(t, { env: { TRUST_PROXY: 'loopback', ...shippedThrottle(), ...engine.env(t) } })
      await srv.createUser('alice')
      const baseline = await settledRss()

      const guessers = Array.from({ length: 10 }, (_, i) => `203.0.113.${i + 1}`)
      for (const address of guessers) {
        const { refusal, failures } = await guessUntilRefused(srv, address, ['alice'])
        assertThrottled(refusal, address)
        assert.ok(failures >= SHIPPED_FAILURES_BEFORE_DELAY, `${address}: refused after ${failures} failures, before the free ones were spent`)
      }

      const victim = await signIn(srv, '198.51.100.7', 'alice', PASSWORD)
      assert.equal(victim.status, 200, `the victim, from an address that never failed: ${victim.status} ${victim.text}`)

      // As a real guesser would, each address spends the rest of its budget on other accounts;
      // then it waits for its whole window, however slowly this test runs, and learns nothing
      // from the right password: it is refused before the password is checked.
      for (const address of guessers) {
        assertThrottled((await guessUntilRefused(srv, address, manyUsernames('someone'))).refusal, `${address} spraying`)
        assertThrottled(await signIn(srv, address, 'alice', PASSWORD), `${address} with the right password`)
      }

      assert.equal((await srv.request('GET', '/health/live')).status, 200)
      await assertRssBack(baseline, 'guessing one password from ten addresses')
    })

    it('guesses sent all at once get no more than the address\'s budget', async (t) => {
      const srv = await build(t, { env: { TRUST_PROXY: 'loopback', ...shippedThrottle(), ...engine.env(t) } })
      await srv.createUser('alice')
      const baseline = await settledRss()

      // Each password check takes a while; guesses that all arrive before the first is answered
      // must still be counted against the budget, not each judged on the count before any ended.
      const burst = await Promise.all(manyUsernames('someone').slice(0, 3 * SHIPPED_FAILURES_PER_ADDRESS).map(username => signIn(srv, '203.0.113.60', username, 'a common password')))
      const checked = burst.filter(res => res.status === 401).length
      assert.equal(checked, SHIPPED_FAILURES_PER_ADDRESS, `${checked} of ${burst.length} passwords checked`)
      for (const res of burst.filter(r => r.status !== 401)) assertThrottled(res, 'a guess of the burst')
      assert.equal((await signIn(srv, '198.51.100.9', 'alice', PASSWORD)).status, 200)

      assert.equal((await srv.request('GET', '/health/live')).status, 200)
      await assertRssBack(baseline, 'a burst of guesses from one address')
    })

    it('spraying one guess at many usernames from one address stops at the address\'s failure budget', async (t) => {
      const srv = await build(t, { env: { TRUST_PROXY: 'loopback', ...shippedThrottle(), ...engine.env(t) } })
      const usernames = manyUsernames('user')
      for (const username of usernames.slice(0, 5)) await srv.createUser(username)
      const baseline = await settledRss()

      const { refusal, failures } = await guessUntilRefused(srv, '203.0.113.50', usernames)
      assertThrottled(refusal, 'the sprayer')
      assert.equal(failures, SHIPPED_FAILURES_PER_ADDRESS, 'one username each: only the address\'s budget applies')
      assertThrottled(await signIn(srv, '203.0.113.50', 'user0', PASSWORD), 'the sprayer with a right password')
      // Every user may still sign in from anywhere else.
      assert.equal((await signIn(srv, '198.51.100.8', 'user0', PASSWORD)).status, 200)

      assert.equal((await srv.request('GET', '/health/live')).status, 200)
      await assertRssBack(baseline, 'spraying one password over many usernames')
    })
  })
}
