import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'

/** What `switchboard login` keeps between runs. */
export interface CliConfig {
  url?: string
  username?: string
  accessToken?: string
  refreshToken?: string
}

/** `$SWITCHBOARD_CONFIG`, else `$XDG_CONFIG_HOME/switchboard/config.json`, else `~/.config/switchboard/config.json`. */
export function configPath (env: NodeJS.ProcessEnv = process.env): string {
  if (env.SWITCHBOARD_CONFIG !== undefined && env.SWITCHBOARD_CONFIG !== '') return env.SWITCHBOARD_CONFIG
  const base = env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : join(homedir(), '.config')
  return join(base, 'switchboard', 'config.json')
}

export function readConfig (path: string): CliConfig {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown
    return typeof parsed === 'object' && parsed !== null ? parsed as CliConfig : {}
  } catch {
    return {}
  }
}

/** Written with 0600 rights: the file holds a refresh token, which is a credential. */
export function writeConfig (path: string, config: CliConfig): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  writeFileSync(path, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 })
  // writeFileSync keeps the mode of an existing file; tighten it in case it was created looser.
  chmodSync(path, 0o600)
}
