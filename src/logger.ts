import type { LoggerOptions } from 'pino'
import type { Config } from './config.js'

/**
 * Query parameters that may carry credentials, by decoded name in lower case: the WebSocket
 * handshake accepts `token` and `api_key` (routes/ws), the others are spellings clients use.
 */
const SECRET_QUERY_PARAMS = new Set(['token', 'access_token', 'refresh_token', 'api_key', 'apikey'])

/**
 * The URL with the value of every credential parameter replaced by [REDACTED], for logs. Names
 * are compared as the server's query parser reads them, after decoding: matching the raw
 * spelling let `?tok%65n=<jwt>`, which the handshake accepts as `token`, reach the log in clear.
 */
export function redactUrl (url: string): string {
  const queryStart = url.indexOf('?')
  if (queryStart === -1) return url
  const pairs = url.slice(queryStart + 1).split('&')
  let redacted = false
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!
    const equals = pair.indexOf('=')
    if (equals === -1) continue
    const rawName = pair.slice(0, equals)
    if (!SECRET_QUERY_PARAMS.has(decodedName(rawName).toLowerCase())) continue
    pairs[i] = `${rawName}=[REDACTED]`
    redacted = true
  }
  return redacted ? `${url.slice(0, queryStart + 1)}${pairs.join('&')}` : url
}

/** A parameter name decoded as URLSearchParams does (`+` a space, %XX escapes; never throws). */
function decodedName (rawName: string): string {
  if (!rawName.includes('%') && !rawName.includes('+')) return rawName
  return new URLSearchParams(`${rawName}=`).keys().next().value ?? rawName
}

/**
 * Paths censored in every log line. Request headers are not logged by default, but a handler
 * that logs `req.headers` or a body must not leak credentials either.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'req.headers["sec-websocket-protocol"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'password',
  '*.password',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'refreshToken',
  '*.refreshToken',
  'apiKey',
  '*.apiKey',
  'key',
  '*.key',
  'secret',
  '*.secret'
]

interface SerializableRequest {
  method: string
  url: string
  hostname?: string
  ip?: string
  socket?: { remotePort?: number }
}

export function buildLoggerOptions (config: Pick<Config, 'logLevel'>): LoggerOptions {
  return {
    level: config.logLevel,
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    serializers: {
      req (request: SerializableRequest) {
        return {
          method: request.method,
          url: redactUrl(request.url),
          host: request.hostname,
          remoteAddress: request.ip,
          remotePort: request.socket?.remotePort
        }
      }
    }
  }
}
