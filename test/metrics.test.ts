import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { build, sample, skipUnlessStore, TEST_DATABASE_URL, wsConnect } from './helper.js'
import { createMetrics } from '../src/metrics.js'
import { COMMAND_SCHEMAS } from '@switchboard/protocol/messages'
import type { RealtimeMetrics } from '../src/realtime/metrics.js'

const SWITCHBOARD_METRICS = [
  'switchboard_http_requests_total',
  'switchboard_http_request_duration_seconds',
  'switchboard_connections',
  'switchboard_connects_total',
  'switchboard_disconnects_total',
  'switchboard_messages_in_total',
  'switchboard_messages_out_total',
  'switchboard_bytes_out_total',
  'switchboard_publish_to_write_seconds',
  'switchboard_slow_consumer_cutoffs_total',
  'switchboard_auth_failures_total',
  'switchboard_rate_limited_total',
  'switchboard_recoveries_total',
  'switchboard_ping_rtt_seconds',
  'switchboard_room_authorizations_total',
  'switchboard_grant_renewals_total',
  'switchboard_ws_deflates_total',
  'switchboard_ws_deflate_seconds_total',
  'switchboard_ws_compressed_frames_total',
  'switchboard_ws_compression_saved_bytes_total'
]

/** Calls every method once, so every labelled series exists. */
function exercise (metrics: RealtimeMetrics): void {
  metrics.connectionOpened()
  metrics.connectionClosed(4008)
  metrics.connectionOpened()
  metrics.messageIn('publish')
  metrics.messagesOut(3, 300)
  metrics.publishToWrite(0.0002)
  metrics.slowConsumer()
  metrics.authFailure('expired')
  metrics.rateLimited('messages')
  metrics.recovery(true)
  metrics.pingRtt(0.004)
  metrics.roomAuthorization('shared')
  metrics.grantRenewal('superseded')
}


describe('GET /metrics', () => {
  it('serves every switchboard metric and the event-loop lag to a loopback scrape, in Prometheus text format', async (t) => {
    const { app, request } = await build(t)
    exercise(app.realtimeMetrics)
    const res = await request('GET', '/metrics')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    for (const name of SWITCHBOARD_METRICS) assert.match(res.text, new RegExp(`^# TYPE ${name} `, 'm'), name)
    assert.match(res.text, /^nodejs_eventloop_lag_p99_seconds \d/m)
    assert.match(res.text, /^nodejs_eventloop_lag_seconds \d/m)
    assert.match(res.text, /^process_cpu_seconds_total \d/m)

    assert.equal(sample(res.text, 'switchboard_connections'), 1)
    assert.equal(sample(res.text, 'switchboard_connects_total'), 2)
    assert.equal(sample(res.text, 'switchboard_disconnects_total{code="4008"}'), 1)
    assert.equal(sample(res.text, 'switchboard_messages_in_total{type="publish"}'), 1)
    assert.equal(sample(res.text, 'switchboard_messages_out_total'), 3)
    assert.equal(sample(res.text, 'switchboard_bytes_out_total'), 300)
    assert.equal(sample(res.text, 'switchboard_publish_to_write_seconds_bucket{le="0.00025"}'), 1)
    assert.equal(sample(res.text, 'switchboard_publish_to_write_seconds_bucket{le="0.0001"}'), 0)
    assert.equal(sample(res.text, 'switchboard_slow_consumer_cutoffs_total'), 1)
    assert.equal(sample(res.text, 'switchboard_auth_failures_total{reason="expired"}'), 1)
    assert.equal(sample(res.text, 'switchboard_rate_limited_total{scope="messages"}'), 1)
    assert.equal(sample(res.text, 'switchboard_recoveries_total{recovered="true"}'), 1)
    assert.equal(sample(res.text, 'switchboard_ping_rtt_seconds_count'), 1)
    assert.equal(sample(res.text, 'switchboard_room_authorizations_total{source="shared"}'), 1)
    assert.equal(sample(res.text, 'switchboard_room_authorizations_total{source="cache"}'), 0)
    assert.equal(sample(res.text, 'switchboard_grant_renewals_total{outcome="superseded"}'), 1)
    assert.equal(sample(res.text, 'switchboard_grant_renewals_total{outcome="failed"}'), 0)
  })

  it('counts what the real-time core does over a real WebSocket', async (t) => {
    const srv = await build(t)
    const token = await srv.userToken('alice')
    await srv.request('POST', '/rooms', { token, body: { id: 'lobby' } })
    await assert.rejects(wsConnect(t, srv), { statusCode: 401 })
    const client = await wsConnect(t, srv, { token })
    assert.equal((await client.command({ type: 'subscribe', room: 'lobby' })).type, 'reply')
    assert.equal((await client.command({ type: 'publish', room: 'lobby', data: 'hi' })).type, 'reply')
    await client.next(f => f.type === 'message')

    const open = (await srv.request('GET', '/metrics')).text
    assert.equal(sample(open, 'switchboard_connections'), 1)
    assert.equal(sample(open, 'switchboard_connects_total'), 1)
    assert.equal(sample(open, 'switchboard_auth_failures_total{reason="missing"}'), 1)
    assert.equal(sample(open, 'switchboard_messages_in_total{type="subscribe"}'), 1)
    assert.equal(sample(open, 'switchboard_messages_in_total{type="publish"}'), 1)
    assert.equal(sample(open, 'switchboard_messages_out_total'), 1)
    assert.ok((sample(open, 'switchboard_bytes_out_total') ?? 0) > 0)
    assert.equal(sample(open, 'switchboard_publish_to_write_seconds_count'), 1)

    client.socket.close(1000)
    await client.closed
    // The server counts the close when its side of the handshake completes; wait for it.
    let closed = ''
    for (let i = 0; i < 100 && sample(closed, 'switchboard_connections') !== 0; i++) {
      if (i > 0) await new Promise(resolve => setTimeout(resolve, 50))
      closed = (await srv.request('GET', '/metrics')).text
    }
    assert.equal(sample(closed, 'switchboard_connections'), 0)
    assert.equal(sample(closed, 'switchboard_disconnects_total{code="1000"}'), 1)
  })

  it('counts HTTP requests and their durations by route pattern and status; unknown paths share one label', async (t) => {
    const { request, userToken } = await build(t)
    const token = await userToken('alice')
    assert.equal((await request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    assert.equal((await request('POST', '/rooms/', { token, body: { id: 'attic2' } })).status, 201)
    for (const id of ['lobby', 'attic', 'cellar']) await request('GET', `/rooms/${id}`, { token })
    for (const path of ['/wp-login.php', '/.env', '/admin.php?x=1']) assert.equal((await request('GET', path)).status, 404)
    const text = (await request('GET', '/metrics')).text
    // With or without the slash, one route, one label (the path the docs use).
    assert.equal(sample(text, 'switchboard_http_requests_total{method="POST",route="/rooms",status_code="201"}'), 2, text)
    assert.equal(sample(text, 'switchboard_http_requests_total{method="GET",route="/rooms/:id",status_code="200"}'), 1)
    assert.equal(sample(text, 'switchboard_http_requests_total{method="GET",route="/rooms/:id",status_code="404"}'), 2)
    assert.equal(sample(text, 'switchboard_http_requests_total{method="GET",route="unmatched",status_code="404"}'), 3)
    assert.equal(sample(text, 'switchboard_http_request_duration_seconds_count{method="GET",route="/rooms/:id",status_code="404"}'), 2)
    assert.equal(sample(text, 'switchboard_http_request_duration_seconds_count{method="GET",route="unmatched",status_code="404"}'), 3)
    // No URL became a label.
    assert.doesNotMatch(text, /wp-login|attic|cellar/)
  })

  it('exports known label values as 0 before their first event, so rate() has a start', async (t) => {
    const { request } = await build(t)
    const { text } = await request('GET', '/metrics')
    assert.equal(sample(text, 'switchboard_recoveries_total{recovered="false"}'), 0)
    assert.equal(sample(text, 'switchboard_auth_failures_total{reason="origin"}'), 0)
    assert.equal(sample(text, 'switchboard_rate_limited_total{scope="connections_per_ip"}'), 0)
    assert.equal(sample(text, 'switchboard_messages_in_total{type="invalid"}'), 0)
    assert.equal(sample(text, 'switchboard_connections'), 0)
  })

  it('two apps in one process keep separate counts', async (t) => {
    const first = await build(t)
    const second = await build(t)
    first.app.realtimeMetrics.connectionOpened()
    first.app.realtimeMetrics.connectionOpened()
    second.app.realtimeMetrics.connectionOpened()
    const [a, b] = await Promise.all([first.request('GET', '/metrics'), second.request('GET', '/metrics')])
    assert.equal(sample(a.text, 'switchboard_connects_total'), 2)
    assert.equal(sample(b.text, 'switchboard_connects_total'), 1)
    // Process metrics are shared, and each registry lists them exactly once.
    assert.equal(b.text.match(/^# TYPE process_cpu_seconds_total /gm)?.length, 1)
  })

  it('from a non-loopback address: 401 without a token, 403 for a user, 200 for an admin', async (t) => {
    const { app, createUser } = await build(t)
    await createUser('alice')
    await createUser('root', 'admin')
    const remote = { method: 'GET' as const, url: '/metrics', remoteAddress: '203.0.113.9' }
    const anonymous = await app.inject(remote)
    assert.equal(anonymous.statusCode, 401)
    assert.equal(anonymous.json().code, 'SB_ERR_UNAUTHORIZED')
    const user = await app.inject({ ...remote, headers: { authorization: `Bearer ${app.jwt.sign({ sub: 'alice', role: 'user', jti: 'u1', sid: 's1' })}` } })
    assert.equal(user.statusCode, 403)
    const admin = await app.inject({ ...remote, headers: { authorization: `Bearer ${app.jwt.sign({ sub: 'root', role: 'admin', jti: 'a1', sid: 's2' })}` } })
    assert.equal(admin.statusCode, 200)
    assert.match(admin.body, /^# TYPE switchboard_connections gauge/m)
  })

  it('a remote Prometheus may present METRICS_TOKEN instead of an admin token', async (t) => {
    const token = 'scrape-secret-scrape-secret-scrape-secret'
    const { app } = await build(t, { env: { METRICS_TOKEN: token } })
    const remote = { method: 'GET' as const, url: '/metrics', remoteAddress: '203.0.113.9' }
    assert.equal((await app.inject({ ...remote, headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
    assert.equal((await app.inject({ ...remote, headers: { authorization: `Bearer ${token}x` } })).statusCode, 401)
    assert.equal((await app.inject({ ...remote, headers: { authorization: 'Bearer short' } })).statusCode, 401)
  })

  it('a request relayed by a proxy on the same host is not a local scrape', async (t) => {
    const { request } = await build(t)
    for (const header of ['x-forwarded-for', 'forwarded', 'x-real-ip']) {
      const res = await request('GET', '/metrics', { headers: { [header]: header === 'forwarded' ? 'for=198.51.100.7' : '198.51.100.7' } })
      assert.equal(res.status, 401, header)
    }
  })
})

describe('createMetrics', () => {
  it('bounds label values a client can influence', async () => {
    const metrics = createMetrics()
    metrics.realtime.messageIn('__proto__')
    metrics.realtime.messageIn('x'.repeat(1000))
    metrics.realtime.connectionClosed(4999)
    metrics.realtime.connectionClosed(3000)
    metrics.realtime.connectionClosed(1006)
    metrics.httpRequest('PROPFIND', undefined, 404, 0.001)
    metrics.httpRequest('M-SEARCH', undefined, 404, 0.001)
    const text = await metrics.scrape()
    metrics.close()
    assert.equal(sample(text, 'switchboard_messages_in_total{type="invalid"}'), 2)
    assert.equal(sample(text, 'switchboard_disconnects_total{code="other"}'), 2)
    assert.equal(sample(text, 'switchboard_disconnects_total{code="1006"}'), 1)
    // One series per command of the protocol and `invalid`, whatever a client sends.
    assert.equal(text.match(/^switchboard_messages_in_total\{/gm)?.length, Object.keys(COMMAND_SCHEMAS).length + 1, 'the command types and invalid')
    assert.equal(sample(text, 'switchboard_http_requests_total{method="other",route="unmatched",status_code="404"}'), 2)
  })
})

describe('GET /metrics: the PostgreSQL pool', { skip: await skipUnlessStore('postgres') }, () => {
  it('busy, idle and waiting, as the pool has them at the scrape; none on SQLite', async (t) => {
    const { app, request } = await build(t, { store: 'postgres', env: { DATABASE_POOL_MAX: '1' } })
    const idle = (await request('GET', '/metrics')).text
    assert.equal(sample(idle, 'switchboard_db_pool_connections{state="busy"}'), 0)
    assert.equal(sample(idle, 'switchboard_db_pool_connections{state="idle"}'), 1, 'the one the pool keeps')
    assert.equal(sample(idle, 'switchboard_db_pool_waiting'), 0)

    // Another session locks the users table: the pool's one connection blocks on it, and the
    // next queries wait for that connection.
    const locker = new pg.Client({ connectionString: TEST_DATABASE_URL })
    await locker.connect()
    t.after(async () => { await locker.end() })
    await locker.query('begin')
    await locker.query(`lock table "${app.config.databaseSchema!}".users in access exclusive mode`)
    const reads = [app.store.getUser('a'), app.store.getUser('b'), app.store.getUser('c')]
    let busy = ''
    for (let i = 0; i < 100 && sample(busy, 'switchboard_db_pool_waiting') !== 2; i++) {
      if (i > 0) await new Promise(resolve => setTimeout(resolve, 50))
      busy = (await request('GET', '/metrics')).text
    }
    assert.equal(sample(busy, 'switchboard_db_pool_connections{state="busy"}'), 1)
    assert.equal(sample(busy, 'switchboard_db_pool_connections{state="idle"}'), 0)
    assert.equal(sample(busy, 'switchboard_db_pool_waiting'), 2)
    await locker.query('commit')
    assert.deepEqual(await Promise.all(reads), [undefined, undefined, undefined])
    const after = (await request('GET', '/metrics')).text
    assert.equal(sample(after, 'switchboard_db_pool_connections{state="busy"}'), 0)
    assert.equal(sample(after, 'switchboard_db_pool_waiting'), 0)

    const sqlite = await build(t)
    assert.doesNotMatch((await sqlite.request('GET', '/metrics')).text, /switchboard_db_pool/)
  })
})
