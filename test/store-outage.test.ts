import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { build, skipUnlessStore, TEST_DATABASE_URL, wsConnect } from './helper.js'

/**
 * A TCP proxy between the app and the machine's PostgreSQL that the test can cut and restore:
 * an outage as the app sees it (network partition, database restart) without stopping the
 * PostgreSQL other tests share.
 */
async function cuttableProxy (t: TestContext, target: { host: string, port: number }): Promise<{ port: number, cut: () => Promise<void>, restore: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  let server: net.Server | undefined
  let port = 0
  const listen = (): Promise<void> => new Promise((resolve) => {
    server = net.createServer((client) => {
      const upstream = net.connect(target.port, target.host)
      for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}) }
      client.pipe(upstream).pipe(client)
    })
    server.listen(port, '127.0.0.1', () => {
      port = (server!.address() as net.AddressInfo).port
      resolve()
    })
  })
  await listen()
  const cut = async (): Promise<void> => {
    await new Promise<void>(resolve => { server!.close(() => resolve()); for (const s of sockets) s.destroy() })
  }
  t.after(cut)
  return { port, cut, restore: listen }
}

describe('PostgreSQL outage (BAR: dependencies fail fast, readiness tells)', { skip: await skipUnlessStore('postgres') }, () => {
  it('requests that need the database answer 503 while it is unreachable, readiness turns 503, and both recover', async (t) => {
    const target = new URL(TEST_DATABASE_URL)
    const proxy = await cuttableProxy(t, { host: target.hostname, port: Number(target.port || 5432) })
    const viaProxy = new URL(TEST_DATABASE_URL)
    viaProxy.hostname = '127.0.0.1'
    viaProxy.port = String(proxy.port)
    const schema = `t_${randomBytes(6).toString('hex')}`
    t.after(async () => {
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
      await client.connect()
      try { await client.query(`drop schema if exists ${schema} cascade`) } finally { await client.end() }
    })
    const server = await build(t, { env: { DATABASE_URL: viaProxy.toString(), DATABASE_SCHEMA: schema } })
    const token = await server.userToken('alice')
    assert.equal((await server.request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    const admin = await server.userToken('root', 'admin')
    const created = await server.request('POST', '/api-keys', { token: admin, body: { name: 'svc', scopes: ['subscribe:*'] } })
    assert.equal(created.status, 201, created.text)

    await proxy.cut()
    const rooms = await server.request('GET', '/rooms', { token })
    assert.equal(rooms.status, 503, rooms.text)
    assert.equal(rooms.body.code, 'SB_ERR_UNAVAILABLE')
    const ready = await server.request('GET', '/health/ready')
    assert.equal(ready.status, 503)
    assert.equal(ready.body.checks.store.ok, false)
    assert.equal((await server.request('GET', '/health/live')).status, 200)
    const publish = await server.request('POST', '/rooms/lobby/messages', { token, body: { data: 'x' } })
    assert.equal(publish.status, 503, publish.text)
    // A WebSocket handshake with an API key needs the store: 503 with the store's code, not
    // a 500. One with a JWT does not, and is still welcomed.
    await assert.rejects(wsConnect(t, server, { apiKey: created.body.key as string }), (err: { statusCode?: number, body?: string }) => {
      assert.equal(err.statusCode, 503)
      assert.equal((JSON.parse(err.body ?? '{}') as { code?: string }).code, 'SB_ERR_UNAVAILABLE')
      return true
    })
    const viaToken = await wsConnect(t, server, { token })
    assert.equal(viaToken.welcome.user.id, 'alice')

    await proxy.restore()
    const deadline = Date.now() + 15_000
    let status = 0
    while (Date.now() < deadline && status !== 200) {
      status = (await server.request('GET', '/rooms', { token })).status
      if (status !== 200) await new Promise(resolve => setTimeout(resolve, 100))
    }
    assert.equal(status, 200)
    assert.equal((await server.request('GET', '/health/ready')).status, 200)
  })
})
