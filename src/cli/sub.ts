import { mkdirSync } from 'node:fs'
import type { CodecName } from '@switchboard/client'
import { CliError, type Api } from './api.js'
import { base64, checkOutRoom, writePublication } from './bytes.js'
import type { Output } from './commands.js'
import { sessionClient } from './ws-client.js'

/** `--since EPOCH:OFFSET` → a stream position. */
export function parseSince (text: string): { epoch: string, offset: number } {
  const at = text.lastIndexOf(':')
  const epoch = text.slice(0, at)
  const offset = text.slice(at + 1)
  if (at <= 0 || !/^[0-9]+$/.test(offset)) throw new CliError(`--since must be EPOCH:OFFSET (as printed by sub), got "${text}"`, 2)
  return { epoch, offset: Number(offset) }
}

export interface SubOptions {
  since?: string
  count?: string
  /** Write each binary publication to `<out>/<room>-<offset>.bin`. */
  out?: string
  codec: CodecName
}

/**
 * `switchboard sub ROOM`: prints one JSON line per publication (`{"room","epoch","offset","data",
 * "from","ts"}`; raw bytes as base64 with `"encoding":"base64"` after `data`, or with `--out`
 * written to a file and named by `"file"` and `"size"` instead) and a `{"type":"gap",…}` line
 * when the server says something could not be recovered. The SDK reconnects and resumes from
 * the last offset by itself, so a pipeline reading this output sees every message once, in
 * order, across network cuts and restarts. Ends after `--count` messages, or on Ctrl-C.
 */
export async function subscribe (api: Api, room: string | undefined, options: SubOptions, out: Output): Promise<number> {
  if (room === undefined) throw new CliError('usage: switchboard sub ROOM [--since EPOCH:OFFSET] [--count N] [--out DIR] [--codec json|msgpack]', 2)
  const since = options.since === undefined ? undefined : parseSince(options.since)
  const count = options.count === undefined ? Infinity : Number(options.count)
  if (!(count > 0)) throw new CliError(`--count must be a positive number, got "${options.count ?? ''}"`, 2)
  const dir = options.out
  if (dir !== undefined) {
    checkOutRoom(room)
    try {
      mkdirSync(dir, { recursive: true })
    } catch (err) {
      throw new CliError(`--out: cannot create ${dir} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
  }

  const client = sessionClient(api, { codec: options.codec })
  let failure: string | undefined
  client.on('disconnect', ({ code, reason, willReconnect }) => {
    process.stderr.write(`disconnected (${code}${reason === '' ? '' : ` ${reason}`})${willReconnect ? ', reconnecting…' : ''}\n`)
    if (!willReconnect) failure = `connection closed (${code})`
  })

  let received = 0
  let ended = false
  let done: () => void = () => {}
  const finished = new Promise<void>(resolve => { done = () => { ended = true; resolve() } })
  process.once('SIGINT', () => done())
  client.on('state', (state) => { if (state === 'closed') done() })

  try {
    const subscription = await client.subscribe(room, (event) => {
      if (ended) return // between the end and the close: nothing more is printed or written
      if (event.type === 'gap') {
        out.line(JSON.stringify(event))
        return
      }
      const position = { room, epoch: event.epoch, offset: event.offset }
      if (dir !== undefined && event.data instanceof Uint8Array) {
        let file: string
        try {
          file = writePublication(dir, room, event.offset, event.data)
        } catch (err) {
          // Stop rather than go on without the file: the next run resumes with --since.
          failure = (err as Error).message
          done()
          return
        }
        out.line(JSON.stringify({ ...position, file, size: event.data.byteLength, from: event.from, ts: event.ts }))
      } else {
        const data = event.data instanceof Uint8Array ? { data: base64(event.data), encoding: 'base64' } : { data: event.data }
        out.line(JSON.stringify({ ...position, ...data, from: event.from, ts: event.ts }))
      }
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
