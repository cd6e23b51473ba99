// The application's backend of the hooks tests: a real node:http server in the test process
// that checks every call's signature the way docs/integration.md tells a backend to.
import { type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import net from 'node:net'
import { createHmac, timingSafeEqual } from 'node:crypto'

export const HOOKS_SECRET = 'hooks-secret-that-is-long-enough-0123456789'

/** One call as the backend received it, signature checked. */
export interface HookCall {
  hook: string
  id: string
  body: Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any -- read loosely in tests
  raw: string
}

/**
 * What the backend answers to a call: a JSON value (200), `{ status, body }`, or `'hold'` to
 * keep the request open (a slow backend) until `release()` or the server's close.
 */
export type HookAnswer = unknown | { status: number, body?: string } | 'hold'

export interface Backend {
  url: string
  calls: HookCall[]
  /** Calls of one hook so far. */
  of: (hook: string) => HookCall[]
  /** Ends every held request with `{}`. */
  release: () => void
  /** Resolves when `count` calls of `hook` have arrived. */
  waitFor: (hook: string, count?: number) => Promise<HookCall[]>
}

/** Verifies a call as a backend must: the HMAC of `<timestamp>.<body>`, and a timestamp within 5 minutes. */
export function verifySignature (secret: string, headers: http.IncomingHttpHeaders, raw: string): boolean {
  const timestamp = String(headers['x-switchboard-timestamp'] ?? '')
  const signature = String(headers['x-switchboard-signature'] ?? '')
  const expected = 'v1=' + createHmac('sha256', secret).update(`${timestamp}.${raw}`).digest('hex')
  const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) <= 300
  return fresh && signature.length === expected.length && timingSafeEqual(Buffer.from(signature), Buffer.from(expected))
}

/**
 * Starts the backend; `answer` decides each call's answer (default: `{}`, allow). A call whose
 * signature does not verify is answered 401 and fails the test when it ends.
 */
export async function startBackend (t: TestContext, answer: (call: HookCall) => HookAnswer = () => ({})): Promise<Backend> {
  const calls: HookCall[] = []
  const held = new Set<http.ServerResponse>()
  const waiters: Array<() => void> = []
  let forged = 0
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      if (!verifySignature(HOOKS_SECRET, req.headers, raw)) {
        forged++
        res.writeHead(401).end()
        return
      }
      const body = JSON.parse(raw) as HookCall['body']
      assert.equal(req.headers['x-switchboard-hook'], body.hook, 'the hook header names the body\'s hook')
      const call: HookCall = { hook: body.hook as string, id: String(req.headers['x-switchboard-id']), body, raw }
      calls.push(call)
      for (const wake of waiters.splice(0)) wake()
      const reply = answer(call)
      if (reply === 'hold') {
        held.add(res)
        res.on('close', () => held.delete(res))
        return
      }
      if (typeof reply === 'object' && reply !== null && 'status' in reply && typeof reply.status === 'number') {
        res.writeHead(reply.status, { 'content-type': 'application/json' }).end((reply as { body?: string }).body ?? '')
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reply))
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    assert.equal(forged, 0, 'every call the server made carried a valid signature')
    for (const res of held) res.destroy()
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  const of = (hook: string): HookCall[] => calls.filter(c => c.hook === hook)
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/hooks`,
    calls,
    of,
    release: () => {
      for (const res of held) res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      held.clear()
    },
    waitFor: async (hook, count = 1) => {
      const deadline = Date.now() + 10_000
      while (of(hook).length < count) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${count} ${hook} call(s); got ${calls.map(c => c.hook).join(',')}`)
        await new Promise<void>(resolve => { waiters.push(resolve); setTimeout(resolve, 100) })
      }
      return of(hook)
    }
  }
}

/** A loopback port nothing listens on (a backend that is down). */
export async function closedPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise(resolve => server.close(resolve))
  return port
}

/** The environment that points the app at `url` with these hooks on. */
export function hooksEnv (url: string, events: string, extra: Record<string, string> = {}): Record<string, string> {
  return { HOOKS_URL: url, HOOKS_SECRET, HOOKS_EVENTS: events, ...extra }
}
