#!/usr/bin/env node
// The `switchboard` command. The work is in the bundle (dist/switchboard.js, built from src/cli/
// by `npm run build`); this file is in git so that `npm ci` links the command into
// node_modules/.bin before anything is built.
let cli
try {
  cli = await import('../dist/switchboard.js')
} catch (err) {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !String(err.message).includes('switchboard.js')) throw err
  process.stderr.write('switchboard: the command is not built yet: run `npm run build` in the repository\n')
  process.exit(1)
}
cli.run(process.argv.slice(2))
