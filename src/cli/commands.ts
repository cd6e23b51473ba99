import type { CodecName } from '@switchboard/client'
import type { Api} from './api.js';
import { CliError } from './api.js'
import { sessionClient } from './ws-client.js'

/** Reads a JSON argument, or fails with a message that shows what was wrong with it. */
export function parseJsonArgument (what: string, text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new CliError(`${what} is not valid JSON (${(err as Error).message}); quote strings, e.g. '"hello"' or '{"text":"hi"}'`, 2)
  }
}

export interface Output {
  line(text: string): void
}

function print (out: Output, value: unknown, json: boolean, row: (item: Record<string, unknown>) => string): void {
  if (json) {
    out.line(JSON.stringify(value))
    return
  }
  const items = (value as { items?: unknown[] }).items
  if (Array.isArray(items)) for (const item of items) out.line(row(item as Record<string, unknown>))
  else out.line(row(value as Record<string, unknown>))
}

const roomRow = (r: Record<string, unknown>): string => `${String(r.id)}\t${String(r.visibility)}\t${r.name === null ? '' : String(r.name)}`

/** Every page of a keyset-paged list. */
async function all (api: Api, path: string): Promise<{ items: unknown[] }> {
  const items: unknown[] = []
  let after: string | null = null
  do {
    const sep = path.includes('?') ? '&' : '?'
    const page = (await api.request('GET', `${path}${sep}limit=100${after === null ? '' : `&after=${encodeURIComponent(after)}`}`)).body as { items: unknown[], nextCursor: string | null }
    items.push(...page.items)
    after = page.nextCursor
  } while (after !== null)
  return { items }
}

export async function login (api: Api, username: string, password: string, out: Output): Promise<void> {
  const res = await api.request('POST', '/auth/login', { username, password }, { auth: false })
  const pair = res.body as { accessToken: string, refreshToken: string, user: { id: string, role: string } }
  api.save({ url: api.url, username, accessToken: pair.accessToken, refreshToken: pair.refreshToken })
  out.line(`logged in to ${api.url} as ${pair.user.id} (${pair.user.role}); credentials saved in ${api.configFile}`)
}

/**
 * Ends this session (the stored refresh token), or with `all` every session of the account
 * (POST /auth/logout-all: other devices, other scripts). The saved credentials go either way.
 */
export async function logout (api: Api, refreshToken: string | undefined, out: Output, options: { all?: boolean } = {}): Promise<void> {
  if (options.all === true) {
    await api.request('POST', '/auth/logout-all')
    api.save({ url: api.url })
    out.line('signed out everywhere: every session of this account has ended')
    return
  }
  if (refreshToken !== undefined) await api.request('POST', '/auth/logout', { refreshToken }, { auth: false }).catch(() => {})
  api.save({ url: api.url })
  out.line('logged out')
}

const userRow = (u: Record<string, unknown>): string => `${String(u.id)}\t${String(u.role)}\t${u.disabled === true ? 'disabled' : 'enabled'}`

/** Where `users passwd` gets its passwords: asked for (or read) only when needed. */
export interface PasswordSource {
  current(): Promise<string>
  next(): Promise<string>
}

/**
 * Account administration (docs/cli.md, "Users"): `passwd` changes your own password (or, with
 * an ID, an admin sets that user's); the rest are admin actions on one account.
 */
export async function users (api: Api, args: string[], options: { json: boolean, q?: string, role?: string, passwords: PasswordSource, confirmed: (id: string) => Promise<boolean> }, out: Output): Promise<void> {
  const [action, id, value] = args
  const need = (what: string): string => {
    if (id === undefined) throw new CliError(`users ${action ?? ''}: missing ${what}`, 2)
    return id
  }
  const path = (): string => `/users/${encodeURIComponent(need('ID'))}`
  switch (action) {
    case 'list': print(out, await all(api, `/users?q=${encodeURIComponent(options.q ?? '')}`), options.json, userRow); return
    case 'get': print(out, (await api.request('GET', path())).body, options.json, userRow); return
    case 'create': {
      const role = options.role ?? 'user'
      if (role !== 'admin' && role !== 'user') throw new CliError('users create NAME [--role admin|user]', 2)
      const res = await api.request('POST', '/users', { username: need('NAME'), password: await options.passwords.next(), role })
      print(out, (res.body as { user: unknown }).user, options.json, userRow)
      return
    }
    case 'passwd':
      if (id === undefined) {
        const currentPassword = await options.passwords.current()
        await api.request('POST', '/auth/password', { currentPassword, newPassword: await options.passwords.next() })
        out.line('password changed; every other session of this account was signed out')
      } else {
        await api.request('POST', `${path()}/password`, { password: await options.passwords.next() })
        out.line(`password of ${id} set; every session of ${id} was signed out`)
      }
      return
    case 'disable':
    case 'enable':
      print(out, (await api.request('PATCH', path(), { disabled: action === 'disable' })).body, options.json, userRow)
      return
    case 'role':
      if (value !== 'admin' && value !== 'user') throw new CliError('usage: switchboard users role ID admin|user', 2)
      print(out, (await api.request('PATCH', path(), { role: value })).body, options.json, userRow)
      return
    case 'logout':
      await api.request('POST', `${path()}/logout-all`)
      out.line(`signed ${id ?? ''} out everywhere`)
      return
    case 'delete':
      if (!(await options.confirmed(need('ID')))) throw new CliError(`not deleted: ${id ?? ''} was not confirmed`, 1)
      await api.request('DELETE', path())
      out.line(`deleted ${id ?? ''} (the username can never be registered again)`)
      return
    default:
      throw new CliError('usage: switchboard users list|get|create|passwd|disable|enable|role|logout|delete …', 2)
  }
}

export interface RoomOptions {
  name?: string
  private?: boolean
  publish?: string
  historySize?: string
  historyTtl?: string
  maxMembers?: string
  /** `on` or `off`: join/leave pushes to the room's subscribers. */
  presenceEvents?: string
  /** `on` or `off`: keep publications beyond the recovery window. */
  archive?: string
  archiveDays?: string
}

function onOff (flag: string, value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined
  if (value !== 'on' && value !== 'off') throw new CliError(`--${flag} must be on or off, got "${value}"`, 2)
  return value === 'on'
}

/** The settings given as flags, as a room body: every flag checked before any request. */
function roomSettings (options: RoomOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {}
  if (options.name !== undefined) body.name = options.name
  if (options.private === true) body.visibility = 'private'
  if (options.publish !== undefined) body.publish = options.publish
  const historySize = integer('history-size', options.historySize)
  if (historySize !== undefined) body.historySize = historySize
  const historyTtl = integer('history-ttl', options.historyTtl)
  if (historyTtl !== undefined) body.historyTtlSeconds = historyTtl
  const maxMembers = integer('max-members', options.maxMembers)
  if (maxMembers !== undefined) body.maxMembers = maxMembers
  const presenceEvents = onOff('presence-events', options.presenceEvents)
  if (presenceEvents !== undefined) body.presenceEvents = presenceEvents
  const archive = onOff('archive', options.archive)
  if (archive !== undefined) body.archive = archive
  const archiveDays = integer('archive-days', options.archiveDays)
  if (archiveDays !== undefined) body.archiveDays = archiveDays
  return body
}

function integer (flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!/^[0-9]+$/.test(value)) throw new CliError(`--${flag} must be a whole number, got "${value}"`, 2)
  return Number(value)
}

export async function rooms (api: Api, args: string[], options: RoomOptions & { role?: string, json: boolean }, out: Output): Promise<void> {
  const [action, id, user] = args
  const need = (value: string | undefined, what: string): string => {
    if (value === undefined) throw new CliError(`rooms ${action ?? ''}: missing ${what}`, 2)
    return value
  }
  switch (action) {
    case 'create': {
      const body = { id: need(id, 'ROOM id'), ...roomSettings(options) }
      print(out, (await api.request('POST', '/rooms', body)).body, options.json, roomRow)
      return
    }
    case 'update': {
      const room = encodeURIComponent(need(id, 'ROOM id'))
      const body = roomSettings(options)
      if (Object.keys(body).length === 0) throw new CliError('rooms update ROOM: give at least one setting, e.g. --presence-events off', 2)
      print(out, (await api.request('PATCH', `/rooms/${room}`, body)).body, options.json, roomRow)
      return
    }
    case 'list': print(out, await all(api, '/rooms'), options.json, roomRow); return
    case 'get': print(out, (await api.request('GET', `/rooms/${encodeURIComponent(need(id, 'ROOM id'))}`)).body, options.json, roomRow); return
    case 'delete':
      await api.request('DELETE', `/rooms/${encodeURIComponent(need(id, 'ROOM id'))}`)
      out.line(`deleted ${id ?? ''}`)
      return
    case 'members': {
      const room = encodeURIComponent(need(id, 'ROOM id'))
      if (user === undefined) {
        print(out, await all(api, `/rooms/${room}/members`), options.json, m => `${String(m.userId)}\t${String(m.role)}`)
        return
      }
      throw new CliError('rooms members ROOM takes no further argument; use add-member / remove-member', 2)
    }
    case 'add-member': {
      const res = await api.request('PUT', `/rooms/${encodeURIComponent(need(id, 'ROOM id'))}/members/${encodeURIComponent(need(user, 'USER'))}`, { role: options.role ?? 'member' })
      print(out, res.body, options.json, m => `${String(m.userId)}\t${String(m.role)}`)
      return
    }
    case 'remove-member':
      await api.request('DELETE', `/rooms/${encodeURIComponent(need(id, 'ROOM id'))}/members/${encodeURIComponent(need(user, 'USER'))}`)
      out.line(`removed ${user ?? ''} from ${id ?? ''}`)
      return
    default:
      throw new CliError('usage: switchboard rooms create|update|list|get|delete|members|add-member|remove-member …', 2)
  }
}

export async function keys (api: Api, args: string[], options: { scope?: string[], json: boolean }, out: Output): Promise<void> {
  const [action, arg] = args
  switch (action) {
    case 'create': {
      if (arg === undefined) throw new CliError('keys create NAME --scope ACTION:PATTERN [--scope …]', 2)
      if (options.scope === undefined || options.scope.length === 0) throw new CliError('keys create: at least one --scope, e.g. --scope publish:sensors.*', 2)
      const res = await api.request('POST', '/api-keys', { name: arg, scopes: options.scope })
      const created = res.body as { key: string, apiKey: { id: string } }
      if (options.json) out.line(JSON.stringify(created))
      else out.line(`${created.key}\n(id ${created.apiKey.id}; the key is shown only now: store it)`)
      return
    }
    case 'list':
      print(out, await all(api, '/api-keys'), options.json, k => `${String(k.id)}\t${String(k.name)}\t${String(k.prefix)}…\t${(k.scopes as string[]).join(',')}`)
      return
    case 'delete':
      if (arg === undefined) throw new CliError('keys delete ID', 2)
      await api.request('DELETE', `/api-keys/${encodeURIComponent(arg)}`)
      out.line(`revoked ${arg}`)
      return
    default:
      throw new CliError('usage: switchboard keys create|list|delete …', 2)
  }
}

export async function publish (api: Api, room: string | undefined, data: string | undefined, options: { key?: string, json: boolean }, out: Output): Promise<void> {
  if (room === undefined || data === undefined) throw new CliError('usage: switchboard pub ROOM DATA (DATA is JSON)', 2)
  const body: Record<string, unknown> = { data: parseJsonArgument('DATA', data) }
  if (options.key !== undefined) body.idempotencyKey = options.key
  const res = await api.request('POST', `/rooms/${encodeURIComponent(room)}/messages`, body)
  const { epoch, offset } = res.body as { epoch: string, offset: number }
  out.line(options.json ? JSON.stringify(res.body) : `published to ${room} at offset ${offset} (epoch ${epoch})`)
}

/**
 * How many times a one-shot WebSocket command reconnects before it gives up: enough for a
 * dropped connection or a server restart, not a wait without end for a server that is down.
 */
const ONE_SHOT_ATTEMPTS = 3

/**
 * `switchboard pub ROOM --file PATH` (or `--binary`, stdin): publishes raw bytes over the
 * WebSocket, through the SDK, which sends them as MessagePack `bin` or base64 by `--codec`,
 * refuses a payload over the server's limit before sending, and resends after a dropped
 * connection under the idempotency key (`--key`, or a random one) without doubling it.
 */
export async function publishBytes (api: Api, room: string | undefined, bytes: Uint8Array, options: { key?: string, json: boolean, codec: CodecName }, out: Output): Promise<void> {
  if (room === undefined) throw new CliError('usage: switchboard pub ROOM --file PATH | --binary', 2)
  const client = sessionClient(api, { codec: options.codec, reconnect: { maxAttempts: ONE_SHOT_ATTEMPTS } })
  // Why the client stopped, when it did (a refused handshake, the server unreachable).
  let problem: string | undefined
  client.on('error', (err) => { problem ??= err.message })
  client.on('disconnect', ({ code, reason, willReconnect }) => {
    if (!willReconnect) problem ??= `connection closed (${code}${reason === '' ? '' : ` ${reason}`})`
  })
  try {
    const result = await client.publish(room, bytes, options.key === undefined ? {} : { idempotencyKey: options.key })
    out.line(options.json ? JSON.stringify(result) : `published ${bytes.byteLength} bytes to ${room} at offset ${result.offset} (epoch ${result.epoch})`)
  } catch (err) {
    const error = err as { code?: string, message?: string }
    const cause = error.code === 'closed' && problem !== undefined ? `${problem}; ${error.message ?? ''}` : error.message ?? String(err)
    throw new CliError(`cannot publish to ${room}: ${cause}${error.code === undefined ? '' : ` [${error.code}]`}`)
  } finally {
    await client.close().catch(() => {})
  }
}

export interface HistoryCliOptions {
  before?: string
  after?: string
  epoch?: string
  limit?: string
  /** Every message the room keeps, oldest first, paging to the newest. */
  export: boolean
}

interface CliPage {
  epoch: string
  publications: Array<Record<string, unknown>>
  next: { epoch: string, before?: number, after?: number } | null
}

/** Most publications the CLI asks for per page (the server's cap). */
const CLI_PAGE_LIMIT = 1000

/**
 * `switchboard history ROOM`: one page of a room's history as JSON lines (newest first with
 * `--before`, the default, oldest first with `--after`), and where the next page starts on
 * stderr; `--export`: every message the room keeps, oldest first, paging through to the
 * newest (NDJSON; bytes as base64 with `"encoding":"base64"`, as REST answers them).
 */
export async function history (api: Api, room: string | undefined, options: HistoryCliOptions, out: Output, err: Output): Promise<void> {
  if (room === undefined) throw new CliError('usage: switchboard history ROOM [--before N | --after N] [--epoch E] [--limit N] | --export', 2)
  const before = integer('before', options.before)
  const after = integer('after', options.after)
  const limit = integer('limit', options.limit)
  if (before !== undefined && after !== undefined) throw new CliError('--before and --after do not go together: a page goes one way', 2)
  if (options.export && (before !== undefined || after !== undefined || options.epoch !== undefined)) {
    throw new CliError('--export reads every message: it takes no --before, --after or --epoch', 2)
  }
  const path = `/rooms/${encodeURIComponent(room)}/messages`
  const fetchPage = async (query: Record<string, string | number>): Promise<CliPage> => {
    const res = await api.request('GET', `${path}?${new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString()}`)
    return res.body as CliPage
  }
  const line = (epoch: string, publication: Record<string, unknown>): void => { out.line(JSON.stringify({ room, epoch, ...publication })) }

  if (!options.export) {
    const page = await fetchPage({
      ...(after === undefined ? { before: before ?? Number.MAX_SAFE_INTEGER } : { after }),
      ...(options.epoch === undefined ? {} : { epoch: options.epoch }),
      ...(limit === undefined ? {} : { limit })
    })
    for (const publication of page.publications) line(page.epoch, publication)
    const { next } = page
    err.line(next === null
      ? 'no more messages that way'
      : `next page: --${next.before === undefined ? 'after' : 'before'} ${next.before ?? next.after ?? 0} --epoch ${next.epoch}`)
    return
  }
  // Forward from the oldest kept: one pass, a page in memory at a time, ends at the newest.
  let cursor: CliPage['next'] = null
  let query: Record<string, string | number> = { after: 0, limit: limit ?? CLI_PAGE_LIMIT }
  for (;;) {
    const page = await fetchPage(query)
    for (const publication of page.publications) line(page.epoch, publication)
    cursor = page.next
    if (cursor === null) return
    query = { after: cursor.after ?? 0, epoch: cursor.epoch, limit: limit ?? CLI_PAGE_LIMIT }
  }
}
