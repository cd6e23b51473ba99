import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { IncomingHttpHeaders } from 'node:http'
import fc from 'fast-check'
import { readCredentials, type CredentialChannel, type Credentials } from '../../src/auth/credentials.js'
import { ABSENT, REPEATED, decodeQueryComponent, queryParam } from '../../src/url-query.js'
import { redactUrl } from '../../src/logger.js'

const key = 'sbk_' + 'a'.repeat(40)

/** [what, channel, headers, url, expected] */
const CASES: Array<[string, CredentialChannel, IncomingHttpHeaders, string, Credentials]> = [
  ['nothing', 'http', {}, '/rooms', { kind: 'none' }],
  ['nothing on the handshake', 'websocket', {}, '/ws', { kind: 'none' }],
  ['bearer header', 'http', { authorization: 'Bearer abc.def' }, '/', { kind: 'token', token: 'abc.def', from: 'authorization' }],
  ['bearer, any case, extra spaces', 'websocket', { authorization: 'bEaReR   abc  ' }, '/ws', { kind: 'token', token: 'abc', from: 'authorization' }],
  ['another scheme', 'http', { authorization: 'Basic YWxpY2U6eA==' }, '/', { kind: 'malformed', from: 'authorization' }],
  ['bearer without a token', 'http', { authorization: 'Bearer ' }, '/', { kind: 'malformed', from: 'authorization' }],
  ['two tokens in one header', 'http', { authorization: 'Bearer a b' }, '/', { kind: 'malformed', from: 'authorization' }],
  ['empty Authorization', 'websocket', { authorization: '' }, '/ws?token=t', { kind: 'malformed', from: 'authorization' }],
  ['Authorization wins over an API key', 'http', { authorization: 'Bearer t', 'x-api-key': key }, '/', { kind: 'token', token: 't', from: 'authorization' }],
  ['a malformed Authorization is not skipped for a key', 'http', { authorization: 'Token t', 'x-api-key': key }, '/', { kind: 'malformed', from: 'authorization' }],
  ['API key header', 'http', { 'x-api-key': key }, '/', { kind: 'apiKey', key, from: 'x-api-key' }],
  ['empty API key header', 'http', { 'x-api-key': '' }, '/', { kind: 'apiKey', key: '', from: 'x-api-key' }],
  ['oversized API key', 'http', { 'x-api-key': 'k'.repeat(257) }, '/', { kind: 'malformed', from: 'x-api-key' }],
  ['API key of the largest size', 'http', { 'x-api-key': 'k'.repeat(256) }, '/', { kind: 'apiKey', key: 'k'.repeat(256), from: 'x-api-key' }],
  // REST reads headers only.
  ['REST ignores the subprotocol', 'http', { 'sec-websocket-protocol': 'switchboard.v1, bearer.t' }, '/', { kind: 'none' }],
  ['REST ignores ?token=', 'http', {}, '/rooms?token=t', { kind: 'none' }],
  ['REST ignores ?api_key=', 'http', {}, '/rooms?api_key=k', { kind: 'none' }],
  // The handshake's other sources, in order.
  ['subprotocol', 'websocket', { 'sec-websocket-protocol': 'switchboard.v1, bearer.abc' }, '/ws', { kind: 'token', token: 'abc', from: 'subprotocol' }],
  ['subprotocol, spaces and first entry', 'websocket', { 'sec-websocket-protocol': ' bearer.one ,bearer.two, switchboard.v1' }, '/ws', { kind: 'token', token: 'one', from: 'subprotocol' }],
  ['subprotocol with an empty token', 'websocket', { 'sec-websocket-protocol': 'switchboard.v1,bearer.' }, '/ws?token=t', { kind: 'token', token: '', from: 'subprotocol' }],
  ['subprotocol without a bearer entry', 'websocket', { 'sec-websocket-protocol': 'switchboard.v1' }, '/ws?token=t', { kind: 'token', token: 't', from: 'query' }],
  ['Authorization wins over the subprotocol', 'websocket', { authorization: 'Bearer h', 'sec-websocket-protocol': 'bearer.p' }, '/ws', { kind: 'token', token: 'h', from: 'authorization' }],
  ['subprotocol wins over ?token=', 'websocket', { 'sec-websocket-protocol': 'bearer.p' }, '/ws?token=q&token=r', { kind: 'token', token: 'p', from: 'subprotocol' }],
  ['?token=', 'websocket', {}, '/ws?token=abc', { kind: 'token', token: 'abc', from: 'query' }],
  ['?token= empty', 'websocket', {}, '/ws?token=', { kind: 'token', token: '', from: 'query' }],
  ['?token without =', 'websocket', {}, '/ws?token', { kind: 'token', token: '', from: 'query' }],
  ['?token= twice', 'websocket', {}, '/ws?token=a&token=a', { kind: 'malformed', from: 'query' }],
  ['percent-encoded name', 'websocket', {}, '/ws?tok%65n=abc', { kind: 'token', token: 'abc', from: 'query' }],
  ['percent-encoded name, twice', 'websocket', {}, '/ws?token=a&%74oken=b', { kind: 'malformed', from: 'query' }],
  ['names are case-sensitive', 'websocket', {}, '/ws?TOKEN=abc', { kind: 'none' }],
  ['a second ? is dropped, as URLSearchParams does', 'websocket', {}, '/ws??token=abc', { kind: 'token', token: 'abc', from: 'query' }],
  ['value decoded', 'websocket', {}, '/ws?token=a%2Bb+c%3D', { kind: 'token', token: 'a+b c=', from: 'query' }],
  ['value with =', 'websocket', {}, '/ws?token=a=b', { kind: 'token', token: 'a=b', from: 'query' }],
  ['?token= wins over keys', 'websocket', { 'x-api-key': key }, '/ws?token=t&api_key=k&api_key=k', { kind: 'token', token: 't', from: 'query' }],
  ['X-API-Key on the handshake', 'websocket', { 'x-api-key': key }, '/ws', { kind: 'apiKey', key, from: 'x-api-key' }],
  ['X-API-Key wins over ?api_key= (even twice)', 'websocket', { 'x-api-key': key }, '/ws?api_key=a&api_key=b', { kind: 'apiKey', key, from: 'x-api-key' }],
  ['?api_key=', 'websocket', {}, `/ws?x=1&api_key=${encodeURIComponent(key)}`, { kind: 'apiKey', key, from: 'query' }],
  ['?api%5Fkey=', 'websocket', {}, '/ws?api%5Fkey=k', { kind: 'apiKey', key: 'k', from: 'query' }],
  ['?api_key= twice', 'websocket', {}, '/ws?api_key=a&api_key=b', { kind: 'malformed', from: 'query' }],
  ['?api_key= oversized', 'websocket', {}, `/ws?api_key=${'k'.repeat(300)}`, { kind: 'malformed', from: 'query' }],
  ['other parameters only', 'websocket', {}, '/ws?since=1&&=x&a', { kind: 'none' }]
]

describe('readCredentials', () => {
  for (const [what, channel, headers, url, expected] of CASES) {
    it(what, () => {
      assert.deepEqual(readCredentials({ headers, url }, channel), expected)
    })
  }
})

/** Query text with the characters that matter to splitting and decoding. */
const queryText = fc.string({ unit: fc.constantFrom('t', 'o', 'k', 'e', 'n', '_', 'a', 'p', 'i', '=', '&', '?', '%', '6', '5', 'F', '+', '#', ' '), maxLength: 30 })

describe('url-query', () => {
  it('queryParam reads what URLSearchParams reads', () => {
    fc.assert(fc.property(queryText, fc.constantFrom('token', 'api_key', 'a'), (query, name) => {
      const all = new URLSearchParams(query).getAll(name)
      const expected = all.length === 0 ? ABSENT : all.length > 1 ? REPEATED : all[0]
      assert.equal(queryParam(`/ws?${query}`, name), expected)
    }), { numRuns: 2000 })
  })

  it('decodes names and values as URLSearchParams does', () => {
    for (const raw of ['a', 'a+b', '%41', '%', '%zz', '%E2%82%AC', '%C3', 'x=y']) {
      assert.equal(decodeQueryComponent(raw), new URLSearchParams(`v=${raw}`).get('v'), raw)
    }
  })

  it('the logs redact every credential the handshake accepts from the query', () => {
    fc.assert(fc.property(queryText, fc.string({ minLength: 1, maxLength: 8, unit: fc.constantFrom('s', 'e', 'c', 'r', 't') }), (query, secret) => {
      const url = `/ws?${query}&token=${secret}Z`
      const read = readCredentials({ headers: {}, url }, 'websocket')
      if (read.kind === 'token' || read.kind === 'apiKey') {
        const value = read.kind === 'token' ? read.token : read.key
        if (value.length > 0) assert.ok(!redactUrl(url).includes(value), `${url} → ${redactUrl(url)}`)
      }
    }), { numRuns: 2000 })
  })
})
