#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline'
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Api, CliError } from './api.js'
import { configPath, readConfig } from './config.js'
import { readBytesFile, readBytesStdin } from './bytes.js'
import { history, keys, login, logout, publish, publishBytes, rooms, users, type Output, type PasswordSource } from './commands.js'
import { connectInteractive } from './connect.js'
import { subscribe } from './sub.js'
import { APP_VERSION } from '../version.js'
import { configCheck, mintToken } from './server-config.js'
import { parseCodec } from './ws-client.js'

const USAGE = `switchboard — command-line client for a Switchboard server

Usage:
  switchboard login [--username NAME] [--password-stdin]   sign in and keep the session (0600 file)
  switchboard logout [--all]                                 end this session; --all: every session of your account
  switchboard rooms create ROOM [--name N] [--private] [--publish members|moderators]
                               [--history-size N] [--history-ttl SECONDS] [--max-members N]
                               [--presence-events on|off] [--archive on|off] [--archive-days N]
  switchboard rooms update ROOM [the same settings]          change a room's settings (PATCH)
  switchboard rooms list | get ROOM | delete ROOM | members ROOM
  switchboard rooms add-member ROOM USER [--role member|moderator|owner] | remove-member ROOM USER
  switchboard pub ROOM DATA [--key IDEMPOTENCY_KEY]          publish JSON DATA over HTTP
  switchboard pub ROOM --file PATH | --binary [--key K]     publish raw bytes (a file's, or stdin's) over WebSocket
  switchboard sub ROOM [--since EPOCH:OFFSET] [--count N] [--out DIR]
                                                            print one JSON line per message (bytes as base64); resumes
                                                            across reconnects; --out writes bytes to DIR/ROOM-OFFSET.bin
  switchboard history ROOM [--before N | --after N] [--epoch E] [--limit N]
                                                            one page of the room's history as JSON lines (newest first,
                                                            or oldest first with --after); the next page's flags on stderr
  switchboard history ROOM --export > room.ndjson           every message the room keeps, oldest first (bytes as base64)
  switchboard connect                                       interactive WebSocket session (like wscat)
  switchboard users passwd                                  change your password (asks for the current one, then the new)
  switchboard users list [--q PREFIX] | get ID               (admins, as are the rest)
  switchboard users create NAME [--role admin|user]          create an account (password as for users passwd ID)
  switchboard users disable ID | enable ID | role ID admin|user | logout ID
  switchboard users passwd ID                               set a user's password; every session of that user ends
  switchboard users delete ID [--yes]                       delete an account for good (asks to type ID unless --yes)
  switchboard keys create NAME --scope ACTION:PATTERN [...] | list | delete ID   (admins)
  switchboard load [--subscribers N --rooms R --publishers P --rate N|--burst ...]    the load generator (load --help)

On the server's host (these read its settings: the environment, over --env-file or ./.env):
  switchboard token USER [--role user|admin] [--ttl 15m]   print an access token signed with JWT_SECRET (development, scripts)
  switchboard config check                                  validate the settings and print them, secrets masked

Options:
  --url URL      server (default: the one you logged in to, else $SWITCHBOARD_URL, else http://localhost:3000)
  --json         print raw JSON
  --codec C      json (default) or msgpack: the WebSocket codec of sub, pub --file/--binary and connect
  --env-file F   token, config check: the server's env file (default ./.env when present)
  -h, --help     this help
  --version      the version of this command

Config file: $SWITCHBOARD_CONFIG, else $XDG_CONFIG_HOME/switchboard/config.json, else ~/.config/switchboard/config.json.
Password: --password-stdin, $SWITCHBOARD_PASSWORD, or a prompt. users passwd: the current password as login's;
the new one from $SWITCHBOARD_NEW_PASSWORD or a prompt (with --password-stdin: the line after the current one, or
the only line when setting another user's).`

const stdoutOutput: Output = { line: text => { process.stdout.write(text + '\n') } }
const stderrOutput: Output = { line: text => { process.stderr.write(text + '\n') } }

async function readStdin (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) text += String(chunk)
  return text.replace(/\r?\n$/, '')
}

/** Asks for a line on the terminal; with `hidden`, typed characters are not echoed. */
async function prompt (question: string, hidden = false): Promise<string> {
  if (!process.stdin.isTTY) throw new CliError(`${question.trim()} needed: pass it with a flag or on stdin`, 2)
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true })
  if (hidden) {
    const mutable = rl as unknown as { _writeToOutput: (s: string) => void, output: NodeJS.WriteStream }
    mutable._writeToOutput = (s: string) => { if (s.includes(question)) mutable.output.write(s) }
  }
  try {
    return await new Promise<string>(resolve => rl.question(question, resolve))
  } finally {
    rl.close()
    if (hidden) process.stdout.write('\n')
  }
}

/**
 * The passwords of `users passwd`: with --password-stdin, the lines of stdin (the current one
 * first, unless an admin sets another user's); else the environment, else a hidden prompt.
 */
function passwordSource (fromStdin: boolean, otherUser: boolean): PasswordSource {
  let lines: Promise<string[]> | undefined
  const line = async (index: number, what: string): Promise<string> => {
    lines ??= readStdin().then(text => text.split(/\r?\n/))
    const value = (await lines)[otherUser ? index - 1 : index]
    if (value === undefined || value === '') throw new CliError(`--password-stdin: no ${what} on stdin`, 2)
    return value
  }
  return {
    current: async () => fromStdin ? await line(0, 'current password') : process.env.SWITCHBOARD_PASSWORD ?? await prompt('Current password: ', true),
    next: async () => fromStdin ? await line(1, 'new password') : process.env.SWITCHBOARD_NEW_PASSWORD ?? await prompt('New password: ', true)
  }
}

/** Runs one CLI invocation; returns the exit code. Exported for tests. */
export async function main (argv: string[], out: Output = stdoutOutput): Promise<number> {
  // The load generator has its own flags (src/cli/load/command.ts), loaded only when used.
  if (argv[0] === 'load') return await (await import('./load/command.js')).loadCommand(argv.slice(1), out)
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      url: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      username: { type: 'string' },
      'password-stdin': { type: 'boolean', default: false },
      name: { type: 'string' },
      private: { type: 'boolean', default: false },
      publish: { type: 'string' },
      'history-size': { type: 'string' },
      'history-ttl': { type: 'string' },
      'max-members': { type: 'string' },
      'presence-events': { type: 'string' },
      archive: { type: 'string' },
      'archive-days': { type: 'string' },
      role: { type: 'string' },
      key: { type: 'string' },
      scope: { type: 'string', multiple: true },
      since: { type: 'string' },
      count: { type: 'string' },
      file: { type: 'string' },
      binary: { type: 'boolean', default: false },
      out: { type: 'string' },
      codec: { type: 'string' },
      all: { type: 'boolean', default: false },
      yes: { type: 'boolean', default: false },
      q: { type: 'string' },
      before: { type: 'string' },
      after: { type: 'string' },
      epoch: { type: 'string' },
      limit: { type: 'string' },
      export: { type: 'boolean', default: false },
      'env-file': { type: 'string' },
      ttl: { type: 'string' },
      version: { type: 'boolean', default: false }
    }
  })
  const [command, ...rest] = positionals
  if (values.version) {
    out.line(APP_VERSION)
    return 0
  }
  if (values.help || command === undefined) {
    out.line(USAGE)
    return values.help ? 0 : 2
  }

  // These read the server's settings, not a server: no URL, no stored session.
  if (command === 'token') return mintToken(rest[0], { ...(values['env-file'] === undefined ? {} : { envFile: values['env-file'] }), ...(values.role === undefined ? {} : { role: values.role }), ...(values.ttl === undefined ? {} : { ttl: values.ttl }) }, out)
  if (command === 'config') {
    if (rest[0] !== 'check') throw new CliError('usage: switchboard config check [--env-file FILE]', 2)
    return configCheck(values['env-file'], out)
  }

  const file = configPath()
  const stored = readConfig(file)
  const url = values.url ?? (command === 'login' ? undefined : stored.url) ?? process.env.SWITCHBOARD_URL ?? 'http://localhost:3000'
  try {
    new URL(url)  
  } catch {
    throw new CliError(`--url: "${url}" is not a URL`, 2)
  }
  const api = new Api(file, url, stored)
  const codec = parseCodec(values.codec)

  switch (command) {
    case 'login': {
      const username = values.username ?? await prompt('Username: ')
      const password = values['password-stdin'] ? await readStdin() : process.env.SWITCHBOARD_PASSWORD ?? await prompt('Password: ', true)
      await login(api, username, password, out)
      return 0
    }
    case 'logout': await logout(api, stored.refreshToken, out, { all: values.all }); return 0
    case 'users':
      await users(api, rest, {
        json: values.json,
        ...(values.q === undefined ? {} : { q: values.q }),
        ...(values.role === undefined ? {} : { role: values.role }),
        passwords: passwordSource(values['password-stdin'], rest[1] !== undefined),
        confirmed: async id => values.yes || await prompt(`Delete ${id} for good? Type ${id} to confirm: `) === id
      }, out)
      return 0
    case 'rooms':
      await rooms(api, rest, {
        json: values.json,
        private: values.private,
        ...(values.name === undefined ? {} : { name: values.name }),
        ...(values.publish === undefined ? {} : { publish: values.publish }),
        ...(values['history-size'] === undefined ? {} : { historySize: values['history-size'] }),
        ...(values['history-ttl'] === undefined ? {} : { historyTtl: values['history-ttl'] }),
        ...(values['max-members'] === undefined ? {} : { maxMembers: values['max-members'] }),
        ...(values['presence-events'] === undefined ? {} : { presenceEvents: values['presence-events'] }),
        ...(values.archive === undefined ? {} : { archive: values.archive }),
        ...(values['archive-days'] === undefined ? {} : { archiveDays: values['archive-days'] }),
        ...(values.role === undefined ? {} : { role: values.role })
      }, out)
      return 0
    case 'keys': await keys(api, rest, { json: values.json, ...(values.scope === undefined ? {} : { scope: values.scope }) }, out); return 0
    case 'pub': {
      const key = values.key === undefined ? {} : { key: values.key }
      if (values.file === undefined && !values.binary) {
        await publish(api, rest[0], rest[1], { json: values.json, ...key }, out)
        return 0
      }
      if (values.file !== undefined && values.binary) throw new CliError('pub: --file and --binary both give the bytes; use one', 2)
      if (rest.length !== 1) throw new CliError('usage: switchboard pub ROOM --file PATH | --binary (no DATA: the bytes are the payload)', 2)
      if (values.binary && process.stdin.isTTY) throw new CliError('pub --binary reads the bytes from stdin: pipe or redirect them in', 2)
      const bytes = values.file !== undefined ? readBytesFile(values.file) : await readBytesStdin()
      await publishBytes(api, rest[0], bytes, { json: values.json, codec, ...key }, out)
      return 0
    }
    case 'sub': return await subscribe(api, rest[0], {
      codec,
      ...(values.since === undefined ? {} : { since: values.since }),
      ...(values.count === undefined ? {} : { count: values.count }),
      ...(values.out === undefined ? {} : { out: values.out })
    }, out)
    case 'history':
      await history(api, rest[0], {
        export: values.export,
        ...(values.before === undefined ? {} : { before: values.before }),
        ...(values.after === undefined ? {} : { after: values.after }),
        ...(values.epoch === undefined ? {} : { epoch: values.epoch }),
        ...(values.limit === undefined ? {} : { limit: values.limit })
      }, out, stderrOutput)
      return 0
    case 'connect': return await connectInteractive(api, codec, out)
    default:
      throw new CliError(`unknown command "${command}"; see switchboard --help`, 2)
  }
}

/**
 * Runs the command line `argv` (without node and the script) as the `switchboard` command:
 * sets the exit code, and writes a failure to stderr as `switchboard: …`. The entry of this
 * file when executed, and of the installable package's bin (packages/cli), which loads the
 * bundle of this file.
 */
export function run (argv: string[]): void {
  main(argv).then(
    code => { process.exitCode = code },
    (err: unknown) => {
      if (err instanceof CliError) {
        process.stderr.write(`switchboard: ${err.message}\n`)
        process.exitCode = err.exitCode
      } else if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
        process.stderr.write(`switchboard: ${(err as Error).message}\n`)
        process.exitCode = 2
      } else {
        process.stderr.write(`switchboard: unexpected error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
        process.exitCode = 1
      }
    }
  )
}

// Run when executed directly (not when imported, nor when bundled and loaded by packages/cli's bin).
function invokedDirectly (): boolean {
  try {
    // Through npm's bin link argv[1] is a symlink: compare real paths.
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}
if (invokedDirectly()) run(process.argv.slice(2))
