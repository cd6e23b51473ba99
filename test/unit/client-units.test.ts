import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { Clock } from '../../packages/client/src/clock.js'
import fc from 'fast-check'
import { decodeBase64, encodeBase64 } from '../../packages/client/src/base64.js'
import { decodeServerFrame, jsonWireCodec, msgpackWireCodec, wireCodec, type WireCodec } from '../../packages/client/src/codec.js'
import { copyBytes, isBlob, payloadBytes, utf8Length } from '../../packages/client/src/payload.js'
import { openSocket } from '../../packages/client/src/transport.js'
import { decodeMsgpack, encodeMsgpack } from '@switchboard/protocol/msgpack'
import { CommandQueue, type AnswerFrame, type CommandFrame, type CommandOptions, type Link } from '../../packages/client/src/command-queue.js'
import { CloseCodes, SwitchboardClient, SwitchboardError, type TokenContext, type WebSocketConstructor, type WebSocketLike } from '@switchboard/client'
import { backoffSettings, decideReconnect, type ConnectionEnd, type HandshakeReport, type ReconnectDecision } from '../../packages/client/src/reconnect-policy.js'
import { TokenKeeper, type TokenKeeperHost } from '../../packages/client/src/token-keeper.js'

/*
 * The SDK's units on their own: no sockets, no server, no real timers. The same behaviour is
 * covered end to end, over real sockets, in test/client.test.ts.
 */

/** A clock that moves only when told: `tick` runs what fell due, in time order. */
class FakeClock implements Clock {
  private timers: Array<{ at: number, seq: number, callback: () => void }> = []
  private seq = 0
  constructor (private time = 1_000_000) {}

  now (): number {
    return this.time
  }

  after (ms: number, callback: () => void): () => void {
    const timer = { at: this.time + Math.max(0, ms), seq: this.seq++, callback }
    this.timers.push(timer)
    return () => { this.timers = this.timers.filter(t => t !== timer) }
  }

  /** Moves the time forward by `ms`, running each timer that falls due at its own time. */
  tick (ms: number): void {
    const until = this.time + ms
    for (;;) {
      const next = this.timers.filter(t => t.at <= until).sort((a, b) => a.at - b.at || a.seq - b.seq)[0]
      if (next === undefined) break
      this.timers = this.timers.filter(t => t !== next)
      this.time = next.at
      next.callback()
    }
    this.time = until
  }

  /** Milliseconds until the next timer (undefined when none is set). */
  nextIn (): number | undefined {
    const next = Math.min(...this.timers.map(t => t.at))
    return Number.isFinite(next) ? next - this.time : undefined
  }
}

/** Lets promise callbacks run (a resolved getToken, say); no timer is involved. */
async function settle (): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve()
}

// -------------------------------------------------------------------------------------------
// The reconnect decision

/** A random source that hands out the given draws and counts the calls. */
function draws (...values: number[]): { random: () => number, calls: () => number } {
  let calls = 0
  return { random: () => values[calls++] ?? 0, calls: () => calls }
}

function end (overrides: Partial<ConnectionEnd> = {}): ConnectionEnd {
  return {
    code: 1006,
    reason: '',
    handshake: undefined,
    retryAfterMs: null,
    attempt: 0,
    closedBeforeWelcome: 0,
    mode: 'node',
    canRenewToken: false,
    tokenFresh: false,
    backoff: backoffSettings({ baseMs: 100, capMs: 1000, random: () => 0.5 }),
    ...overrides
  }
}

const retry = (delayMs: number, reason = '', more: Partial<Extract<ReconnectDecision, { action: 'retry' }>> = {}): ReconnectDecision =>
  ({ action: 'retry', delayMs, reason, newToken: false, waitForCommand: false, ...more })
const stop = (reason: string, more: Partial<Extract<ReconnectDecision, { action: 'stop' }>> = {}): ReconnectDecision =>
  ({ action: 'stop', reason, ...more })

/** A handshake refused with this HTTP status (and Retry-After). */
const refused = (status: number, retryAfterMs?: number): Partial<ConnectionEnd> => ({ handshake: { status, retryAfterMs } })
const said = (status: number): string => `handshake refused with HTTP ${status}`
/** The `error` event the client emits for a refused handshake. */
const reported = (status: number, code: HandshakeReport['code'], temporary: boolean): { handshake: HandshakeReport } =>
  ({ handshake: { code, message: said(status), temporary } })

describe('reconnect decision: the table of cases', () => {
  // Base 100 ms, random 0.5: the first retry waits floor(0.5 · 100) = 50 ms.
  const cases: Array<{ name: string, end: Partial<ConnectionEnd>, expect: ReconnectDecision }> = [
    { name: '1000 normal closure from the server stops', end: { code: 1000, reason: 'normal' }, expect: stop('normal') },
    { name: '1000 without a reason names the code', end: { code: 1000 }, expect: stop('closed with code 1000') },
    { name: '1001 going away reconnects', end: { code: 1001 }, expect: retry(50) },
    { name: '1005 no status reconnects', end: { code: 1005 }, expect: retry(50) },
    { name: '1006 abnormal closure (network) reconnects', end: { code: 1006 }, expect: retry(50) },
    { name: '1007 invalid payload stops: retrying would repeat it', end: { code: 1007, reason: 'invalid payload' }, expect: stop('invalid payload') },
    { name: '1009 message too big stops: retrying would repeat it', end: { code: 1009, reason: 'message too big' }, expect: stop('message too big') },
    { name: '1011 internal error reconnects', end: { code: 1011, reason: 'internal error' }, expect: retry(50, 'internal error') },
    { name: '1012 service restart reconnects with backoff', end: { code: 1012, reason: 'service restart' }, expect: retry(50, 'service restart') },
    { name: '1012 after a reconnect push waits its retryAfterMs, not the backoff', end: { code: 1012, reason: 'service restart', retryAfterMs: 1234 }, expect: retry(1234, 'service restart') },
    { name: 'a reconnect push of 0 ms reconnects at once', end: { code: 1012, retryAfterMs: 0 }, expect: retry(0) },
    { name: '4001 token expired with getToken: a new token, then reconnect', end: { code: 4001, reason: 'token expired', canRenewToken: true }, expect: retry(50, 'token expired', { newToken: true }) },
    { name: '4001 token expired without getToken stops', end: { code: 4001, reason: 'token expired' }, expect: stop('token expired') },
    { name: '4001 without a reason still says why', end: { code: 4001 }, expect: stop('token expired') },
    { name: '4002 idle timeout reconnects, or waits for the next command', end: { code: 4002, reason: 'idle timeout' }, expect: retry(50, 'idle timeout', { waitForCommand: true }) },
    { name: '4008 slow consumer reconnects', end: { code: 4008, reason: 'slow consumer' }, expect: retry(50, 'slow consumer') },
    { name: '4029 rate limited reconnects', end: { code: 4029, reason: 'rate limited' }, expect: retry(50, 'rate limited') },
    { name: '4499, the top of the reconnect range, reconnects', end: { code: 4499 }, expect: retry(50) },
    { name: '4500 protocol violation stops', end: { code: 4500, reason: 'protocol violation' }, expect: stop('protocol violation') },
    { name: '4503 kicked stops', end: { code: 4503, reason: 'kicked' }, expect: stop('kicked') },
    { name: '4503 kicked stops even after a reconnect push', end: { code: 4503, reason: 'kicked', retryAfterMs: 10 }, expect: stop('kicked') },
    { name: '4504 account closed stops, even with getToken', end: { code: 4504, reason: 'account closed', canRenewToken: true }, expect: stop('account closed') },
    { name: '4500 stops even with getToken', end: { code: 4500, reason: 'protocol violation', canRenewToken: true }, expect: stop('protocol violation') },
    // The backoff: attempt i waits floor(random · min(cap, base · 2^i)).
    { name: 'attempt 1 doubles the bound', end: { attempt: 1 }, expect: retry(100) },
    { name: 'attempt 3 reaches the cap', end: { attempt: 3, backoff: backoffSettings({ baseMs: 100, capMs: 700, random: () => 0.5 }) }, expect: retry(350) },
    { name: 'attempt 60 stays at the cap', end: { attempt: 60 }, expect: retry(500) },
    { name: 'maxAttempts reached stops', end: { attempt: 3, backoff: backoffSettings({ maxAttempts: 3 }) }, expect: stop('gave up after 3 reconnect attempts') },
    { name: 'maxAttempts 0 never reconnects, and says what was lost', end: { code: 1006, reason: 'gone', backoff: backoffSettings({ maxAttempts: 0 }) }, expect: stop('connection lost (1006 gone)') },
    { name: 'maxAttempts 0 without a reason', end: { code: 1012, backoff: backoffSettings({ maxAttempts: 0 }) }, expect: stop('connection lost (1012)') },
    { name: 'a terminal code wins over maxAttempts', end: { code: 4503, reason: 'kicked', attempt: 9, backoff: backoffSettings({ maxAttempts: 3 }) }, expect: stop('kicked') },
    // Refused handshakes (Node, where ws shows the HTTP status).
    { name: 'HTTP 401 with getToken: a new token, then reconnect', end: { ...refused(401), canRenewToken: true }, expect: retry(50, said(401), { newToken: true, ...reported(401, 'unauthorized', true) }) },
    { name: 'HTTP 401 of a token fetched for this attempt stops', end: { ...refused(401), canRenewToken: true, tokenFresh: true }, expect: stop('credentials refused (HTTP 401)', reported(401, 'unauthorized', false)) },
    { name: 'HTTP 401 without getToken stops', end: refused(401), expect: stop('credentials refused (HTTP 401)', reported(401, 'unauthorized', false)) },
    { name: 'HTTP 403 (origin not allowed) stops', end: refused(403), expect: stop(said(403), reported(403, 'forbidden', false)) },
    { name: 'HTTP 404 stops', end: refused(404), expect: stop(said(404), reported(404, 'unavailable', false)) },
    { name: 'HTTP 408 reconnects', end: refused(408), expect: retry(50, said(408), reported(408, 'unavailable', true)) },
    { name: 'HTTP 429 waits at least its Retry-After', end: refused(429, 3000), expect: retry(3000, said(429), reported(429, 'unavailable', true)) },
    { name: 'HTTP 503 with a Retry-After shorter than the backoff waits the backoff', end: refused(503, 10), expect: retry(50, said(503), reported(503, 'unavailable', true)) },
    {
      name: 'HTTP 503 with maxAttempts reached stops, the report still temporary',
      end: { ...refused(503), attempt: 2, backoff: backoffSettings({ maxAttempts: 2 }) },
      expect: stop('gave up after 2 reconnect attempts', reported(503, 'unavailable', true))
    },
    // Browsers cannot see the handshake's status: a new token after 2, 4, 8, … failures in a row.
    { name: 'browser: 1 failed handshake in a row reconnects with the token', end: { mode: 'browser', canRenewToken: true, closedBeforeWelcome: 1 }, expect: retry(50) },
    { name: 'browser: 2 failed handshakes in a row ask for a new token', end: { mode: 'browser', canRenewToken: true, closedBeforeWelcome: 2 }, expect: retry(50, '', { newToken: true }) },
    { name: 'browser: 3 in a row keep the token', end: { mode: 'browser', canRenewToken: true, closedBeforeWelcome: 3 }, expect: retry(50) },
    { name: 'browser: 8 in a row ask again', end: { mode: 'browser', canRenewToken: true, closedBeforeWelcome: 8 }, expect: retry(50, '', { newToken: true }) },
    { name: 'browser without getToken: nothing to renew', end: { mode: 'browser', closedBeforeWelcome: 2 }, expect: retry(50) },
    { name: 'node: failures without a status are the network', end: { mode: 'node', canRenewToken: true, closedBeforeWelcome: 2 }, expect: retry(50) }
  ]
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(decideReconnect(end(c.end)), c.expect)
    })
  }

  it('covers every close code the server sends', () => {
    const covered = new Set(cases.map(c => c.end.code).filter(code => code !== undefined))
    for (const code of Object.values(CloseCodes)) assert.ok(covered.has(code), `a case for close code ${code}`)
  })

  it('every code in 4500–4999 is terminal, with or without getToken, a push or attempts left', () => {
    for (let code = 4500; code <= 4999; code++) {
      for (const canRenewToken of [false, true]) {
        const decision = decideReconnect(end({ code, reason: 'x', canRenewToken, retryAfterMs: 5 }))
        assert.deepEqual(decision, stop('x'), `close code ${code}`)
      }
    }
  })

  it('every code in 4000–4499 but 4001 reconnects without a new token', () => {
    for (let code = 4000; code <= 4499; code++) {
      if (code === CloseCodes.TOKEN_EXPIRED) continue
      const decision = decideReconnect(end({ code, canRenewToken: true }))
      assert.equal(decision.action, 'retry', `close code ${code}`)
      assert.equal(decision.action === 'retry' && decision.newToken, false, `close code ${code}`)
    }
  })
})

describe('reconnect decision: jitter', () => {
  it('draws the delay uniformly from [0, bound): floor(random · bound), once per retry', () => {
    const backoff = { baseMs: 40, capMs: 300 }
    // Bounds 40, 80, 160, 300 (capped).
    for (const [attempt, r, delayMs] of [[0, 0, 0], [0, 0.999, 39], [1, 0.5, 40], [2, 0.999, 159], [3, 0.999, 299], [4, 0.25, 75]] as const) {
      const source = draws(r)
      const decision = decideReconnect(end({ attempt, backoff: backoffSettings({ ...backoff, random: source.random }) }))
      assert.deepEqual(decision, retry(delayMs), `attempt ${attempt}, random ${r}`)
      assert.equal(source.calls(), 1)
    }
  })

  it('does not draw for a stop or for a server-given delay', () => {
    const source = draws(0.5)
    const backoff = backoffSettings({ random: source.random })
    decideReconnect(end({ code: 4503, backoff }))
    decideReconnect(end({ code: 1012, retryAfterMs: 100, backoff }))
    decideReconnect(end({ attempt: 5, backoff: { ...backoff, maxAttempts: 5 } }))
    assert.equal(source.calls(), 0)
  })

  it('clamps a jitter source outside [0, 1) into it', () => {
    for (const [r, delayMs] of [[-1, 0], [Number.NaN, 0], [1, 99], [7, 99]] as const) {
      const decision = decideReconnect(end({ backoff: backoffSettings({ baseMs: 100, random: () => r }) }))
      assert.deepEqual(decision, retry(delayMs), `random ${r}`)
    }
  })

  it('fills in the defaults: 500 ms base, 10 s cap, no attempt limit', () => {
    const { baseMs, capMs, maxAttempts } = backoffSettings()
    assert.deepEqual({ baseMs, capMs, maxAttempts }, { baseMs: 500, capMs: 10_000, maxAttempts: Infinity })
  })

  it('by default, a client that has failed many times in a row waits at most 10 s, and still a random time', () => {
    const draws = [0, 0.25, 0.5, 0.999]
    const delays = draws.map(r => decideReconnect(end({ attempt: 40, backoff: { ...backoffSettings(), random: () => r } })))
    assert.deepEqual(delays.map(d => d.action === 'retry' ? d.delayMs : null), [0, 2500, 5000, 9990])
  })
})

// -------------------------------------------------------------------------------------------
// The token keeper

/** A JWT-shaped token (unsigned: the keeper only reads `exp`) expiring at `expMs`. */
function jwt (expMs: number, tag = ''): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  return `${part({ alg: 'HS256' })}.${part({ exp: expMs / 1000, sub: 'u', tag })}.sig`
}

interface RefreshSent { token: string, done: (error: SwitchboardError | null, tokenExpiresAt: number | null) => void }

function keeperHarness (options: { token?: string, getToken?: (context: TokenContext) => string | Promise<string> } = {}) {
  const clock = new FakeClock()
  const sent: RefreshSent[] = []
  const errors: Error[] = []
  const calls: TokenContext[] = []
  let open = false
  const host: TokenKeeperHost = {
    isOpen: () => open,
    sendRefresh: (token, done) => { sent.push({ token, done }) },
    reportError: (err) => { errors.push(err) }
  }
  const getToken = options.getToken
  const keeper = new TokenKeeper(options.token, getToken === undefined ? undefined : (context) => { calls.push(context); return getToken(context) }, host, clock)
  /** A connection attempt that gets a welcome with the server's `tokenExpiresAt`. */
  const connect = async (tokenExpiresAt: number | null): Promise<void> => {
    const fetching = keeper.beginAttempt()
    if (fetching !== null) keeper.useFetched(await fetching)
    keeper.welcomed(tokenExpiresAt)
    open = true
    keeper.startRefreshing()
  }
  const lose = (): void => { open = false; keeper.connectionLost() }
  return { clock, keeper, sent, errors, calls, connect, lose, setOpen: (value: boolean) => { open = value } }
}

describe('token keeper', () => {
  it('connects with the given token while it is valid, fetches one when there is none or it expired', async () => {
    const now = new FakeClock().now()
    const valid = keeperHarness({ token: jwt(now + 60_000), getToken: () => 'new' })
    assert.equal(valid.keeper.beginAttempt(), null)
    assert.equal(valid.keeper.token, jwt(now + 60_000))
    assert.equal(valid.keeper.fetchedForAttempt, false)

    const none = keeperHarness({ getToken: () => 'first' })
    const fetching = none.keeper.beginAttempt()
    assert.ok(fetching !== null)
    none.keeper.useFetched(await fetching)
    assert.equal(none.keeper.token, 'first')
    assert.equal(none.keeper.fetchedForAttempt, true)
    assert.deepEqual(none.calls, [{ stale: false }])
    // The next attempt keeps it (no exp to read: it is not known to have expired).
    assert.equal(none.keeper.beginAttempt(), null)
    assert.equal(none.keeper.fetchedForAttempt, false)

    const expired = keeperHarness({ token: jwt(now + 1_000), getToken: () => 'renewed' })
    assert.equal(expired.keeper.beginAttempt(), null)
    expired.clock.tick(1_000)
    assert.ok(expired.keeper.beginAttempt() !== null, 'a token at its exp is not used')
    assert.deepEqual(expired.calls, [{ stale: false }])
  })

  it('after markStale, the next attempt asks getToken({ stale: true }); without getToken there is nothing to ask', async () => {
    const h = keeperHarness({ token: 'opaque', getToken: () => 'replacement' })
    h.keeper.markStale()
    const fetching = h.keeper.beginAttempt()
    assert.ok(fetching !== null)
    h.keeper.useFetched(await fetching)
    assert.deepEqual(h.calls, [{ stale: true }])
    assert.equal(h.keeper.beginAttempt(), null, 'the fetched token is no longer stale')

    const fixed = keeperHarness({ token: 'opaque' })
    fixed.keeper.markStale()
    assert.equal(fixed.keeper.beginAttempt(), null)
    assert.equal(fixed.keeper.canRenew, false)
  })

  it('refreshes at half the remaining life of a short token, a minute ahead of a long one, on the server\'s expiry', async () => {
    for (const [lifeMs, refreshAfterMs] of [[60_000, 30_000], [100_000, 50_000], [600_000, 540_000]] as const) {
      const h = keeperHarness({ token: 'opaque', getToken: () => 'next' })
      await h.connect(h.clock.now() + lifeMs)
      h.clock.tick(refreshAfterMs - 1)
      await settle()
      assert.equal(h.calls.length, 0, `${lifeMs} ms token: no refresh 1 ms early`)
      h.clock.tick(1)
      await settle()
      assert.deepEqual(h.calls, [{ stale: false }], `${lifeMs} ms token: refresh after ${refreshAfterMs} ms`)
      assert.deepEqual(h.sent.map(s => s.token), ['next'])
    }
  })

  it('takes the refreshed token once the server accepts it, and schedules the next refresh from the new expiry', async () => {
    let n = 0
    const h = keeperHarness({ token: 'opaque', getToken: () => `t${++n}` })
    await h.connect(h.clock.now() + 60_000)
    h.clock.tick(30_000)
    await settle()
    assert.equal(h.keeper.token, 'opaque', 'not before the server accepted it')
    h.sent[0]!.done(null, h.clock.now() + 60_000)
    assert.equal(h.keeper.token, 't1')
    assert.equal(h.clock.nextIn(), 30_000)
    h.clock.tick(30_000)
    await settle()
    assert.deepEqual(h.sent.map(s => s.token), ['t1', 't2'])
  })

  it('a refresh that did not extend the expiry is retried a few seconds later, not at once', async () => {
    const h = keeperHarness({ token: 'opaque', getToken: () => 'same' })
    const expiresAt = h.clock.now() + 40_000
    await h.connect(expiresAt)
    h.clock.tick(20_000)
    await settle()
    h.sent[0]!.done(null, expiresAt)
    // 20 s left: retried after max(200, min(5000, 20000 / 4)) = 5000 ms.
    assert.equal(h.clock.nextIn(), 5_000)
  })

  it('a failed getToken or a refused refresh is reported and retried until the token expires; `closed` is not reported', async () => {
    let fail = true
    const h = keeperHarness({ token: 'opaque', getToken: () => fail ? Promise.reject(new Error('auth server down')) : 'ok' })
    const expiresAt = h.clock.now() + 8_000
    await h.connect(expiresAt)
    h.clock.tick(4_000)
    await settle()
    assert.deepEqual(h.errors.map(e => e.message), ['auth server down'])
    // 4 s left: retried after 1000 ms, then 750 ms (3 s left), …, at least 200 ms apart.
    assert.equal(h.clock.nextIn(), 1_000)
    h.clock.tick(1_000)
    await settle()
    assert.equal(h.errors.length, 2)
    assert.equal(h.clock.nextIn(), 750)
    fail = false
    h.clock.tick(750)
    await settle()
    h.sent[0]!.done(new SwitchboardError('unauthorized', 'refresh refused'), null)
    assert.deepEqual(h.errors.map(e => e.message), ['auth server down', 'auth server down', 'refresh refused'])
    assert.ok(h.clock.nextIn() !== undefined, 'retried after a refusal')
    h.clock.tick(h.clock.nextIn()!)
    await settle()
    h.sent[1]!.done(new SwitchboardError('closed', 'The client is closed'), null)
    assert.equal(h.errors.length, 3, 'closed is not a refresh failure')
    // A failure seen once the token expired is not retried: the server closes with 4001, and
    // reconnecting fetches a token.
    const late = keeperHarness({ token: 'opaque', getToken: () => Promise.reject(new Error('down')) })
    await late.connect(late.clock.now() + 100)
    late.clock.tick(50) // the refresh starts, its getToken fails
    late.clock.tick(50) // the token expires before the failure is seen
    await settle()
    assert.equal(late.errors.length, 1)
    assert.equal(late.clock.nextIn(), undefined, 'no retry once expired')
  })

  it('a connection lost during a refresh: no refresh is sent, the new token is kept for the next attempt', async () => {
    let release: (token: string) => void = () => {}
    const h = keeperHarness({ token: 'opaque', getToken: () => new Promise<string>((resolve) => { release = resolve }) })
    await h.connect(h.clock.now() + 60_000)
    h.clock.tick(30_000)
    h.lose()
    assert.equal(h.clock.nextIn(), undefined, 'nothing scheduled while disconnected')
    const kept = jwt(h.clock.now() + 120_000, 'kept')
    release(kept)
    await settle()
    assert.equal(h.sent.length, 0)
    assert.equal(h.keeper.beginAttempt(), null, 'the next attempt connects with the kept token')
    assert.equal(h.keeper.token, kept)
  })

  it('a reply of an earlier connection is ignored; after stop nothing is scheduled or kept', async () => {
    let release: (token: string) => void = () => {}
    const h = keeperHarness({ token: 'opaque', getToken: () => new Promise<string>((resolve) => { release = resolve }) })
    await h.connect(h.clock.now() + 60_000)
    h.clock.tick(30_000)
    await settle()
    release('t1')
    await settle()
    assert.equal(h.sent.length, 1)
    h.lose()
    assert.equal(h.keeper.beginAttempt(), null)
    h.setOpen(true)
    h.sent[0]!.done(null, h.clock.now() + 600_000)
    assert.equal(h.keeper.token, 'opaque', 'the reply belongs to the lost connection')

    const s = keeperHarness({ token: 'opaque', getToken: () => new Promise<string>((resolve) => { release = resolve }) })
    await s.connect(s.clock.now() + 60_000)
    s.clock.tick(30_000)
    s.keeper.stop()
    release('late')
    await settle()
    assert.equal(s.keeper.token, 'opaque')
    assert.equal(s.sent.length, 0)
    assert.equal(s.clock.nextIn(), undefined)
  })

  it('never schedules a refresh without getToken, or without an expiry', async () => {
    const fixed = keeperHarness({ token: 'opaque' })
    await fixed.connect(fixed.clock.now() + 60_000)
    assert.equal(fixed.clock.nextIn(), undefined)
    const apiKeyLike = keeperHarness({ token: 'opaque', getToken: () => 'x' })
    await apiKeyLike.connect(null)
    assert.equal(apiKeyLike.clock.nextIn(), undefined)
  })
})

// -------------------------------------------------------------------------------------------
// The command queue

interface Settled { id: number, error?: SwitchboardError, result?: unknown, dropped?: true }

function queueHarness (options: { requestTimeoutMs?: number, maxMessageBytes?: number, burst?: number, perSecond?: number, codec?: WireCodec } = {}) {
  const clock = new FakeClock()
  const written: Array<{ id: number, type: string } & Record<string, unknown>> = []
  const settled: Settled[] = []
  let link: Link | null = null
  let failSend = false
  const queue = new CommandQueue({ requestTimeoutMs: options.requestTimeoutMs ?? 1_000, link: () => link, clock })
  const connect = (): void => {
    link = {
      send: (frame) => {
        if (failSend) throw new Error('socket gone')
        written.push((typeof frame === 'string' ? JSON.parse(frame) : decodeMsgpack(frame)) as { id: number, type: string })
      },
      codec: options.codec ?? jsonWireCodec,
      maxMessageBytes: options.maxMessageBytes ?? 65_536
    }
    // A roomy bucket unless the test is about pacing.
    queue.connected({ messagesBurst: options.burst ?? 10_000, messagesPerSecond: options.perSecond ?? 10_000 })
    queue.flush()
  }
  const disconnect = (): void => { link = null; queue.connectionLost() }
  /** The writer cannot write (the client is not open), but nothing was lost yet. */
  const hold = (): void => { link = null }
  /** Queues a command and flushes, as the client does; its outcome lands in `settled`. */
  const add = (frame: CommandFrame, more: Partial<CommandOptions> = {}): number => {
    const command = queue.add(frame, {
      urgent: false,
      resend: false,
      dropped: () => { settled.push({ id: command.id, dropped: true }) },
      done: (error, result) => { settled.push(error === null ? { id: command.id, result } : { id: command.id, error }) },
      ...more
    })
    queue.flush()
    return command.id
  }
  const reply = (id: number, result: unknown = { ok: id }): void => queue.answer({ type: 'reply', id, result })
  const refuse = (id: number, error: NonNullable<AnswerFrame['error']>): void => queue.answer({ type: 'error', id, error })
  return { clock, queue, written, settled, connect, disconnect, hold, add, reply, refuse, failSend: (value: boolean) => { failSend = value } }
}

describe('command queue', () => {
  it('holds commands while there is no connection, then writes them in call order with increasing ids', () => {
    const h = queueHarness()
    const ids = [h.add({ type: 'publish', room: 'a' }), h.add({ type: 'history', room: 'a' }), h.add({ type: 'ping' })]
    assert.equal(h.written.length, 0)
    assert.equal(h.queue.waiting, 3)
    h.connect()
    assert.deepEqual(h.written.map(f => [f.id, f.type]), [[ids[0], 'publish'], [ids[1], 'history'], [ids[2], 'ping']])
    assert.ok(ids[0]! < ids[1]! && ids[1]! < ids[2]!)
    assert.equal(h.queue.waiting, 0)
    assert.equal(h.queue.isEmpty, false, 'written, awaiting answers')
  })

  it('writes urgent commands (restores, refresh, liveness) before the ones already waiting', () => {
    const h = queueHarness()
    h.add({ type: 'publish', n: 1 })
    h.add({ type: 'publish', n: 2 })
    h.add({ type: 'subscribe', room: 'r' }, { urgent: true })
    assert.equal(h.queue.waiting, 2, 'urgent commands are not counted against maxQueuedCommands')
    h.connect()
    assert.deepEqual(h.written.map(f => f.type), ['subscribe', 'publish', 'publish'])
  })

  it('settles each command by the id of its answer, in any order; an answer nobody waits for is ignored', () => {
    const h = queueHarness()
    h.connect()
    const [a, b, c] = [h.add({ type: 'history' }), h.add({ type: 'publish', idempotencyKey: 'k' }, { idempotencyKey: 'k' }), h.add({ type: 'presence' })]
    h.reply(c!, { users: [] })
    h.refuse(b!, { code: 'forbidden', message: 'no', temporary: false })
    h.reply(a!, { publications: [] })
    h.reply(a!, 'again')
    h.reply(999)
    assert.deepEqual(h.settled.map(s => [s.id, s.error === undefined ? s.result : `${s.error.code} ${s.error.message} ${s.error.temporary} ${s.error.idempotencyKey}`]), [
      [c, { users: [] }],
      [b, 'forbidden no false k'],
      [a, { publications: [] }]
    ])
    assert.ok(h.settled[1]!.error instanceof SwitchboardError)
    assert.equal(h.queue.isEmpty, true)
  })

  it('keeps at most 32 commands unanswered: the next goes out when one is answered', () => {
    const h = queueHarness()
    h.connect()
    const ids = Array.from({ length: 40 }, (_, i) => h.add({ type: 'ping', n: i }))
    assert.equal(h.written.length, 32)
    h.reply(ids[5]!)
    assert.equal(h.written.length, 33)
    assert.equal(h.written.at(-1)!.id, ids[32])
  })

  it('times a written command out after requestTimeoutMs on the clock; its late reply is ignored, and the slot is free', () => {
    const h = queueHarness({ requestTimeoutMs: 1_000 })
    const waiting = h.add({ type: 'history' })
    h.clock.tick(5_000)
    assert.equal(h.settled.length, 0, 'the timeout counts from the write, not from the call')
    h.connect()
    const publish = h.add({ type: 'publish' }, { idempotencyKey: 'key-1' })
    h.clock.tick(999)
    assert.equal(h.settled.length, 0)
    h.clock.tick(1)
    assert.deepEqual(h.settled.map(s => [s.id, s.error?.code, s.error?.temporary]), [[waiting, 'timeout', true], [publish, 'timeout', true]])
    assert.match(h.settled[1]!.error!.message, /publish \(it may have been stored: retry with the same idempotencyKey\) within 1000 ms/)
    assert.equal(h.settled[1]!.error!.idempotencyKey, 'key-1')
    h.reply(publish)
    assert.equal(h.settled.length, 2)
    assert.equal(h.queue.isEmpty, true)
  })

  it('an answered command never times out', () => {
    const h = queueHarness({ requestTimeoutMs: 1_000 })
    h.connect()
    const id = h.add({ type: 'ping' })
    h.reply(id)
    h.clock.tick(10_000)
    assert.deepEqual(h.settled.map(s => s.error?.code), [undefined])
  })

  it('on a lost connection: resendable commands go back to the front in id order, the others and urgent ones are dropped', () => {
    const h = queueHarness({ requestTimeoutMs: 1_000 })
    h.connect()
    const read1 = h.add({ type: 'history', n: 1 }, { resend: true })
    const unsub = h.add({ type: 'unsubscribe' })
    const read2 = h.add({ type: 'publish', n: 2 }, { resend: true, idempotencyKey: 'k2' })
    h.disconnect()
    const urgentWaiting = h.add({ type: 'refresh' }, { urgent: true })
    const later = h.add({ type: 'presence' }, { resend: true })
    h.disconnect()
    assert.deepEqual(h.settled, [{ id: unsub, dropped: true }, { id: urgentWaiting, dropped: true }])
    h.clock.tick(10_000)
    assert.equal(h.settled.length, 2, 'no timeout fires for a command of the lost connection')
    h.written.length = 0
    h.connect()
    assert.deepEqual(h.written.map(f => [f.id, f.type]), [[read1, 'history'], [read2, 'publish'], [later, 'presence']])
  })

  it('a failed socket write leaves the command in flight: the lost connection requeues it', () => {
    const h = queueHarness()
    h.connect()
    h.failSend(true)
    const command = h.queue.add({ type: 'history' }, { urgent: false, resend: true, dropped: () => {}, done: () => {} })
    h.queue.flush()
    assert.equal(h.queue.isInFlight(command), true)
    h.disconnect()
    h.failSend(false)
    h.connect()
    assert.deepEqual(h.written.map(f => f.id), [command.id])
  })

  it('withdraws a command that was not written; one in flight stays', () => {
    const h = queueHarness()
    const first = h.queue.add({ type: 'subscribe', room: 'a' }, { urgent: false, resend: false, dropped: () => {}, done: () => {} })
    assert.equal(h.queue.isWaiting(first), true)
    h.queue.withdraw(first)
    assert.equal(h.queue.isWaiting(first), false)
    h.connect()
    assert.equal(h.written.length, 0)
    const second = h.queue.add({ type: 'subscribe', room: 'b' }, { urgent: false, resend: false, dropped: () => {}, done: () => {} })
    h.queue.flush()
    assert.equal(h.queue.isInFlight(second), true)
    h.queue.withdraw(second)
    assert.equal(h.queue.isInFlight(second), true)
  })

  it('refuses a frame over maxMessageBytes with bad_request before writing it, and goes on with the next', () => {
    const h = queueHarness({ maxMessageBytes: 100 })
    h.connect()
    const big = h.add({ type: 'publish', data: 'é'.repeat(60) }, { idempotencyKey: 'big' })
    const small = h.add({ type: 'ping' })
    assert.deepEqual(h.written.map(f => f.id), [small])
    assert.equal(h.settled[0]!.id, big)
    assert.equal(h.settled[0]!.error!.code, 'bad_request')
    assert.equal(h.settled[0]!.error!.idempotencyKey, 'big')
  })

  it('sends a command refused with rate_limited again, up to 3 times, in its first order before later ones', () => {
    const h = queueHarness({ requestTimeoutMs: 60_000 })
    h.connect()
    const ids = [h.add({ type: 'publish', n: 1 }), h.add({ type: 'publish', n: 2 }), h.add({ type: 'publish', n: 3 })]
    const limited = { code: 'rate_limited' as const, message: 'slow down', temporary: true }
    h.written.length = 0
    h.refuse(ids[1]!, limited)
    h.refuse(ids[0]!, limited)
    // The writer pauses for a token after a refusal; the pacing is not the subject here.
    h.clock.tick(1_000)
    assert.deepEqual(h.written.map(f => f.id), [ids[0], ids[1]], 'the refused ones again, in the order first sent')
    for (let retry = 2; retry <= 3; retry++) {
      h.refuse(ids[0]!, limited)
      h.clock.tick(1_000)
    }
    assert.equal(h.settled.length, 0, 'refused three times: sent again each time')
    h.refuse(ids[0]!, limited)
    assert.deepEqual(h.settled.map(s => [s.id, s.error?.code]), [[ids[0], 'rate_limited']], 'the fourth refusal is final')
  })

  it('paces writes a little under the welcome\'s rate, and waits a refusal\'s retryAfterMs', () => {
    // Burst 5, 100/s: 3 at once (burst - 2), then one per ceil(1000 / 95) = 11 ms.
    const h = queueHarness({ burst: 5, perSecond: 100, requestTimeoutMs: 60_000 })
    h.connect()
    const ids = Array.from({ length: 6 }, (_, i) => h.add({ type: 'ping', n: i }))
    assert.equal(h.written.length, 3)
    assert.equal(h.clock.nextIn(), 11)
    h.clock.tick(10)
    assert.equal(h.written.length, 3)
    h.clock.tick(1)
    assert.equal(h.written.length, 4)
    h.clock.tick(30)
    assert.equal(h.written.length, 6)
    // A refusal with retryAfterMs 500: nothing for 500 ms from the refusal.
    h.clock.tick(1_000)
    h.refuse(ids[5]!, { code: 'rate_limited', message: 'publish rate', temporary: true, retryAfterMs: 500 })
    h.clock.tick(499)
    assert.equal(h.written.length, 6)
    h.clock.tick(1)
    assert.equal(h.written.length, 7)
    assert.equal(h.written.at(-1)!.id, ids[5])
  })

  it('on close every command fails with the error, a publish\'s keeping its key; nothing fires later', () => {
    const h = queueHarness({ requestTimeoutMs: 1_000 })
    h.connect()
    const inFlight = h.add({ type: 'publish' }, { idempotencyKey: 'k' })
    h.hold()
    const waiting = h.add({ type: 'history' }, { resend: true })
    const urgent = h.add({ type: 'ping' }, { urgent: true })
    h.queue.close(new SwitchboardError('closed', 'The client is closed: kicked'))
    h.clock.tick(5_000)
    assert.deepEqual(h.settled.map(s => [s.id, s.error?.code, s.error?.message, s.error?.idempotencyKey]), [
      [inFlight, 'closed', 'The client is closed: kicked', 'k'],
      [urgent, 'closed', 'The client is closed: kicked', undefined],
      [waiting, 'closed', 'The client is closed: kicked', undefined]
    ])
    assert.equal(h.queue.isEmpty, true)
  })
})

// -------------------------------------------------------------------------------------------
// Bytes: base64, the codecs, the size checks

describe('base64 (the SDK\'s own, no Buffer)', () => {
  const reference = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64')

  it('round-trips all 256 byte values, as Node\'s base64 writes them', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i)
    assert.equal(encodeBase64(all), reference(all))
    assert.deepEqual(decodeBase64(encodeBase64(all)), all)
  })

  it('round-trips the empty payload and every length mod 3 (padding ==, =, none)', () => {
    assert.equal(encodeBase64(new Uint8Array(0)), '')
    assert.deepEqual(decodeBase64(''), new Uint8Array(0))
    for (let length = 1; length <= 12; length++) {
      const bytes = Uint8Array.from({ length }, (_, i) => (i * 97 + 0xf0) & 255)
      const text = encodeBase64(bytes)
      assert.equal(text, reference(bytes), `length ${length}`)
      assert.equal(text.endsWith('=='), length % 3 === 1, `length ${length}`)
      assert.equal(text.endsWith('=') && !text.endsWith('=='), length % 3 === 2, `length ${length}`)
      const back = decodeBase64(text)
      assert.equal(back.constructor, Uint8Array)
      assert.deepEqual(back, bytes, `length ${length}`)
    }
  })

  it('matches Node\'s base64 on any bytes, both ways (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const text = encodeBase64(bytes)
      assert.equal(text, reference(bytes))
      assert.deepEqual(decodeBase64(text), bytes)
    }))
  })

  it('encodes a megabyte in one pass (no quadratic string building)', () => {
    const bytes = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 31) & 255)
    assert.equal(encodeBase64(bytes), reference(bytes))
    assert.deepEqual(decodeBase64(reference(bytes)), bytes)
  })

  it('refuses what is not standard padded base64', () => {
    for (const bad of ['a', 'abc', 'ab=c', '=abc', 'a===', '====', 'ab c', 'ab-_', 'abé=', 'YQ==YQ==']) {
      assert.throws(() => decodeBase64(bad), TypeError, JSON.stringify(bad))
    }
  })
})

/** A WebSocket constructor that only records how it was called (no socket is opened). */
function recordingSocket (): { Ctor: WebSocketConstructor, calls: Array<{ url: string, protocols: unknown, options: unknown, socket: WebSocketLike }> } {
  const calls: Array<{ url: string, protocols: unknown, options: unknown, socket: WebSocketLike }> = []
  class Recording {
    readonly readyState = 0
    binaryType = 'blob'
    onopen = null
    onmessage = null
    onclose = null
    onerror = null
    constructor (url: string, protocols?: string | string[], options?: unknown) {
      calls.push({ url, protocols, options, socket: this })
    }

    send (): void {}
    close (): void {}
  }
  return { Ctor: Recording, calls }
}

describe('codec choice', () => {
  it('json by default; msgpack on request; anything else is a TypeError', () => {
    assert.equal(wireCodec(undefined), jsonWireCodec)
    assert.equal(wireCodec('json').protocol, 'switchboard.v1')
    assert.equal(wireCodec('msgpack'), msgpackWireCodec)
    assert.equal(msgpackWireCodec.protocol, 'switchboard.v1.msgpack')
    assert.throws(() => wireCodec('cbor'), /codec must be 'json' or 'msgpack', got "cbor"/)
  })

  it('offers the codec\'s subprotocol only (beside bearer.<token> in a browser); arraybuffer on msgpack sockets', () => {
    const { Ctor, calls } = recordingSocket()
    openSocket(Ctor, 'ws://h/ws', 'browser', jsonWireCodec, { token: 't0k' })
    openSocket(Ctor, 'ws://h/ws', 'browser', msgpackWireCodec, { token: 't0k' })
    openSocket(Ctor, 'ws://h/ws', 'node', jsonWireCodec, { token: 't0k' })
    openSocket(Ctor, 'ws://h/ws', 'node', msgpackWireCodec, { apiKey: 'sbk_x' })
    assert.deepEqual(calls.map(c => c.protocols), [
      ['switchboard.v1', 'bearer.t0k'],
      ['switchboard.v1.msgpack', 'bearer.t0k'],
      ['switchboard.v1'],
      ['switchboard.v1.msgpack']
    ])
    assert.deepEqual(calls.map(c => c.socket.binaryType), ['blob', 'arraybuffer', 'blob', 'arraybuffer'])
    assert.deepEqual(calls[3]!.options, { headers: { 'x-api-key': 'sbk_x' } })
  })

  it('the option reaches the socket: a client with codec msgpack opens a msgpack socket; a bad codec throws at once', async () => {
    const { Ctor, calls } = recordingSocket()
    const client = new SwitchboardClient({ url: 'ws://127.0.0.1:1', token: 't', codec: 'msgpack', WebSocket: Ctor })
    await settle()
    assert.deepEqual(calls[0]!.protocols, ['switchboard.v1.msgpack'])
    assert.equal(calls[0]!.socket.binaryType, 'arraybuffer')
    await client.close()
    assert.throws(() => new SwitchboardClient({ url: 'ws://127.0.0.1:1', token: 't', codec: 'xml' as 'json', WebSocket: Ctor }), TypeError)
  })

  it('json: bytes go as base64 with encoding right after data; values as they are', () => {
    const bytes = Uint8Array.of(0x00, 0xff, 0xfe, 0x80, 0x0a)
    const text = jsonWireCodec.encode({ type: 'publish', room: 'r', data: bytes, idempotencyKey: 'k', id: 7 }) as string
    assert.equal(text, '{"type":"publish","room":"r","data":"AP/+gAo=","encoding":"base64","idempotencyKey":"k","id":7}')
    assert.equal(jsonWireCodec.encode({ type: 'publish', room: 'r', data: { a: [1] }, id: 8 }), '{"type":"publish","room":"r","data":{"a":[1]},"id":8}')
  })

  it('msgpack: bytes go as bin (no encoding), values as maps', () => {
    const bytes = Uint8Array.of(0x00, 0xff, 0xc1)
    const frame = msgpackWireCodec.encode({ type: 'publish', room: 'r', data: bytes, id: 1 })
    assert.ok(frame instanceof Uint8Array)
    const decoded = decodeMsgpack(frame) as Record<string, unknown>
    assert.deepEqual(Object.keys(decoded), ['type', 'room', 'data', 'id'])
    assert.deepEqual(new Uint8Array(decoded.data as Uint8Array), bytes)
    // bin 8 with 3 bytes: c4 03 00 ff c1, as the server's strict reader expects.
    assert.ok(Buffer.from(frame).includes(Buffer.from([0xc4, 0x03, 0x00, 0xff, 0xc1])))
  })

  it('decodes server frames of either kind: bytes as a plain Uint8Array of their own, encoding gone', () => {
    const json = decodeServerFrame('{"type":"message","room":"r","epoch":"e","offset":3,"data":"AP8=","encoding":"base64","from":{"id":"u"},"ts":1}')!
    assert.deepEqual(json, { type: 'message', room: 'r', epoch: 'e', offset: 3, data: Uint8Array.of(0, 255), from: { id: 'u' }, ts: 1 })
    assert.equal((json.data as Uint8Array).constructor, Uint8Array)

    const page = { type: 'reply', id: 2, result: { epoch: 'e', offset: 2, complete: true, publications: [
      { offset: 1, data: Uint8Array.of(1, 2, 3), from: { id: 'u' }, ts: 1 },
      { offset: 2, data: { text: 'hi' }, from: { id: 'u' }, ts: 2 }
    ] } }
    const packed = encodeMsgpack(page)
    // As a browser delivers it (an ArrayBuffer of exactly the frame) and as ws may (a Buffer view).
    const buffer = packed.buffer.slice(packed.byteOffset, packed.byteOffset + packed.byteLength) as ArrayBuffer
    for (const data of [buffer, Buffer.from(packed)]) {
      const reply = decodeServerFrame(data)!
      const publications = (reply.result as { publications: Array<{ data: unknown }> }).publications
      assert.equal(publications[0]!.data!.constructor, Uint8Array, 'a plain Uint8Array, not a Buffer')
      assert.deepEqual(publications[0]!.data, Uint8Array.of(1, 2, 3))
      assert.equal((publications[0]!.data as Uint8Array).buffer.byteLength, 3, 'a copy, not a view of the frame')
      assert.deepEqual(publications[1]!.data, { text: 'hi' })
    }

    const recovered = decodeServerFrame('{"type":"reply","id":1,"result":{"room":"r","epoch":"e","offset":1,"recovered":true,"publications":[{"offset":1,"data":"","encoding":"base64","from":{"id":"u"},"ts":1}]}}')!
    assert.deepEqual((recovered.result as { publications: unknown[] }).publications, [{ offset: 1, data: new Uint8Array(0), from: { id: 'u' }, ts: 1 }])
    // A JSON string that merely looks like base64 stays a string.
    assert.equal(decodeServerFrame('{"type":"message","data":"AP8="}')!.data, 'AP8=')
  })

  it('a frame that is not an object with a type is null; one that does not decode throws', () => {
    assert.equal(decodeServerFrame('[1]'), null)
    assert.equal(decodeServerFrame('{"no":"type"}'), null)
    assert.equal(decodeServerFrame(encodeMsgpack(42)), null)
    assert.equal(decodeServerFrame(undefined), null)
    assert.throws(() => decodeServerFrame('{'))
    assert.throws(() => decodeServerFrame(Uint8Array.of(0x82, 0xa4)), /MessagePack/)
    assert.throws(() => decodeServerFrame('{"type":"message","data":"A","encoding":"base64"}'), /base64/)
  })
})

describe('publish payloads', () => {
  it('copies bytes from views and ArrayBuffers, so later changes to the caller\'s buffer are not sent', () => {
    const source = Uint8Array.of(9, 1, 2, 3, 9)
    const view = source.subarray(1, 4)
    const copy = copyBytes(view)!
    source[2] = 77
    assert.deepEqual(copy, Uint8Array.of(1, 2, 3))
    assert.equal(copy.buffer.byteLength, 3)
    assert.deepEqual(copyBytes(Uint8Array.of(5, 6).buffer), Uint8Array.of(5, 6))
    assert.deepEqual(copyBytes(new DataView(source.buffer, 3, 2)), Uint8Array.of(3, 9))
    assert.deepEqual(copyBytes(Buffer.from([1, 255])), Uint8Array.of(1, 255))
    for (const value of [{ a: 1 }, 'text', [1, 2], null, 3]) assert.equal(copyBytes(value), undefined)
    assert.equal(isBlob(new Blob([Uint8Array.of(1)])), true)
    assert.equal(isBlob(Uint8Array.of(1)), false)
  })

  it('measures payloads as the server does: bytes, or the UTF-8 length of the JSON text', () => {
    assert.equal(payloadBytes(new Uint8Array(10)), 10)
    assert.equal(payloadBytes({ t: 'é' }), Buffer.byteLength(JSON.stringify({ t: 'é' })))
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (text) => {
      assert.equal(utf8Length(text), new TextEncoder().encode(text).length)
    }))
  })
})

describe('command queue: bytes and size limits', () => {
  const publishBytes = (length: number): CommandFrame => ({ type: 'publish', room: 'r', data: new Uint8Array(length).fill(0xff) })

  for (const codec of [jsonWireCodec, msgpackWireCodec]) {
    it(`${codec.name}: bytes at maxMessageBytes go out; one byte more is refused locally, naming both sizes`, () => {
      const h = queueHarness({ maxMessageBytes: 3000, codec })
      h.connect()
      const atLimit = h.add(publishBytes(3000), { idempotencyKey: 'a' })
      const over = h.add(publishBytes(3001), { idempotencyKey: 'b' })
      assert.deepEqual(h.written.map(f => f.id), [atLimit])
      const sent = h.written[0]!
      assert.equal(codec.name === 'json' ? Buffer.from(sent.data as string, 'base64').length : (sent.data as Uint8Array).length, 3000)
      assert.equal(sent.encoding, codec.name === 'json' ? 'base64' : undefined)
      assert.deepEqual(h.settled.map(s => [s.id, s.error?.code, s.error?.idempotencyKey]), [[over, 'bad_request', 'b']])
      assert.match(h.settled[0]!.error!.message, /payload is 3001 bytes, over the server's maxMessageBytes \(3000\)/)
    })
  }

  it('msgpack: a JSON value counts as its JSON text, however small its MessagePack is', () => {
    // 30 control characters: 30 bytes of MessagePack, 182 of JSON text ("\u0001" each).
    const h = queueHarness({ maxMessageBytes: 100, codec: msgpackWireCodec })
    h.connect()
    const refused = h.add({ type: 'publish', room: 'r', data: '\u0001'.repeat(30) })
    const fits = h.add({ type: 'publish', room: 'r', data: '\u0001'.repeat(16) })
    assert.deepEqual(h.written.map(f => f.id), [fits])
    assert.equal(h.settled[0]!.id, refused)
    assert.match(h.settled[0]!.error!.message, /182 bytes/)
  })

  it('any command over the frame limit (4·⌈max/3⌉ + 1024) is refused; one within it is not', () => {
    const h = queueHarness({ maxMessageBytes: 300 })
    h.connect()
    // 4·100 + 1024 = 1424 bytes of frame.
    const big = h.add({ type: 'history', room: 'r', pad: 'x'.repeat(1424) })
    const fits = h.add({ type: 'history', room: 'r', pad: 'x'.repeat(1300) })
    assert.deepEqual(h.written.map(f => f.id), [fits])
    assert.equal(h.settled[0]!.id, big)
    assert.match(h.settled[0]!.error!.message, /history frame is \d+ bytes, over the server's frame limit \(1424 for maxMessageBytes 300\)/)
  })

  it('a command still being prepared (a Blob) keeps its place: later ones wait, urgent ones pass; a failure settles it alone', async () => {
    const h = queueHarness()
    h.connect()
    const outcomes: Array<[string, string | undefined]> = []
    const options = (key: string): CommandOptions => ({
      urgent: false, resend: true, dropped: () => {}, idempotencyKey: key, done: (error) => { outcomes.push([key, error?.message]) }
    })
    let resolveFrame: (frame: CommandFrame) => void = () => {}
    const pending = h.queue.addWhenReady({ type: 'publish', room: 'r' }, new Promise((resolve) => { resolveFrame = resolve }), options('p'), () => new SwitchboardError('bad_request', 'unread'))
    const after = h.add({ type: 'ping' })
    const urgent = h.add({ type: 'refresh' }, { urgent: true })
    assert.deepEqual(h.written.map(f => f.id), [urgent])
    resolveFrame({ type: 'publish', room: 'r', data: Uint8Array.of(1, 2), idempotencyKey: 'p' })
    await settle()
    assert.deepEqual(h.written.map(f => f.id), [urgent, pending.id, after])
    assert.equal(h.written[1]!.data, 'AQI=')

    let rejectFrame: (err: unknown) => void = () => {}
    const failing = h.queue.addWhenReady({ type: 'publish', room: 'r' }, new Promise((_resolve, reject) => { rejectFrame = reject }), options('f'), (err) => new SwitchboardError('bad_request', `unreadable: ${String(err)}`))
    const behind = h.add({ type: 'ping' })
    rejectFrame('NotReadableError')
    await settle()
    assert.deepEqual(h.written.map(f => f.id), [urgent, pending.id, after, behind])
    assert.equal(h.queue.isWaiting(failing), false)
    assert.deepEqual(outcomes, [['f', 'unreadable: NotReadableError']])
  })
})
