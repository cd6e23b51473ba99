import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { addressBlock } from '../../src/client-address.js'
import { createMemoryLoginThrottle, PAIR_MEMORY_MS, type LoginThrottlePolicy } from '../../src/limits/login-throttle.js'

/*
 * The in-memory sign-in throttle's bound, on an injected clock, and the address blocks it
 * counts by. The policy against both implementations: test/login-throttle.test.ts.
 */

const MINUTE = 60_000
const POLICY: LoginThrottlePolicy = { failuresBeforeDelay: 3, maxDelayMs: 10_000, failuresPerAddress: 100, addressWindowMs: 15 * MINUTE }

describe('login throttle in memory, bounded', () => {
  it('when full, drops expired entries first, then the oldest tenth', async () => {
    let clock = 0
    const limiter = createMemoryLoginThrottle({ ...POLICY, maxKeys: 10, now: () => clock })
    for (let i = 0; i < 9; i++) await limiter.attempt('203.0.113.1', `old${i}`)
    clock += PAIR_MEMORY_MS // those nine are forgotten, still in the map
    for (let i = 0; i < 3; i++) await limiter.attempt('203.0.113.1', 'alice')
    for (let i = 0; i < 9; i++) await limiter.attempt('203.0.113.1', `new${i}`)
    assert.equal(await limiter.attempt('203.0.113.1', 'alice'), 1, 'the live pair stayed: the expired ones made room')
    // Full of live pairs: alice, the oldest, goes with the first tenth.
    await limiter.attempt('203.0.113.1', 'one-more')
    assert.equal(await limiter.attempt('203.0.113.1', 'alice'), 0)
  })
})

describe('addressBlock', () => {
  it('keeps IPv4, maps IPv4-mapped IPv6 to IPv4, cuts IPv6 to its /64, leaves non-addresses alone', () => {
    const cases: Array<[string, string]> = [
      ['203.0.113.9', '203.0.113.9'],
      ['::ffff:203.0.113.9', '203.0.113.9'],
      ['::ffff:cb00:7109', '203.0.113.9'],
      ['2001:DB8:0:0:1::1', '2001:db8:0:0::/64'],
      ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
      ['fe80::1%eth0', 'fe80:0:0:0::/64'],
      ['::1', '0:0:0:0::/64'],
      ['not an address', 'not an address']
    ]
    for (const [address, block] of cases) assert.equal(addressBlock(address), block, address)
  })

  it('every IPv6 address falls in the block of its first 64 bits, however it is written', () => {
    const group = fc.integer({ min: 0, max: 0xffff })
    fc.assert(fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), fc.array(group, { minLength: 4, maxLength: 4 }), (groups, otherHost) => {
      // Neither address IPv4-mapped (that prefix is a different rule).
      const zeros = groups.slice(0, 4).every(g => g === 0)
      fc.pre(!(zeros && groups[4] === 0 && groups[5] === 0xffff) && !(zeros && otherHost[0] === 0 && otherHost[1] === 0xffff))
      const full = groups.map(g => g.toString(16).padStart(4, '0').toUpperCase()).join(':')
      const sameNetwork = [...groups.slice(0, 4), ...otherHost].map(g => g.toString(16)).join(':')
      const expected = `${groups.slice(0, 4).map(g => g.toString(16)).join(':')}::/64`
      assert.equal(addressBlock(full), expected)
      assert.equal(addressBlock(sameNetwork), expected)
      assert.equal(addressBlock(new URL(`http://[${full}]/`).hostname.slice(1, -1)), expected, 'the compressed form')
    }))
  })
})
