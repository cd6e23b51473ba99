import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

/**
 * Dependency floor (BAR item 17): versions below these have known security bugs. The
 * package.json `overrides` keep transitive copies above them; this checks what is installed.
 */
const FLOORS: Record<string, string> = {
  fastify: '5.12.2',
  'fast-jwt': '6.3.6',
  '@fastify/rate-limit': '11.2.0',
  ws: '8.21.0'
}

const require = createRequire(import.meta.url)

function compare (a: string, b: string): number {
  const pa = a.split('-')[0]!.split('.').map(Number)
  const pb = b.split('-')[0]!.split('.').map(Number)
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0)
  return 0
}

/** Every installed copy of a package in node_modules (hoisted and nested). */
function installedVersions (name: string): string[] {
  const lock = JSON.parse(readFileSync(join(dirname(require.resolve('../../package.json')), 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> }
  return Object.entries(lock.packages)
    .filter(([path]) => path === `node_modules/${name}` || path.endsWith(`/node_modules/${name}`))
    .map(([, info]) => info.version ?? '0.0.0')
}

describe('dependency floor', () => {
  for (const [name, floor] of Object.entries(FLOORS)) {
    it(`${name} ≥ ${floor} everywhere in the tree`, () => {
      for (const version of installedVersions(name)) {
        assert.ok(compare(version, floor) >= 0, `${name}@${version} is below ${floor}`)
      }
    })
  }

  it('the installed fast-jwt really is the locked one', () => {
    const path = join(dirname(require.resolve('fast-jwt')), '..', 'package.json')
    if (existsSync(path)) assert.ok(compare((JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version, FLOORS['fast-jwt']!) >= 0)
  })
})
