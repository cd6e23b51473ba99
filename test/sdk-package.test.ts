import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from './helper.js'
import { ROOT } from './process.js'

/*
 * The SDK as a user gets it: `npm pack` of the two workspace packages (their prepack builds
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
