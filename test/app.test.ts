import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { build } from './helper.js'
import { buildAsyncApi } from '@switchboard/protocol/asyncapi'

describe('health', () => {
  it('liveness is 200; readiness is 200 with every check listed', async (t) => {
    const { request } = await build(t)
    assert.deepEqual((await request('GET', '/health/live')).body, { status: 'ok' })
    const ready = await request('GET', '/health/ready')
    assert.equal(ready.status, 200)
    assert.deepEqual(ready.body, { status: 'ready', checks: { shutdown: { ok: true }, store: { ok: true } } })
  })

  it('readiness turns 503 naming the check as soon as shutdown begins, while liveness stays 200', async (t) => {
    const { request, app } = await build(t)
    app.lifecycle.beginShutdown()
    const ready = await request('GET', '/health/ready')
    assert.equal(ready.status, 503)
    assert.equal(ready.body.status, 'not_ready')
    assert.equal(ready.body.checks.shutdown.ok, false)
    assert.equal((await request('GET', '/health/live')).status, 200)
  })

  it('readiness is 503 when the store does not answer', async (t) => {
    const { request, app } = await build(t)
    await app.store.close()
    const ready = await request('GET', '/health/ready')
    assert.equal(ready.status, 503)
    assert.equal(ready.body.checks.store.ok, false)
    assert.equal(ready.body.checks.shutdown.ok, true)
  })
})

describe('errors and hardening', () => {
  it('unknown routes get the JSON error shape and are rate limited', async (t) => {
    const { request } = await build(t, { env: { RATE_LIMIT_MAX: '3' } })
    const first = await request('GET', '/nope?token=abc')
    assert.equal(first.status, 404)
    assert.deepEqual(first.body, { statusCode: 404, code: 'SB_ERR_NOT_FOUND', error: 'Not Found', message: 'Route GET /nope not found' })
    let last = first
    for (let i = 0; i < 4; i++) last = await request('GET', '/nope')
    assert.equal(last.status, 429)
    assert.equal(last.body.code, 'SB_ERR_RATE_LIMITED')
  })

  it('health probes are never rate limited', async (t) => {
    const { request } = await build(t, { env: { RATE_LIMIT_MAX: '2' } })
    for (let i = 0; i < 6; i++) assert.equal((await request('GET', '/health/live')).status, 200)
    for (let i = 0; i < 6; i++) assert.equal((await request('GET', '/health')).status, 200)
  })

  it('GET /health is readiness: 200 with the checks, 503 once shutdown begins', async (t) => {
    const { request, app } = await build(t)
    const ready = await request('GET', '/health')
    assert.equal(ready.status, 200)
    assert.equal(ready.body.status, 'ready')
    assert.deepEqual(ready.body, (await request('GET', '/health/ready')).body)
    app.lifecycle.beginShutdown()
    const draining = await request('GET', '/health')
    assert.equal(draining.status, 503)
    assert.equal(draining.body.status, 'not_ready')
  })

  it('a thrown internal error is 500 with a generic message; the log has the detail', async (t) => {
    const { request, app, logs } = await build(t)
    app.store.getRoom = async () => { throw new Error('disk on fire: /var/secret/path') }
    const token = await (async () => {
      await app.store.createUser({ id: 'alice', passwordHash: 'x', role: 'user' })
      return app.jwt.sign({ sub: 'alice', role: 'user', jti: 'j', sid: 's' })
    })()
    const res = await request('GET', '/rooms/lobby', { token })
    assert.equal(res.status, 500)
    assert.deepEqual(res.body, { statusCode: 500, code: 'SB_ERR_INTERNAL', error: 'Internal Server Error', message: 'Internal server error' })
    assert.ok(logs().some(l => JSON.stringify(l).includes('disk on fire')))
  })

  it('bad JSON, wrong content type and oversize bodies are 4xx', async (t) => {
    const { request } = await build(t)
    const bad = await request('POST', '/auth/login', { body: '{"username":', headers: { 'content-type': 'application/json' } })
    assert.equal(bad.status, 400)
    assert.equal(typeof bad.body.code, 'string')
    const type = await request('POST', '/auth/login', { body: 'username=a', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
    assert.equal(type.status, 415)
    assert.match(type.body.message, /send JSON with content-type: application\/json/)
    // A text body is not JSON either: 415, not a schema error about a string.
    const text = await request('POST', '/auth/login', { body: 'username=a', headers: { 'content-type': 'text/plain' } })
    assert.equal(text.status, 415)
    assert.match(text.body.message, /send JSON/)
    const big = await request('POST', '/auth/login', { body: JSON.stringify({ username: 'alice', password: 'x'.repeat(300 * 1024) }) })
    assert.equal(big.status, 413)
  })

  it('a validation error names the property, an unknown one included, and lists the allowed values', async (t) => {
    const { request, userToken } = await build(t)
    const token = await userToken('alice')
    const message = async (body: unknown): Promise<string> => {
      const res = await request('POST', '/rooms', { token, body })
      assert.equal(res.status, 400, JSON.stringify(res.body))
      assert.equal(res.body.code, 'SB_ERR_VALIDATION')
      return res.body.message as string
    }
    assert.equal(await message({ id: 'lobby', colour: 'red' }), 'body has an unknown property "colour"')
    assert.equal(await message({ id: 'lobby', visibility: 'secret' }), 'body/visibility must be one of "public", "private"')
    assert.equal(await message({ id: 'lobby', historySize: 'many' }), 'body/historySize must be integer')
    assert.equal(await message({}), 'body must have required property \'id\'')
  })

  it('sends helmet headers and CORS only for configured origins', async (t) => {
    const { request } = await build(t, { env: { CORS_ORIGINS: 'https://app.example.com' } })
    const res = await request('GET', '/health/live', { headers: { origin: 'https://app.example.com' } })
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
    assert.ok(res.headers.get('content-security-policy'))
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example.com')
    const foreign = await request('GET', '/health/live', { headers: { origin: 'https://evil.example.com' } })
    assert.equal(foreign.headers.get('access-control-allow-origin'), null)
  })
})

describe('OpenAPI', () => {
  it('documents every route with request and response schemas, and serves Swagger UI', async (t) => {
    const { request, app } = await build(t)
    const res = await request('GET', '/docs/json')
    assert.equal(res.status, 200)
    const doc = res.body
    assert.equal(doc.openapi, '3.1.0')
    const expected = [
      'post /auth/register', 'post /auth/login', 'post /auth/refresh', 'post /auth/logout', 'get /auth/me',
      'post /api-keys', 'get /api-keys', 'delete /api-keys/{id}',
      'post /rooms', 'get /rooms', 'get /rooms/{id}', 'patch /rooms/{id}', 'delete /rooms/{id}',
      'get /rooms/{id}/members', 'put /rooms/{id}/members/{userId}', 'delete /rooms/{id}/members/{userId}',
      'get /rooms/{id}/bans', 'put /rooms/{id}/bans/{userId}', 'delete /rooms/{id}/bans/{userId}',
      'get /users', 'get /health', 'get /health/live', 'get /health/ready'
    ]
    // Paths as the docs write them: no trailing slash on a collection.
    assert.deepEqual(Object.keys(doc.paths).filter(path => path.length > 1 && path.endsWith('/')), [])
    for (const route of expected) {
      const [method, path] = route.split(' ') as [string, string]
      const op = doc.paths[path]?.[method]
      assert.ok(op, `${route} is documented`)
      assert.ok(Object.keys(op.responses).length > 0, `${route} has responses`)
      for (const [status, response] of Object.entries(op.responses as Record<string, { content?: unknown }>)) {
        if (status !== '204') assert.ok(response.content, `${route} ${status} has a schema`)
      }
    }
    assert.ok(doc.components.schemas.ErrorResponse)
    // Every room setting is in the room's schema and in the bodies that set it.
    assert.equal(doc.components.schemas.Room.properties.presenceEvents.type, 'boolean')
    assert.equal(doc.paths['/rooms/{id}'].patch.requestBody.content['application/json'].schema.properties.presenceEvents.type, 'boolean')
    assert.equal(doc.paths['/rooms'].post.requestBody.content['application/json'].schema.properties.presenceEvents.type, 'boolean')
    const ui = await request('GET', '/docs/')
    assert.equal(ui.status, 200)
    assert.match(ui.text, /swagger/i)
    assert.ok(app.printRoutes().length > 0)
  })
})

describe('GET /docs/asyncapi.json', () => {
  it('serves the generated document', async (t) => {
    const { request } = await build(t)
    const res = await request('GET', '/docs/asyncapi.json')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
    assert.deepEqual(res.body, JSON.parse(JSON.stringify(buildAsyncApi({ version: res.body.info.version }))))
  })
})
