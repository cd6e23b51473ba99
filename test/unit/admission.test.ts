import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Principal } from '../../src/auth/principal.js'
import { Admission, type AdmissionCounts } from '../../src/realtime/admission.js'
import type { ConnectionCounter } from '../../src/realtime/engine.js'
import type { Logger } from '../../src/realtime/logger.js'

const log: Logger = { debug () {}, info () {}, warn () {}, error () {}, child: () => log }
const alice: Principal = { kind: 'user', userId: 'alice', role: 'user', tokenId: 't', expiresAt: 0, sessionId: 'sess-a' }
const key: Principal = { kind: 'apiKey', keyId: 'k1', name: 'device', scopes: [] }

/** Counts the test sets, standing in for the hub. */
function counts (byOwner: number, byIp: number): AdmissionCounts {
  return { countOf: () => byOwner, countAt: () => byIp }
}

/** A cluster-wide counter in memory: key → reserved ids; `down` makes every call fail. */
function memoryCounter (): ConnectionCounter & { held: Map<string, Set<string>>, down: boolean } {
  const held = new Map<string, Set<string>>()
  return {
    held,
    down: false,
    async reserve (k, id, limit) {
      if (this.down) throw new Error('redis away')
      const set = held.get(k) ?? new Set()
      if (set.size >= limit) return false
      set.add(id)
      held.set(k, set)
      return true
    },
    async release (k, id) {
      if (this.down) throw new Error('redis away')
      held.get(k)?.delete(id)
    }
  } as ConnectionCounter & { held: Map<string, Set<string>>, down: boolean }
}

const limits = { maxConnectionsPerUser: 2, maxConnectionsPerIp: 3 }

describe('Admission (caps and reservations)', () => {
  it('admit refuses while draining, a revoked session, and each local cap', () => {
    const revoked = new Set<string>()
    let c = counts(0, 0)
    const admission = new Admission({ counts: { countOf: (p) => c.countOf(p), countAt: (ip) => c.countAt(ip) }, counter: undefined, limits, isSessionRevoked: (s) => revoked.has(s), log })
    assert.equal(admission.admit(alice, '1.2.3.4'), null)
    c = counts(2, 0)
    assert.equal(admission.admit(alice, '1.2.3.4'), 'connections_per_user')
    c = counts(1, 3)
    assert.equal(admission.admit(key, '1.2.3.4'), 'connections_per_ip')
    c = counts(0, 0)
    revoked.add('sess-a')
    assert.equal(admission.admit(alice, '1.2.3.4'), 'revoked')
    assert.equal(admission.admit(key, '1.2.3.4'), null, 'an API key has no session')
    admission.draining = true
    assert.equal(admission.admit(key, '1.2.3.4'), 'draining')
  })

  it('reserve counts across nodes, and a refusal by one cap releases the other', async () => {
    const counter = memoryCounter()
    const admission = new Admission({ counts: counts(0, 0), counter, limits, isSessionRevoked: () => false, log })
    const first = await admission.reserve(alice, 'ip1')
    const second = await admission.reserve(alice, 'ip1')
    assert.ok('id' in first && 'id' in second)
    assert.deepEqual(await admission.reserve(alice, 'ip1'), { refusal: 'connections_per_user' })
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(counter.held.get('ip:ip1')?.size, 2, 'the refused connection does not count against the address')
    admission.release(alice, 'ip1', first.id)
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(counter.held.get('user:alice')?.size, 1)
    assert.equal(counter.held.get('ip:ip1')?.size, 1)
    assert.ok('id' in await admission.reserve(alice, 'ip1'), 'a released reservation frees its place')
  })

  it('with no counter, or one that fails, reserve lets the handshake through with an id', async () => {
    const bare = new Admission({ counts: counts(0, 0), counter: undefined, limits, isSessionRevoked: () => false, log })
    assert.ok('id' in await bare.reserve(key, 'ip'))
    const counter = memoryCounter()
    counter.down = true
    const admission = new Admission({ counts: counts(0, 0), counter, limits, isSessionRevoked: () => false, log })
    assert.ok('id' in await admission.reserve(key, 'ip'))
    admission.release(key, 'ip', 'x')
    await new Promise(resolve => setImmediate(resolve))
  })
})
