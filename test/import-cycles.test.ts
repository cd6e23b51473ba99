import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from './process.js'
import { tempDir } from './helper.js'

const SCRIPT = join(ROOT, 'scripts', 'check-import-cycles.mjs')

function check (...roots: string[]): { status: number | null, output: string } {
  const result = spawnSync(process.execPath, [SCRIPT, ...roots], { encoding: 'utf8' })
  return { status: result.status, output: result.stdout + result.stderr }
}

describe('import-cycle check (npm run lint)', () => {
  it('names the modules of a cycle, type-only imports included, and fails', (t) => {
    const dir = tempDir(t)
    mkdirSync(join(dir, 'core'))
    writeFileSync(join(dir, 'core', 'node.ts'), "import { Connection } from './connection.js'\nexport const node = new Connection()\n")
    writeFileSync(join(dir, 'core', 'connection.ts'), "import type { node } from './node.js'\nexport class Connection { host?: typeof node }\n")
    writeFileSync(join(dir, 'core', 'leaf.ts'), "import { node } from './node.js'\nexport const leaf = node\n")
    const { status, output } = check(dir)
    assert.equal(status, 1, output)
    assert.match(output, /import cycle: .*core\/connection\.ts <-> .*core\/node\.ts/)
    assert.doesNotMatch(output, /leaf\.ts/)
  })

  it('passes the server, its plugins and routes', () => {
    const { status, output } = check()
    assert.equal(status, 0, output)
    assert.match(output, /no import cycles/)
  })
})
