// Bundles the command-line client (its sources are ../../src/cli/: `token` and `config check`
// read the server's settings with the server's own config module) into one ES module,
// dist/switchboard.js, with every package it uses inside: installing the command then needs no
// dependency, in particular none of the server's (better-sqlite3 compiles from source where no
// prebuilt binary can be downloaded, a minute or more per install). docs/cli.md explains why.
import { build } from 'esbuild'

await build({
  absWorkingDir: import.meta.dirname,
  entryPoints: ['../../src/cli/index.ts'],
  outfile: 'dist/switchboard.js',
  // The repository's tsconfig: its paths send @switchboard/* to the packages' sources.
  tsconfig: '../../tsconfig.json',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.19',
  // Native speed-ups that ws and msgpackr load when installed and do without otherwise.
  external: ['bufferutil', 'utf-8-validate', 'msgpackr-extract'],
  // The CommonJS packages inside (ws, fast-jwt…) call require() for Node's built-ins.
  banner: { js: "import { createRequire as __sbCreateRequire } from 'node:module'; const require = __sbCreateRequire(import.meta.url);" },
  legalComments: 'linked',
  sourcemap: 'linked',
  logLevel: 'warning'
})
