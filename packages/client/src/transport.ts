import type { WireCodec } from './codec.js'
import type { WebSocketConstructor, WebSocketLike } from './types.js'

const BEARER_PREFIX = 'bearer.'

export type TransportMode = 'node' | 'browser'

export function runningInNode (): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: unknown } } }).process
  return typeof proc?.versions?.node === 'string'
}

// A variable, not a literal: bundlers must not try to pack `ws` into a browser build.
const WS_MODULE = 'ws'
let nodeWebSocket: Promise<WebSocketConstructor> | undefined

/** `ws`, imported on first use under Node (Node 20 has no global WebSocket). */
export function loadNodeWebSocket (): Promise<WebSocketConstructor> {
  nodeWebSocket ??= import(/* webpackIgnore: true */ /* @vite-ignore */ WS_MODULE).then((mod: { WebSocket?: WebSocketConstructor, default?: WebSocketConstructor }) => {
    const ctor = mod.WebSocket ?? mod.default
    if (ctor === undefined) throw new Error('the ws module has no WebSocket export')
    return ctor
  }, (err: unknown) => {
    nodeWebSocket = undefined
    throw new Error(`switchboard client: cannot load the ws package (${err instanceof Error ? err.message : String(err)}); install it or pass the WebSocket option`)
  })
  return nodeWebSocket
}

/** `http(s)://` becomes `ws(s)://`, and a bare origin gets the `/ws` endpoint. */
export function endpointUrl (url: string): string {
  const parsed = new URL(url)
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:'
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:'
  else if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new TypeError(`switchboard client: unsupported URL scheme ${parsed.protocol}`)
  if (parsed.pathname === '/' || parsed.pathname === '') parsed.pathname = '/ws'
  return parsed.toString()
}

/**
 * Opens a socket offering the codec's subprotocol (only that one: a server that cannot speak
 * it fails the handshake or names another protocol in its welcome, rather than silently
 * switching codecs), with the credentials where this transport can put them: headers for
 * `node` (`Authorization: Bearer …` or `X-API-Key`), the `bearer.<token>` subprotocol for
 * `browser` (browsers cannot set headers; the server never echoes that entry back). Binary
 * frames arrive as ArrayBuffers on a MessagePack socket (a browser's default is Blob, which
 * could only be read asynchronously, out of order with text frames).
 */
export function openSocket (Ctor: WebSocketConstructor, url: string, mode: TransportMode, codec: WireCodec, credentials: { token?: string, apiKey?: string }): WebSocketLike {
  let socket: WebSocketLike
  if (mode === 'browser') {
    socket = new Ctor(url, credentials.token === undefined ? [codec.protocol] : [codec.protocol, BEARER_PREFIX + credentials.token])
  } else {
    const headers: Record<string, string> = {}
    if (credentials.token !== undefined) headers.authorization = `Bearer ${credentials.token}`
    else if (credentials.apiKey !== undefined) headers['x-api-key'] = credentials.apiKey
    socket = new Ctor(url, [codec.protocol], { headers })
  }
  if (codec.binary) socket.binaryType = 'arraybuffer'
  return socket
}

/** A random UUID for idempotency keys; a getRandomValues fallback for insecure browser contexts. */
export function randomId (): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string, getRandomValues?: (array: Uint8Array) => Uint8Array } }).crypto
  if (typeof crypto?.randomUUID === 'function') return crypto.randomUUID()
  const bytes = new Uint8Array(16)
  if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(bytes)
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256)
  bytes[6] = (bytes[6]! & 0x0f) | 0x40
  bytes[8] = (bytes[8]! & 0x3f) | 0x80
  const hex = Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/**
 * The `exp` of a JWT in epoch ms, read without verifying (the server verifies): lets the client
 * fetch a new token before connecting with one that has already expired, which matters in
 * browsers, where a 401 handshake looks like any other failed connection. Null when unreadable.
 */
export function tokenExpiry (token: string): number | null {
  try {
    const payload = token.split('.')[1]
    if (payload === undefined) return null
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '=')
    const exp = (JSON.parse(atob(base64)) as { exp?: unknown }).exp
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : null
  } catch {
    return null
  }
}
