import type { LoggerOptions } from 'pino'
import type { Config } from './config.js'
import { walkQuery } from './url-query.js'

/**
 * Query parameters that may carry credentials, by decoded name in lower case: the WebSocket
 * handshake accepts `token` and `api_key` (src/auth/credentials.ts), the others are spellings clients use.
 */
const SECRET_QUERY_PARAMS = new Set(['token', 'access_token', 'refresh_token', 'api_key', 'apikey'])

/**
 * The URL with the value of every credential parameter replaced by [REDACTED], for logs. Names
 * are compared as the handshake reads them (src/url-query.ts), after decoding: matching the raw
 * spelling let `?tok%65n=<jwt>`, which the handshake accepts as `token`, reach the log in clear.
 */
export function redactUrl (url: string): string {
  let redacted = ''
  let copied = 0
  walkQuery(url, (name, valueStart, end) => {
    if (valueStart === -1 || !SECRET_QUERY_PARAMS.has(name.toLowerCase())) return undefined
    redacted += `${url.slice(copied, valueStart)}[REDACTED]`
    copied = end
    return undefined
  })
  return copied === 0 ? url : redacted + url.slice(copied)
}

/**
 * Paths censored in every log line. Request headers are not logged by default, but a handler
 * that logs `req.headers` or a body must not leak credentials either.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'req.headers["x-room-token"]',
  'req.headers["sec-websocket-protocol"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  'headers["x-room-token"]',
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
