import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { Clock } from '../../src/client/clock.js'
import { CommandQueue, type AnswerFrame, type CommandFrame, type CommandOptions, type Link } from '../../src/client/command-queue.js'
import { CloseCodes, SwitchboardError, type TokenContext } from '../../src/client/index.js'
import { backoffSettings, decideReconnect, type ConnectionEnd, type HandshakeReport, type ReconnectDecision } from '../../src/client/reconnect-policy.js'
import { TokenKeeper, type TokenKeeperHost } from '../../src/client/token-keeper.js'

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

  it('fills in the defaults: 500 ms base, 30 s cap, no attempt limit', () => {
    const { baseMs, capMs, maxAttempts } = backoffSettings()
    assert.deepEqual({ baseMs, capMs, maxAttempts }, { baseMs: 500, capMs: 30_000, maxAttempts: Infinity })
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

function queueHarness (options: { requestTimeoutMs?: number, maxMessageBytes?: number, burst?: number, perSecond?: number } = {}) {
  const clock = new FakeClock()
  const written: Array<{ id: number, type: string } & Record<string, unknown>> = []
  const settled: Settled[] = []
  let link: Link | null = null
  let failSend = false
  const queue = new CommandQueue({ requestTimeoutMs: options.requestTimeoutMs ?? 1_000, link: () => link, clock })
  const connect = (): void => {
    link = {
      send: (text) => {
        if (failSend) throw new Error('socket gone')
        written.push(JSON.parse(text) as { id: number, type: string })
      },
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
