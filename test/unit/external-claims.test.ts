import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { claimAt, isBuiltinUserId, isExternalUserId, mapExternalClaims, type ClaimsMapping } from '../../src/auth/external-claims.js'
import { UserIdSchema, UsernameSchema } from '../../src/schemas/common.js'

const MAPPING: ClaimsMapping = { userClaim: 'sub', userPrefix: 'ext:', admin: null, nameClaim: null }

describe('external identity: claims mapping', () => {
  it('puts the user claim under the prefix; ids like auth0|abc, UUIDs and e-mail addresses fit', () => {
    for (const sub of ['auth0|5f7c8ec7c33c6c004bbafe82', 'google-oauth2|104388731251487281563', '0b9c5c4e-1f9e-4e3b-9a53-2c1a0f3a2e11', 'ada@example.com', 'samlp|corp|ada+test@example.com', 'x']) {
      assert.deepEqual(mapExternalClaims({ sub }, MAPPING), { userId: `ext:${sub}`, admin: false, name: null }, sub)
    }
    assert.equal(mapExternalClaims({ uid: 42 }, { ...MAPPING, userClaim: 'uid', userPrefix: 'kc:' })?.userId, 'kc:42')
  })

  it('refuses a user claim that is missing, empty, too long, not a string or holds control characters, spaces, slashes or quotes', () => {
    const bad: unknown[] = [undefined, '', 'a'.repeat(129), 1.5, true, ['a'], { id: 'a' }, null, 'a\u0000b', 'a\nb', 'a\u007fb', 'a b', 'a/b', 'a"b', "a'b", 'a%2Fb', 'é', 'a{b}', 'a\\b']
    for (const sub of bad) assert.equal(mapExternalClaims({ sub }, MAPPING), null, JSON.stringify(sub))
    assert.equal(mapExternalClaims({}, MAPPING), null)
    assert.ok(mapExternalClaims({ sub: 'a'.repeat(128) }, MAPPING) !== null, '128 characters fit')
  })

  it('makes an admin when the admin claim is the value, or an array holding it; nested claims by dotted path', () => {
    const roles: ClaimsMapping = { ...MAPPING, admin: { claim: 'realm_access.roles', value: 'switchboard-admin' } }
    assert.equal(mapExternalClaims({ sub: 'a', realm_access: { roles: ['user', 'switchboard-admin'] } }, roles)?.admin, true)
    assert.equal(mapExternalClaims({ sub: 'a', realm_access: { roles: ['user'] } }, roles)?.admin, false)
    assert.equal(mapExternalClaims({ sub: 'a', realm_access: { roles: 'switchboard-admin' } }, roles)?.admin, true)
    assert.equal(mapExternalClaims({ sub: 'a', realm_access: { roles: [['switchboard-admin']] } }, roles)?.admin, false, 'only strings in the array count')
    assert.equal(mapExternalClaims({ sub: 'a' }, roles)?.admin, false)
    // Auth0's namespaced claims hold dots: the top-level claim of that exact name wins.
    const namespaced: ClaimsMapping = { ...MAPPING, admin: { claim: 'https://example.com/roles', value: 'admin' } }
    assert.equal(mapExternalClaims({ sub: 'a', 'https://example.com/roles': ['admin'] }, namespaced)?.admin, true)
    assert.equal(mapExternalClaims({ sub: 'a', role: 'Admin' }, { ...MAPPING, admin: { claim: 'role', value: 'admin' } })?.admin, false, 'exact match only')
  })

  it('reads own properties only: __proto__ and constructor name nothing', () => {
    assert.equal(claimAt({}, 'constructor'), undefined)
    assert.equal(claimAt({ a: {} }, 'a.constructor'), undefined)
    assert.equal(claimAt(JSON.parse('{"__proto__": {"x": "y"}}') as Record<string, unknown>, '__proto__.x'), 'y', 'a JSON __proto__ key is an own property')
    assert.equal(claimAt({ a: { b: { c: 'd' } } }, 'a.b.c'), 'd')
    assert.equal(claimAt({ a: ['x'] }, 'a.0'), undefined, 'no walking into arrays')
  })

  it('takes a display name when it is a short string without control characters, else none', () => {
    const named: ClaimsMapping = { ...MAPPING, nameClaim: 'name' }
    assert.equal(mapExternalClaims({ sub: 'a', name: ' Ada Lovelace ' }, named)?.name, 'Ada Lovelace')
    assert.equal(mapExternalClaims({ sub: 'a', name: 'Zoë 🚀' }, named)?.name, 'Zoë 🚀')
    for (const name of ['', '   ', 'x'.repeat(129), 'a\u001bb', 'a\u2028b', 42, ['Ada']]) {
      assert.equal(mapExternalClaims({ sub: 'a', name }, named)?.name, null, JSON.stringify(name))
    }
  })

  it('tells external ids from built-in usernames', () => {
    assert.equal(isExternalUserId('ext:auth0|abc', 'ext:'), true)
    assert.equal(isExternalUserId('kc:auth0|abc', 'ext:'), false)
    assert.equal(isExternalUserId('ext:', 'ext:'), false)
    assert.equal(isExternalUserId('ext:a b', 'ext:'), false)
    assert.equal(isBuiltinUserId('alice'), true)
    assert.equal(isBuiltinUserId('ext:alice'), false)
  })
})

describe('user id schema', () => {
  const userId = TypeCompiler.Compile(UserIdSchema)
  const username = TypeCompiler.Compile(UsernameSchema)

  it('widens for prefixed ids only', () => {
    for (const id of ['alice', 'bob.smith', 'ext:auth0|abc', 'ext:0b9c5c4e-1f9e-4e3b-9a53-2c1a0f3a2e11', 'kc:ada@example.com', `ext:${'a'.repeat(128)}`]) {
      assert.equal(userId.Check(id), true, id)
    }
    for (const id of ['Alice', 'al', 'auth0|abc', 'ext:', 'ext:a b', 'ext:a\nb', 'ext:a/b', `ext:${'a'.repeat(129)}`, 'Ext:a', ':a', 'toolongprefix-123:a', 'ext:é', 'ext:a\u0000']) {
      assert.equal(userId.Check(id), false, JSON.stringify(id))
    }
  })

  it('keeps usernames (registration, sign-in) to the built-in form', () => {
    assert.equal(username.Check('alice'), true)
    assert.equal(username.Check('ext:alice'), false)
  })
})
