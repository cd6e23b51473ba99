// Bundles the SDK for browsers into dist/switchboard.browser.js: one ES module with the wire
// contract pieces it uses and msgpackr's browser build inside, for a page that loads it
// without a bundler (`import { SwitchboardClient } from './switchboard.browser.js'`). The
// package's "./browser" export points here; bundlers take the "." export and tree-shake.
import { build } from 'esbuild'
import { BROWSER_BUILD } from './browser-build.mjs'

await build({
  ...BROWSER_BUILD,
  absWorkingDir: import.meta.dirname,
  entryPoints: ['dist/index.js'],
  outfile: 'dist/switchboard.browser.js',
  legalComments: 'eof'
})
