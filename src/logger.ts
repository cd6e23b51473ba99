import type { LoggerOptions } from 'pino'
import type { Config } from './config.js'

/** Query parameters that may carry credentials; their values never reach a log line. */
const SECRET_QUERY_PARAMS = /([?&](?:token|access_token|api_key|apikey|refresh_token)=)[^&#]*/gi

export function redactUrl (url: string): string {
  return url.replace(SECRET_QUERY_PARAMS, '$1[REDACTED]')
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
