/** JSON over fetch to the same origin, with the session's access token. */
export class ApiError extends Error {
  override name = 'ApiError'
  constructor (readonly status: number, readonly code: string, message: string) {
    super(message)
  }
}

/** The code of the ApiError (status 0) thrown when no answer came at all. */
export const UNREACHABLE = 'SB_ERR_UNREACHABLE'

/**
 * True when the server itself was not reached: no answer at all, or a proxy in front of it
 * saying it could not reach it (502, 504). A 503 comes from the server and says why itself.
 */
export function isUnreachable (err: unknown): boolean {
  return err instanceof ApiError && (err.status === 0 || err.status === 502 || err.status === 504)
}

export interface TokenSource {
  /** A valid access token; `force` gets a new one (after a 401). */
  token (force?: boolean): Promise<string>
}

export async function request<T> (method: string, path: string, options: { body?: unknown, auth?: TokenSource } = {}): Promise<T> {
  const send = async (force: boolean): Promise<Response> => {
    const headers: Record<string, string> = {}
    if (options.body !== undefined) headers['content-type'] = 'application/json'
    if (options.auth !== undefined) headers.authorization = `Bearer ${await options.auth.token(force)}`
    try {
      return await fetch(path, { method, headers, ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }) })
    } catch {
      // fetch() rejects only when no answer came (server down, network gone); its own message
      // ("Failed to fetch", "NetworkError when attempting to fetch resource") means nothing to a user.
      throw new ApiError(0, UNREACHABLE, 'The server could not be reached (is your network connection working?)')
    }
  }
  let res = await send(false)
  // An access token can be refused although it looked valid (clock skew, a secret rotated):
  // one retry with a fresh token, then the error stands.
  if (res.status === 401 && options.auth !== undefined) res = await send(true)
  if (res.status === 204) return undefined as T
  const text = await res.text()
  let body: unknown = null
  try { body = text === '' ? null : JSON.parse(text) } catch { /* not JSON */ }
  if (!res.ok) {
    const err = (body ?? {}) as { code?: string, message?: string }
    // Not one of the API's JSON errors (e.g. a proxy's HTML page when the server is down): its
    // status in words rather than a page of markup.
    throw new ApiError(res.status, err.code ?? `HTTP_${res.status}`, err.message ?? `The server answered with an error (HTTP ${res.status}${res.statusText === '' ? '' : ` ${res.statusText}`})`)
  }
  return body as T
}

/** Every item of a paged list (`{ items, nextCursor }`), following the cursor. */
export async function listAll<T> (path: string, auth: TokenSource): Promise<T[]> {
  const items: T[] = []
  let after: string | null = null
  // A bound, so a server bug cannot loop the page forever.
  for (let page = 0; page < 50; page++) {
    const sep = path.includes('?') ? '&' : '?'
    const url: string = `${path}${sep}limit=100${after === null ? '' : `&after=${encodeURIComponent(after)}`}`
    const res: { items: T[], nextCursor: string | null } = await request('GET', url, { auth })
    items.push(...res.items)
    if (res.nextCursor === null || res.items.length === 0) break
    after = res.nextCursor
  }
  return items
}
