import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { build as bundle } from 'esbuild'
import { build } from './helper.js'
import { HOOKS_SECRET, hooksEnv, verifySignature } from './hook-backend.js'
import { idpKey, idpToken, jwksEnv, ROOM_SECRET, roomToken, type JwksServer } from './idp-support.js'
import { ROOT } from './process.js'
import { launchBrowser, skipUnlessChromium, WAIT_MS } from './web-browser.js'
import { createApiKey } from './ws-support.js'

/**
 * docs/integration.md worked end to end: an existing application adds Switchboard without
 * copying its users into it. The application's own server (one node:http server here) signs
 * RS256 access tokens for its signed-in user and serves their JWKS, mints room tokens for a
 * private game room, answers Switchboard's publish hook (rewriting the data), and calls the
 * server API's broadcast. Its page, in Chromium, runs the SDK with `getToken` and
 * `getRoomToken` fetched from the application.
 */

const GAME_ROOM = 'game:42:chat'

describe('integration.md end to end: an existing app with its own users, backend and page', { skip: skipUnlessChromium() }, () => {
  it('RS256 tokens from the app\'s JWKS, a room token for a private game room, a publish hook that rewrites, the broadcast call', async (t) => {
    const key = await idpKey('RS256', 'app-key-1')
    const hookCalls: string[] = []
    const sdk = await bundle({ entryPoints: ['packages/client/src/index.ts'], absWorkingDir: ROOT, bundle: true, format: 'esm', platform: 'browser', write: false, logLevel: 'silent' })
    let switchboardUrl = ''

    // The application's server: its login is out of scope, so its one user is signed in.
    const app = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://app.test')
      const json = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
      void (async () => {
        if (url.pathname === '/.well-known/jwks.json') return json(200, { keys: [key.publicJwk] })
        if (url.pathname === '/token') return json(200, { token: await idpToken(key, 'player-7') })
        if (url.pathname === '/room-token') {
          // The backend decides who may play: player-7 may enter game 42.
          return json(200, { token: await roomToken(ROOM_SECRET, { claims: { sub: 'ext:player-7', rooms: ['game:42:*'], ops: ['subscribe', 'publish', 'history', 'presence'] } }) })
        }
        if (url.pathname === '/hooks' && req.method === 'POST') {
          let raw = ''
          for await (const chunk of req) raw += String(chunk)
          if (!verifySignature(HOOKS_SECRET, req.headers, raw)) return json(401, { error: 'bad signature' })
          const call = JSON.parse(raw) as { hook: string, data?: { text?: string } }
          hookCalls.push(call.hook)
          // The publish hook moderates: every chat line goes out upper-cased and marked.
          if (call.hook === 'publish') return json(200, { data: { text: String(call.data?.text ?? '').toUpperCase(), moderated: true } })
          return json(200, {})
        }
        if (url.pathname === '/sdk.js') {
          res.writeHead(200, { 'content-type': 'text/javascript' }).end(sdk.outputFiles[0]!.text)
          return
        }
        if (url.pathname === '/') {
          res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><meta charset="utf-8"><ul id="log"></ul>
<script type="module">
import { SwitchboardClient } from '/sdk.js'
const log = (text) => { const li = document.createElement('li'); li.textContent = text; document.getElementById('log').append(li) }
const client = new SwitchboardClient({
  url: ${JSON.stringify('SWITCHBOARD_URL')},
  getToken: async () => (await (await fetch('/token')).json()).token,
  getRoomToken: async (room) => (await (await fetch('/room-token?room=' + encodeURIComponent(room))).json()).token
})
client.on('welcome', (welcome) => { document.body.dataset.user = welcome.user.id })
try {
  await client.subscribe(${JSON.stringify(GAME_ROOM)}, (event) => { if (event.type === 'message') log(JSON.stringify(event.data)) })
  document.body.dataset.subscribed = 'yes'
  await client.publish(${JSON.stringify(GAME_ROOM)}, { text: 'good game' })
} catch (err) {
  document.body.dataset.error = String(err && err.message)
}
</script>`.replace('"SWITCHBOARD_URL"', JSON.stringify(switchboardUrl)))
          return
        }
        json(404, {})
      })().catch((err: unknown) => { if (!res.headersSent) json(500, { error: String(err) }) })
    })
    await new Promise<void>(resolve => app.listen(0, '127.0.0.1', resolve))
    t.after(() => { app.close(); app.closeAllConnections() })
    const appOrigin = `http://127.0.0.1:${(app.address() as AddressInfo).port}`

    const jwks = { url: `${appOrigin}/.well-known/jwks.json` } as JwksServer
    const switchboard = await build(t, {
      env: {
        ...jwksEnv(jwks, { IDP_ALGORITHMS: 'RS256' }),
        ROOM_TOKEN_SECRET: ROOM_SECRET,
        ...hooksEnv(`${appOrigin}/hooks`, 'publish', { HOOKS_ROOMS: 'game:*' }),
        WS_ALLOWED_ORIGINS: appOrigin
      }
    })
    switchboardUrl = switchboard.url
    // The operator's side: a private room nobody is a member of, and a key for the backend.
    const admin = await switchboard.userToken('ops', 'admin')
    const created = await switchboard.request('POST', '/rooms', { token: admin, body: { id: GAME_ROOM, visibility: 'private' } })
    assert.equal(created.status, 201, created.text)
    const backendKey = await createApiKey(switchboard, ['admin'])

    const browser = await launchBrowser(t)
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(`${appOrigin}/`)
    await page.waitForSelector('body[data-subscribed="yes"]', { state: 'attached', timeout: WAIT_MS })
    assert.equal(await page.getAttribute('body', 'data-user'), 'ext:player-7', 'the app\'s user, known by the IdP\'s subject under the prefix')

    // The player's own line comes back as the hook rewrote it.
    await page.waitForSelector('#log li, body[data-error]', { state: 'attached', timeout: WAIT_MS })
    assert.equal(await page.getAttribute('body', 'data-error'), null)
    assert.deepEqual(JSON.parse(await page.textContent('#log li') ?? ''), { text: 'GOOD GAME', moderated: true })
    assert.deepEqual(hookCalls, ['publish'])

    // The backend announces the end of the round to the game room (and another one) in one call.
    const broadcast = await switchboard.request('POST', '/broadcast', { apiKey: backendKey.key, body: { rooms: [GAME_ROOM, 'game:43:chat'], data: { round: 'over' } } })
    assert.equal(broadcast.status, 200, broadcast.text)
    const results = (broadcast.body as { results: Array<{ room: string, offset?: number, error?: { code: string } }> }).results
    assert.equal(results[0]!.offset, 2)
    assert.equal(results[1]!.error?.code, 'SB_ERR_ROOM_NOT_FOUND')
    await page.waitForFunction(() => document.querySelectorAll('#log li').length === 2, undefined, { timeout: WAIT_MS })
    assert.deepEqual(JSON.parse(await page.textContent('#log li:nth-child(2)') ?? ''), { round: 'over' })

    // Without the backend's room token the same user is not let in.
    const direct = await switchboard.request('GET', `/rooms/${encodeURIComponent(GAME_ROOM)}/messages`, { token: await idpToken(key, 'player-7') })
    assert.equal(direct.status, 404, 'a private room is hidden from a non-member without a room token')
    assert.deepEqual(errors, [])
  })
})
