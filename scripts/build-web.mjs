// Bundles the web app (web/) into dist/web/: assets/app-<hash>.js and assets/styles-<hash>.css
// (content-hashed, so the server can cache them forever) and index.html pointing at them.
// Everything is local: no CDN, the page works on a machine without internet.
//
//   node scripts/build-web.mjs             build
//   node scripts/build-web.mjs --if-stale  build only when web/ or the SDK changed since the last build
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { BROWSER_BUILD } from '../packages/client/browser-build.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const defaultOutDir = join(root, 'dist', 'web')
const indexOut = join(defaultOutDir, 'index.html')
/** What the bundle is made of: the page and the SDK with the protocol pieces it imports. */
const SOURCES = ['web', 'packages/client/src', 'packages/protocol/src'].map(dir => join(root, dir))

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

/** The asset file names an index.html refers to (`/assets/<name>`); none when there is no such file. */
function assetsOf (indexFile) {
  let html
  try { html = readFileSync(indexFile, 'utf8') } catch { return [] }
  return [...html.matchAll(/\/assets\/([^"'?#\s]+)/g)].map(match => match[1])
}

/**
 * Builds into `outDir` (default dist/web) without a moment where a file a running server needs
 * is missing. The server reads index.html once at start and serves the asset files it names
 * from disk, so deleting dist/web first (as this script once did) broke every page load of a
 * running server until it was restarted, and for good if the new build's hashes differed.
 * Instead esbuild writes into a staging folder beside `outDir` (same file system, so renames
 * are atomic; never served; and as deep, so the source maps' relative paths to the sources
 * come out as they will be read from assets/); then each new asset is renamed into
 * assets/ (a content-hashed name that already exists has the same content, so replacing it
 * changes nothing for a reader), index.html is replaced by a rename (readers see the old file
 * or the new, never a missing or half-written one), and only then are old assets removed:
 * those of neither this build nor the previous one. The previous build's stay because a server
 * started before this build still serves its index.html; one started two builds ago needs a
 * restart (as after any rebuild, to serve the new page). Two builds running at once into the
 * same folder are not supported: each could remove what the other just added.
 */
export async function buildWeb ({ outDir = defaultOutDir } = {}) {
  const assetsDir = join(outDir, 'assets')
  const indexFile = join(outDir, 'index.html')
  mkdirSync(assetsDir, { recursive: true })
  const staging = mkdtempSync(join(dirname(outDir), `.${basename(outDir)}-staging-`))
  try {
    const result = await build({
      absWorkingDir: root,
      entryPoints: { app: 'web/src/main.ts', styles: 'web/styles.css' },
      outdir: join(staging, 'assets'),
      entryNames: '[name]-[hash]',
      ...BROWSER_BUILD,
      metafile: true
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

    const built = outputs.map(([file]) => basename(file))
    const previous = assetsOf(indexFile)
    for (const name of built) renameSync(join(staging, 'assets', name), join(assetsDir, name))
    // Written last: its time stamp is what --if-stale compares against.
    writeFileSync(join(staging, 'index.html'), html)
    renameSync(join(staging, 'index.html'), indexFile)

    // A source map goes with the file that links to it.
    const keep = new Set([...built, ...previous, ...previous.map(name => `${name}.map`)])
    for (const name of readdirSync(assetsDir)) {
      if (!keep.has(name)) rmSync(join(assetsDir, name), { recursive: true, force: true })
    }
  } finally {
    rmSync(staging, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--if-stale') && !webBuildStale()) process.exit(0)
  const started = Date.now()
  await buildWeb()
  process.stderr.write(`switchboard: web app built into dist/web (${Date.now() - started} ms)\n`)
}
