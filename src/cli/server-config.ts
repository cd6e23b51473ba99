import { randomUUID } from 'node:crypto'
import { resolve } from 'node:path'
import { createSigner } from 'fast-jwt'
import { ConfigError, loadConfig, parseDurationSeconds, type Config } from '../config.js'
import { loadEnvFile } from '../env-file.js'
import { CliError } from './api.js'
import type { Output } from './commands.js'

/**
 * The two commands that read the server's own configuration rather than talk to a server:
 * `switchboard config check` and `switchboard token`. Both see the settings the server would
 * (the environment over the env file, as the server reads them), so a script can mint a token
 * for the node it runs beside.
 */

/** The variables the server would see: the env file's, under the real environment (src/env-file.ts). */
export function serverEnvironment (envFile: string | undefined, env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  const merged: NodeJS.ProcessEnv = { ...env }
  let read: string | null
  try {
    read = envFile === undefined ? loadEnvFile(merged) : loadEnvFile(merged, resolve(envFile))
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2)
    throw err
  }
  if (envFile !== undefined && read === null) throw new CliError(`--env-file: ${envFile} does not exist`, 2)
  return merged
}

function config (source: Record<string, string | undefined>): Config {
  try {
    return loadConfig(source)
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`configuration: ${err.message}`, 1)
    throw err
  }
}

/** Keys whose values are secrets wherever they appear in the configuration. */
const SECRET_KEY = /secret|password|apikey|token/i

/** A copy of `value` with secrets replaced by "***" and credentials taken out of URLs. */
export function masked (value: unknown, key = ''): unknown {
  if (typeof value === 'string') {
    if (SECRET_KEY.test(key) && value !== '') return '***'
    return value.replace(/\/\/([^/@\s]*)@/, (_, userinfo: string) => `//${userinfo.includes(':') ? `${userinfo.split(':')[0]!}:***` : '***'}@`)
  }
  if (Array.isArray(value)) return value.map(item => masked(item, key))
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, masked(v, k)]))
  }
  return value
}

/** `config check`: validates the settings and prints the effective configuration, secrets masked. */
export function configCheck (envFile: string | undefined, out: Output): number {
  const effective = config(serverEnvironment(envFile))
  out.line(JSON.stringify(masked(effective), null, 2))
  return 0
}

export interface TokenOptions {
  envFile?: string
  role?: string
  ttl?: string
}

const USER_ID = /^[a-zA-Z0-9_.-]{1,64}$/

/**
 * `token USER`: an access token for USER, signed with the configured JWT_SECRET exactly as the
 * server signs one at login (HS256, its issuer, a session id of its own). For development and
 * scripts on the server's host: whoever holds JWT_SECRET can sign any token, which is why it is
 * a secret. The server still checks that the account exists and is active.
 */
export function mintToken (user: string | undefined, options: TokenOptions, out: Output): number {
  if (user === undefined) throw new CliError('token: which user? switchboard token USER [--role user|admin] [--ttl 15m]', 2)
  if (!USER_ID.test(user)) throw new CliError(`token: "${user}" is not a user id (letters, digits, _ . -, at most 64)`, 2)
  const role = options.role ?? 'user'
  if (role !== 'user' && role !== 'admin') throw new CliError(`--role: user or admin, got "${role}"`, 2)
  const { jwt } = config(serverEnvironment(options.envFile))
  if (jwt.generated) process.stderr.write('switchboard token: signed with the development secret under DATA_DIR (no JWT_SECRET set)\n')
  let ttlSeconds = jwt.accessTokenTtlSeconds
  if (options.ttl !== undefined) {
    try {
      ttlSeconds = parseDurationSeconds(options.ttl)
    } catch (err) {
      throw new CliError(`--ttl: ${(err as Error).message}`, 2)
    }
  }
  const sign = createSigner({ key: jwt.secret, algorithm: 'HS256', iss: jwt.issuer, expiresIn: ttlSeconds * 1000 })
  out.line(sign({ sub: user, role, jti: randomUUID(), sid: randomUUID() }))
  return 0
}
