// Bundles the SDK for browsers into dist/switchboard.browser.js: one ES module with the wire
// contract pieces it uses and msgpackr's browser build inside, for a page that loads it
// without a bundler (`import { SwitchboardClient } from './switchboard.browser.js'`). The
// package's "./browser" export points here; bundlers take the "." export and tree-shake.
import { build } from 'esbuild'

await build({
  absWorkingDir: import.meta.dirname,
  entryPoints: ['dist/index.js'],
  outfile: 'dist/switchboard.browser.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  // The same browsers as the web app (scripts/build-web.mjs): the SDK needs nothing newer than ES2020.
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'eof',
  logLevel: 'warning'
})
