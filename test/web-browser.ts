import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { chromium, type Browser, type BrowserContext, type Locator, type Page, type WebSocket } from 'playwright-core'
import { decodeMsgpack } from '@switchboard/protocol/msgpack'
import type { WsFrame } from './helper.js'
import { ROOT } from './process.js'

/**
 * Real-browser tests of the web app: playwright-core (no browser download) driving the
 * machine's Chromium. The machine is slow and shared, so every wait is for a condition with a
 * generous bound, never a fixed sleep and never a timing assertion.
 */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const WAIT_MS = 30_000
export const ARTIFACTS = join(ROOT, 'test-artifacts')

/** `skip` option: false with Chromium installed; a reason without (an error under REQUIRE_SERVICES=1). */
export function skipUnlessChromium (): false | string {
  if (existsSync(CHROMIUM)) return false
  const reason = `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`
  if (process.env.REQUIRE_SERVICES === '1') throw new Error(`${reason} (REQUIRE_SERVICES=1)`)
  return reason
}

/**
 * The server serves dist/web; `npm test` on a fresh clone has not built it, so build it here
 * when missing or older than its sources (esbuild: well under a second).
 */
export function ensureWebBuild (): void {
  execFileSync(process.execPath, ['scripts/build-web.mjs', '--if-stale'], { cwd: ROOT, stdio: 'inherit' })
}

export async function launchBrowser (t: TestContext): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']
  })
  t.after(() => browser.close())
  return browser
}

export interface BrowserUser {
  context: BrowserContext
  page: Page
  /** Page errors and console errors seen so far: a clean run has none. */
  errors: string[]
  /** The message of every confirm() and prompt() the page asked, in order. */
  dialogs: string[]
  /**
   * How the next dialogs are answered, first first: a string is typed into a prompt() and
   * accepted, false dismisses (Cancel). With none queued a confirm() is accepted, and a
   * prompt() is a failure.
   */
  answers: Array<string | false>
}

/** A fresh browser context (its own sessionStorage: another person) on the app. */
export async function openApp (browser: Browser, base: string, options: { width?: number, height?: number } = {}): Promise<BrowserUser> {
  const context = await browser.newContext({ viewport: { width: options.width ?? 1280, height: options.height ?? 800 } })
  context.setDefaultTimeout(WAIT_MS)
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', err => errors.push(`pageerror: ${err.message}`))
  page.on('console', (msg) => {
    // Failed loads while the server restarts are expected; anything else is not.
    if (msg.type() === 'error' && !/Failed to load resource|WebSocket connection to .* failed/.test(msg.text())) errors.push(`console: ${msg.text()}`)
  })
  // The app asks confirm() before a ban or an account action, prompt() for a new password; any
  // other dialog (an injected alert()), or a prompt nobody expected, is a failure.
  const dialogs: string[] = []
  const answers: Array<string | false> = []
  page.on('dialog', (dialog) => {
    const type = dialog.type()
    if (type !== 'confirm' && type !== 'prompt') {
      errors.push(`dialog: ${type} ${dialog.message()}`)
      void dialog.dismiss()
      return
    }
    dialogs.push(dialog.message())
    const answer = answers.shift()
    if (answer === false) void dialog.dismiss()
    else if (typeof answer === 'string') void dialog.accept(answer)
    else if (type === 'confirm') void dialog.accept()
    else { errors.push(`unexpected prompt: ${dialog.message()}`); void dialog.dismiss() }
  })
  await page.goto(base + '/')
  return { context, page, errors, dialogs, answers }
}

export async function register (page: Page, username: string, password: string): Promise<void> {
  await page.getByLabel('Username').fill(username)
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Register' }).click()
  await page.getByRole('heading', { name: 'Rooms', level: 1 }).waitFor()
}

export async function signIn (page: Page, username: string, password: string): Promise<void> {
  await page.getByLabel('Username').fill(username)
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByText(`Signed in as ${username}`).waitFor()
}

export function messageList (page: Page): Locator {
  return page.getByRole('list', { name: 'Messages' })
}

/** The texts of the messages shown in the room, in order (gap notes left out). */
export async function messageTexts (page: Page): Promise<string[]> {
  return await messageList(page).locator('li:not(.gap) .text').allTextContents()
}

export async function waitForMessage (page: Page, text: string): Promise<void> {
  await messageList(page).locator('li .text', { hasText: text }).first().waitFor()
}

/** Types a message and presses Enter, as a user does. */
export async function say (page: Page, text: string): Promise<void> {
  const box = page.getByRole('textbox', { name: 'Message' })
  await box.fill(text)
  await box.press('Enter')
}

/** Waits until the connection indicator says `words` (e.g. Connected). */
export async function waitForConnection (page: Page, words: string): Promise<void> {
  await page.locator('#connection-text', { hasText: words }).waitFor()
}

/** Waits until `check` holds in the page; `what` names it in the failure. */
export async function waitUntil (page: Page, what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: still not true after ${WAIT_MS} ms`)
    await page.waitForTimeout(100)
  }
}

/** The frames of the first WebSocket a page opens, as the browser sent and received them. */
export interface PageSocket {
  sent: WsFrame[]
  received: WsFrame[]
  /** True once that socket closed (a reconnect opens another, which is not followed). */
  closed: () => boolean
  /**
   * Resolves with what `check` returns once it returns something other than undefined, checked
   * after every frame; fails naming `what` when the socket closes first or after `ms`.
   */
  until: <T>(what: string, check: () => T | undefined, ms?: number) => Promise<T>
}

/**
 * Follows the next WebSocket the page opens (call it before the action that connects): tests
 * wait for what the page and the server say to each other (a welcome, a token refresh and its
 * reply) instead of sleeping for as long as it should take.
 */
export function watchSocket (page: Page): PageSocket {
  const sent: WsFrame[] = []
  const received: WsFrame[] = []
  let closed = false
  const checks = new Set<() => void>()
  const changed = (): void => { for (const check of [...checks]) check() }
  // Text frames are switchboard.v1 (JSON), binary ones switchboard.v1.msgpack: the page's codec.
  const parse = (payload: string | Buffer): WsFrame => {
    try {
      return (typeof payload === 'string' ? JSON.parse(payload) : decodeMsgpack(payload)) as WsFrame
    } catch {
      return { type: 'does not decode' }
    }
  }
  const follow = (ws: WebSocket): void => {
    page.off('websocket', follow)
    ws.on('framesent', ({ payload }) => { sent.push(parse(payload)); changed() })
    ws.on('framereceived', ({ payload }) => { received.push(parse(payload)); changed() })
    ws.on('close', () => { closed = true; changed() })
  }
  // Listeners attached in the event itself, so no frame of the socket can be missed.
  page.on('websocket', follow)

  const until = <T>(what: string, check: () => T | undefined, ms = WAIT_MS): Promise<T> => new Promise<T>((resolve, reject) => {
    const finish = (): void => { clearTimeout(timer); checks.delete(test) }
    const timer = setTimeout(() => {
      finish()
      reject(new Error(`${what}: not seen within ${ms} ms; last frames received: ${JSON.stringify(received.slice(-3))}`))
    }, ms)
    const test = (): void => {
      let value: T | undefined
      try { value = check() } catch (err) { finish(); reject(err as Error); return }
      if (value !== undefined) { finish(); resolve(value) } else if (closed) { finish(); reject(new Error(`${what}: the page's WebSocket closed first`)) }
    }
    checks.add(test)
    test()
  })
  return { sent, received, closed: () => closed, until }
}

/** The claims of a JWT (not verified: the test reads what the server issued). */
export function jwtClaims (token: string): { iat: number, exp: number, sub: string } {
  const payload = token.split('.')[1]
  if (payload === undefined) throw new Error(`not a JWT: ${token.slice(0, 20)}…`)
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { iat: number, exp: number, sub: string }
}

/** True when nothing makes the page scroll sideways at the current viewport width. */
export async function fitsWidth (page: Page): Promise<boolean> {
  return await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)
}

export function artifact (name: string): string {
  mkdirSync(ARTIFACTS, { recursive: true })
  return join(ARTIFACTS, name)
}
