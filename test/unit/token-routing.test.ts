import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { routeToken, unverifiedIssuer } from '../../src/auth/token-routing.js'

const ISSUERS = { own: 'switchboard', external: 'https://idp.test/' }
const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
const token = (payload: unknown): string => `${b64({ alg: 'RS256' })}.${b64(payload)}.c2ln`

describe('token routing by issuer', () => {
  it('sends a token to the verifier its unverified iss names, and nowhere when it names neither', () => {
    assert.equal(routeToken(token({ iss: 'switchboard' }), ISSUERS), 'own')
    assert.equal(routeToken(token({ iss: 'https://idp.test/' }), ISSUERS), 'external')
    for (const payload of [{ iss: 'https://idp.test' }, { iss: 'Switchboard' }, {}, { iss: ['switchboard'] }, { iss: 1 }, [], 'switchboard', null]) {
      assert.equal(routeToken(token(payload), ISSUERS), null, JSON.stringify(payload))
    }
    for (const garbage of ['', '.', '..', 'a.b', 'a.b.c', `${b64({})}.${b64('{"iss":')}.x`, 'no dots at all']) {
      assert.equal(routeToken(garbage, ISSUERS), null, garbage)
    }
  })

  it('never throws, whatever the bytes', () => {
    fc.assert(fc.property(fc.string(), fc.string(), fc.string(), (a, b, c) => {
      const issuer = unverifiedIssuer(`${a}.${b}.${c}`)
      return issuer === undefined || typeof issuer === 'string'
    }))
  })
})
