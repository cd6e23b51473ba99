import http from 'node:http'
import https from 'node:https'

export interface Reply { status: number, body: any } // eslint-disable-line @typescript-eslint/no-explicit-any -- callers read whatever JSON came back

/**
 * One request on its own connection (no keep-alive pool), over HTTP or HTTPS. A closing server
 * is seen as a refused connection or a 503, never as a reused socket; with `ca`, HTTPS trusts
 * only that certificate and verification stays on.
 */
export function oneShotRequest (baseUrl: string, method: string, path: string, options: { token?: string, body?: unknown, ca?: Buffer, timeoutMs?: number } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {}
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body)
    if (payload !== undefined) headers['content-type'] = 'application/json'
    const url = new URL(path, baseUrl)
    const client = url.protocol === 'https:' ? https : http
    const req = client.request(url, { method, headers, agent: false, timeout: options.timeoutMs ?? 15_000, ...(options.ca === undefined ? {} : { ca: options.ca }) }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
      res.on('end', () => {
        let body: unknown = text
        try { body = text === '' ? undefined : JSON.parse(text) } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)))
    req.on('error', reject)
    req.end(payload)
  })
}
