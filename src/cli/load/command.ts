import { isIPv4 } from 'node:net'
import { parseArgs } from 'node:util'
import { Api, CliError } from '../api.js'
import type { Output } from '../commands.js'
import { configPath, readConfig } from '../config.js'
import { resolveAdapter } from './adapter-registry.js'
import { MIN_PAYLOAD_BYTES } from './plan.js'
import { sampleProcess } from './proc.js'
import { formatTable, summarize } from './report.js'
import { runLoad, type LoadOptions, type Logger } from './run.js'

export const LOAD_USAGE = `switchboard load — the load generator (docs/load-generator.md)

Usage: switchboard load [flags]

Run it only against servers you own: it refuses anything but loopback unless --allow-remote.

Target:
  --url URL             server (default: the one you logged in to, else $SWITCHBOARD_URL, else http://localhost:3000)
  --publisher-url URL   publishers connect here instead (another node of the same cluster)
  --target NAME|PATH    switchboard (default), another registered adapter, or an adapter module
  --codec json|msgpack  Switchboard's wire codec: switchboard.v1 (JSON, default) or switchboard.v1.msgpack
  --token JWT           access token (default: the stored \`switchboard login\` session)
  --api-key KEY         authenticate with an API key instead
  --allow-remote        allow a non-loopback --url (a machine you own)
Load:
  --subscribers N       subscriber connections (default 100)
  --rooms R             rooms, subscriber i joins room i % R (default 1)
  --room-prefix P       room names P0, P1, … (default load-)
  --create-rooms        create missing rooms (public) with the session's token
  --publishers P        publisher connections (default 1; 0: connect only)
  --size BYTES          payload size (default 100, at least ${MIN_PAYLOAD_BYTES})
  --binary              payloads are random bytes (JSON codec: base64), not text
  --rate N              open loop: N messages per second in total (default 100)
  --burst               instead: send --messages as fast as backpressure allows
  --messages M          stop after M messages (burst default 1000; 0: only connect)
  --duration S          stop after S seconds (default 10, at most 600)
  --warmup S            open loop: publish for S seconds first, untimed (default 0, at most 60)
  --batch N             connect N at a time (default 100)
  --drain-ms MS         after the last send, wait up to MS for deliveries (default 2000)
Report:
  --server-pid PID      also measure the server's CPU and RSS from /proc
  --json                one JSON object on stdout instead of the table
  -h, --help            this help`

/** Hard bounds: a typo must not turn into an unbounded load. */
const LIMITS = {
  subscribers: 200_000,
  publishers: 10_000,
  rooms: 200_000,
  size: 1024 * 1024,
  rate: 1_000_000,
  messages: 10_000_000,
  durationS: 600,
  warmupS: 60,
  batch: 10_000,
  drainMs: 60_000
}

function number (flag: string, value: string | undefined, fallback: number, min: number, max: number, integer = true): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new CliError(`--${flag} must be ${integer ? 'a whole number' : 'a number'}, got "${value}"`, 2)
  }
  if (n < min || n > max) throw new CliError(`--${flag} must be between ${min} and ${max}, got ${value}`, 2)
  return n
}

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost: the only targets allowed without --allow-remote. */
export function isLoopback (hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  if (host === 'localhost' || host === '::1' || host === '0:0:0:0:0:0:0:1') return true
  if (isIPv4(host)) return host.startsWith('127.')
  // new URL() writes ::ffff:127.0.0.1 as ::ffff:7f00:1.
  return /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(host) || /^::ffff:127\.\d+\.\d+\.\d+$/.test(host)
}

/** A server URL from `--flag`: http(s), and loopback unless --allow-remote ([Safety] in docs/load-generator.md). */
function targetUrl (flag: string, url: string, allowRemote: boolean): URL {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new CliError(`--${flag}: "${url}" is not a URL`, 2)
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new CliError(`--${flag}: use http:// or https://, got "${url}"`, 2)
  if (!allowRemote && !isLoopback(parsed.hostname)) {
    throw new CliError(`refusing to load ${parsed.hostname}: not a loopback address. Load tests only ever target machines you own; if this one is yours, pass --allow-remote`, 2)
  }
  return parsed
}

function stderrLogger (): Logger {
  const tty = process.stderr.isTTY
  let last = 0
  return {
    progress (text, final = false) {
      if (tty) {
        process.stderr.write(`\r\x1b[K${text}${final ? '\n' : ''}`)
        return
      }
      const now = Date.now()
      if (final || now - last >= 2000) {
        last = now
        process.stderr.write(text + '\n')
      }
    },
    warn (text) {
      process.stderr.write(`${tty ? '\r\x1b[K' : ''}warning: ${text}\n`)
    }
  }
}

/** `switchboard load …`: returns the exit code (0: a clean run; 1: the server refused or closed something). */
export async function loadCommand (argv: string[], out: Output, log: Logger = stderrLogger()): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      url: { type: 'string' },
      'publisher-url': { type: 'string' },
      target: { type: 'string', default: 'switchboard' },
      codec: { type: 'string' },
      token: { type: 'string' },
      'api-key': { type: 'string' },
      'allow-remote': { type: 'boolean', default: false },
      subscribers: { type: 'string' },
      rooms: { type: 'string' },
      'room-prefix': { type: 'string', default: 'load-' },
      'create-rooms': { type: 'boolean', default: false },
      publishers: { type: 'string' },
      size: { type: 'string' },
      binary: { type: 'boolean', default: false },
      rate: { type: 'string' },
      burst: { type: 'boolean', default: false },
      messages: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      batch: { type: 'string' },
      'drain-ms': { type: 'string' },
      'server-pid': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) {
    out.line(LOAD_USAGE)
    return 0
  }
  if (positionals.length > 0) throw new CliError(`load takes no arguments, got "${positionals.join(' ')}"; see switchboard load --help`, 2)

  const file = configPath()
  const stored = readConfig(file)
  const url = values.url ?? stored.url ?? process.env.SWITCHBOARD_URL ?? 'http://localhost:3000'
  const parsed = targetUrl('url', url, values['allow-remote'])
  const publisherUrl = values['publisher-url'] === undefined ? undefined : targetUrl('publisher-url', values['publisher-url'], values['allow-remote'])
  if (values.token !== undefined && values['api-key'] !== undefined) throw new CliError('pass --token or --api-key, not both', 2)

  const burst = values.burst
  if (burst && values.rate !== undefined) throw new CliError('--rate and --burst exclude each other: --burst sends --messages as fast as backpressure allows', 2)
  if (burst && values.warmup !== undefined) throw new CliError('--warmup is for the open loop (--rate): a burst has no schedule to warm up on', 2)
  const subscribers = number('subscribers', values.subscribers, 100, 0, LIMITS.subscribers)
  const publishers = number('publishers', values.publishers, 1, 0, LIMITS.publishers)
  if (subscribers + publishers === 0) throw new CliError('nothing to do: --subscribers and --publishers are both 0', 2)
  const rooms = number('rooms', values.rooms, 1, 1, LIMITS.rooms)
  const prefix = values['room-prefix']
  if (!/^[a-z0-9][a-z0-9_.:-]*$/.test(prefix) || prefix.length + String(rooms - 1).length > 64) {
    throw new CliError(`--room-prefix: "${prefix}" must be lowercase letters, digits, _ . : - and leave room names of at most 64 characters`, 2)
  }
  const messagesFlag = values.messages === undefined ? undefined : number('messages', values.messages, 0, 0, LIMITS.messages)
  const serverPid = values['server-pid'] === undefined ? undefined : number('server-pid', values['server-pid'], 0, 1, 2 ** 22)
  const options: LoadOptions = {
    subscribers,
    publishers,
    rooms,
    roomPrefix: prefix,
    size: number('size', values.size, 100, MIN_PAYLOAD_BYTES, LIMITS.size),
    binary: values.binary,
    mode: burst ? 'burst' : 'rate',
    rate: number('rate', values.rate, 100, 0.001, LIMITS.rate, false),
    messages: burst ? messagesFlag ?? 1000 : messagesFlag,
    durationMs: Math.round(number('duration', values.duration, 10, 0.001, LIMITS.durationS, false) * 1000),
    warmupMs: Math.round(number('warmup', values.warmup, 0, 0, LIMITS.warmupS, false) * 1000),
    batch: number('batch', values.batch, 100, 1, LIMITS.batch),
    drainMs: number('drain-ms', values['drain-ms'], 2000, 0, LIMITS.drainMs),
    createRooms: values['create-rooms'],
    serverPid
  }
  if (serverPid !== undefined) sampleProcess(serverPid) // fails now, clearly, rather than after connecting

  const factory = await resolveAdapter(values.target)
  const api = stored.accessToken === undefined && stored.refreshToken === undefined ? undefined : new Api(file, url, stored)
  const adapter = await factory({
    url: parsed.origin,
    ...(publisherUrl === undefined ? {} : { publisherUrl: publisherUrl.origin }),
    ...(values.token === undefined ? {} : { token: values.token }),
    ...(values['api-key'] === undefined ? {} : { apiKey: values['api-key'] }),
    ...(api === undefined || values.token !== undefined ? {} : { api }),
    ...(values.codec === undefined ? {} : { codec: values.codec }),
    ...(values.binary ? { binary: true } : {})
  })
  if (values.binary && adapter.binary !== true) throw new CliError(`--binary: the ${adapter.name} adapter sends text payloads only`, 2)

  const result = await runLoad(adapter, options, log)
  const report = summarize(result, parsed.origin)
  if (report.deliveries.lost > 0) log.warn(`${report.deliveries.lost} deliveries lost`)
  if (report.deliveries.duplicates > 0) log.warn(`${report.deliveries.duplicates} duplicate deliveries`)
  out.line(values.json ? JSON.stringify(report) : formatTable(report))
  const clean = Object.keys(report.messages.refused).length === 0 && report.closed.length === 0 && report.messages.unsent === 0
  if (!clean) log.warn('the server refused or closed part of the load: these numbers do not measure the intended load (see the warnings above and docs/load-generator.md)')
  return clean ? 0 : 1
}
