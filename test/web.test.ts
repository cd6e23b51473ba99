import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { oneShotRequest } from '../support/http.js'
import { deleteRedisKeys } from '../support/redis.js'
import { skipUnlessRedis, tempDir, TEST_REDIS_URL, wsConnect } from './helper.js'
import { ADMIN, baseEnv, ROOT, startServer, waitUntilReady, withTimeout, type ServerProcess } from './process.js'
import {
  artifact, ensureWebBuild, fitsWidth, jwtClaims, launchBrowser, messageList, messageTexts, openApp, register, say,
  signIn, skipUnlessChromium, WAIT_MS, waitForConnection, waitForMessage, waitUntil, watchSocket, type BrowserUser
} from './web-browser.js'
import { buffer as streamBytes } from 'node:stream/consumers'
import { crc32, deflateSync } from 'node:zlib'
import type { Locator, Page, Route } from 'playwright-core'
import type { TestContext } from 'node:test'

/*
 * The web app in a real browser against the real server process: two people (two browser
 * contexts) chat in a private room, across a reload and a server restart. docs/web.md.
 */

const PASSWORD = 'web test password'
const chromiumSkip = skipUnlessChromium()
const redisSkip = chromiumSkip === false ? await skipUnlessRedis() : chromiumSkip

/** A server for browser tests: generous limits (every page and request comes from 127.0.0.1). */
function webEnv (dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...baseEnv(dataDir),
    LOGIN_RATE_LIMIT: '1000',
    LOGIN_FAILURES_BEFORE_DELAY: '1000',
    LOGIN_FAILURES_PER_ADDRESS: '1000',
    RATE_LIMIT_MAX: '100000',
    WS_HANDSHAKES_PER_IP_PER_MINUTE: '100000',
    WS_DRAIN_MS: '200',
    ...extra
  }
}

async function start (t: TestContext, env: Record<string, string>, port?: number): Promise<ServerProcess> {
  const server = await startServer(t, env, port === undefined ? {} : { port })
  await waitUntilReady(server)
  return server
}

/** SIGTERM (a graceful restart, as a deploy does it), then the same command on the same port. */
async function restart (t: TestContext, server: ServerProcess, env: Record<string, string>, whileDown?: () => Promise<void>): Promise<ServerProcess> {
  server.child.kill('SIGTERM')
  const { code } = await server.exited
  assert.equal(code, 0, `graceful exit\n${server.stdout()}\n${server.stderr()}`)
  await whileDown?.()
  return await start(t, env, server.port)
}

function online (user: BrowserUser, name: string) {
  return user.page.locator('aside li.online', { hasText: name })
}

async function createRoom (user: BrowserUser, id: string, name: string, visibility: 'public' | 'private'): Promise<void> {
  const { page } = user
  await page.getByLabel('Room id').fill(id)
  await page.getByLabel('Name (optional)').fill(name)
  await page.getByLabel('Visibility').selectOption(visibility)
  await page.getByRole('button', { name: 'Create room' }).click()
  await page.getByRole('heading', { name, level: 1 }).waitFor()
  await waitForConnection(page, 'Connected')
}

async function addMember (user: BrowserUser, username: string): Promise<void> {
  await user.page.getByLabel('Add member (username)').fill(username)
  await user.page.getByRole('button', { name: 'Add member' }).click()
  await user.page.getByLabel(`Role of ${username}`).waitFor()
}

async function openRoomFromList (user: BrowserUser, name: string): Promise<void> {
  await user.page.getByRole('link', { name: 'Rooms', exact: true }).click()
  await user.page.getByRole('link', { name }).click()
  await user.page.getByRole('heading', { name, level: 1 }).waitFor()
  // Subscribed: the message box is enabled once the subscription is confirmed.
  await user.page.getByRole('textbox', { name: 'Message' }).and(user.page.locator(':enabled')).waitFor()
}

/** A server, a browser, alice and bob registered; both on the Rooms page. */
async function twoSignedIn (t: TestContext, env: Record<string, string>): Promise<{ server: ServerProcess, base: string, alice: BrowserUser, bob: BrowserUser }> {
  const server = await start(t, env)
  const base = `http://127.0.0.1:${server.port}`
  const browser = await launchBrowser(t)
  const alice = await openApp(browser, base)
  await register(alice.page, 'alice', PASSWORD)
  const bob = await openApp(browser, base)
  await register(bob.page, 'bob', PASSWORD)
  await waitForConnection(bob.page, 'Connected')
  return { server, base, alice, bob }
}

/** A server, a browser, and alice and bob (registered) both in alice's private room. */
async function twoInARoom (t: TestContext, env: Record<string, string>, id: string, name: string): Promise<{ server: ServerProcess, base: string, alice: BrowserUser, bob: BrowserUser }> {
  const { server, base, alice, bob } = await twoSignedIn(t, env)
  await createRoom(alice, id, name, 'private')
  await addMember(alice, 'bob')
  await openRoomFromList(bob, name)
  return { server, base, alice, bob }
}

/**
 * A real PNG of `width` × `height` RGB pixels (a gradient), exactly `size` bytes long when
 * given: a tEXt chunk fills the difference, so a test can send an image at the limit and one
 * byte over it.
 */
function png (width: number, height: number, size?: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const head = Buffer.alloc(8)
    head.writeUInt32BE(data.length, 0)
    head.write(type, 4, 'latin1')
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0)
    return Buffer.concat([head, data, crc])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr.set([8, 2, 0, 0, 0], 8) // 8 bits per sample, truecolour, deflate, no filter, no interlace
  const rows: number[] = []
  for (let y = 0; y < height; y++) {
    rows.push(0) // filter: none
    for (let x = 0; x < width; x++) rows.push((x * 255) / Math.max(1, width - 1), (y * 255) / Math.max(1, height - 1), 128)
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  const parts = [signature, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.from(rows))), chunk('IEND', Buffer.alloc(0))]
  if (size !== undefined) {
    const missing = size - parts.reduce((n, part) => n + part.length, 0) - 12 - 'Comment\0'.length
    assert.ok(missing >= 0, `a ${width}×${height} PNG is larger than ${size} bytes`)
    parts.splice(2, 0, chunk('tEXt', Buffer.concat([Buffer.from('Comment\0', 'latin1'), Buffer.alloc(missing, 'x')])))
  }
  const file = Buffer.concat(parts)
  if (size !== undefined) assert.equal(file.length, size)
  return file
}

/** The classic 1 × 1 transparent GIF (GIF89a). */
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64')

/** Picks a file through the room's "Attach image" button and the browser's file chooser. */
async function attach (page: Page, file: { name: string, mimeType: string, buffer: Buffer }): Promise<void> {
  const [chooser] = await Promise.all([
    page.waitForEvent('filechooser'),
    page.getByRole('button', { name: 'Attach image' }).click()
  ])
  await chooser.setFiles(file)
}

/** Pastes a file into the message box, as a paste of a copied image does. */
async function paste (page: Page, file: { name: string, mimeType: string, buffer: Buffer }): Promise<void> {
  await page.getByRole('textbox', { name: 'Message' }).evaluate((input, { name, mimeType, bytes }) => {
    const clipboard = new DataTransfer()
    clipboard.items.add(new File([new Uint8Array(bytes)], name, { type: mimeType }))
    input.dispatchEvent(new ClipboardEvent('paste', { clipboardData: clipboard, bubbles: true, cancelable: true }))
  }, { name: file.name, mimeType: file.mimeType, bytes: [...file.buffer] })
}

/** Waits until `count` images in the message list are decoded; their natural sizes, in order. */
async function shownImages (page: Page, count: number): Promise<Array<[number, number]>> {
  const images = messageList(page).locator('li img')
  const sizes = async (): Promise<Array<[number, number]>> => await images.evaluateAll(imgs => imgs
    .map(img => img as HTMLImageElement)
    .filter(img => img.complete && img.naturalWidth > 0)
    .map(img => [img.naturalWidth, img.naturalHeight] as [number, number]))
  await waitUntil(page, `${count} images decoded`, async () => (await sizes()).length >= count)
  assert.equal(await images.count(), count)
  return await sizes()
}

describe('web app in Chromium', { skip: chromiumSkip }, () => {
  before(() => ensureWebBuild())

  it('two users: register, a private room, chat both ways, presence, reload, a stranger refused, restart on in-memory history', async (t) => {
    const dir = tempDir(t, 'switchboard-web-')
    // History in memory only, so that the restart loses it: the gap note is what this test is about.
    const env = webEnv(dir, { HISTORY_STORE: 'memory' })
    let server = await start(t, env)
    const base = `http://127.0.0.1:${server.port}`
    const browser = await launchBrowser(t)

    const alice = await openApp(browser, base)
    await alice.page.getByRole('heading', { name: 'Sign in to Switchboard' }).waitFor()
    assert.ok(await fitsWidth(alice.page))
    // Signed out there is no connection to show (the indicator's flex display once beat `hidden`).
    assert.equal(await alice.page.locator('#connection').isVisible(), false, 'no connection indicator on the sign-in page')
    await register(alice.page, 'alice', PASSWORD)
    const bob = await openApp(browser, base)
    await register(bob.page, 'bob', PASSWORD)

    await createRoom(alice, 'team', 'Team', 'private')
    await addMember(alice, 'bob')

    await openRoomFromList(bob, 'Team')
    await online(alice, 'bob').waitFor()
    await online(bob, 'alice').waitFor()

    await say(alice.page, 'hello bob')
    await waitForMessage(bob.page, 'hello bob')
    await say(bob.page, 'hi alice, the deploy went fine')
    await waitForMessage(alice.page, 'the deploy went fine')
    assert.equal(await messageList(alice.page).locator('li[data-offset]').first().locator('.from').textContent(), 'alice')
    assert.equal(await messageList(alice.page).locator('li time').count(), 2)

    // The room view for the README and the test artifacts, at desktop width.
    const shot = artifact('web-room.png')
    await alice.page.screenshot({ path: shot })
    if (process.env.SCREENSHOT_TO !== undefined) {
      const to = join(ROOT, process.env.SCREENSHOT_TO)
      mkdirSync(dirname(to), { recursive: true })
      copyFileSync(shot, to)
    }

    // User text is text: markup shows as typed, no element is made from it.
    await say(bob.page, '<b>not bold</b><img src=x onerror=alert(1)>')
    await waitForMessage(alice.page, '<b>not bold</b>')
    assert.equal(await messageList(alice.page).locator('b, img').count(), 0)
    assert.deepEqual(await messageTexts(alice.page), ['hello bob', 'hi alice, the deploy went fine', '<b>not bold</b><img src=x onerror=alert(1)>'])

    // Phone width: nothing scrolls sideways.
    await alice.page.setViewportSize({ width: 375, height: 740 })
    assert.ok(await fitsWidth(alice.page), 'the room view fits 375px')
    await alice.page.screenshot({ path: artifact('web-room-375.png') })
    await alice.page.setViewportSize({ width: 1280, height: 800 })

    // A reload keeps the session (refresh token in sessionStorage) and shows the history.
    await bob.page.reload()
    await bob.page.getByRole('heading', { name: 'Team', level: 1 }).waitFor()
    await waitForMessage(bob.page, 'not bold')
    assert.deepEqual(await messageTexts(bob.page), ['hello bob', 'hi alice, the deploy went fine', '<b>not bold</b><img src=x onerror=alert(1)>'])
    await online(alice, 'bob').waitFor()

    // Presence follows bob leaving the room view.
    await bob.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await online(alice, 'bob').waitFor({ state: 'detached' })
    await openRoomFromList(bob, 'Team')
    await online(alice, 'bob').waitFor()

    // Someone who is not a member neither finds nor opens the private room.
    const carol = await openApp(browser, base, { width: 375, height: 740 })
    assert.ok(await fitsWidth(carol.page), 'the sign-in page fits 375px')
    await register(carol.page, 'carol', PASSWORD)
    assert.ok(await fitsWidth(carol.page), 'the rooms page fits 375px')
    assert.equal(await carol.page.getByRole('link', { name: 'Team' }).count(), 0)
    await carol.page.goto(`${base}/#/rooms/team`)
    await carol.page.getByRole('heading', { name: 'Room not available' }).waitFor()
    assert.equal(await carol.page.getByRole('textbox', { name: 'Message' }).count(), 0)
    assert.equal(await carol.page.getByText('hello bob').count(), 0)

    // Member management: a role change, then a ban that ends the banned user's subscription at once.
    const bobRow = alice.page.locator('aside li', { hasText: 'bob' })
    await alice.page.getByLabel('Role of bob').selectOption('moderator')
    await bobRow.getByRole('button', { name: 'Set role' }).click()
    await bobRow.locator('.badge', { hasText: 'moderator' }).waitFor()
    await addMember(alice, 'carol')
    await carol.page.reload()
    await carol.page.getByRole('heading', { name: 'Team', level: 1 }).waitFor()
    await waitForMessage(carol.page, 'hello bob')
    await online(alice, 'carol').waitFor()
    await alice.page.getByRole('button', { name: 'Ban carol' }).click()
    await carol.page.getByText('You were banned from this room.').waitFor()
    assert.ok(await carol.page.getByRole('textbox', { name: 'Message' }).isDisabled())
    await online(alice, 'carol').waitFor({ state: 'detached' })

    // A public room: found by everyone, joined to write in it, left.
    await carol.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await createRoom(carol, 'open', 'Open room', 'public')
    await bob.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await bob.page.getByRole('link', { name: 'Open room' }).click()
    await bob.page.getByText('Join the room to write in it.').waitFor()
    await bob.page.getByRole('button', { name: 'Join room' }).click()
    await bob.page.getByRole('textbox', { name: 'Message' }).and(bob.page.locator(':enabled')).waitFor()
    await say(bob.page, 'hi carol')
    await waitForMessage(carol.page, 'hi carol')
    await bob.page.getByRole('button', { name: 'Leave room' }).click()
    await bob.page.getByRole('heading', { name: 'Rooms', level: 1 }).waitFor()
    await openRoomFromList(bob, 'Team')

    // Restart: in-memory history is gone, so each page says a gap could not be recovered,
    // reconnects by itself, and the conversation goes on.
    server = await restart(t, server, env, async () => {
      await waitForConnection(alice.page, 'Reconnecting')
    })
    await waitForConnection(alice.page, 'Connected')
    await waitForConnection(bob.page, 'Connected')
    await messageList(alice.page).locator('li.gap').waitFor()
    await messageList(bob.page).locator('li.gap').waitFor()
    await say(alice.page, 'after the restart')
    await waitForMessage(bob.page, 'after the restart')
    await say(bob.page, 'still here')
    await waitForMessage(alice.page, 'still here')
    assert.deepEqual(await messageTexts(alice.page), ['hello bob', 'hi alice, the deploy went fine', '<b>not bold</b><img src=x onerror=alert(1)>', 'after the restart', 'still here'])

    // Sign out ends the session: a reload shows the sign-in form again.
    await bob.page.getByRole('button', { name: 'Sign out' }).click()
    await bob.page.getByRole('heading', { name: 'Sign in to Switchboard' }).waitFor()
    await bob.page.reload()
    await bob.page.getByRole('heading', { name: 'Sign in to Switchboard' }).waitFor()

    for (const user of [alice, bob, carol]) assert.deepEqual(user.errors, [])
  })

  it('a restart with Redis history and a file database: no message lost or doubled', { skip: redisSkip }, async (t) => {
    const dir = tempDir(t, 'switchboard-web-redis-')
    const prefix = `sbtest:web:${randomBytes(4).toString('hex')}:`
    t.after(() => deleteRedisKeys(TEST_REDIS_URL, prefix))
    const env = webEnv(dir, { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: prefix })
    const { server, base, alice, bob } = await twoInARoom(t, env, 'ops', 'Ops')
    await say(alice.page, 'one')
    await waitForMessage(bob.page, 'one')
    await say(bob.page, 'two')
    await waitForMessage(alice.page, 'two')

    await restart(t, server, env, async () => {
      // Typed while the server is down: the SDK queues it and sends it once reconnected.
      await waitForConnection(alice.page, 'Reconnecting')
      await say(alice.page, 'sent while down')
    })
    // Published the moment the server is back, likely before the pages have resubscribed:
    // they get it from the Redis history when they resume.
    const login = await oneShotRequest(base, 'POST', '/auth/login', { body: ADMIN })
    assert.equal(login.status, 200)
    const published = await oneShotRequest(base, 'POST', '/rooms/ops/messages', { token: login.body.accessToken, body: { data: { text: 'from a service' } } })
    assert.equal(published.status, 201)

    const expected = ['from a service', 'one', 'sent while down', 'two']
    for (const user of [alice, bob]) {
      await waitForConnection(user.page, 'Connected')
      await waitUntil(user.page, 'all four messages shown', async () => (await messageTexts(user.page)).length >= expected.length)
      await waitForMessage(user.page, 'sent while down')
    }
    await say(bob.page, 'three')
    for (const user of [alice, bob]) {
      await waitForMessage(user.page, 'three')
      const texts = await messageTexts(user.page)
      assert.deepEqual([...texts].sort(), [...expected, 'three'].sort(), `each message once: ${JSON.stringify(texts)}`)
      assert.deepEqual(texts.slice(0, 2), ['one', 'two'])
      assert.equal(await messageList(user.page).locator('li.gap').count(), 0, 'history covered the restart: no gap')
      assert.deepEqual(user.errors, [])
    }
  })

  it('short-lived access tokens are renewed: the same connection stays open and REST keeps working', async (t) => {
    const ttlSeconds = 10
    const toleranceMs = 1000
    const env = webEnv(tempDir(t, 'switchboard-web-ttl-'), { ACCESS_TOKEN_TTL: `${ttlSeconds}s`, JWT_CLOCK_TOLERANCE: `${toleranceMs / 1000}s` })
    const server = await start(t, env)
    const base = `http://127.0.0.1:${server.port}`
    const browser = await launchBrowser(t)
    // The admin's own token would expire too: a fresh one per look.
    const aliceConnections = async (): Promise<string[]> => {
      const login = await oneShotRequest(base, 'POST', '/auth/login', { body: ADMIN })
      const res = await oneShotRequest(base, 'GET', '/admin/connections?user=alice', { token: login.body.accessToken })
      return (res.body.items as Array<{ id: string }>).map(c => c.id)
    }

    const alice = await openApp(browser, base)
    const socket = watchSocket(alice.page)
    await register(alice.page, 'alice', PASSWORD)
    await createRoom(alice, 'lobby', 'Lobby', 'public')
    const welcome = await socket.until('the welcome frame', () => socket.received.find(f => f.type === 'welcome'))
    const connection = welcome.connectionId as string
    assert.deepEqual(await aliceConnections(), [connection])

    // Without renewal the server closes the connection with 4001 at its token's expiry plus the
    // clock tolerance, found by a deadline sweep that runs at least once a second. Wait for the
    // page to renew its token on this connection with a token issued after that point (its
    // `iat`, server time): the connection was open then, so it outlived its first token.
    const closedWithoutRenewalAt = (welcome.tokenExpiresAt as number) + toleranceMs + 1000
    const renewedAfterExpiry = () => socket.received.find((reply) => {
      if (reply.type !== 'reply') return false
      const command = socket.sent.find(f => f.type === 'refresh' && f.id === reply.id)
      return command !== undefined && jwtClaims(command.token as string).iat * 1000 >= closedWithoutRenewalAt
    })
    await socket.until('a token renewed on the open connection after its first token expired', renewedAfterExpiry, 6 * ttlSeconds * 1000)
    assert.equal(socket.closed(), false)
    assert.deepEqual(await aliceConnections(), [connection], 'the token was renewed on the open connection (refresh), no reconnect')
    await say(alice.page, 'still connected')
    await waitForMessage(alice.page, 'still connected')
    await alice.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await alice.page.getByRole('link', { name: 'Lobby' }).waitFor()
    assert.deepEqual(alice.errors, [])
  })

  it('a reload while the server is down says the server cannot be reached, keeps the sign-in, and signs back in by itself once the server is back', async (t) => {
    const env = webEnv(tempDir(t, 'switchboard-web-down-'))
    let server = await start(t, env)
    const base = `http://127.0.0.1:${server.port}`
    const browser = await launchBrowser(t)
    const alice = await openApp(browser, base)
    await register(alice.page, 'alice', PASSWORD)
    await createRoom(alice, 'desk', 'Desk', 'public')

    // The page is served by the server it then asks, so "down at start" means down between the
    // page load and its first API call. The reload's session check (POST /auth/refresh) is held
    // in the browser while the server stops, then let go to the real, now closed, port.
    let held: (route: Route) => void = () => {}
    const refreshHeld = new Promise<Route>((resolve) => { held = resolve })
    await alice.page.route('**/auth/refresh', route => held(route), { times: 1 })
    await alice.page.reload({ waitUntil: 'commit' })
    const refresh = await withTimeout(refreshHeld, WAIT_MS, 'the reloaded page\'s session check (POST /auth/refresh)')
    server.child.kill('SIGTERM')
    assert.equal((await server.exited).code, 0, `graceful exit\n${server.stdout()}\n${server.stderr()}`)
    await refresh.continue()

    await alice.page.getByRole('heading', { name: 'Cannot reach the server', level: 1 }).waitFor()
    assert.equal(await alice.page.getByRole('heading', { name: 'Sign in to Switchboard' }).count(), 0, 'no sign-in form: the sign-in was not refused')
    await alice.page.getByText('You are still signed in on this tab').waitFor()
    // Trying again while the server is still down: the page says it tried, still no sign-in form.
    // (The page also tries by itself, first after 5 s: the count may already be past 2.)
    await alice.page.getByRole('button', { name: 'Try again' }).click()
    await alice.page.getByText(/Still no answer after \d+ tries/).waitFor()
    assert.equal(await alice.page.getByLabel('Password').count(), 0)
    await alice.page.screenshot({ path: artifact('web-unreachable.png') })

    // The server is back: without a click, the page's own next try signs in from the kept
    // refresh token and goes where the reload was.
    server = await start(t, env, server.port)
    await alice.page.getByRole('heading', { name: 'Desk', level: 1 }).waitFor({ timeout: WAIT_MS })
    await alice.page.getByText('Signed in as alice').waitFor()
    await waitForConnection(alice.page, 'Connected')
    assert.deepEqual(alice.errors, [])
  })

  it('signing out while the server is down: signed out on the page at once, and the server ends the sign-in once it is back', async (t) => {
    const env = webEnv(tempDir(t, 'switchboard-web-signout-'))
    let server = await start(t, env)
    const base = `http://127.0.0.1:${server.port}`
    const browser = await launchBrowser(t)
    const alice = await openApp(browser, base)
    await register(alice.page, 'alice', PASSWORD)
    await alice.page.getByText('Signed in as alice').waitFor()
    const refreshToken = await alice.page.evaluate(() => sessionStorage.getItem('switchboard.refreshToken'))
    assert.ok(refreshToken !== null)

    server.child.kill('SIGTERM')
    assert.equal((await server.exited).code, 0, `graceful exit\n${server.stdout()}\n${server.stderr()}`)
    await alice.page.getByRole('button', { name: 'Sign out' }).click()
    await alice.page.getByRole('heading', { name: 'Sign in to Switchboard' }).waitFor()
    await alice.page.getByText('the server could not be reached to end the sign-in there').waitFor()
    assert.equal(await alice.page.evaluate(() => sessionStorage.getItem('switchboard.refreshToken')), null, 'nothing of the sign-in is left for this page to use')

    // Back: the page tells it without being asked, and the refresh token stops working.
    server = await start(t, env, server.port)
    await alice.page.getByText('The server has now ended your earlier sign-in.').waitFor({ timeout: WAIT_MS })
    const refused = await oneShotRequest(base, 'POST', '/auth/refresh', { body: { refreshToken } })
    assert.equal(refused.status, 401, JSON.stringify(refused.body))
    assert.equal(await alice.page.evaluate(() => sessionStorage.getItem('switchboard.pendingSignOuts')), null)
  })

  it('images: attached or pasted, shown to the other user live and after a reload; too large or not an image is refused in the page', async (t) => {
    const limit = 16_384
    const env = webEnv(tempDir(t, 'switchboard-web-images-'), { WS_MAX_MESSAGE_BYTES: String(limit) })
    const { base, alice, bob } = await twoInARoom(t, env, 'pics', 'Pics')
    await alice.page.getByText('Attach or paste an image (PNG, JPEG, GIF, WebP) up to 16 KB.').waitFor()

    // A 3 × 2 PNG through the file picker: bob sees it decoded at its own size.
    const small = png(3, 2)
    await attach(alice.page, { name: 'dots.png', mimeType: 'image/png', buffer: small })
    assert.deepEqual(await shownImages(bob.page, 1), [[3, 2]])
    await bob.page.getByRole('img', { name: `PNG image from alice, ${small.length} bytes` }).waitFor()
    assert.deepEqual(await shownImages(alice.page, 1), [[3, 2]])

    // Pasted into the message box, and one exactly at the server's limit.
    await paste(alice.page, { name: 'pasted.gif', mimeType: 'image/gif', buffer: GIF })
    assert.deepEqual(await shownImages(bob.page, 2), [[3, 2], [1, 1]])
    const atLimit = png(4, 4, limit)
    await attach(alice.page, { name: 'large.png', mimeType: 'image/png', buffer: atLimit })
    assert.deepEqual(await shownImages(bob.page, 3), [[3, 2], [1, 1], [4, 4]])

    // One byte over the limit, and a file that is not an image: refused in the page, with why.
    await attach(alice.page, { name: 'too-large.png', mimeType: 'image/png', buffer: png(4, 4, limit + 1) })
    await alice.page.getByText('This image is too large to send: 16 KB (16385 bytes); the server accepts at most 16 KB (16384 bytes) per message.').waitFor()
    await attach(alice.page, { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not really a PNG\n') })
    await alice.page.getByText('Only PNG, JPEG, GIF and WebP images can be sent; this file is not one of them.').waitFor()
    await paste(alice.page, { name: 'drawing.svg', mimeType: 'image/svg+xml', buffer: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>') })
    await alice.page.getByText('Only PNG, JPEG, GIF and WebP images can be sent').waitFor()
    // Nothing of them was published: a message sent after them comes right after the three images.
    await say(alice.page, 'after the refusals')
    await waitForMessage(bob.page, 'after the refusals')
    const login = await oneShotRequest(base, 'POST', '/auth/login', { body: { username: 'bob', password: PASSWORD } })
    const history = await oneShotRequest(base, 'GET', '/rooms/pics/messages', { token: login.body.accessToken })
    assert.equal(history.status, 200)
    const published = (history.body.publications as Array<{ data: unknown, encoding?: string }>)
      .map(p => p.encoding === 'base64' ? Buffer.from(p.data as string, 'base64') : p.data)
    assert.deepEqual(published, [small, GIF, atLimit, { text: 'after the refusals' }], 'the images as raw bytes, and nothing refused')

    // Bytes that are no image (published by a service): a size and a download of the same bytes.
    const bytes = Buffer.from([0x00, 0xff, 0x10, 0x80])
    const service = await wsConnect(t, { url: base }, { token: login.body.accessToken })
    assert.equal((await service.command({ type: 'publish', room: 'pics', data: bytes.toString('base64'), encoding: 'base64' })).type, 'reply')
    const binary = messageList(alice.page).locator('li .binary', { hasText: 'Binary message, 4 bytes' })
    const [saved] = await Promise.all([alice.page.waitForEvent('download'), binary.getByRole('link', { name: 'Download' }).click()])
    assert.deepEqual(await streamBytes(await saved.createReadStream()), bytes)

    // From history after a reload, in order; the room still fits a phone's width.
    await bob.page.setViewportSize({ width: 375, height: 740 })
    const socket = watchSocket(bob.page)
    await bob.page.reload()
    await bob.page.getByRole('heading', { name: 'Pics', level: 1 }).waitFor()
    assert.deepEqual(await shownImages(bob.page, 3), [[3, 2], [1, 1], [4, 4]])
    await messageList(bob.page).locator('li .binary', { hasText: 'Binary message, 4 bytes' }).waitFor()
    assert.ok(await fitsWidth(bob.page), 'the room with images fits 375px')

    // The page speaks MessagePack: a live image reaches it as the file's bytes (bin), no base64.
    const welcome = await socket.until('the welcome frame', () => socket.received.find(f => f.type === 'welcome'))
    assert.equal(welcome.protocol, 'switchboard.v1.msgpack')
    await bob.page.getByRole('textbox', { name: 'Message' }).and(bob.page.locator(':enabled')).waitFor()
    await attach(alice.page, { name: 'dots.png', mimeType: 'image/png', buffer: small })
    const pushed = await socket.until('the image pushed live', () => socket.received.find(f => f.type === 'message' && f.data instanceof Uint8Array))
    assert.deepEqual(Buffer.from(pushed.data as Uint8Array), small)
    assert.equal(pushed.encoding, undefined)
    assert.deepEqual(await shownImages(bob.page, 4), [[3, 2], [1, 1], [4, 4], [3, 2]])

    // Leaving the room revokes its Blob URLs: an image URL that loaded no longer does.
    const loads = async (url: string): Promise<boolean> => await alice.page.evaluate(async (src) => await new Promise<boolean>((resolve) => {
      const img = new Image()
      img.onload = () => resolve(true)
      img.onerror = () => resolve(false)
      img.src = src
    }), url)
    const src = await messageList(alice.page).locator('li img').first().getAttribute('src') ?? ''
    assert.ok(src.startsWith('blob:'), src)
    assert.equal(await loads(src), true)
    await alice.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await alice.page.getByRole('heading', { name: 'Rooms', level: 1 }).waitFor()
    assert.equal(await loads(src), false, 'revoked when the room view went away')

    for (const user of [alice, bob]) assert.deepEqual(user.errors, [])
  })

  it('a network drop: the page notices, reconnects when the network is back, and recovers what it missed', async (t) => {
    // A short heartbeat, so the SDK's liveness ping notices a silent connection soon.
    const env = webEnv(tempDir(t, 'switchboard-web-net-'), { WS_HEARTBEAT_MS: '1000' })
    const { alice, bob } = await twoInARoom(t, env, 'net', 'Net')
    await say(alice.page, 'before the drop')
    await waitForMessage(bob.page, 'before the drop')

    await bob.context.setOffline(true)
    await waitForConnection(bob.page, 'Offline')
    await say(alice.page, 'while bob was offline')
    await waitForMessage(alice.page, 'while bob was offline')
    await bob.context.setOffline(false)
    await waitForConnection(bob.page, 'Connected')
    await waitForMessage(bob.page, 'while bob was offline')
    await say(bob.page, 'back online')
    await waitForMessage(alice.page, 'back online')
    assert.deepEqual(await messageTexts(bob.page), ['before the drop', 'while bob was offline', 'back online'])
    assert.equal(await messageList(bob.page).locator('li.gap').count(), 0)
    assert.deepEqual(bob.errors, [])
  })
})

/** The user's access token, from the REST login (for actions the test takes as a service would). */
async function tokenOf (base: string, username: string, password = PASSWORD): Promise<string> {
  const login = await oneShotRequest(base, 'POST', '/auth/login', { body: { username, password } })
  assert.equal(login.status, 200, JSON.stringify(login.body))
  return login.body.accessToken as string
}

function roomLink (user: BrowserUser, name: string): Locator {
  return user.page.getByRole('list', { name: 'Rooms' }).getByRole('link', { name, exact: true })
}

describe('web app in Chromium: the chat page', { skip: chromiumSkip }, () => {
  before(() => ensureWebBuild())

  it('a room someone adds you to appears in your room list at once, without a reload', async (t) => {
    const { alice, bob } = await twoSignedIn(t, webEnv(tempDir(t, 'switchboard-web-added-')))
    await bob.page.getByText('No rooms yet').waitFor()
    let loads = 0
    bob.page.on('load', () => { loads++ })
    await createRoom(alice, 'ops', 'Ops', 'private')
    assert.equal(await roomLink(bob, 'Ops').count(), 0, 'a private room: not listed before bob is added')
    await addMember(alice, 'bob')
    await roomLink(bob, 'Ops').waitFor()
    assert.equal(loads, 0, 'the list changed in place: no reload')
    await roomLink(bob, 'Ops').click()
    await bob.page.getByRole('heading', { name: 'Ops', level: 1 }).waitFor()
    for (const user of [alice, bob]) assert.deepEqual(user.errors, [])
  })

  it('a room you are removed from, banned from, or that is deleted, disappears from your list at once', async (t) => {
    const { base, alice, bob } = await twoSignedIn(t, webEnv(tempDir(t, 'switchboard-web-removed-')))
    const token = await tokenOf(base, 'alice')
    for (const id of ['one', 'two', 'three']) {
      assert.equal((await oneShotRequest(base, 'POST', '/rooms', { token, body: { id, name: `Room ${id}`, visibility: 'private' } })).status, 201)
      assert.equal((await oneShotRequest(base, 'PUT', `/rooms/${id}/members/bob`, { token, body: { role: 'member' } })).status, 201)
    }
    for (const id of ['one', 'two', 'three']) await roomLink(bob, `Room ${id}`).waitFor()
    let loads = 0
    bob.page.on('load', () => { loads++ })
    assert.equal((await oneShotRequest(base, 'DELETE', '/rooms/one/members/bob', { token })).status, 204)
    await roomLink(bob, 'Room one').waitFor({ state: 'detached' })
    assert.equal((await oneShotRequest(base, 'PUT', '/rooms/two/bans/bob', { token, body: {} })).status, 201)
    await roomLink(bob, 'Room two').waitFor({ state: 'detached' })
    assert.equal((await oneShotRequest(base, 'DELETE', '/rooms/three', { token })).status, 204)
    await roomLink(bob, 'Room three').waitFor({ state: 'detached' })
    await bob.page.getByText('No rooms yet').waitFor()
    assert.equal(loads, 0, 'the list changed in place: no reload')
    // None of them showed as a personal message note: membership events are not messages.
    assert.equal(await bob.page.locator('.personal-messages .note').count(), 0)
    for (const user of [alice, bob]) assert.deepEqual(user.errors, [])
  })

  it('your own messages are set apart from the others\', on each side', async (t) => {
    const { alice, bob } = await twoInARoom(t, webEnv(tempDir(t, 'switchboard-web-mine-')), 'mine', 'Mine')
    await say(alice.page, 'from alice')
    await waitForMessage(bob.page, 'from alice')
    await say(bob.page, 'from bob')
    await waitForMessage(alice.page, 'from bob')
    for (const [user, own, other] of [[alice, 'from alice', 'from bob'], [bob, 'from bob', 'from alice']] as const) {
      const ownItem = messageList(user.page).locator('li', { hasText: own })
      const otherItem = messageList(user.page).locator('li', { hasText: other })
      assert.equal(await ownItem.evaluate(li => li.classList.contains('mine')), true, `${own} is marked as mine`)
      assert.equal(await otherItem.evaluate(li => li.classList.contains('mine')), false, `${other} is not`)
      // Set apart visually, and in words for screen readers.
      const background = async (item: Locator): Promise<string> => await item.evaluate(li => getComputedStyle(li).backgroundColor)
      assert.notEqual(await background(ownItem), await background(otherItem))
      assert.equal(await ownItem.getByText('(you)').count(), 1)
      assert.equal(await otherItem.getByText('(you)').count(), 0)
    }
  })

  it('message times show the date when the message is not from today', async (t) => {
    const { base, alice } = await twoInARoom(t, webEnv(tempDir(t, 'switchboard-web-dates-')), 'dates', 'Dates')
    await say(alice.page, 'sent today')
    await waitForMessage(alice.page, 'sent today')
    const time = async (user: BrowserUser): Promise<string> => await messageList(user.page).locator('li', { hasText: 'sent today' }).locator('time').innerText()
    // Today: the time of day only (e.g. "03:04 AM").
    assert.match(await time(alice), /^\d{1,2}:\d{2}( [AP]M)?$/)
    // A reader whose today is three days earlier (the browser's clock; the server's is real):
    // the same message is not from their today, so its date shows too.
    const browser = alice.context.browser()!
    const carol = await openApp(browser, base)
    await carol.page.clock.setFixedTime(new Date(Date.now() - 3 * 24 * 3600 * 1000))
    await carol.page.reload()
    await register(carol.page, 'carol', PASSWORD)
    await addMember(alice, 'carol')
    await openRoomFromList(carol, 'Dates')
    await waitForMessage(carol.page, 'sent today')
    const shown = await time(carol)
    const date = new Date(await messageList(carol.page).locator('li', { hasText: 'sent today' }).locator('time').getAttribute('datetime') ?? '')
    assert.match(shown, new RegExp(`\\b${date.getMonth() + 1}/${date.getDate()}/${String(date.getFullYear()).slice(2)}\\b`), `the date in ${shown}`)
    assert.deepEqual(carol.errors, [])
  })

  it('a new room shows an empty state, and it goes with the first message', async (t) => {
    const { alice } = await twoSignedIn(t, webEnv(tempDir(t, 'switchboard-web-empty-')))
    await createRoom(alice, 'fresh', 'Fresh', 'public')
    const empty = messageList(alice.page).getByText('No messages yet')
    await empty.waitFor()
    await messageList(alice.page).getByText('Beginning of the room').waitFor()
    await alice.page.getByRole('textbox', { name: 'Message' }).and(alice.page.locator(':enabled')).waitFor()
    await say(alice.page, 'first words')
    await waitForMessage(alice.page, 'first words')
    assert.equal(await empty.count(), 0)
    assert.deepEqual(alice.errors, [])
  })

  it('Remove asks for confirmation like Ban: Cancel keeps the member', async (t) => {
    const { alice } = await twoInARoom(t, webEnv(tempDir(t, 'switchboard-web-confirm-')), 'crew', 'Crew')
    // bob's row in the member list (the presence list above it names bob too while he is online).
    const bobRow = alice.page.locator('aside li').filter({ has: alice.page.getByRole('button', { name: 'Remove bob' }) })
    alice.answers.push(false)
    await alice.page.getByRole('button', { name: 'Remove bob' }).click()
    await waitUntil(alice.page, 'the confirmation asked', async () => alice.dialogs.length === 1)
    assert.match(alice.dialogs[0] ?? '', /^Remove bob from crew\?/)
    // Cancelled: nothing was sent; after a role change (which reloads the members) bob is still there.
    await alice.page.getByLabel('Role of bob').selectOption('moderator')
    await bobRow.getByRole('button', { name: 'Set role' }).click()
    await bobRow.locator('.badge', { hasText: 'moderator' }).waitFor()
    await alice.page.getByRole('button', { name: 'Remove bob' }).click()
    await bobRow.waitFor({ state: 'detached' })
    assert.equal(alice.dialogs.length, 2)
    assert.deepEqual(alice.errors, [])
  })

  it('the create form: the Visibility select shows its options whole, and the room list keeps its distance', async (t) => {
    const { alice } = await twoSignedIn(t, webEnv(tempDir(t, 'switchboard-web-form-')))
    await createRoom(alice, 'lounge', 'Lounge', 'public')
    await alice.page.getByRole('link', { name: 'Rooms', exact: true }).click()
    await roomLink(alice, 'Lounge').waitFor()
    for (const width of [1280, 375]) {
      await alice.page.setViewportSize({ width, height: 800 })
      // Each option's text, in the select's font, fits the select's box less its padding and arrow.
      const cut = await alice.page.getByLabel('Visibility').evaluate((el) => {
        const select = el as HTMLSelectElement
        const style = getComputedStyle(select)
        const canvas = document.createElement('canvas').getContext('2d')!
        canvas.font = style.font
        const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20
        return [...select.options].filter(o => canvas.measureText(o.text).width > room).map(o => o.text)
      })
      assert.deepEqual(cut, [], `options cut off at ${width}px`)
      const list = await alice.page.getByRole('list', { name: 'Rooms' }).boundingBox()
      const form = await alice.page.getByRole('form', { name: 'Create a room' }).boundingBox()
      assert.ok(list !== null && form !== null)
      assert.ok(form.y - (list.y + list.height) >= 12, `space between the room list and the create card at ${width}px: ${form.y - (list.y + list.height)}px`)
      assert.ok(await fitsWidth(alice.page))
    }
    assert.deepEqual(alice.errors, [])
  })

  it('scroll-back: 500 messages, a server restart on embedded defaults, then scrolled back to the very first, each once and in order', async (t) => {
    const env = webEnv(tempDir(t, 'switchboard-web-scrollback-'), { PUBLISH_RATE_PER_USER: '0' })
    let server = await start(t, env)
    const base = `http://127.0.0.1:${server.port}`
    const token = await oneShotRequest(base, 'POST', '/auth/register', { body: { username: 'alice', password: PASSWORD } })
      .then(async () => await tokenOf(base, 'alice'))
    assert.equal((await oneShotRequest(base, 'POST', '/rooms', { token, body: { id: 'archive', name: 'Archive', visibility: 'private' } })).status, 201)
    const expected = Array.from({ length: 500 }, (_, i) => `message ${i + 1}`)
    for (const text of expected) {
      const res = await oneShotRequest(base, 'POST', '/rooms/archive/messages', { token, body: { data: { text } } })
      assert.equal(res.status, 201, JSON.stringify(res.body))
    }
    server = await restart(t, server, env)

    const browser = await launchBrowser(t)
    const alice = await openApp(browser, base)
    await signIn(alice.page, 'alice', PASSWORD)
    await openRoomFromList(alice, 'Archive')
    await waitForMessage(alice.page, 'message 500')
    const list = messageList(alice.page)
    const shown = async (): Promise<number> => await list.locator('li[data-offset]').count()
    const beginning = list.locator('li.history-start.beginning')
    assert.ok(await shown() < 500, 'not everything at once')

    let steps = 0
    while (await beginning.count() === 0) {
      assert.ok(++steps <= 100, 'reached the beginning within 100 scrolls')
      const before = await shown()
      // What the user sees at the top before scrolling up: it stays on screen when older messages come in.
      const top = list.locator('li[data-offset]').first()
      const topOffset = await top.getAttribute('data-offset')
      await list.hover()
      await alice.page.mouse.wheel(0, -20_000)
      await waitUntil(alice.page, 'older messages loaded, or the beginning', async () => (await shown()) > before || (await beginning.count()) > 0)
      if (await shown() > before) {
        await alice.page.waitForFunction(() => document.querySelector('.messages li.history-start:not(.loading)') !== null)
        const kept = await list.locator(`li[data-offset="${topOffset}"]`).evaluate((li) => {
          const box = li.getBoundingClientRect()
          const view = li.parentElement!.getBoundingClientRect()
          return box.bottom > view.top && box.top < view.bottom
        })
        assert.ok(kept, `message ${topOffset} stayed in view while older ones were put above it`)
      }
    }
    assert.deepEqual(await messageTexts(alice.page), expected)
    await beginning.waitFor()
    assert.deepEqual(alice.errors, [])
  })
})
