import { createInterface } from 'node:readline'
import { WebSocket, type RawData } from 'ws'
import type { CodecName } from '@switchboard/client'
import { decodeMsgpack, encodeMsgpack } from '@switchboard/protocol/msgpack'
import type { Api} from './api.js';
import { CliError } from './api.js'
import { withBase64 } from './bytes.js'
import type { Output } from './commands.js'

/** After stdin ends, how long to wait for replies still owed before closing. */
const REPLY_GRACE_MS = 5000

const SUBPROTOCOLS: Record<CodecName, string> = { json: 'switchboard.v1', msgpack: 'switchboard.v1.msgpack' }

/**
 * Opens /ws with the stored token, offering the codec's subprotocol; on a 401 refreshes the
 * session once and tries again. `onMessage` is attached before the handshake completes: the
 * server's first frame (welcome) can arrive in the same packet as the 101 response, before
 * any later listener would exist.
 */
export async function openSocket (api: Api, codec: CodecName, onMessage: (data: RawData, isBinary: boolean) => void): Promise<WebSocket> {
  const attempt = (): Promise<WebSocket | 401> => new Promise((resolve, reject) => {
    const url = new URL('/ws', api.url)
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    const token = api.accessToken
    if (token === undefined) {
      reject(new CliError('not logged in: run `switchboard login`'))
      return
    }
    const socket = new WebSocket(url, [SUBPROTOCOLS[codec]], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false })
    socket.on('message', onMessage)
    socket.once('open', () => resolve(socket))
    socket.once('unexpected-response', (_req, res) => {
      res.resume()
      if (res.statusCode === 401) resolve(401)
      else reject(new CliError(`WebSocket handshake refused: HTTP ${res.statusCode ?? 0}`))
    })
    socket.once('error', (err: NodeJS.ErrnoException) => reject(new CliError(`cannot reach the server at ${api.url} (${err.code ?? err.message})`)))
  })
  const first = await attempt()
  if (first !== 401) return first
  if (!(await api.refresh())) throw new CliError('session expired: run `switchboard login` again')
  const second = await attempt()
  if (second === 401) throw new CliError('session expired: run `switchboard login` again')
  return second
}

/**
 * A server frame as one line of JSON: a text frame as it is; a MessagePack frame decoded, its
 * bytes as base64 with `"encoding":"base64"` (as they would be on switchboard.v1). Null when a
 * binary frame does not decode.
 */
function frameLine (data: RawData, isBinary: boolean): string | null {
  const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer)
  if (!isBinary) return bytes.toString('utf8')
  try {
    return JSON.stringify(withBase64(decodeMsgpack(bytes)))
  } catch {
    return null
  }
}

/**
 * `switchboard connect`: an interactive session, like wscat. Each stdin line is sent as one
 * frame (it must be a JSON envelope: see docs/protocol.md; with `--codec msgpack` it goes as
 * the same map in MessagePack); every frame from the server is printed on its own line, as
 * JSON either way. Ends when stdin ends (close 1000) or the server closes.
 */
export async function connectInteractive (api: Api, codec: CodecName, out: Output): Promise<number> {
  // Commands sent and not yet answered: when stdin ends, their replies are still awaited.
  const pending = new Set<unknown>()
  let inputEnded = false
  let socket: WebSocket | undefined = undefined
  const closeWhenAnswered = (): void => {
    if (inputEnded && pending.size === 0 && socket?.readyState === WebSocket.OPEN) socket.close(1000)
  }
  socket = await openSocket(api, codec, (data, isBinary) => {
    const text = frameLine(data, isBinary)
    if (text === null) {
      process.stderr.write('a binary frame that is not MessagePack arrived; not shown\n')
      return
    }
    out.line(text)
    try {
      const frame = JSON.parse(text) as { type?: string, id?: unknown }
      if ((frame.type === 'reply' || frame.type === 'error') && pending.delete(frame.id)) closeWhenAnswered()
    } catch { /* the server only sends JSON (or MessagePack, shown as JSON) */ }
  })
  const closed = new Promise<number>(resolve => socket.once('close', (code, reason) => {
    process.stderr.write(`closed: ${code}${reason.length > 0 ? ` ${String(reason)}` : ''}\n`)
    resolve(code === 1000 ? 0 : 1)
  }))
  const lines = createInterface({ input: process.stdin, terminal: false })
  lines.on('line', (line) => {
    if (line.trim() === '') return
    let frame: unknown
    try {
      frame = JSON.parse(line)
    } catch {
      process.stderr.write('not JSON, not sent: each line must be one JSON envelope, e.g. {"type":"ping","id":1}\n')
      return
    }
    if (socket.readyState !== WebSocket.OPEN) return
    const id = (frame as { id?: unknown } | null)?.id
    if (id !== undefined) pending.add(id)
    socket.send(codec === 'msgpack' ? encodeMsgpack(frame) : line)
  })
  lines.once('close', () => {
    inputEnded = true
    closeWhenAnswered()
    // Replies that never come (a command the server rejected without an id) must not hang us.
    setTimeout(() => { pending.clear(); closeWhenAnswered() }, REPLY_GRACE_MS).unref()
  })
  return await closed
}
