import http from 'node:http'
import https from 'node:https'

/** Why a call got no usable answer (HookOutcome, without the hook-level ones). */
export type CallFailureReason = 'timeout' | 'unreachable' | 'status' | 'too_large'

export class HookCallError extends Error {
  constructor (readonly reason: CallFailureReason, message: string, readonly status?: number) {
    super(message)
    this.name = 'HookCallError'
  }
}

export interface HookHttpOptions {
  url: string
  timeoutMs: number
  /** Sockets to the backend at most; kept alive between calls. */
  maxConnections: number
  /** An answer longer than this is cut (too_large): a backend cannot make the node buffer without bound. */
  maxResponseBytes: number
}

export interface HookHttp {
  /** POSTs one JSON body and resolves with the 2xx answer's bytes; rejects with a HookCallError. */
  post(headers: Record<string, string>, body: string): Promise<Buffer>
  /** Closes the kept-alive sockets; calls in flight fail as `unreachable`. */
  close(): void
}

/**
 * The HTTP client of the hooks: node:http(s) with one keep-alive agent bounded to
 * `maxConnections` sockets, and one deadline per call that covers connecting, sending and
 * reading the whole answer. Node 20's fetch is undici, but an undici dispatcher with a
 * connection bound needs the `undici` package, which this project does not carry; the
 * built-in agent gives the same keep-alive and bound.
 */
export function createHookHttp (options: HookHttpOptions): HookHttp {
  const url = new URL(options.url)
  const secure = url.protocol === 'https:'
  const agentOptions = { keepAlive: true, maxSockets: options.maxConnections, maxFreeSockets: options.maxConnections, scheduling: 'lifo' as const }
  const agent = secure ? new https.Agent(agentOptions) : new http.Agent(agentOptions)
  const request = secure ? https.request : http.request

  return {
    post (headers, body) {
      return new Promise<Buffer>((resolve, reject) => {
        let settled = false
        const finish = (err: HookCallError | null, answer?: Buffer): void => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          if (err === null) resolve(answer!)
          else {
            req.destroy()
            reject(err)
          }
        }
        const req = request(url, {
          method: 'POST',
          agent,
          headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }
        }, (res) => {
          const status = res.statusCode ?? 0
          const chunks: Buffer[] = []
          let length = 0
          res.on('data', (chunk: Buffer) => {
            length += chunk.length
            if (length > options.maxResponseBytes) {
              finish(new HookCallError('too_large', `the answer is over ${options.maxResponseBytes} bytes`))
              return
            }
            chunks.push(chunk)
          })
          res.on('end', () => {
            if (status >= 200 && status < 300) finish(null, Buffer.concat(chunks, length))
            else finish(new HookCallError('status', `HTTP ${status}`, status))
          })
          res.on('error', () => finish(new HookCallError('unreachable', 'the answer was cut')))
        })
        const timer = setTimeout(() => finish(new HookCallError('timeout', `no answer within ${options.timeoutMs} ms`)), options.timeoutMs)
        req.on('error', (err: NodeJS.ErrnoException) => finish(new HookCallError('unreachable', err.code ?? 'connection failed')))
        req.end(body)
      })
    },
    close () {
      agent.destroy()
    }
  }
}
