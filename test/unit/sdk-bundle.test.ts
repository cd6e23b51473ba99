import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import ts from 'typescript'

/**
 * The SDK ships apart from the server, as @switchboard/client: what a browser bundle
 * of it holds is its own files and the wire contract, never server code, and no TypeBox at
 * run time (the SDK takes only types from the schemas). eslint checks the import statements;
 * this checks what they pull in. The one package it may hold is msgpackr (its browser build),
 * which the wire contract uses for `switchboard.v1.msgpack`.
 */
describe('client SDK bundle', () => {
  it('holds only packages/client/src/, packages/protocol/src/ and msgpackr, and nothing of TypeBox', async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url))
    const result = await build({
      entryPoints: ['packages/client/src/index.ts'],
      absWorkingDir: root,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      write: false,
      metafile: true,
      logLevel: 'silent'
    })
    const inputs = Object.keys(result.metafile.inputs)
    assert.ok(inputs.includes('packages/client/src/index.ts'))
    // node_modules may be a symlink into another checkout: match the package wherever it is.
    for (const input of inputs) assert.match(input, /^packages\/(client|protocol)\/src\/|(^|\/)node_modules\/msgpackr\/[^/]+\.js$/, input)
    assert.ok(inputs.some(input => input.includes('node_modules/msgpackr/')), 'msgpackr is bundled (codec msgpack)')
  })

  it('its own files never name Buffer (Node only: bytes are Uint8Arrays in the SDK)', async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url))
    const result = await build({ entryPoints: ['packages/client/src/index.ts'], absWorkingDir: root, bundle: true, format: 'esm', platform: 'browser', write: false, metafile: true, logLevel: 'silent' })
    const own = Object.keys(result.metafile.inputs).filter(input => /^packages\//.test(input))
    const uses: string[] = []
    for (const file of own) {
      const source = ts.createSourceFile(file, readFileSync(join(root, file), 'utf8'), ts.ScriptTarget.Latest, true)
      const visit = (node: ts.Node): void => {
        if (ts.isIdentifier(node) && node.text === 'Buffer') uses.push(`${file}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}`)
        ts.forEachChild(node, visit)
      }
      visit(source)
    }
    assert.deepEqual(uses, [])
  })
})
