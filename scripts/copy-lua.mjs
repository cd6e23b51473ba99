#!/usr/bin/env node
// The Lua scripts (src/**/lua/*.lua) are read at start from next to the compiled module
// (src/redis.ts, loadRedisScript); tsc copies only what it compiles, so `npm run build` runs
// this after it: every .lua file goes to the same path under dist/, and a .lua file left in
// dist/ by a script since removed is deleted. ensure-build.mjs asks luaBuildStale() too.
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
/** What tsconfig.build.json compiles. */
const sourceRoots = ['src', 'plugins', 'routes']

function walk (dir) {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return walk(path)
    return entry.name.endsWith('.lua') ? [path] : []
  })
}

/** Every Lua script of the sources, relative to the repository (e.g. `src/limits/lua/rate-take.lua`). */
export function luaSources () {
  return sourceRoots.flatMap((dir) => walk(join(root, dir))).map((path) => relative(root, path)).sort()
}

/** True when a script is missing from dist/ or older than its source. */
export function luaBuildStale (outDir = join(root, 'dist')) {
  return luaSources().some((file) => {
    const built = join(outDir, file)
    return !existsSync(built) || statSync(built).mtimeMs < statSync(join(root, file)).mtimeMs
  })
}

export function copyLua (outDir = join(root, 'dist')) {
  const sources = luaSources()
  for (const file of sources) {
    const target = join(outDir, file)
    mkdirSync(dirname(target), { recursive: true })
    copyFileSync(join(root, file), target)
  }
  const wanted = new Set(sources.map((file) => join(outDir, file)))
  for (const built of sourceRoots.flatMap((dir) => walk(join(outDir, dir)))) {
    if (!wanted.has(built)) rmSync(built)
  }
  return sources
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) copyLua()
