import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { copyLua, luaBuildStale, luaSources } from '../scripts/copy-lua.mjs'
import { skipUnlessRedis, TEST_REDIS_URL } from './helper.js'
import { ROOT } from './process.js'

/**
 * The Lua scripts are files (src/**\/lua/*.lua) read at start: each must compile, each the code
 * names must exist, and the build must put each one next to the compiled module that reads it.
 */

const run = promisify(execFile)

/** Every file compiled by Redis itself (SCRIPT LOAD compiles without running): the files that do not, with Redis's error. */
async function syntaxErrors (files: string[]): Promise<Array<{ file: string, error: string }>> {
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  redis.on('error', () => {})
  await redis.connect()
  try {
    const errors: Array<{ file: string, error: string }> = []
    for (const file of files) {
      try {
        await redis.script('LOAD', readFileSync(join(ROOT, file), 'utf8'))
      } catch (err) {
        errors.push({ file, error: err instanceof Error ? err.message : String(err) })
      }
    }
    return errors
  } finally {
    await redis.quit()
  }
}

function report (errors: Array<{ file: string, error: string }>): string {
  return errors.map(({ file, error }) => `${file}: ${error}`).join('\n')
}

function tsFiles (dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => relative(ROOT, join(entry.parentPath, entry.name)))
}

/** Every `.lua` file the code loads (`new URL('./lua/x.lua', import.meta.url)`), relative to the repository. */
function referencedScripts (): string[] {
  const found = new Set<string>()
  for (const file of ['src', 'plugins', 'routes'].flatMap(tsFiles)) {
    for (const match of readFileSync(join(ROOT, file), 'utf8').matchAll(/new URL\('(\.{1,2}\/[\w./-]+\.lua)', import\.meta\.url\)/g)) {
      found.add(join(dirname(file), match[1]!))
    }
  }
  return [...found].sort()
}

describe('Lua scripts', () => {
  it('every .lua file compiles in Redis (SCRIPT LOAD)', async (t) => {
    const skip = await skipUnlessRedis()
    if (skip !== false) return t.skip(skip)
    const files = luaSources()
    assert.ok(files.length >= 15, `the scripts are found (${files.length})`)
    const errors = await syntaxErrors(files)
    assert.deepEqual(errors, [], report(errors))
  })

  it('the check fails on a syntax error and names the file', async (t) => {
    const skip = await skipUnlessRedis()
    if (skip !== false) return t.skip(skip)
    const errors = await syntaxErrors(['src/realtime/redis-engine/lua/publish.lua', 'test/fixtures/lua/broken.lua'])
    assert.equal(errors.length, 1, report(errors))
    assert.equal(errors[0]!.file, 'test/fixtures/lua/broken.lua')
    assert.match(errors[0]!.error, /compil|syntax|expected/i)
    assert.match(report(errors), /^test\/fixtures\/lua\/broken\.lua: /)
  })

  it('the code loads exactly the .lua files there are', () => {
    const referenced = referencedScripts()
    assert.ok(referenced.includes('src/realtime/redis-engine/lua/common.lua'))
    // A script named but absent stops the start; one present but never named is dead code.
    assert.deepEqual(referenced, luaSources())
  })

  it('the build copies each script, and a missing one makes the build stale', (t) => {
    const outDir = mkdtempSync(join(tmpdir(), 'switchboard-lua-'))
    t.after(() => rmSync(outDir, { recursive: true, force: true }))
    assert.equal(luaBuildStale(outDir), true, 'nothing built yet')
    copyLua(outDir)
    for (const file of luaSources()) assert.ok(existsSync(join(outDir, file)), `${file} copied`)
    assert.equal(luaBuildStale(outDir), false)
    rmSync(join(outDir, 'src/realtime/redis-engine/lua/publish.lua'))
    assert.equal(luaBuildStale(outDir), true, 'a script missing from the build')
  })

  it('the built server finds every script it loads, and npm pack ships them', async () => {
    // Builds only when dist/ is stale (a source, or a script, newer or missing): what `npm start` does.
    await run(process.execPath, ['scripts/ensure-build.mjs'], { cwd: ROOT })
    for (const file of referencedScripts()) assert.ok(existsSync(join(ROOT, 'dist', file)), `dist/${file} built`)
    // Importing a module reads its scripts: a missing one throws here, as at the server's start.
    const modules = ['src/realtime/redis-engine/index.js', 'src/limits/rate-limiter.js', 'src/limits/login-throttle.js']
    const imported = await run(process.execPath, ['--input-type=module', '-e',
      `for (const m of ${JSON.stringify(modules)}) await import('./dist/' + m); console.log('loaded')`], { cwd: ROOT })
    assert.equal(imported.stdout.trim(), 'loaded')
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT })
    const packed = new Set((JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map(f => f.path))
    for (const file of referencedScripts()) assert.ok(packed.has(`dist/${file}`), `dist/${file} packed`)
  })
})
