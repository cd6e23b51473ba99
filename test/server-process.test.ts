import { describe, it, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { join } from 'node:path'
import { oneShotRequest, type Reply } from '../support/http.js'
import { REPEAT_WINDOW_MS } from '../src/shutdown-signals.js'
import { freePort } from '../support/free-port.js'
import { skipUnlessStore, tempDir, TEST_DATABASE_URL, wsConnect } from './helper.js'
import { ADMIN, ROOT, baseEnv, startServer, waitForLog, waitUntilReady, withTimeout } from './process.js'

const EXIT_WITHIN_MS = 20_000

function request (port: number, method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<Reply> {
  return oneShotRequest(`http://127.0.0.1:${port}`, method, path, options)
}

async function loginAdmin (port: number): Promise<Reply> {
  return await request(port, 'POST', '/auth/login', { body: { username: ADMIN.username, password: ADMIN.password } })
}

describe('server process', () => {
  it('starts, serves the bootstrap admin, and drains in-flight work on SIGTERM', async (t) => {
    // A costly hash makes the login slow enough to be still running when SIGTERM arrives.
    const server = await startServer(t, { ...baseEnv(tempDir(t)), PASSWORD_HASH_COST: '17' })
    await waitUntilReady(server)

    const first = await loginAdmin(server.port)
    assert.equal(first.status, 200)
    assert.equal(first.body.user.id, ADMIN.username)
    assert.equal(first.body.user.role, 'admin')

    const incomingLogin = /^(?=.*"msg":"incoming request")(?=.*"url":"\/auth\/login")/
    const slowLogin = loginAdmin(server.port)
    // SIGTERM only once the server has the request, so it is truly in flight.
    await waitForLog(server, incomingLogin, 2)
    server.child.kill('SIGTERM')
    // The signal is delivered asynchronously: a probe sent before the child handles it may still see 200.
    await waitForLog(server, /"signal":"SIGTERM"/)

    let readiness: string
    try {
      readiness = String((await request(server.port, 'GET', '/health/ready')).status)
    } catch (err) {
      readiness = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    }
    assert.ok(['503', 'ECONNREFUSED', 'ECONNRESET'].includes(readiness), `readiness after SIGTERM: ${readiness}`)

    const inFlight = await slowLogin
    assert.equal(inFlight.status, 200)
    assert.equal(typeof inFlight.body.accessToken, 'string')
    // The login finished after shutdown began, so it really was drained rather than done early.
    // (Its log line may reach the pipe a moment after the response: wait for it.)
    await waitForLog(server, /"msg":"user signed in"/, 2)
    const lines = server.stdout().split('\n')
    const shutdownAt = lines.findIndex(line => /"signal":"SIGTERM"/.test(line))
    const signedInAt = lines.map(line => /"msg":"user signed in"/.test(line)).lastIndexOf(true)
    assert.ok(shutdownAt !== -1 && shutdownAt < signedInAt, server.stdout())

    const { code, signal } = await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit after SIGTERM')
    assert.equal(signal, null)
    // close-with-grace exits 1 when the grace period runs out, so 0 means it closed in time.
    assert.equal(code, 0, server.stderr())
    assert.match(server.stdout(), /"signal":"SIGTERM"/)
    await assert.rejects(request(server.port, 'GET', '/health/live'), { code: 'ECONNREFUSED' })
  })

  it('reports not ready while shutting down', async (t) => {
    const server = await startServer(t, baseEnv(tempDir(t)))
    await waitUntilReady(server)
    // A load balancer probing over a kept-alive connection must not be told "ready" once
    // shutdown has begun: it gets a 503, or the connection is closed or refused.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    t.after(() => agent.destroy())
    const probe = (): Promise<number | string> => new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: server.port, path: '/health/ready', agent, timeout: 15_000 }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('timeout', () => req.destroy(new Error('timed out')))
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
    assert.equal(await probe(), 200)
    server.child.kill('SIGTERM')
    await waitForLog(server, /"signal":"SIGTERM"/)
    const after = await probe()
    assert.ok([503, 'ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(after), `readiness after SIGTERM: ${after}`)
    const { code } = await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit after SIGTERM')
    assert.equal(code, 0, server.stderr())
  })

  it('exits 0 on SIGINT', async (t) => {
    const server = await startServer(t, baseEnv(tempDir(t)))
    await waitUntilReady(server)
    server.child.kill('SIGINT')
    const { code, signal } = await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit after SIGINT')
    assert.equal(signal, null)
    assert.equal(code, 0, server.stderr())
  })

  it('SIGINT twice at once (Ctrl-C on npm start) is one shutdown: clients get reconnect and 1012, exit 0', async (t) => {
    const server = await startServer(t, { ...baseEnv(tempDir(t)), WS_DRAIN_MS: '3000' })
    await waitUntilReady(server)
    const base = `http://127.0.0.1:${server.port}`
    const client = await wsConnect(t, { url: base }, { token: (await loginAdmin(server.port)).body.accessToken as string })

    // The terminal signals npm and the server; npm forwards its copy as soon as it has its own.
    server.child.kill('SIGINT')
    await waitForLog(server, /"signal":"SIGINT"[^\n]*"msg":"shutting down"/)
    server.child.kill('SIGINT')

    const closed = await withTimeout(client.closed, EXIT_WITHIN_MS, 'client closed')
    assert.equal(closed.code, 1012, server.stdout() + server.stderr())
    assert.ok(client.frames.some(f => f.type === 'reconnect'))
    const { code } = await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit after SIGINT')
    assert.equal(code, 0, server.stderr())
    // The second delivery did reach the running server, and was taken as the same request.
    assert.match(server.stdout(), /"signal":"SIGINT"[^\n]*one shutdown request/)
  })

  it('a second SIGINT after the first was a moment ago forces exit 1', async (t) => {
    const server = await startServer(t, baseEnv(tempDir(t)))
    await waitUntilReady(server)
    // A request whose body never comes keeps the shutdown waiting (until it is cut before the grace ends).
    const socket = net.connect(server.port, '127.0.0.1')
    t.after(() => socket.destroy())
    socket.on('error', () => {})
    socket.write('POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{')
    await waitForLog(server, /"msg":"incoming request"[^\n]*"url":"\/auth\/login"|"url":"\/auth\/login"[^\n]*"msg":"incoming request"/)

    server.child.kill('SIGINT')
    await waitForLog(server, /"signal":"SIGINT"[^\n]*"msg":"shutting down"/)
    await new Promise(resolve => setTimeout(resolve, REPEAT_WINDOW_MS + 500))
    assert.equal(server.child.exitCode, null, 'still shutting down: the open request holds it')
    server.child.kill('SIGINT')

    const { code } = await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit after the second SIGINT')
    assert.equal(code, 1, server.stderr())
    assert.match(server.stdout(), /second SIGINT, exiting/)
  })

  it('without JWT_SECRET in development, generates a secret once and keeps it across restarts', async (t) => {
    const dataDir = tempDir(t)
    const env = baseEnv(dataDir)
    delete env.JWT_SECRET
    delete env.NODE_ENV
    // Left to its default, the database goes under DATA_DIR too: a volume there keeps everything.
    delete env.DATABASE_URL

    const first = await startServer(t, env)
    await waitUntilReady(first)
    assert.match(first.stdout(), /"level":40[^\n]*development secret/)
    const secretFile = join(dataDir, 'jwt-secret')
    assert.ok(existsSync(secretFile))
    assert.equal(statSync(secretFile).mode & 0o777, 0o600)
    const secret = readFileSync(secretFile, 'utf8')
    assert.ok(!first.stdout().includes(secret.trim()), 'the generated secret must not be logged')
    assert.ok(existsSync(join(dataDir, 'switchboard.db')), 'the default SQLite file is under DATA_DIR')

    const login = await loginAdmin(first.port)
    assert.equal(login.status, 200)
    const token = login.body.accessToken as string
    first.child.kill('SIGTERM')
    assert.equal((await withTimeout(first.exited, EXIT_WITHIN_MS, 'first run exit')).code, 0, first.stderr())

    const second = await startServer(t, env)
    await waitUntilReady(second)
    assert.equal(readFileSync(secretFile, 'utf8'), secret)
    const me = await request(second.port, 'GET', '/auth/me', { token })
    assert.equal(me.status, 200, JSON.stringify(me.body))
    assert.equal(me.body.kind, 'user')
    assert.equal(me.body.user.id, ADMIN.username)
    second.child.kill('SIGTERM')
    assert.equal((await withTimeout(second.exited, EXIT_WITHIN_MS, 'second run exit')).code, 0, second.stderr())
  })
})

describe('server process: configuration', () => {
  it('reads .env in its working directory under the real environment, and logs the URL to open', async (t) => {
    const dir = tempDir(t)
    const env = baseEnv(dir)
    delete env.DATA_DIR
    delete env.DATABASE_URL
    // From the file: a relative DATA_DIR (so the database goes there) and closed registration.
    // PORT=1 is in the file too, but the real environment's PORT wins (port 1 would need root).
    writeFileSync(join(dir, '.env'), '# local settings\nDATA_DIR=./from-dotenv\nALLOW_REGISTRATION=false\nPORT=1\nLOG_LEVEL="info"\n')
    const server = await startServer(t, env, { cwd: dir })
    await waitUntilReady(server)

    assert.ok(existsSync(join(dir, 'from-dotenv', 'switchboard.db')), 'DATA_DIR came from .env')
    const register = await request(server.port, 'POST', '/auth/register', { body: { username: 'someone', password: 'long enough password' } })
    assert.equal(register.status, 403, JSON.stringify(register.body))
    assert.match(server.stdout(), /"msg":"settings read from \.env/)
    assert.match(server.stdout(), new RegExp(`"msg":"switchboard is running: open http://127\\.0\\.0\\.1:${server.port}/"`))
    server.child.kill('SIGTERM')
    assert.equal((await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit')).code, 0, server.stderr())
  })

  it('a real process with PORT=abc exits 1 and names PORT on stderr', async (t) => {
    const dir = tempDir(t)
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, PORT: 'abc', DATA_DIR: dir, JWT_SECRET: 'a-production-secret-that-is-long-enough-0123456789' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    child.stdout.resume()
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject)
      child.once('exit', resolve)
    })
    assert.equal(code, 1, stderr)
    assert.match(stderr, /configuration error: PORT\b/)
    assert.match(stderr, /"abc"/)
    // A configuration mistake is a one-line message, not a crash with a stack trace.
    assert.doesNotMatch(stderr, /\n\s+at /)
  })
})

const postgresSkip = await skipUnlessStore('postgres')

describe('server process: what stops the start is one line naming the variable', () => {
  /** Starts the real server, expects it to give up: its exit code and stderr. */
  async function failedStart (t: TestContext, env: Record<string, string>, port?: number): Promise<string> {
    const server = await startServer(t, env, port === undefined ? {} : { port })
    const { code } = await withTimeout(server.exited, EXIT_WITHIN_MS, 'exit')
    assert.equal(code, 1, server.stdout() + server.stderr())
    assert.doesNotMatch(server.stderr(), /\n\s+at /, 'no stack trace')
    return server.stderr()
  }

  it('a busy port: PORT (or HOST) to change', async (t) => {
    const held = net.createServer()
    await new Promise<void>(resolve => held.listen(0, '127.0.0.1', resolve))
    t.after(() => held.close())
    const port = (held.address() as net.AddressInfo).port
    const stderr = await failedStart(t, baseEnv(tempDir(t)), port)
    assert.match(stderr, new RegExp(`^switchboard: cannot start: PORT: ${port} is already in use on 127\\.0\\.0\\.1 .*HOST`))
  })

  it('PostgreSQL not listening: DATABASE_URL, its host and port', async (t) => {
    const port = await freePort()
    const stderr = await failedStart(t, { ...baseEnv(tempDir(t)), DATABASE_URL: `postgres://switchboard:s3cret-pw@127.0.0.1:${port}/test` })
    assert.match(stderr, new RegExp(`^switchboard: cannot start: DATABASE_URL: cannot reach PostgreSQL at 127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`))
    assert.doesNotMatch(stderr, /s3cret-pw/)
  })

  it('a database that does not exist: DATABASE_URL, and how to create it', { skip: postgresSkip }, async (t) => {
    const missing = `switchboard_missing_${process.pid}`
    const url = new URL(TEST_DATABASE_URL)
    url.pathname = `/${missing}`
    const stderr = await failedStart(t, { ...baseEnv(tempDir(t)), DATABASE_URL: url.href })
    assert.match(stderr, new RegExp(`^switchboard: cannot start: DATABASE_URL: database "${missing}" does not exist on ${url.hostname.replaceAll('.', '\\.')}:${url.port || 5432}; create it`))
  })
})
