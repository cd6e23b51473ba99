import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import http from 'node:http'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { tmpdir } from 'node:os'
import type { AddressInfo } from 'node:net'
import { ConfigError, loadConfig } from '../src/config.js'

/**
 * The deployment files checked as text: there is no YAML parser among the dependencies, and the
 * manifests keep to a plain subset (two-space indentation, one `key: value` per line) so that
 * these checks stay small. What must agree across files is checked here: probe paths, the
 * shutdown timing, variable names against .env.example, the image's user and command.
 */
const ROOT = new URL('..', import.meta.url).pathname
const K8S = join(ROOT, 'deploy/kubernetes')
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8')

function yamlFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(entry => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return yamlFiles(path)
    return /\.ya?ml$/.test(entry.name) ? [path] : []
  })
}

/** The lines indented under the first line that is exactly `key:` (any indentation). */
function block (text: string, key: string): string {
  const lines = text.split('\n')
  const start = lines.findIndex(line => new RegExp(`^\\s*(- )?${key}:\\s*$`).test(line))
  assert.notEqual(start, -1, `no "${key}:" block`)
  const indent = lines[start]!.search(/\S/)
  const body: string[] = []
  for (const line of lines.slice(start + 1)) {
    if (line.trim() !== '' && line.search(/\S/) <= indent) break
    body.push(line)
  }
  return body.join('\n')
}

/** `KEY: value` pairs of a top-level map such as a ConfigMap's `data:`, comments skipped. */
function flatMap (text: string, key: string): Map<string, string> {
  const entries = new Map<string, string>()
  for (const line of block(text, key).split('\n')) {
    const match = /^ {2}([A-Za-z0-9_]+):\s*"?(.*?)"?\s*$/.exec(line)
    if (match !== null) entries.set(match[1]!, match[2]!)
  }
  return entries
}

function number (text: string, pattern: RegExp, what: string): number {
  const match = pattern.exec(text)
  assert.ok(match !== null, `${what} not found`)
  return Number(match[1])
}

const envExample = new Set([...read('.env.example').matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map(m => m[1]!))
const configMap = read('deploy/kubernetes/configmap.yaml')
const secret = read('deploy/kubernetes/secret.example.yaml')
const deployment = read('deploy/kubernetes/deployment.yaml')
const configData = flatMap(configMap, 'data')
const secretData = flatMap(secret, 'stringData')
const tmpData = join(tmpdir(), 'switchboard-deploy-test')

describe('Kubernetes manifests', () => {
  it('are Kubernetes objects: each file has a top-level apiVersion and kind', () => {
    const files = yamlFiles(K8S)
    assert.ok(files.length >= 5, 'the manifests are there')
    for (const file of files) {
      const text = readFileSync(file, 'utf8')
      assert.match(text, /^apiVersion: \S+$/m, `${relative(ROOT, file)}: apiVersion`)
      assert.match(text, /^kind: [A-Z][A-Za-z]+$/m, `${relative(ROOT, file)}: kind`)
      assert.doesNotMatch(text, /\t/, `${relative(ROOT, file)}: spaces only`)
    }
  })

  it('probe the health routes: liveness and startup on /health/live, readiness on /health/ready', () => {
    assert.match(block(deployment, 'livenessProbe'), /path: \/health\/live$/m)
    assert.match(block(deployment, 'startupProbe'), /path: \/health\/live$/m)
    const readiness = block(deployment, 'readinessProbe')
    assert.match(readiness, /path: \/health\/ready$/m)
    // Small enough to notice a 503 (shutdown, Redis or PostgreSQL gone) within seconds.
    assert.ok(number(readiness, /periodSeconds: (\d+)/, 'readiness periodSeconds') <= 5)
    // Longer than the server's 2 s dependency ping, so the probe reads the 503 instead of timing out.
    assert.ok(number(readiness, /timeoutSeconds: (\d+)/, 'readiness timeoutSeconds') > 2)
  })

  it('give the drain time: the grace period outlasts the preStop pause, the drain and the server\'s own limit', () => {
    const preStop = number(block(deployment, 'preStop'), /command: \["sleep", "(\d+)"\]/, 'preStop sleep')
    const grace = number(deployment, /^\s*terminationGracePeriodSeconds: (\d+)$/m, 'terminationGracePeriodSeconds')
    const drainMs = Number(configData.get('WS_DRAIN_MS'))
    const shutdownGraceMs = Number(configData.get('SHUTDOWN_GRACE_MS'))
    assert.ok(preStop > 0, 'a preStop pause')
    assert.ok(drainMs > 0 && shutdownGraceMs > 0, 'WS_DRAIN_MS and SHUTDOWN_GRACE_MS in the ConfigMap')
    assert.ok(grace > preStop + drainMs / 1000 + 3, `${grace} s > ${preStop} s + WS_DRAIN_MS + 3 s`)
    assert.ok(shutdownGraceMs >= drainMs + 3000, 'SHUTDOWN_GRACE_MS >= WS_DRAIN_MS + 3000')
    // The kubelet's SIGKILL must come after the server's own deadline, not cut a drain short.
    assert.ok(grace > preStop + shutdownGraceMs / 1000, `${grace} s > ${preStop} s + SHUTDOWN_GRACE_MS`)
  })

  it('name only variables that .env.example documents', () => {
    for (const name of configData.keys()) assert.ok(envExample.has(name), `ConfigMap: ${name} is not in .env.example`)
    for (const name of secretData.keys()) assert.ok(envExample.has(name), `Secret: ${name} is not in .env.example`)
    const envNames = [...block(deployment, 'env').matchAll(/^ {12}- name: (\S+)$/gm)].map(m => m[1]!)
    assert.ok(envNames.length > 0)
    // NODE_OPTIONS is read by Node itself, not by the server.
    for (const name of envNames.filter(n => n !== 'NODE_OPTIONS')) assert.ok(envExample.has(name), `Deployment env: ${name} is not in .env.example`)
  })

  it('read each credential from the Secret under its own name, and the rest from the ConfigMap', () => {
    const refs = [...deployment.matchAll(/- name: (\S+)\n\s+valueFrom:\n\s+secretKeyRef:\n\s+name: (\S+)\n\s+key: (\S+)/g)]
    assert.deepEqual(refs.map(m => m[1]).sort(), [...secretData.keys()].sort(), 'every key of the example Secret is read')
    for (const [, env, secretName, key] of refs) {
      assert.equal(secretName, 'switchboard')
      assert.equal(env, key)
    }
    assert.match(block(deployment, 'configMapRef'), new RegExp(`name: ${/^ {2}name: (\S+)$/m.exec(configMap)?.[1]}$`, 'm'))
    // The example is never applied over the real Secret by `kubectl apply -f deploy/kubernetes/`.
    assert.match(secret, /^ {2}name: switchboard-example$/m)
    for (const [name, value] of secretData) if (name !== 'ADMIN_USERNAME') assert.match(value, /CHANGE/, `${name} is a placeholder`)
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'METRICS_TOKEN', 'ADMIN_PASSWORD']) {
      assert.ok(!configData.has(name), `${name} belongs in the Secret`)
    }
  })

  it('hold a configuration the server accepts, and placeholders it refuses', () => {
    const base = { ...Object.fromEntries(configData), DATA_DIR: tmpData, REDIS_URL: 'redis://redis:6379/0', DATABASE_URL: 'postgres://u:p@postgres:5432/db' }
    const config = loadConfig({ ...base, JWT_SECRET: 'x'.repeat(32), METRICS_TOKEN: 'm'.repeat(32) })
    assert.equal(config.env, 'production')
    assert.equal(config.ws.drainMs, Number(configData.get('WS_DRAIN_MS')))
    // None of the example Secret's placeholders would start a production node.
    assert.throws(() => loadConfig({ ...base, JWT_SECRET: secretData.get('JWT_SECRET') }), (err: Error) => err instanceof ConfigError && /JWT_SECRET/.test(err.message))
    assert.throws(() => loadConfig({ ...base, JWT_SECRET: 'x'.repeat(32), METRICS_TOKEN: secretData.get('METRICS_TOKEN') }), /METRICS_TOKEN/)
    assert.throws(() => loadConfig({ ...base, JWT_SECRET: 'x'.repeat(32), ADMIN_USERNAME: secretData.get('ADMIN_USERNAME'), ADMIN_PASSWORD: secretData.get('ADMIN_PASSWORD') }), /ADMIN_PASSWORD/)
  })

  it('agree on the port: ConfigMap PORT, containerPort, scrape annotation; the Service targets it by name', () => {
    const port = configData.get('PORT')
    assert.equal(port, String(number(deployment, /containerPort: (\d+)/, 'containerPort')))
    assert.match(deployment, new RegExp(`prometheus.io/port: "${port}"`))
    assert.match(deployment, /prometheus.io\/path: "\/metrics"/)
    assert.match(deployment, /- name: http\n\s+containerPort:/)
    assert.match(read('deploy/kubernetes/service.yaml'), /targetPort: http$/m)
  })
})

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile')
  const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n').filter(line => /^[A-Z]+\s/.test(line))
  const lastFrom = instructions.map(line => line.split(' ')[0]).lastIndexOf('FROM')
  const build = instructions.slice(0, lastFrom)
  const runtime = instructions.slice(lastFrom)

  it('builds on a Node line that still gets security fixes, one the package supports', () => {
    const image = /^ARG NODE_IMAGE=node:(\d+)-/m.exec(dockerfile)
    assert.ok(image !== null, 'ARG NODE_IMAGE=node:<major>-… sets the base image')
    // Node's release schedule: even majors are LTS; 20 reached its end of life in April 2026.
    const supported = [22, 24]
    assert.ok(supported.includes(Number(image[1])), `node:${image[1]} is not a supported LTS line (${supported.join(', ')})`)
    const floor = /(\d+)/.exec(JSON.parse(read('package.json')).engines.node as string)
    assert.ok(Number(image[1]) >= Number(floor![1]), 'the image runs a Node that engines admits')
  })

  it('builds in one stage and runs dist/ with production dependencies in another', () => {
    assert.ok(build.some(l => /npm ci\b/.test(l)))
    assert.ok(build.some(l => /npm run build/.test(l)))
    assert.ok(build.some(l => /npm prune --omit=dev|npm ci --omit=dev/.test(l)))
    const copied = runtime.filter(l => l.startsWith('COPY ')).map(l => l.split(/\s+/).at(-2))
    // node_modules/@switchboard/* link to the workspace packages: each one the server depends
    // on needs its manifest and compiled modules beside node_modules, or the server cannot
    // import the wire contract. (@switchboard/cli, the installable command, is not one.)
    const root = JSON.parse(read('package.json')) as { workspaces: string[], dependencies: Record<string, string> }
    const workspaces = root.workspaces
    const needed = workspaces.filter(w => (JSON.parse(read(`${w}/package.json`)) as { name: string }).name in root.dependencies)
    assert.deepEqual(needed, ['packages/protocol', 'packages/client'])
    const packages = needed.flatMap(w => [`/app/${w}/dist`, `/app/${w}/package.json`])
    assert.deepEqual(copied.sort(), ['/app/dist', '/app/node_modules', '/app/package.json', ...packages].sort())
    const copiedBeforeInstall = build.slice(0, build.findIndex(l => /npm ci\b/.test(l))).filter(l => l.startsWith('COPY ')).flatMap(l => l.split(/\s+/).slice(1, -1))
    for (const w of workspaces) assert.ok(copiedBeforeInstall.includes(`${w}/package.json`), `${w}/package.json copied before npm ci links it`)
  })

  it('copies every script `npm run build` runs into the build stage', () => {
    const scripts = [...(JSON.parse(read('package.json')).scripts.build as string).matchAll(/scripts\/[\w-]+\.mjs/g)].map(m => m[0])
    assert.ok(scripts.includes('scripts/copy-lua.mjs'), 'the build copies the Lua scripts into dist')
    const copied = build.filter(l => l.startsWith('COPY ')).flatMap(l => l.split(/\s+/).slice(1, -1))
    for (const script of scripts) assert.ok(copied.includes(script), `${script} copied before npm run build`)
  })

  it('runs `node dist/src/server.js` as the node user, never through npm', () => {
    const cmd = runtime.filter(l => l.startsWith('CMD '))
    assert.equal(cmd.length, 1)
    assert.deepEqual(JSON.parse(cmd[0]!.slice(4)), ['node', 'dist/src/server.js'])
    // The same entry as `npm start`, which only adds the compile-on-first-run check (and
    // `exec`, so the server is the process npm's forwarded SIGTERM reaches).
    assert.equal(JSON.parse(read('package.json')).scripts.start, 'exec node dist/src/server.js')
    assert.ok(runtime.includes('USER node'))
    assert.ok(runtime.includes('ENV NODE_ENV=production'))
    assert.ok(runtime.includes('STOPSIGNAL SIGTERM'))
    assert.ok(runtime.includes('EXPOSE 3000'))
  })

  it('has a HEALTHCHECK that exits 0 only when /health/live answers 200', async (t) => {
    const healthcheck = runtime.find(l => l.startsWith('HEALTHCHECK '))
    assert.ok(healthcheck !== undefined)
    const command = JSON.parse(/CMD (\[.*\])$/.exec(healthcheck)![1]!) as string[]
    assert.equal(command[0], 'node')
    let status = 200
    const paths: string[] = []
    const server = http.createServer((req, res) => { paths.push(req.url ?? ''); res.writeHead(status).end() })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    t.after(() => { if (server.listening) server.close() })
    const port = String((server.address() as AddressInfo).port)
    const run = (env: Record<string, string>) => new Promise<number>(resolve => {
      execFile(process.execPath, command.slice(1), { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 10_000 }, err => {
        resolve(err === null ? 0 : typeof err.code === 'number' ? err.code : -1)
      })
    })
    assert.equal(await run({ PORT: port }), 0)
    assert.deepEqual(paths, ['/health/live'])
    status = 503
    assert.equal(await run({ PORT: port }), 1)
    server.close()
    await new Promise(resolve => server.once('close', resolve))
    assert.equal(await run({ PORT: port }), 1, 'nothing listening')
  })

  it('keeps local state and secrets out of the build context', () => {
    const ignored = read('.dockerignore').split('\n').map(l => l.trim())
    for (const entry of ['node_modules', 'dist', 'data', '.git', 'test-artifacts', 'coverage', '.env']) {
      assert.ok(ignored.includes(entry), `.dockerignore: ${entry}`)
    }
  })
})
