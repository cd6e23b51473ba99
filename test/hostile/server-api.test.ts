import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { build, wsConnect } from '../helper.js'
import { assertErrorBody, createApiKey } from '../ws-support.js'

/*
 * The server API for backends against what a client controls: its credentials (a key without
 * the admin scope, a revoked key, a user who wants to become one), the broadcast body and the
 * listing query. Every answer is a 4xx with the one error shape; nothing is published by a
 * refused call; the process stays up.
 */

describe('hostile: server API', () => {
  it('nobody below the admin scope gets in, and the scope cannot be gained or outlive its key', async (t) => {
    const srv = await build(t)
    const admin = await createApiKey(srv, ['admin'])
    const alice = await srv.userToken('alice')
    // An ordinary user cannot make a key at all, let alone an admin one.
    assertErrorBody((await srv.request('POST', '/api-keys', { token: alice, body: { name: 'mine', scopes: ['admin'] } })).body, 403, 'SB_ERR_FORBIDDEN')
    // The admin scope cannot mint keys, read users, or manage rooms.
    assertErrorBody((await srv.request('POST', '/api-keys', { apiKey: admin.key, body: { name: 'more', scopes: ['admin'] } })).body, 403, 'SB_ERR_FORBIDDEN')
    assertErrorBody((await srv.request('GET', '/api-keys', { apiKey: admin.key })).body, 403, 'SB_ERR_FORBIDDEN')
    assertErrorBody((await srv.request('POST', '/rooms', { apiKey: admin.key, body: { id: 'mine' } })).body, 403, 'SB_ERR_FORBIDDEN')
    // A forged-looking key, or the admin key with a character changed, is nobody.
    const forged = admin.key.slice(0, -1) + (admin.key.endsWith('A') ? 'B' : 'A')
    assertErrorBody((await srv.request('GET', '/admin/nodes', { apiKey: forged })).body, 401, 'SB_ERR_INVALID_TOKEN')
    // Revoked: the next call is refused.
    const root = await srv.login('root')
    const keys = await srv.request('GET', '/api-keys', { token: root })
    const id = (keys.body.items as Array<{ id: string, scopes: string[] }>).find(k => k.scopes.includes('admin'))!.id
    assert.equal((await srv.request('DELETE', `/api-keys/${id}`, { token: root })).status, 204)
    assertErrorBody((await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['user:alice'], data: 1 } })).body, 401, 'SB_ERR_INVALID_TOKEN')
    // The key does not even show in the logs.
    assert.equal(srv.logText().includes(admin.key), false)
  })

  it('broadcast bodies that are wrong in every way get a 400 or 413, publish nothing, and leave Object.prototype alone', async (t) => {
    const srv = await build(t, { env: { BROADCAST_MAX_ROOMS: '10', WS_MAX_MESSAGE_BYTES: '4096' } })
    const admin = await createApiKey(srv, ['admin'])
    const alice = await srv.userToken('alice')
    const watcher = await wsConnect(t, srv, { token: alice })
    assert.equal((await watcher.command({ type: 'subscribe', room: 'user:alice' })).type, 'reply')
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort()

    const deep: unknown = Array.from({ length: 200 }).reduce<unknown>((inner) => ({ a: inner }), 1)
    const bodies: unknown[] = [
      {},
      { data: 1 },
      { rooms: 'user:alice', data: 1 },
      { rooms: [], data: 1 },
      { rooms: ['user:alice'] },
      { rooms: Array.from({ length: 11 }, (_, i) => `r${i}`), data: 1 },
      { rooms: Array.from({ length: 50_000 }, (_, i) => `r${i}`), data: 1 },
      { rooms: ['../etc'], data: 1 },
      { rooms: ['UPPER'], data: 1 },
      { rooms: ['x'.repeat(65)], data: 1 },
      { rooms: [1], data: 1 },
      { rooms: [{ __proto__: 'x' }], data: 1 },
      { rooms: ['user:alice'], data: 1, extra: true },
      { rooms: ['user:alice'], data: 1, encoding: 'hex' },
      { rooms: ['user:alice'], data: 1, encoding: 'base64' },
      { rooms: ['user:alice'], data: '***', encoding: 'base64' },
      { rooms: ['user:alice'], data: deep },
      { rooms: ['user:alice'], data: 'x'.repeat(5000) },
      { rooms: ['user:alice'], data: Buffer.alloc(5000).toString('base64'), encoding: 'base64' },
      { rooms: ['user:alice'], data: 1, idempotencyKey: '' },
      { rooms: ['user:alice'], data: 1, idempotencyKey: 'k'.repeat(500) }
    ]
    for (const body of bodies) {
      const res = await srv.request('POST', '/broadcast', { apiKey: admin.key, body })
      assert.ok(res.status === 400 || res.status === 413, `${JSON.stringify(body).slice(0, 120)}: ${res.status} ${res.text.slice(0, 200)}`)
      assert.equal(typeof res.body.code, 'string')
    }
    // Not JSON, or JSON of the wrong kind.
    for (const [type, text] of [['application/json', '{"rooms":'], ['text/plain', 'hello'], ['application/json', 'null'], ['application/json', '[]']]) {
      const res = await srv.request('POST', '/broadcast', { apiKey: admin.key, headers: { 'content-type': type! }, body: text })
      assert.ok(res.status >= 400 && res.status < 500, `${type} ${text}: ${res.status}`)
    }
    // __proto__ and friends in data: refused by the JSON parser (prototype poisoning) or
    // published as data; never a 5xx, never a prototype touched.
    let published = 0
    await fc.assert(fc.asyncProperty(fc.constantFrom('__proto__', 'constructor', 'prototype'), fc.jsonValue({ maxDepth: 3 }), async (key, value) => {
      const text = `{"rooms":["user:alice"],"data":{"${key}":${JSON.stringify(value)}}}`
      const res = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: text })
      assert.ok(res.status === 200 || res.status === 400, `${text}: ${res.status} ${res.text}`)
      if (res.status === 200) published++
    }), { numRuns: 20 })
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)

    // Only what answered 200 published: the refused bodies published nothing.
    const last = await srv.request('POST', '/broadcast', { apiKey: admin.key, body: { rooms: ['user:alice'], data: 'end' } })
    assert.equal(last.body.results[0].offset, published + 1)
    await watcher.next(f => f.type === 'message' && f.offset === published + 1)
    assert.equal(watcher.frames.filter(f => f.type === 'message').length, published + 1)
    assert.equal((await srv.request('GET', '/health/live')).status, 200)
  })

  it('listing queries and path parameters out of bounds are 400', async (t) => {
    const srv = await build(t)
    const admin = await createApiKey(srv, ['admin'])
    for (const path of [
      '/admin/rooms?limit=0', '/admin/rooms?limit=100000', '/admin/rooms?limit=abc', '/admin/rooms?prefix=%2A', '/admin/rooms?prefix=' + 'a'.repeat(65),
      '/admin/rooms?other=1', '/admin/rooms?prefix=a&prefix=b',
      '/admin/rooms/NOPE/stats', '/admin/rooms/' + 'x'.repeat(65) + '/stats'
    ]) {
      const res = await srv.request('GET', path, { apiKey: admin.key })
      assertErrorBody(res.body, 400, 'SB_ERR_VALIDATION')
    }
    for (const path of ['/admin/rooms/lobby/subscriptions/..%2F..', '/admin/users/%00/connections']) {
      const res = await srv.request('DELETE', path, { apiKey: admin.key })
      assertErrorBody(res.body, 400, 'SB_ERR_VALIDATION')
    }
    // A parameter past the router's bound is refused before any handler (414).
    const long = await srv.request('DELETE', '/admin/rooms/lobby/subscriptions/' + 'u'.repeat(300), { apiKey: admin.key })
    assert.equal(long.status, 414)
  })
})
