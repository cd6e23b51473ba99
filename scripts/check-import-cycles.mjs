#!/usr/bin/env node
// Fails when a module of the server, its plugins, routes or workspace packages can reach itself through its
// imports (type-only imports count: a cycle of types is still two modules that cannot be read
// apart). Run by `npm run lint`. Resolution is TypeScript's own, so `.js` specifiers map to
// the `.ts` files they compile from.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import ts from 'typescript'

const root = resolve(import.meta.dirname, '..')
const roots = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['src', 'plugins', 'routes', 'packages/protocol/src', 'packages/client/src']
const compilerOptions = { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, allowJs: false }

function sourceFiles (dir) {
  const out = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path))
    else if (/\.(ts|mts)$/.test(name) && !name.endsWith('.d.ts')) out.push(path)
  }
  return out
}

const files = roots.flatMap((dir) => sourceFiles(resolve(root, dir)))
const inScope = new Set(files)
/** @type {Map<string, string[]>} */
const edges = new Map()
for (const file of files) {
  const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true)
  const targets = []
  for (const { fileName } of importedFiles) {
    if (!fileName.startsWith('.')) continue
    const resolved = ts.resolveModuleName(fileName, file, compilerOptions, ts.sys).resolvedModule
    if (resolved !== undefined && inScope.has(resolved.resolvedFileName)) targets.push(resolved.resolvedFileName)
  }
  edges.set(file, targets)
}

// Tarjan's strongly connected components: every component of more than one module is a cycle.
let index = 0
const indexOf = new Map()
const lowLink = new Map()
const stack = []
const onStack = new Set()
const cycles = []
function visit (file) {
  indexOf.set(file, index)
  lowLink.set(file, index)
  index++
  stack.push(file)
  onStack.add(file)
  for (const next of edges.get(file) ?? []) {
    if (!indexOf.has(next)) {
      visit(next)
      lowLink.set(file, Math.min(lowLink.get(file), lowLink.get(next)))
    } else if (onStack.has(next)) {
      lowLink.set(file, Math.min(lowLink.get(file), indexOf.get(next)))
    }
  }
  if (lowLink.get(file) === indexOf.get(file)) {
    const component = []
    let member
    do {
      member = stack.pop()
      onStack.delete(member)
      component.push(member)
    } while (member !== file)
    const selfImport = component.length === 1 && (edges.get(file) ?? []).includes(file)
    if (component.length > 1 || selfImport) cycles.push(component)
  }
}
for (const file of files) if (!indexOf.has(file)) visit(file)

if (cycles.length > 0) {
  for (const component of cycles) {
    console.error(`import cycle: ${component.map((file) => relative(root, file)).sort().join(' <-> ')}`)
  }
  process.exit(1)
}
console.log(`no import cycles among ${files.length} modules (${roots.join(', ')})`)
