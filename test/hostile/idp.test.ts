import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { describe, it } from 'node:test'
import { SignJWT } from 'jose'
import { build, TEST_JWT_SECRET, wsConnect } from '../helper.js'
import { assertCommandError, assertErrorBody, nowSeconds, refusal, signedToken } from '../ws-support.js'
import { AUDIENCE, hmacToken, idpKey, idpToken, ISSUER, jwksEnv, jwksServer, unsecuredToken } from '../idp-support.js'

/*
 * Tokens of the application's identity provider, attacked (issue 22): the algorithm-confusion
 * attack (an HS256 token whose HMAC key is the provider's RSA public key, which anyone can
 * download), `alg: none`, keys smuggled in the header, and tokens that try to cross from one
 * issuer's verifier to the other's. Each is refused with 401 before the upgrade, on REST and
 * the WebSocket handshake alike, and on the live connection's `refresh`.
 */

const HMAC_SECRET = 'the-backend-signs-with-this-secret-0123456789'

describe('hostile: identity provider tokens', () => {
  it('refuses an HS256 token signed with the RSA public key\'s PEM (algorithm confusion), alg none and header-embedded keys', async (t) => {
    const rsa = await idpKey('RS256', 'rsa-1')
    const jwks = await jwksServer(t, [rsa.publicJwk])
    // The most permissive pinning an operator may choose: every public-key algorithm, and HMAC
    // too (with its own secret). The public key must still never serve as an HMAC key.
    const servers = [
      await build(t, { env: jwksEnv(jwks, { IDP_ALGORITHMS: 'RS256' }) }),
      await build(t, { env: jwksEnv(jwks, { IDP_ALGORITHMS: 'RS256,PS256,ES256,EdDSA,HS256,HS384,HS512', IDP_HMAC_SECRET: HMAC_SECRET }) })
    ]
    // The attacker's own key pair, published in the token's header under the provider's kid.
    const attacker = await idpKey('RS256', 'rsa-1')
    const embedded = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1', jwk: { kty: attacker.publicJwk.kty!, n: attacker.publicJwk.n!, e: attacker.publicJwk.e! } })
      .setIssuer(ISSUER).setAudience(AUDIENCE).setSubject('admin').setIssuedAt().setExpirationTime('5m')
      .sign(attacker.privateKey)
    const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
    const attacks: Record<string, string> = {
      'HS256 keyed with the PEM': await hmacToken(rsa.publicPem, 'admin', { kid: 'rsa-1' }),
      'HS256 keyed with the PEM, no kid': await hmacToken(rsa.publicPem, 'admin'),
      'HS256 keyed with the JWK\'s modulus': await hmacToken(Buffer.from(rsa.publicJwk.n!, 'base64url'), 'admin'),
      'HS512 keyed with the PEM': await hmacToken(rsa.publicPem, 'admin', { alg: 'HS512' }),
      'alg none': unsecuredToken('admin'),
      'alg none, signature kept': `${b64({ alg: 'none' })}.${embedded.split('.')[1]!}.${embedded.split('.')[2]!}`,
      'a key embedded in the header': embedded,
      'the provider\'s issuer, HS256 with JWT_SECRET': await hmacToken(TEST_JWT_SECRET, 'admin'),
      'Switchboard\'s issuer, signed by the provider\'s key': await idpToken(rsa, 'admin', { issuer: 'switchboard', claims: { role: 'admin', jti: 'j', sid: 's' } })
    }
    for (const srv of servers) {
      const good = await idpToken(rsa, 'ada')
      assert.equal((await srv.request('GET', '/auth/me', { token: good })).status, 200)
      const live = await wsConnect(t, srv, { token: good })
      for (const [attack, token] of Object.entries(attacks)) {
        const res = await srv.request('GET', '/auth/me', { token })
        assert.equal(res.status, 401, `${attack}: ${res.text}`)
        assertErrorBody(res.body, 401, 'SB_ERR_INVALID_TOKEN')
        const refused = await refusal(t, srv, { token })
        assert.equal(refused.status, 401, attack)
        assertCommandError(await live.command({ type: 'refresh', token }), 'unauthorized')
      }
      assert.equal((await srv.request('GET', '/auth/me', { token: good })).status, 200, 'still serving')
    }
  })

  it('a token never crosses from one verifier to the other: routed by issuer, refused by that verifier alone', async (t) => {
    const srv = await build(t, { env: { IDP_HMAC_SECRET: HMAC_SECRET, IDP_ISSUER: ISSUER, IDP_AUDIENCE: AUDIENCE } })
    const now = nowSeconds()
    const attacks: Record<string, string> = {
      // Switchboard's claims and issuer, signed with the backend's secret: the own verifier refuses it.
      'own issuer, IDP_HMAC_SECRET': hs256(HMAC_SECRET, { iss: 'switchboard', sub: 'alice', role: 'admin', jti: 'j', sid: 's', iat: now, exp: now + 600 }),
      // The provider's issuer, signed with JWT_SECRET (as Switchboard signs): the provider's verifier refuses it.
      'provider issuer, JWT_SECRET': signedToken({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', role: 'admin', jti: 'j', sid: 's', iat: now, exp: now + 600 }),
      'no issuer': hs256(HMAC_SECRET, { aud: AUDIENCE, sub: 'alice', iat: now, exp: now + 600 }),
      'an issuer array': hs256(HMAC_SECRET, { iss: [ISSUER, 'switchboard'], aud: AUDIENCE, sub: 'alice', iat: now, exp: now + 600 }),
      'no exp': hs256(HMAC_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: now }),
      'nbf in the future': hs256(HMAC_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: now, nbf: now + 3600, exp: now + 7200 }),
      'control characters in sub': hs256(HMAC_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: 'alice\r\nadmin', iat: now, exp: now + 600 }),
      'garbage payload': `${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from('not json').toString('base64url')}.AAAA`,
      'over 8 KiB': hs256(HMAC_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: 'alice', pad: 'x'.repeat(9000), iat: now, exp: now + 600 })
    }
    for (const [attack, token] of Object.entries(attacks)) {
      const res = await srv.request('GET', '/auth/me', { token })
      assert.equal(res.status, 401, `${attack}: ${res.text}`)
      assert.equal((await refusal(t, srv, { token })).status, 401, attack)
    }
    // The genuine article of each works.
    assert.equal((await srv.request('GET', '/auth/me', { token: hs256(HMAC_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: now, exp: now + 600 }) })).body.user.id, 'ext:alice')
    assert.equal((await srv.request('GET', '/auth/me', { token: await srv.userToken('alice') })).body.user.id, 'alice')
  })
})

function hs256 (secret: string, claims: Record<string, unknown>): string {
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const head = b64({ alg: 'HS256', typ: 'JWT' })
  const body = b64(claims)
  return `${head}.${body}.${createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')}`
}
