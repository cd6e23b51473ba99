import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseEnv } from 'node:util'
import { ConfigError } from './config.js'

/**
 * Reads `.env` in the working directory, as most Node servers do, into `env` under the real
 * environment: a variable already set there (even to an empty string) keeps its value, so a
 * deploy's settings always beat a file left in the directory. No `.env`, nothing happens.
 * Returns the file's path when one was read, for the startup log; an unreadable one (a
 * directory, no permission) stops the start like any bad setting.
 */
export function loadEnvFile (env: NodeJS.ProcessEnv = process.env, file = resolve('.env')): string | null {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return null
    throw new ConfigError(`.env: cannot read ${file} (${code ?? 'error'})`)
  }
  for (const [name, value] of Object.entries(parseEnv(text))) {
    if (env[name] === undefined) env[name] = value
  }
  return file
}
