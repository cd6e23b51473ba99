import { SwitchboardClient } from '../client/index.js'
import { CliError, type Api } from './api.js'
import type { Output } from './commands.js'

/** `--since EPOCH:OFFSET` → a stream position. */
export function parseSince (text: string): { epoch: string, offset: number } {
  const at = text.lastIndexOf(':')
  const epoch = text.slice(0, at)
  const offset = text.slice(at + 1)
  if (at <= 0 || !/^[0-9]+$/.test(offset)) throw new CliError(`--since must be EPOCH:OFFSET (as printed by sub), got "${text}"`, 2)
  return { epoch, offset: Number(offset) }
}

/**
 * `switchboard sub ROOM`: prints one JSON line per publication (`{"room","epoch","offset","data",
 * "from","ts"}`) and a `{"type":"gap",…}` line when the server says something could not be
 * recovered. The SDK reconnects and resumes from the last offset by itself, so a pipeline
 * reading this output sees every message once, in order, across network cuts and restarts.
 * Ends after `--count` messages, or on Ctrl-C.
 */
export async function subscribe (api: Api, room: string | undefined, options: { since?: string, count?: string }, out: Output): Promise<number> {
  if (room === undefined) throw new CliError('usage: switchboard sub ROOM [--since EPOCH:OFFSET] [--count N]', 2)
  const since = options.since === undefined ? undefined : parseSince(options.since)
  const count = options.count === undefined ? Infinity : Number(options.count)
  if (!(count > 0)) throw new CliError(`--count must be a positive number, got "${options.count ?? ''}"`, 2)
  if (api.accessToken === undefined) throw new CliError('not logged in: run `switchboard login`')

  let fresh = true
  const client = new SwitchboardClient({
    url: api.url,
    // The stored token first; afterwards (expiry, 4001) a refreshed one, saved for the next run.
    getToken: async () => {
      if (fresh) {
        fresh = false
        return api.accessToken!
      }
      if (!(await api.refresh())) throw new CliError('session expired: run `switchboard login` again')
      return api.accessToken!
    }
  })
  let failure: string | undefined
  client.on('disconnect', ({ code, reason, willReconnect }) => {
    process.stderr.write(`disconnected (${code}${reason === '' ? '' : ` ${reason}`})${willReconnect ? ', reconnecting…' : ''}\n`)
    if (!willReconnect) failure = `connection closed (${code})`
  })

  let received = 0
  let done: () => void = () => {}
  const finished = new Promise<void>(resolve => { done = resolve })
  process.once('SIGINT', () => done())
  client.on('state', (state) => { if (state === 'closed') done() })

  try {
    const subscription = await client.subscribe(room, (event) => {
      if (event.type === 'gap') {
        out.line(JSON.stringify(event))
        return
      }
      out.line(JSON.stringify({ room, epoch: event.epoch, offset: event.offset, data: event.data, from: event.from, ts: event.ts }))
      if (++received >= count) done()
    }, since === undefined ? {} : { since })
    subscription.on('end', ({ reason }) => {
      failure = `subscription ended: ${reason}`
      done()
    })
    await finished
  } catch (err) {
    const error = err as { code?: string, message?: string }
    throw new CliError(`cannot subscribe to ${room}: ${error.message ?? String(err)}${error.code === undefined ? '' : ` [${error.code}]`}`)
  } finally {
    await client.close().catch(() => {})
  }
  if (failure !== undefined && received < count) throw new CliError(failure)
  return 0
}
