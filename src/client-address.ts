import type { IncomingMessage } from 'node:http'
import proxyAddr from '@fastify/proxy-addr'
import type { Config } from './config.js'

/** Whether a hop may set X-Forwarded-For: `address` is that hop, `hop` 0 the nearest. */
export type TrustProxy = false | ((address: string, hop: number) => boolean)

/**
 * TRUST_PROXY as one trust function, given both to Fastify (request.ip) and to the
 * WebSocket handshake (which runs outside Fastify's request lifecycle), so the two can
 * never disagree about who a client is.
 */
export function trustProxyFunction (setting: Config['trustProxy']): TrustProxy {
  if (setting === false) return false
  if (setting === true) return () => true
  // TRUST_PROXY=<n>: the n proxies nearest to us.
  if (typeof setting === 'number') return (_address, hop) => hop < setting
  return proxyAddr.compile(setting)
}

/** The client's address as Fastify's request.ip gives it for the same trust setting. */
export function clientAddress (request: IncomingMessage, trust: TrustProxy): string {
  if (trust === false) return request.socket.remoteAddress ?? ''
  return proxyAddr(request, trust)
}
