import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { build, PASSWORD, tempDir } from './helper.js'
import { ROOT, runCli } from './process.js'

/*
 * The packages as a user gets them, built by their prepack and installed from the tarballs
 * `npm pack` makes, outside the repository.
 *
 * The SDK: `npm pack` of the two workspace packages (their prepack builds
 * them), the tarballs installed with a plain `npm install` into a scratch project outside the
 * repository, then imported by name from a Node ES module and type-checked from a .ts file.
 * @switchboard/client depends on @switchboard/protocol; both tarballs go to the same install,
 * as both would come from the registry. Their own dependencies (TypeBox, msgpackr) come from
 * npm's cache when it has them (--prefer-offline), from the registry otherwise.
 */

const run = promisify(execFile)
const NPM_QUIET = ['--no-audit', '--no-fund', '--loglevel=error']

interface Packed { name: string, filename: string, files: Array<{ path: string }> }

/** Packs the workspace packages into `dir`; npm reports each tarball and the files in it. */
async function pack (dir: string, workspaces: string[]): Promise<Map<string, Packed>> {
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir, ...workspaces.flatMap(w => ['--workspace', w]), ...NPM_QUIET], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 })
  // npm prints the prepack build's output before the JSON document.
  const packed = JSON.parse(stdout.slice(stdout.indexOf('\n[') + 1)) as Packed[]
  return new Map(packed.map(p => [p.name, p]))
}

describe('@switchboard/client: npm pack, install, import', () => {
  it('packs only compiled SDK and wire-contract modules, installs from the tarballs, imports and type-checks', async (t) => {
    const dir = tempDir(t, 'switchboard-sdk-pack-')
    const packed = await pack(dir, ['@switchboard/protocol', '@switchboard/client'])
    const client = packed.get('@switchboard/client')
    const protocol = packed.get('@switchboard/protocol')
    assert.ok(client !== undefined && protocol !== undefined, `both packed: ${[...packed.keys()].join(', ')}`)

    // Contents: package.json and dist/ only; every module compiled from the package's own
    // sources (so no server file, no test, no TypeScript source can slip in), and the entry
    // points the exports map names are there.
    for (const [folder, { files }] of [['packages/client', client], ['packages/protocol', protocol]] as const) {
      const paths = files.map(f => f.path)
      for (const path of paths) {
        if (path === 'package.json' || path === 'README.md') continue
        assert.match(path, /^dist\/[\w.-]+\.(js|d\.ts|js\.map)$/, `${folder}: ${path} is a build output`)
        const module = path.replace(/^dist\//, '').replace(/\.(d\.ts|js\.map|js)$/, '')
        if (module === 'switchboard.browser') continue
        assert.ok(existsSync(join(ROOT, folder, 'src', `${module}.ts`)), `${folder}: ${path} compiles src/${module}.ts`)
      }
      assert.ok(!paths.some(p => /test|server|store|plugins|routes/.test(p)), `${folder}: nothing of the server or the tests: ${paths.join(' ')}`)
    }
    const clientPaths = new Set(client.files.map(f => f.path))
    for (const path of ['dist/index.js', 'dist/index.d.ts', 'dist/switchboard.browser.js']) assert.ok(clientPaths.has(path), `${path} packed`)
    const protocolPaths = new Set(protocol.files.map(f => f.path))
    for (const path of ['dist/messages.d.ts', 'dist/close-codes.js', 'dist/msgpack.js']) assert.ok(protocolPaths.has(path), `${path} packed`)

    // A scratch project that knows nothing of the repository.
    const project = join(dir, 'consumer')
    await run('mkdir', ['-p', project])
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    await run('npm', ['install', '--prefer-offline', ...NPM_QUIET, join(dir, protocol.filename), join(dir, client.filename)], { cwd: project })

    const installed = await run(process.execPath, ['--input-type=module', '-e', [
      "import { SwitchboardClient, SwitchboardError, CloseCodes, backoffDelay } from '@switchboard/client'",
      "const browser = await import('@switchboard/client/browser')",
      'console.log(JSON.stringify([typeof SwitchboardClient, typeof SwitchboardError, typeof CloseCodes.TOKEN_EXPIRED, typeof backoffDelay, typeof browser.SwitchboardClient]))'
    ].join('\n')], { cwd: project })
    assert.deepEqual(JSON.parse(installed.stdout), ['function', 'function', 'number', 'function', 'function'])

    // The declarations, against the repository's TypeScript, as a strict NodeNext project would
    // read them; a wrong type in the consumer must fail (the types are not `any`).
    const consumer = [
      "import { SwitchboardClient, SwitchboardError, type SubscriptionEvent } from '@switchboard/client'",
      "import { CloseCodes } from '@switchboard/protocol/close-codes'",
      "const client = new SwitchboardClient({ url: 'ws://127.0.0.1:1/ws', token: 't' })",
      "const handler = (event: SubscriptionEvent): string => event.type === 'gap' ? event.epoch : String(event.offset)",
      'export const checks = [client.state, handler, SwitchboardError, CloseCodes.TOKEN_EXPIRED]',
      ''
    ].join('\n')
    const tsc = [join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022']
    writeFileSync(join(project, 'consumer.ts'), consumer)
    await run(process.execPath, [...tsc, 'consumer.ts'], { cwd: project })
    writeFileSync(join(project, 'wrong.ts'), consumer.replace("token: 't'", 'token: 42'))
    await assert.rejects(run(process.execPath, [...tsc, 'wrong.ts'], { cwd: project }), (err: { stdout: string }) => {
      assert.match(err.stdout, /wrong\.ts\(\d+,\d+\): error TS2322: Type 'number' is not assignable to type 'string'/)
      return true
    })
  })
})

/*
 * The `switchboard` command: @switchboard/cli is one bundled file without dependencies (the
 * server's, better-sqlite3 above all, would compile from source on every install here), so a
 * global install from the tarball needs nothing from the registry. Installed into a temporary
 * prefix, then run through the prefix's bin link against a real server; npx runs the same
 * tarball with a throwaway npm cache.
 */
describe('@switchboard/cli: npm install -g, npx', () => {
  it('installs `switchboard` on PATH from the packed tarball; it talks to a server, the SDK and msgpack inside', async (t) => {
    const dir = tempDir(t, 'switchboard-cli-install-')
    const cli = (await pack(dir, ['@switchboard/cli'])).get('@switchboard/cli')
    assert.ok(cli !== undefined)
    assert.deepEqual(cli.files.map(f => f.path).sort(), ['bin/switchboard.js', 'dist/switchboard.js', 'dist/switchboard.js.LEGAL.txt', 'dist/switchboard.js.map', 'package.json'])
    const manifest = JSON.parse(readFileSync(join(ROOT, 'packages/cli/package.json'), 'utf8')) as { version: string, dependencies?: unknown }
    assert.equal(manifest.dependencies, undefined, 'nothing to install but the tarball')
    const rootVersion = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
    assert.equal(manifest.version, rootVersion, 'released with the server: --version is the server\'s version')

    const prefix = join(dir, 'prefix')
    await run('npm', ['install', '--global', '--prefix', prefix, '--prefer-offline', ...NPM_QUIET, join(dir, cli.filename)], { cwd: dir })
    const command = join(prefix, 'bin', 'switchboard')
    const version = await run(command, ['--version'], { cwd: dir })
    assert.equal(version.stdout.trim(), rootVersion)

    const server = await build(t)
    await server.createUser('alice', 'user')
    const config = join(dir, 'config.json')
    const installed = (args: string[], stdin?: string) => runCli(config, args, { command, stdin })
    const login = await installed(['login', '--url', server.url, '--username', 'alice', '--password-stdin'], PASSWORD + '\n')
    assert.equal(login.code, 0, login.stderr)
    assert.equal((await installed(['rooms', 'create', 'lobby'])).code, 0)
    const published = await installed(['pub', 'lobby', '{"text":"hello"}', '--json'])
    assert.equal(published.code, 0, published.stderr)
    const { epoch, offset } = JSON.parse(published.stdout) as { epoch: string, offset: number }
    // sub recovers the publication over WebSocket (the bundled SDK, msgpack codec) and stops.
    const received = await installed(['sub', 'lobby', `--since=${epoch}:${offset - 1}`, '--count', '1', '--codec', 'msgpack'])
    assert.equal(received.code, 0, received.stderr)
    const line = JSON.parse(received.stdout) as { room?: string, epoch?: string, offset?: number, data?: unknown }
    assert.deepEqual([line.room, line.epoch, line.offset, line.data], ['lobby', epoch, offset, { text: 'hello' }], received.stdout)
    // A failure names the command as typed.
    const unknown = await installed(['nope'])
    assert.equal(unknown.code, 2)
    assert.match(unknown.stderr, /^switchboard: unknown command "nope"; see switchboard --help/)

    const npx = await run('npx', ['--yes', '--package', join(dir, cli.filename), '--', 'switchboard', '--version'], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', HOME: dir, npm_config_cache: join(dir, 'npm-cache'), npm_config_update_notifier: 'false' }
    })
    assert.equal(npx.stdout.trim(), rootVersion)
  })
})
