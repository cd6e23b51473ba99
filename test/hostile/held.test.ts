// Attacks the server held before the hardening work (issue #19), kept here so that they keep
// holding: forged tokens at every door, and room ids built to escape their namespace. Each
// asserts the clear refusal, that the process still serves, and that memory comes back.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import http from 'node:http'
import { build, TEST_JWT_SECRET, wsConnect, type TestApp } from '../helper.js'
import { b64, refusal, signedToken } from '../ws-support.js'
import { assertRssBack, settledRss } from './support.js'

const nowSeconds = (): number => Math.floor(Date.now() / 1000)

/** A token with any header, signed by HMAC-`hash` with `secret`: the forger's tool. */
function forged (header: Record<string, unknown>, claims: Record<string, unknown> | string, hash = 'sha256', secret = TEST_JWT_SECRET): string {
  const head = b64(header)
  const body = typeof claims === 'string' ? Buffer.from(claims).toString('base64url') : b64(claims)
  return `${head}.${body}.${createHmac(hash, secret).update(`${head}.${body}`).digest('base64url')}`
}

/**
 * A GET whose path goes out exactly as written: fetch and URL resolve `..` and `%2e%2e` before
 * sending, and a traversal attempt is only one when the server sees it.
 */
function rawGet (srv: TestApp, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(srv.url)
    const req = http.request({ hostname, port, path, method: 'GET', headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })
}

async function assertServing (srv: TestApp): Promise<void> {
  assert.equal((await srv.request('GET', '/health/live')).status, 200)
}

describe('hostile: forged and broken tokens', () => {
  it('every forged, expired or oversized token is refused on REST and before the upgrade, never with a 5xx', async (t) => {
    const srv = await build(t)
    await srv.createUser('alice')
    const baseline = await settledRss()
    const now = nowSeconds()
    const claims = { iss: 'switchboard', sub: 'alice', role: 'user', jti: 'j-1', sid: 's-1', iat: now, exp: now + 600 }
    const { exp: _exp, ...withoutExp } = claims
    const tokens: Record<string, string> = {
      'alg none': `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`,
      'HS512 with the right secret': forged({ alg: 'HS512', typ: 'JWT' }, claims, 'sha512'),
      'RS256 header over an HMAC signature (algorithm confusion)': forged({ alg: 'RS256', typ: 'JWT' }, claims),
      'a crit extension': forged({ alg: 'HS256', typ: 'JWT', crit: ['exp'] }, claims),
      'the wrong secret': forged({ alg: 'HS256', typ: 'JWT' }, claims, 'sha256', 'not-the-server-secret-but-long-enough-0123456789'),
      expired: signedToken({ ...claims, iat: now - 7200, exp: now - 3600 }),
      'not valid yet': signedToken({ ...claims, nbf: now + 3600 }),
      'another issuer': signedToken({ ...claims, iss: 'someone-else' }),
      'no exp': signedToken(withoutExp),
      'no session': signedToken({ ...claims, sid: undefined }),
      'a user who does not exist': signedToken({ ...claims, sub: 'nobody' }),
      '__proto__ in the claims': forged({ alg: 'HS256', typ: 'JWT' }, `{"__proto__":{"role":"admin"},"iss":"switchboard","sub":"alice","jti":"j","sid":"s","iat":${now},"exp":${now + 600}}`),
      'not a JWT': 'a.b.c',
      'base64 garbage': `${'!'.repeat(40)}.${'?'.repeat(40)}.${'*'.repeat(40)}`
    }
    // The same claims properly signed are accepted: the refusals above are the forgeries', not the test's.
    assert.equal((await srv.request('GET', '/rooms', { token: signedToken(claims) })).status, 200)

    for (const [name, token] of Object.entries(tokens)) {
      const rest = await srv.request('GET', '/rooms', { token })
      assert.equal(rest.status, 401, `REST, ${name}: ${JSON.stringify(rest.body)}`)
      const ws = await refusal(t, srv, { token })
      assert.equal(ws.status, 401, `handshake, ${name}: ${JSON.stringify(ws.body)}`)
    }
    // 200 KB of token: refused whole, by the header limit or the token limit, never parsed into a 5xx.
    const huge = signedToken({ ...claims, pad: 'x'.repeat(200 * 1024) })
    const rest = await srv.request('GET', '/rooms', { token: huge }).catch(() => ({ status: 0 }))
    assert.ok(rest.status === 0 || (rest.status >= 400 && rest.status < 500), `REST, 200 KB token: ${rest.status}`)
    const ws = await refusal(t, srv, { token: huge }).catch(() => ({ status: 0 }))
    assert.ok(ws.status === 0 || (ws.status >= 400 && ws.status < 500), `handshake, 200 KB token: ${ws.status}`)

    assert.equal(({} as Record<string, unknown>).role, undefined, 'Object.prototype untouched')
    await assertServing(srv)
    await assertRssBack(baseline, 'forged tokens')
  })
})

describe('hostile: room ids built to escape', () => {
  it('traversal, encodings, control characters, oversize ids and other users\' personal rooms: 4xx on REST, an error frame on the socket, nothing created', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    await srv.createUser('bob')
    const baseline = await settledRss()
    const ids = ['..', '../admin', '..%2F..%2Fetc%2Fpasswd', '%2e%2e', 'lobby%00', 'lobby\u0000', 'LOBBY', 'a'.repeat(300),
      'user:..', 'x\r\nX-Injected: 1', '__proto__', ' lobby', 'lobby/../admin', 'ns:\u202eevil']

    for (const id of ids) {
      const created = await srv.request('POST', '/rooms', { token: alice, body: { id } })
      assert.ok(created.status >= 400 && created.status < 500, `POST /rooms ${JSON.stringify(id)}: ${created.status}`)
      for (const path of [`/rooms/${encodeURIComponent(id)}`, `/rooms/${encodeURIComponent(id).replaceAll('.', '%2E')}/members`]) {
        const status = await rawGet(srv, path, alice)
        assert.ok(status >= 400 && status < 500, `GET ${path}: ${status}`)
      }
    }
    // Another user's personal room is refused by rule, not by shape.
    const personal = await srv.request('POST', '/rooms', { token: alice, body: { id: 'user:bob' } })
    assert.equal(personal.status, 403)

    const client = await wsConnect(t, srv, { token: alice })
    for (const room of [...ids, 'user:bob']) {
      const answer = await client.command({ type: 'subscribe', room })
      assert.equal(answer.type, 'error', `subscribe ${JSON.stringify(room)}: ${JSON.stringify(answer)}`)
      assert.ok(['bad_request', 'forbidden', 'not_found'].includes(answer.error.code as string), JSON.stringify(answer))
    }
    const rooms = await srv.request('GET', '/rooms', { token: alice })
    assert.deepEqual(rooms.body.items, [], 'nothing was created')
    await assertServing(srv)
    await assertRssBack(baseline, 'room id injection')
  })
})
