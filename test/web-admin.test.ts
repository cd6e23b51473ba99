import { describe, it, before } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import Fastify from 'fastify'
import type { Page } from 'playwright-core'
import { oneShotRequest } from '../support/http.js'
import { build, skipUnlessRedis, skipUnlessStore, tempDir, wsConnect } from './helper.js'
import { ADMIN, baseEnv, startServer, waitUntilReady, withTimeout, type ServerProcess } from './process.js'
import { startProcessCluster } from './process-cluster.js'
import webPlugin from '../plugins/web.js'
import { buildWeb } from '../scripts/build-web.mjs'
import {
  artifact, ensureWebBuild, fitsWidth, launchBrowser, openApp, register, signIn, skipUnlessChromium, waitForConnection, waitUntil, WAIT_MS, watchSocket
} from './web-browser.js'

describe('GET /admin/stats', () => {
  it('is for admins only', async (t) => {
    const { request, userToken } = await build(t)
    assert.equal((await request('GET', '/admin/stats')).status, 401)
    assert.equal((await request('GET', '/admin/stats', { token: await userToken('joe') })).status, 403)
  })

  it('counts open connections and delivered messages', async (t) => {
    const server = await build(t)
    const admin = await server.userToken('root', 'admin')
    const alice = await server.userToken('alice')
    assert.equal((await server.request('POST', '/rooms', { token: alice, body: { id: 'lobby' } })).status, 201)
    const before = await server.request('GET', '/admin/stats', { token: admin })
    assert.equal(before.status, 200)
    assert.equal(before.body.connections, 0)

    const ws = await wsConnect(t, server, { token: alice })
    assert.equal((await ws.command({ type: 'subscribe', room: 'lobby' })).type, 'reply')
    for (let i = 0; i < 3; i++) assert.equal((await ws.command({ type: 'publish', room: 'lobby', data: { i } })).type, 'reply')
    const after = await server.request('GET', '/admin/stats', { token: admin })
    assert.equal(after.body.connections, 1)
    assert.equal(after.body.messagesOutTotal, 3)
    assert.ok(after.body.messagesInTotal >= 4, 'subscribe and three publishes')
    assert.ok(after.body.messagesOutPerSecond > 0)
    assert.ok(after.body.windowSeconds > 0)
  })
})

describe('web app serving', () => {
  it('answers / with a clear message when the web app is not built', async (t) => {
    const app = Fastify({ logger: false })
    t.after(() => app.close())
    await app.register(webPlugin, { dir: join(tempDir(t), 'missing') })
    const res = await app.inject({ method: 'GET', url: '/' })
    assert.equal(res.statusCode, 503)
    assert.match(res.body, /npm run build/)
  })

  it('serves index.html uncached and hashed assets as immutable', async (t) => {
    const dir = tempDir(t)
    mkdirSync(join(dir, 'assets'))
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>Switchboard</title><script type="module" src="/assets/app-ABC.js"></script>')
    writeFileSync(join(dir, 'assets', 'app-ABC.js'), 'export {}')
    const app = Fastify({ logger: false })
    t.after(() => app.close())
    await app.register(webPlugin, { dir })
    const index = await app.inject({ method: 'GET', url: '/' })
    assert.equal(index.statusCode, 200)
    assert.match(String(index.headers['content-type']), /^text\/html/)
    assert.equal(index.headers['cache-control'], 'no-cache')
    const asset = await app.inject({ method: 'GET', url: '/assets/app-ABC.js' })
    assert.equal(asset.statusCode, 200)
    assert.match(String(asset.headers['cache-control']), /max-age=31536000.*immutable/)
    assert.equal((await app.inject({ method: 'GET', url: '/assets/other.js' })).statusCode, 404)
  })

  it('a rebuild under a running server: its page and assets keep working; builds older than the previous one are removed', async (t) => {
    const dir = tempDir(t)
    const assets = join(dir, 'assets')
    // A previous build (other hashes), and an asset of the build before it.
    mkdirSync(assets)
    const previousHtml = '<!doctype html><title>Switchboard</title><link rel="stylesheet" href="/assets/styles-PREV.css"><script type="module" src="/assets/app-PREV.js"></script>'
    writeFileSync(join(dir, 'index.html'), previousHtml)
    for (const name of ['app-PREV.js', 'app-PREV.js.map', 'styles-PREV.css', 'app-OLDER.js']) writeFileSync(join(assets, name), `/* ${name} */`)
    const running = Fastify({ logger: false })
    t.after(() => running.close())
    await running.register(webPlugin, { dir })

    await buildWeb({ outDir: dir })
    // The running server read index.html at start: what it names is still there.
    assert.equal((await running.inject({ method: 'GET', url: '/' })).body, previousHtml)
    for (const url of ['/assets/app-PREV.js', '/assets/styles-PREV.css']) assert.equal((await running.inject({ method: 'GET', url })).statusCode, 200, url)
    assert.ok(!existsSync(join(assets, 'app-OLDER.js')), 'an asset of neither this build nor the previous one is removed')
    assert.deepEqual(readdirSync(dirname(dir)).filter(name => name.startsWith(`.${basename(dir)}-staging-`)), [], 'no staging folder left')

    // A server started now serves the new build.
    const fresh = Fastify({ logger: false })
    t.after(() => fresh.close())
    await fresh.register(webPlugin, { dir })
    const html = (await fresh.inject({ method: 'GET', url: '/' })).body
    const named = [...html.matchAll(/\/assets\/[^"]+/g)].map(m => m[0])
    assert.equal(named.length, 2, html)
    for (const url of named) assert.equal((await fresh.inject({ method: 'GET', url })).statusCode, 200, url)

    // One more build: the first one is now two builds old.
    await buildWeb({ outDir: dir })
    assert.ok(!existsSync(join(assets, 'app-PREV.js')) && !existsSync(join(assets, 'app-PREV.js.map')) && !existsSync(join(assets, 'styles-PREV.css')))
    for (const url of named) assert.ok(existsSync(join(dir, url)), url)
    assert.equal(readFileSync(join(dir, 'index.html'), 'utf8'), html)
  })

  it('in the app: / with a strict CSP, /docs still served, unknown paths keep the JSON 404', async (t) => {
    ensureWebBuild()
    const { request } = await build(t)
    const page = await request('GET', '/')
    assert.equal(page.status, 200)
    assert.match(page.text, /<title>Switchboard<\/title>/)
    const csp = page.headers.get('content-security-policy') ?? ''
    assert.match(csp, /script-src 'self'(;|$)/)
    // Images sent in a room are shown from Blob URLs of their bytes; scripts never are.
    assert.match(csp, /img-src 'self' data: blob:(;|$)/)
    // Without TLS it would send a phone on the LAN to https:// for the assets (a blank page).
    assert.doesNotMatch(csp, /upgrade-insecure-requests/)
    const script = /src="(\/assets\/app-[^"]+\.js)"/.exec(page.text)?.[1]
    assert.ok(script !== undefined)
    assert.equal((await request('GET', script)).status, 200)
    assert.equal((await request('GET', '/docs')).status, 200)
    assert.equal((await request('GET', '/docs/json')).status, 200)
    const missing = await request('GET', '/nope')
    assert.equal(missing.status, 404)
    assert.equal(missing.body.code, 'SB_ERR_NOT_FOUND')
  })
})

describe('admin page in Chromium', { skip: skipUnlessChromium() }, () => {
  before(() => ensureWebBuild())

  it('shows the headline numbers and open connections, and kicks one; a failed kick stays on screen until dismissed', async (t) => {
    // A short idle timeout: the page's personal-room subscription must keep the connection open.
    const env = { ...baseEnv(tempDir(t, 'switchboard-web-admin-')), LOGIN_RATE_LIMIT: '1000', RATE_LIMIT_MAX: '100000', WS_IDLE_TIMEOUT_MS: '500', NODE_REPORT_INTERVAL_MS: '500' }
    let server = await startServer(t, env)
    await waitUntilReady(server)
    const base = `http://127.0.0.1:${server.port}`
    const browser = await launchBrowser(t)

    const dave = await openApp(browser, base)
    const daveSocket = watchSocket(dave.page)
    await register(dave.page, 'dave', 'dave password')
    await waitForConnection(dave.page, 'Connected')
    // No Admin link for someone who is not an admin, and #/admin shows the rooms instead.
    assert.equal(await dave.page.getByRole('link', { name: 'Admin' }).count(), 0)
    await dave.page.goto(`${base}/#/admin`)
    await dave.page.getByRole('heading', { name: 'Rooms', level: 1 }).waitFor()
    await waitForConnection(dave.page, 'Connected')

    const admin = await openApp(browser, base)
    await signIn(admin.page, ADMIN.username, ADMIN.password)
    await admin.page.getByRole('link', { name: 'Admin' }).click()
    await admin.page.getByRole('heading', { name: 'Admin', level: 1 }).waitFor()
    // The headline numbers are the cluster's, from the node reports: they catch up within an interval.
    await admin.page.waitForFunction(() => Number(document.querySelector('.stats dd')?.textContent) >= 2, null, { timeout: WAIT_MS })

    await admin.page.setViewportSize({ width: 375, height: 740 })
    assert.ok(await fitsWidth(admin.page), 'the admin page fits 375px')
    const daveRow = admin.page.locator('.connections > li', { hasText: 'dave' })
    await daveRow.getByText('127.0.0.1', { exact: true }).waitFor()
    await daveRow.getByText('user:dave', { exact: true }).waitFor()
    await daveRow.getByText(`127.0.0.1:${server.port} (this node)`).waitFor()

    // Past the idle timeout on a page without rooms: still the same open connection. What shows
    // that the timeout has passed is a control connection opened after dave's with no
    // subscription: the server closes it as idle (4002), and dave's too by then (in the same
    // deadline sweep at the latest) if nothing kept it open.
    const daveConnection = (await daveSocket.until('dave\'s welcome frame', () => daveSocket.received.find(f => f.type === 'welcome'))).connectionId as string
    const login = await oneShotRequest(base, 'POST', '/auth/login', { body: ADMIN })
    const control = await wsConnect(t, { url: base }, { token: login.body.accessToken })
    const { code } = await withTimeout(control.closed, WAIT_MS, 'the control connection without a subscription closed as idle')
    assert.equal(code, 4002, 'the control connection was closed as idle')
    const daveNow = await oneShotRequest(base, 'GET', '/admin/connections?user=dave', { token: login.body.accessToken })
    assert.deepEqual((daveNow.body.items as Array<{ id: string }>).map(c => c.id), [daveConnection], 'dave is on his first connection')
    assert.equal(daveSocket.closed(), false)
    assert.equal(await dave.page.locator('#connection-text').textContent(), 'Connected')
    // A service (here the admin, over HTTP) reaches dave on whatever page he is.
    const sent = await oneShotRequest(base, 'POST', '/rooms/user:dave/messages', { token: login.body.accessToken, body: { data: { text: 'maintenance at 18:00' } } })
    assert.equal(sent.status, 201)
    const personal = dave.page.getByText('Message for you from admin: maintenance at 18:00')
    await personal.waitFor()
    // It stays while dave moves between pages, until he dismisses it.
    await dave.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await dave.page.getByRole('heading', { name: 'Rooms', level: 1 }).waitFor()
    assert.equal(await personal.count(), 1, 'still shown on the next page')
    await dave.page.getByRole('status').filter({ has: personal }).getByRole('button', { name: 'Dismiss' }).click()
    await personal.waitFor({ state: 'detached' })

    // Kicking asks first; Cancel changes nothing.
    admin.answers.push(false)
    await daveRow.getByRole('button', { name: /^Kick dave/ }).click()
    assert.match(admin.dialogs.at(-1) ?? '', /^Kick dave\? This connection is closed/)
    assert.equal(daveSocket.closed(), false)
    await daveRow.getByRole('button', { name: /^Kick dave/ }).click()
    await waitForConnection(dave.page, 'disconnected by an administrator')
    await daveRow.waitFor({ state: 'detached' })
    // Kicked is not banned: dave may come back, and gets a new connection.
    await dave.page.getByRole('button', { name: 'Reconnect' }).click()
    await waitForConnection(dave.page, 'Connected')
    await admin.page.getByRole('button', { name: 'Refresh' }).click()
    await daveRow.waitFor()

    // A kick that fails stays on screen: the next refresh (every few seconds) does not wipe it.
    // It fails here because the server is stopped: the list still shows dave's row.
    server.child.kill('SIGTERM')
    assert.equal((await server.exited).code, 0, `graceful exit\n${server.stdout()}\n${server.stderr()}`)
    await daveRow.getByRole('button', { name: /^Kick dave/ }).click()
    const kickError = admin.page.getByRole('alert').filter({ hasText: /^Could not kick dave: The server could not be reached/ })
    await kickError.waitFor()
    const loadError = admin.page.getByRole('alert').filter({ hasText: /^Could not load: The server could not be reached/ })
    await loadError.waitFor()
    server = await startServer(t, env, { port: server.port })
    await waitUntilReady(server)
    // The first refresh that works clears its own error, and only that.
    await loadError.waitFor({ state: 'hidden' })
    assert.ok(await kickError.isVisible(), 'the failed kick is still shown after a refresh')
    await admin.page.screenshot({ path: artifact('web-admin-kick-failed.png') })
    await admin.page.getByRole('button', { name: 'Dismiss' }).click()
    await kickError.waitFor({ state: 'hidden' })
    await waitForConnection(dave.page, 'Connected')
    await daveRow.waitFor()
    assert.deepEqual(dave.errors, [])
    assert.deepEqual(admin.errors, [])
  })

  it('users: disable and enable, make and remove admin, reset a password, delete, each confirmed first; a user changes their password and signs out everywhere', async (t) => {
    const env = { ...baseEnv(tempDir(t, 'switchboard-web-users-')), LOGIN_RATE_LIMIT: '1000', RATE_LIMIT_MAX: '100000' }
    const server = await startServer(t, env)
    await waitUntilReady(server)
    const base = `http://127.0.0.1:${server.port}`
    const browser = await launchBrowser(t)
    const login = await oneShotRequest(base, 'POST', '/auth/login', { body: ADMIN })
    const adminToken = login.body.accessToken as string
    const account = async (id: string): Promise<{ role: string, disabled: boolean }> =>
      (await oneShotRequest(base, 'GET', `/users/${id}`, { token: adminToken })).body as { role: string, disabled: boolean }

    const dave = await openApp(browser, base)
    await register(dave.page, 'dave', 'dave password')
    await waitForConnection(dave.page, 'Connected')

    const admin = await openApp(browser, base)
    await signIn(admin.page, ADMIN.username, ADMIN.password)
    await admin.page.getByRole('link', { name: 'Admin' }).click()
    const users = admin.page.getByRole('list', { name: 'Users' })
    const daveRow = users.locator('li', { hasText: 'dave' })
    await daveRow.getByText('dave user').waitFor()
    await users.locator('li', { hasText: `${ADMIN.username} admin (you)` }).waitFor()

    // Cancel changes nothing; OK disables, and dave's page loses its connection at once.
    admin.answers.push(false)
    await daveRow.getByRole('button', { name: 'Disable dave' }).click()
    assert.match(admin.dialogs.at(-1) ?? '', /^Disable dave\? They are signed out everywhere/)
    assert.equal((await account('dave')).disabled, false, 'cancelled: nothing happened')
    await daveRow.getByRole('button', { name: 'Disable dave' }).click()
    await daveRow.getByText('dave user, disabled').waitFor()
    await admin.page.getByRole('status').filter({ hasText: 'Disabled dave.' }).waitFor()
    await waitForConnection(dave.page, 'account closed')
    assert.equal((await oneShotRequest(base, 'POST', '/auth/login', { body: { username: 'dave', password: 'dave password' } })).body.code, 'SB_ERR_ACCOUNT_DISABLED')
    await admin.page.screenshot({ path: artifact('web-admin-users.png') })
    await daveRow.getByRole('button', { name: 'Enable dave' }).click()
    await daveRow.getByText('dave user', { exact: true }).waitFor()
    assert.equal((await account('dave')).disabled, false)

    await daveRow.getByRole('button', { name: 'Make dave an admin' }).click()
    await daveRow.getByText('dave admin').waitFor()
    assert.match(admin.dialogs.at(-1) ?? '', /^Make dave an admin\?/)
    await daveRow.getByRole('button', { name: 'Remove admin from dave' }).click()
    await daveRow.getByText('dave user', { exact: true }).waitFor()
    assert.equal((await account('dave')).role, 'user')

    admin.answers.push('dave reset password')
    await daveRow.getByRole('button', { name: 'Reset the password of dave' }).click()
    await admin.page.getByRole('status').filter({ hasText: 'Password of dave set' }).waitFor()
    assert.equal((await oneShotRequest(base, 'POST', '/auth/login', { body: { username: 'dave', password: 'dave reset password' } })).status, 200)
    // The last admin cannot step down: the refusal stays on the page.
    await users.getByRole('button', { name: `Remove admin from ${ADMIN.username}` }).click()
    await admin.page.getByRole('alert').filter({ hasText: /keep at least one enabled admin/ }).waitFor()

    admin.answers.push(false)
    await daveRow.getByRole('button', { name: 'Delete dave' }).click()
    assert.match(admin.dialogs.at(-1) ?? '', /^Delete dave for good\?/)
    assert.equal((await account('dave')).role, 'user', 'cancelled: dave is still there')
    await daveRow.getByRole('button', { name: 'Delete dave' }).click()
    await daveRow.waitFor({ state: 'detached' })
    assert.equal((await oneShotRequest(base, 'POST', '/auth/register', { body: { username: 'dave', password: 'dave password' } })).body.code, 'SB_ERR_USERNAME_RETIRED')

    // A user's own account: two tabs (two sessions); the password change ends the other one.
    const erin = await openApp(browser, base, { width: 375, height: 740 })
    await register(erin.page, 'erin', 'erin password')
    const erinElsewhere = await openApp(browser, base)
    await signIn(erinElsewhere.page, 'erin', 'erin password')
    await waitForConnection(erinElsewhere.page, 'Connected')
    await erin.page.getByRole('link', { name: 'Account' }).click()
    await erin.page.getByRole('heading', { name: 'Your account', level: 1 }).waitFor()
    assert.ok(await fitsWidth(erin.page), 'the account page fits 375px')
    await erin.page.getByLabel('Current password').fill('not my password')
    await erin.page.getByLabel('New password', { exact: true }).fill('erin new password')
    await erin.page.getByLabel('New password, again').fill('erin new password')
    await erin.page.getByRole('button', { name: 'Change password' }).click()
    await erin.page.getByRole('alert').filter({ hasText: 'Could not change the password: The current password is wrong' }).waitFor()
    await erin.page.getByLabel('Current password').fill('erin password')
    await erin.page.getByRole('button', { name: 'Change password' }).click()
    await erin.page.getByRole('status').filter({ hasText: /^Password changed/ }).waitFor()
    await erinElsewhere.page.getByRole('heading', { name: 'Sign in to Switchboard' }).waitFor()
    await waitForConnection(erin.page, 'Connected')

    erin.answers.push(false)
    await erin.page.getByRole('button', { name: 'Sign out everywhere' }).click()
    assert.match(erin.dialogs.at(-1) ?? '', /^Sign out everywhere\?/)
    await erin.page.getByRole('heading', { name: 'Your account', level: 1 }).waitFor()
    await erin.page.getByRole('button', { name: 'Sign out everywhere' }).click()
    await erin.page.getByRole('heading', { name: 'Sign in to Switchboard' }).waitFor()
    await signIn(erin.page, 'erin', 'erin new password')

    for (const user of [dave, admin, erin, erinElsewhere]) assert.deepEqual(user.errors, [])
  })
})

const skipCluster = skipUnlessChromium() || await skipUnlessRedis() || await skipUnlessStore('postgres')

/** Where the console's screenshots go: docs/ with `npm run screenshot:admin`, test-artifacts/ otherwise. */
function screenshotPath (name: string): string {
  const dir = process.env.ADMIN_SCREENSHOTS_TO
  return dir === undefined || dir === '' ? artifact(name) : join(dir, name)
}

/** Two server processes on one Redis and one PostgreSQL schema (removed after the test). */
async function twoNodes (t: TestContext): Promise<[ServerProcess, ServerProcess]> {
  const { servers } = await startProcessCluster(t, 2, { NODE_REPORT_INTERVAL_MS: '500', LOGIN_RATE_LIMIT: '1000', RATE_LIMIT_MAX: '100000' })
  return [servers[0]!, servers[1]!]
}

async function chartPoints (page: Page, name: string): Promise<number> {
  return Number(await page.locator('figure.chart', { hasText: name }).locator('svg').getAttribute('data-points'))
}

describe('admin console in Chromium, two nodes on Redis', { skip: skipCluster }, () => {
  before(() => ensureWebBuild())

  it('cluster: both nodes and live charts; rooms: search, inspect, publish, edit; connections of both nodes: unsubscribe and kick, each confirmed', async (t) => {
    const [a, b] = await twoNodes(t)
    const baseA = `http://127.0.0.1:${a.port}`
    const baseB = `http://127.0.0.1:${b.port}`
    const adminToken = (await oneShotRequest(baseA, 'POST', '/auth/login', { body: ADMIN })).body.accessToken as string
    const userToken = async (name: string): Promise<string> => {
      assert.equal((await oneShotRequest(baseA, 'POST', '/auth/register', { body: { username: name, password: `${name} password` } })).status, 201)
      return (await oneShotRequest(baseA, 'POST', '/auth/login', { body: { username: name, password: `${name} password` } })).body.accessToken as string
    }
    assert.equal((await oneShotRequest(baseA, 'POST', '/rooms', { token: adminToken, body: { id: 'lobby' } })).status, 201)
    assert.equal((await oneShotRequest(baseA, 'POST', '/rooms', { token: adminToken, body: { id: 'game:chess' } })).status, 201)
    const dave = await wsConnect(t, { url: baseA }, { token: await userToken('dave') })
    const erin = await wsConnect(t, { url: baseB }, { token: await userToken('erin') })
    for (const [client, room] of [[dave, 'lobby'], [erin, 'lobby'], [erin, 'game:chess']] as const) {
      assert.equal((await client.command({ type: 'subscribe', room })).type, 'reply')
    }
    for (const text of ['first message', 'second message']) {
      assert.equal((await oneShotRequest(baseB, 'POST', '/rooms/lobby/messages', { token: adminToken, body: { data: { text } } })).status, 201)
    }

    const browser = await launchBrowser(t)
    const admin = await openApp(browser, baseA)
    await signIn(admin.page, ADMIN.username, ADMIN.password)
    await admin.page.getByRole('link', { name: 'Admin' }).click()
    const { page } = admin
    await page.getByRole('heading', { name: 'Admin', level: 1 }).waitFor()

    // Cluster: both nodes from their reports, this one first; the charts fill from the ring.
    const nodes = page.getByRole('table', { name: 'Cluster' })
    await nodes.getByRole('rowheader', { name: new RegExp(`127\\.0\\.0\\.1:${a.port} \\(this node\\)`) }).waitFor()
    await nodes.getByRole('rowheader', { name: new RegExp(`127\\.0\\.0\\.1:${b.port}`) }).waitFor()
    await page.waitForFunction(() => document.querySelectorAll('.stats dd')[3]?.textContent === '2', null, { timeout: WAIT_MS })
    // dave, erin and the admin's page: the totals reach 3 once both nodes have reported them.
    await page.waitForFunction(() => Number(document.querySelector('.stats dd')?.textContent) >= 3, null, { timeout: WAIT_MS })
    await waitUntil(page, 'the charts have several samples', async () => await chartPoints(page, 'Connections') >= 3 && await chartPoints(page, 'Messages per second') >= 3)
    const connectionsChart = page.getByRole('img', { name: /^Connections over the last/ })
    assert.match(await connectionsChart.getAttribute('aria-label') ?? '', /Open: now \d+, peak \d+/)
    await page.getByRole('img', { name: /^Messages per second/ }).waitFor()
    await page.getByRole('heading', { name: 'Cluster' }).scrollIntoViewIfNeeded()
    await page.screenshot({ path: screenshotPath('admin-cluster.png') })

    // Rooms: the cluster's active rooms (erin's are on node B), searchable by prefix.
    const rooms = page.getByRole('list', { name: 'Active rooms' })
    await rooms.locator('li', { hasText: 'lobby 2 subscribers' }).waitFor()
    await rooms.locator('li', { hasText: 'game:chess 1 subscriber' }).waitFor()
    const search = page.getByRole('searchbox', { name: 'Search active rooms by prefix' })
    await search.fill('GAME:')
    await rooms.locator('li', { hasText: 'lobby' }).waitFor({ state: 'detached' })
    await rooms.locator('li', { hasText: 'game:chess' }).waitFor()
    await search.fill('nothing-here')
    await rooms.getByText('No active rooms match.').waitFor()
    await search.fill('lob')
    await rooms.getByRole('button', { name: 'Inspect lobby' }).click()

    // The inspector: presence over both nodes, the latest history, a test message, the settings.
    const inspector = page.locator('.inspector')
    await inspector.getByRole('heading', { name: 'Room lobby' }).waitFor()
    await inspector.getByText('dave, erin (2 connections)').waitFor()
    const history = page.getByRole('list', { name: 'Latest messages in lobby' })
    await history.locator('li', { hasText: 'second message' }).waitFor()
    assert.deepEqual(await history.locator('.text').allTextContents(), ['second message', 'first message'], 'the newest first')
    await inspector.getByRole('textbox', { name: 'Test message' }).fill('hello from the console')
    await inspector.getByRole('button', { name: 'Publish' }).click()
    await inspector.getByRole('status').filter({ hasText: 'Published at offset 3.' }).waitFor()
    for (const client of [dave, erin]) {
      const frame = await client.next(f => f.type === 'message' && f.room === 'lobby' && f.offset === 3)
      assert.deepEqual(frame.data, { text: 'hello from the console' })
    }
    await history.locator('li', { hasText: 'hello from the console' }).waitFor()
    const settings = page.getByRole('form', { name: 'Settings of lobby' })
    await settings.getByLabel('History size', { exact: true }).fill('50')
    await settings.getByLabel('Push join and leave events').uncheck()
    await page.screenshot({ path: screenshotPath('admin-rooms.png'), fullPage: true })
    await settings.getByRole('button', { name: 'Save settings' }).click()
    await inspector.getByRole('status').filter({ hasText: 'Saved the settings of lobby (historySize, presenceEvents).' }).waitFor()
    const saved = (await oneShotRequest(baseB, 'GET', '/rooms/lobby', { token: adminToken })).body as { historySize: number, presenceEvents: boolean }
    assert.deepEqual([saved.historySize, saved.presenceEvents], [50, false])
    await settings.getByRole('button', { name: 'Save settings' }).click()
    await inspector.getByRole('status').filter({ hasText: 'Nothing changed.' }).waitFor()

    // Connections of every node, filtered; erin's live on node B.
    const list = page.getByRole('list', { name: 'Connections' })
    const row = (who: string): ReturnType<typeof list.locator> => list.locator(':scope > li', { hasText: who })
    await page.getByRole('searchbox', { name: 'Filter connections by room' }).fill('lobby')
    await row('erin').getByText(`127.0.0.1:${b.port}`, { exact: true }).waitFor()
    await row('dave').getByText(`127.0.0.1:${a.port} (this node)`).waitFor()
    await page.getByText(/^2 connections from 2 of 2 nodes\.$/).waitFor()
    await page.getByRole('searchbox', { name: 'Filter connections by room' }).fill('')
    await page.getByRole('searchbox', { name: 'Filter connections by user' }).fill('erin')
    await row('dave').waitFor({ state: 'detached' })
    await page.getByText(/^1 connection from 2 of 2 nodes\.$/).waitFor()
    await page.evaluate(() => { document.getElementById('connections-title')?.scrollIntoView(); window.scrollBy(0, -16) })
    await page.screenshot({ path: screenshotPath('admin-connections.png') })

    // Unsubscribe erin's connection on node B from lobby: asked first; Cancel does nothing.
    const unsubscribe = row('erin').getByRole('button', { name: /^Unsubscribe erin from lobby/ })
    admin.answers.push(false)
    await unsubscribe.click()
    assert.match(admin.dialogs.at(-1) ?? '', /^Unsubscribe erin from lobby\?/)
    await unsubscribe.click()
    const ended = await erin.next(f => f.type === 'unsubscribed')
    assert.deepEqual([ended.room, ended.reason], ['lobby', 'server'])
    await page.getByRole('status').filter({ hasText: 'Unsubscribed erin from lobby.' }).waitFor()
    await unsubscribe.waitFor({ state: 'detached' })
    await row('erin').getByRole('button', { name: /^Unsubscribe erin from game:chess/ }).waitFor()
    assert.equal(erin.frames.some(f => f.type === 'unsubscribed' && f.room === 'game:chess'), false)

    // Kick it, across nodes.
    admin.answers.push(false)
    await row('erin').getByRole('button', { name: /^Kick erin/ }).click()
    assert.match(admin.dialogs.at(-1) ?? '', /^Kick erin\?/)
    await row('erin').getByRole('button', { name: /^Kick erin/ }).click()
    assert.equal((await withTimeout(erin.closed, WAIT_MS, 'erin kicked on node B')).code, 4503)
    await list.getByText('No open connections match.').waitFor()

    await page.setViewportSize({ width: 375, height: 740 })
    assert.ok(await fitsWidth(page), 'the console fits 375px (the nodes table scrolls in its own box)')
    assert.deepEqual(admin.errors, [])
  })
})
