import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

/**
 * The SDK ships apart from the server (and, later, in its own package): what a browser bundle
 * of it holds is its own files and the wire contract, never server code, and no TypeBox at
 * run time (the SDK takes only types from the schemas). eslint checks the import statements;
 * this checks what they pull in.
 */
describe('client SDK bundle', () => {
  it('holds only src/client/ and src/protocol/, and nothing of TypeBox', async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url))
    const result = await build({
      entryPoints: ['src/client/index.ts'],
      absWorkingDir: root,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      write: false,
      metafile: true,
      logLevel: 'silent'
    })
    const inputs = Object.keys(result.metafile.inputs)
    assert.ok(inputs.includes('src/client/index.ts'))
    for (const input of inputs) assert.match(input, /^src\/(client|protocol)\//, input)
  })
})
