import assert from 'node:assert/strict'
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import { freePort } from '../support/free-port.js'
import { oneShotRequest } from '../support/http.js'
import { TEST_JWT_SECRET } from './helper.js'

/**
 * Real server processes for tests: the entry point (src/server.ts) spawned with its own
 * environment, on a free port, killed hard if a test leaves it running.
 */
export const ROOT = fileURLToPath(new URL('..', import.meta.url))
export const ADMIN = { username: 'admin', password: 'bootstrap admin password' }
export const READY_WITHIN_MS = 20_000
export const GRACE_MS = 10_000

export interface ServerProcess {
  child: ChildProcessWithoutNullStreams
  port: number
  stdout: () => string
  stderr: () => string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

export function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms) })
  ]).finally(() => clearTimeout(timer))
}

/**
 * Spawns the real entry point (on `port` when given: a restart on the same address; in `cwd`
 * when given, where it looks for `.env`); killed hard if a test leaves it running.
 */
export async function startServer (t: TestContext, env: Record<string, string>, options: { port?: number, cwd?: string } = {}): Promise<ServerProcess> {
  const port = options.port ?? await freePort()
  // Absolute: from another working directory `--import tsx` would not find the package.
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/server.ts')], {
    cwd: options.cwd ?? ROOT,
    // Not process.env: the test runner's own variables (NODE_ENV, NODE_TEST_CONTEXT…) must not leak in.
    // tsx finds tsconfig.json (whose paths map @switchboard/* to the packages' sources) from
    // the working directory; from another one it is named, or the packages' dist/ would be used.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.json'), HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return { child, port, stdout: () => stdout, stderr: () => stderr, exited }
}

/** Resolves once GET /health/ready answers 200; fails with the process output otherwise. */
export async function waitUntilReady (server: ServerProcess): Promise<void> {
  const deadline = Date.now() + READY_WITHIN_MS
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null) break
    try {
      const res = await oneShotRequest(`http://127.0.0.1:${server.port}`, 'GET', '/health/ready')
      if (res.status === 200) return
      last = `status ${res.status}`
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  assert.fail(`server not ready (${last}); exit ${server.child.exitCode}\nstdout:\n${server.stdout()}\nstderr:\n${server.stderr()}`)
}

export function countLines (server: ServerProcess, pattern: RegExp): number {
  return server.stdout().split('\n').filter(line => pattern.test(line)).length
}

export async function waitForLog (server: ServerProcess, pattern: RegExp, count = 1): Promise<void> {
  const deadline = Date.now() + READY_WITHIN_MS
  while (countLines(server, pattern) < count) {
    if (Date.now() > deadline) assert.fail(`fewer than ${count} log lines matching ${pattern}\nstdout:\n${server.stdout()}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** The environment of a test server: SQLite in `dataDir`, a fixed secret, cheap hashing, the bootstrap admin. */
export function baseEnv (dataDir: string): Record<string, string> {
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    DATABASE_URL: `sqlite:${join(dataDir, 'switchboard.db')}`,
    JWT_SECRET: TEST_JWT_SECRET,
    PASSWORD_HASH_COST: '10',
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASSWORD: ADMIN.password,
    SHUTDOWN_GRACE_MS: String(GRACE_MS)
  }
}

export interface CliRun { code: number | null, stdout: string, stderr: string }

/**
 * Runs the real CLI as a child process, as a user would: from its sources, or `options.command`
 * (an installed `switchboard` executable).
 */
export function runCli (configFile: string, args: string[], options: { stdin?: string | Uint8Array, env?: Record<string, string>, command?: string } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const [file, ...prefix] = options.command === undefined ? [process.execPath, '--import', 'tsx', 'src/cli/index.ts'] : [options.command]
    const child = spawn(file!, [...prefix, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', SWITCHBOARD_CONFIG: configFile, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c })
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c })
    child.once('error', reject)
    child.once('exit', code => resolve({ code, stdout, stderr }))
    child.stdin.end(options.stdin ?? '')
  })
}
