// Bundles the web app (web/) into dist/web/: assets/app-<hash>.js and assets/styles-<hash>.css
// (content-hashed, so the server can cache them forever) and index.html pointing at them.
// Everything is local: no CDN, the page works on a machine without internet.
//
//   node scripts/build-web.mjs             build
//   node scripts/build-web.mjs --if-stale  build only when web/ or the SDK changed since the last build
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
const outDir = join(root, 'dist', 'web')
const indexOut = join(outDir, 'index.html')
/** What the bundle is made of: the page and the SDK with the protocol pieces it imports. */
const SOURCES = ['web', 'src/client', 'src/realtime'].map(dir => join(root, dir))

function newestMtime (path) {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.mtimeMs
  let newest = 0
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)))
  return newest
}

export function webBuildStale () {
  if (!existsSync(indexOut)) return true
  const builtAt = statSync(indexOut).mtimeMs
  return SOURCES.some(dir => newestMtime(dir) > builtAt)
}

export async function buildWeb () {
  rmSync(outDir, { recursive: true, force: true })
  mkdirSync(outDir, { recursive: true })
  const result = await build({
    absWorkingDir: root,
    entryPoints: { app: 'web/src/main.ts', styles: 'web/styles.css' },
    outdir: join(outDir, 'assets'),
    entryNames: '[name]-[hash]',
    bundle: true,
    format: 'esm',
    platform: 'browser',
    // Browsers of the last few years; the SDK needs nothing newer than ES2020.
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    minify: true,
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning'
  })
  const outputs = Object.entries(result.metafile.outputs)
  const find = (entry) => {
    const found = outputs.find(([, meta]) => meta.entryPoint === entry)
    if (found === undefined) throw new Error(`build-web: no output for ${entry}`)
    return `/assets/${basename(found[0])}`
  }
  const template = readFileSync(join(root, 'web', 'index.html'), 'utf8')
  const html = template
    .replace('/assets/app.js', find('web/src/main.ts'))
    .replace('/assets/styles.css', find('web/styles.css'))
  if (html === template) throw new Error('build-web: web/index.html must reference /assets/app.js and /assets/styles.css')
  // Written last: its time stamp is what --if-stale compares against.
  writeFileSync(indexOut, html)
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--if-stale') && !webBuildStale()) process.exit(0)
  const started = Date.now()
  await buildWeb()
  process.stderr.write(`switchboard: web app built into dist/web (${Date.now() - started} ms)\n`)
}
