import type { IncomingMessage } from 'node:http'
import { isIPv4, isIPv6 } from 'node:net'
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

/**
 * The addresses one client can be taken to hold, for limits that count per address: an IPv4
 * address itself, an IPv6 address's /64 (one host or home network is handed a whole /64, so
 * counting single IPv6 addresses would give it 2^64 budgets). An IPv4-mapped IPv6 address is
 * its IPv4 client. Anything else (a misconfigured proxy's header) stands for itself.
 */
export function addressBlock (address: string): string {
  if (isIPv4(address)) return address
  // A zone (fe80::1%eth0) names the interface, not the client; WHATWG URLs refuse it.
  const bare = address.replace(/%.*$/, '')
  if (!isIPv6(bare)) return address
  // The URL parser writes IPv6 canonically: lower case, :: for the longest run of zeros, no dotted tail.
  const canonical = new URL(`http://[${bare}]/`).hostname.slice(1, -1)
  const [head = '', tail] = canonical.split('::')
  const headGroups = head === '' ? [] : head.split(':')
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups]
  if (groups.slice(0, 5).every(g => g === '0') && groups[5] === 'ffff') {
    const [high, low] = [parseInt(groups[6] ?? '0', 16), parseInt(groups[7] ?? '0', 16)]
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`
  }
  return `${groups.slice(0, 4).join(':')}::/64`
}
