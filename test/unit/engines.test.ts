import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import semver from 'semver'

/**
 * The Node versions package.json promises (`engines`) are ones every installed package
 * supports: otherwise `npm ci` warns EBADENGINE and a dependency may rely on an API the
 * promised Node lacks. The lock file records each package's own `engines`.
 */
const ROOT = new URL('../../', import.meta.url)
const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { engines: { node: string } }
const lock = JSON.parse(readFileSync(new URL('package-lock.json', ROOT), 'utf8')) as { packages: Record<string, { version?: string, engines?: { node?: string } | string[] }> }

describe('engines', () => {
  it('every package in the lock file supports the lowest Node that package.json promises', () => {
    const floor = semver.minVersion(pkg.engines.node)
    assert.ok(floor !== null, `engines.node "${pkg.engines.node}" has no lowest version`)
    const refusing = Object.entries(lock.packages)
      .filter(([path, info]) => path !== '' && info.engines !== undefined && !Array.isArray(info.engines) && typeof info.engines.node === 'string')
      .filter(([, info]) => !semver.satisfies(floor, (info.engines as { node: string }).node))
      .map(([path, info]) => `${path.replace(/^.*node_modules\//, '')}@${info.version ?? '?'} requires node ${(info.engines as { node: string }).node}`)
    assert.deepEqual(refusing, [], `these do not support Node ${floor.version}; pin a version that does (npm overrides) or raise engines.node`)
  })
})
