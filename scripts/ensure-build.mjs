// `npm start` runs the compiled server; on a fresh clone (or after a pull) compile first,
// so the README's `npm ci && npm start` works without a separate build step.
import { existsSync, statSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { luaBuildStale } from './copy-lua.mjs'

const entry = 'dist/src/server.js'

function newestMtime (dir) {
  let newest = 0
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, name.name)
    if (name.isDirectory()) newest = Math.max(newest, newestMtime(path))
    else if (/\.(ts|lua)$/.test(name.name)) newest = Math.max(newest, statSync(path).mtimeMs)
  }
  return newest
}

// The workspace packages (the wire contract, the SDK) are compiled by the same build, first.
const sourcesChanged = () => ['src', 'plugins', 'routes', 'packages/protocol/src', 'packages/client/src']
  .some(dir => newestMtime(dir) > statSync(entry).mtimeMs)

// A Lua script missing from dist/ (a build from before scripts were files) also rebuilds:
// the server would stop at start without it.
// The packages' outputs are checked too: a dist/ from before the workspaces has none of them.
const packageOutputs = ['packages/protocol/dist/messages.js', 'packages/client/dist/index.js', 'packages/cli/dist/switchboard.js']
if (!existsSync(entry) || packageOutputs.some(file => !existsSync(file)) || sourcesChanged() || luaBuildStale()) {
  process.stderr.write('switchboard: compiling TypeScript (npm run build)…\n')
  execFileSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' })
} else {
  // The server is current; the web app (web/ and the SDK it bundles) may not be.
  execFileSync(process.execPath, ['scripts/build-web.mjs', '--if-stale'], { stdio: 'inherit' })
}
