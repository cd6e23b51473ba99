import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { tempDir } from './helper.js'
import { freePort } from '../support/free-port.js'

/*
 * A redis-server of a test's own, for faults (kill it, start it again on the same port):
 * tests never stop the machine's shared Redis.
 */

const START_TIMEOUT_MS = 10_000

/**
 * `skip` option for a suite that starts its own redis-server: false when the binary is on
 * PATH, a reason when not; under REQUIRE_SERVICES=1 (CI) a missing binary is an error.
 */
export function skipUnlessRedisServer (): false | string {
  if (spawnSync('redis-server', ['--version']).status === 0) return false
  if (process.env.REQUIRE_SERVICES === '1') throw new Error('redis-server not found on PATH (REQUIRE_SERVICES=1)')
  return 'redis-server not found on PATH'
}

export interface PrivateRedis {
  url: string
  start: () => Promise<void>
  kill: () => Promise<void>
}

/**
 * A redis-server of this test's own on a free port, killed when the test ends. `persist`
 * turns on the append-only file with an fsync per write, so a killed server comes back with
 * everything it acknowledged (what a deployment that must lose nothing runs).
 */
export async function privateRedis (t: TestContext, options: { persist?: boolean, replicaOf?: PrivateRedis } = {}): Promise<PrivateRedis> {
  const port = await freePort()
  const dir = tempDir(t, 'switchboard-redis-')
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--daemonize', 'no',
    ...(options.persist === true ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
    ...(options.replicaOf === undefined ? [] : ['--replicaof', '127.0.0.1', new URL(options.replicaOf.url).port])]
  let child: ChildProcess | null = null
  const start = async (): Promise<void> => {
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    let output = ''
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${output}`)), START_TIMEOUT_MS)
      proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk
        if (output.includes('Ready to accept connections')) { clearTimeout(timer); resolve() }
      })
      proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server exited (${String(code)}): ${output}`)) })
    })
    proc.stdout?.resume()
  }
  const kill = async (): Promise<void> => {
    const proc = child
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    proc.kill('SIGKILL')
    await exited
  }
  t.after(kill)
  await start()
  return { url: `redis://127.0.0.1:${port}`, start, kill }
}

/**
 * A Redis Sentinel of the test's own (redis-server in sentinel mode) watching `master` under
 * the name `name`, on a free port; killed when the test ends.
 */
export async function privateSentinel (t: TestContext, master: PrivateRedis, name: string): Promise<{ port: number }> {
  const port = await freePort()
  const dir = tempDir(t, 'switchboard-sentinel-')
  const masterPort = new URL(master.url).port
  // Sentinel rewrites its configuration file, so it gets one of its own.
  const conf = join(dir, 'sentinel.conf')
  writeFileSync(conf, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${name} 127.0.0.1 ${masterPort} 1`, `sentinel down-after-milliseconds ${name} 1000`, ''].join('\n'))
  const proc = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return
    const exited = new Promise((resolve) => proc.once('exit', resolve))
    proc.kill('SIGKILL')
    await exited
  })
  let output = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis sentinel did not start: ${output}`)), START_TIMEOUT_MS)
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk
      // "+monitor master …": it watches the master and will answer for it.
      if (output.includes('+monitor master')) { clearTimeout(timer); resolve() }
    })
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis sentinel exited (${String(code)}): ${output}`)) })
  })
  proc.stdout?.resume()
  return { port }
}
