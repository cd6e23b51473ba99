import { readFileSync } from 'node:fs'

/**
 * The server's version, from package.json, read once at start (node reports show it). The
 * file is one directory up from src/ and two from dist/src/ (the build keeps the tree), so the
 * nearer of the two that exists is read. The command-line client's bundle (packages/cli) sits
 * in dist/ of the @switchboard/cli package, released with the same version. Neither: `unknown`.
 */
export const APP_VERSION: string = readVersion()

function readVersion (): string {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const { name, version } = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as { name?: unknown, version?: unknown }
      if ((name === 'switchboard' || name === '@switchboard/cli') && typeof version === 'string') return version
    } catch {
      // Not there: try the next.
    }
  }
  return 'unknown'
}
