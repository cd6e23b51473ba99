import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { Errors } from '../../src/errors.js'
import type { Principal } from '../../src/auth/principal.js'
import { CloseCodes, CloseReasons } from '../../src/realtime/close-codes.js'
import { attachWsEvents, wsTransport } from '../../src/realtime/ws-transport.js'
import type { AuthFailureReason } from '../../src/realtime/metrics.js'

/** `Sec-WebSocket-Protocol: switchboard.v1, bearer.<jwt>`: how browsers, which cannot set headers, send a token. */
const BEARER_PROTOCOL_PREFIX = 'bearer.'

/**
 * GET /ws: the WebSocket endpoint. Everything is checked before the upgrade, in a preHandler
 * hook, so a refused client gets a plain HTTP answer and no socket: Origin (403),
 * credentials (401), drain state (503) and connection caps (429, the per-user one
 * cluster-wide with the Redis engine); @fastify/rate-limit adds
 * the per-address handshake budget (429). After the upgrade the socket is handed to the
 * real-time node, with its listeners attached before any await.
 */
const wsRoutes: FastifyPluginAsync = async (app) => {
  const { ws } = app.config
  const metrics = app.realtimeMetrics
  /** The connection id reserved against the cluster-wide cap, from the preHandler to the upgrade. */
  const reserved = new WeakMap<FastifyRequest, string>()

  function tooMany (refusal: 'connections_per_user' | 'connections_per_ip'): never {
    metrics.rateLimited(refusal)
    throw new Errors.TooManyConnections(refusal === 'connections_per_user' ? 'Too many open connections for this user' : 'Too many open connections from this address')
  }

  function fail (reason: AuthFailureReason, error: Error): never {
    metrics.authFailure(reason)
    throw error
  }

  function checkOrigin (request: FastifyRequest): void {
    const origin = request.headers.origin
    // Non-browser clients send no Origin. Browsers always do, so a page on a foreign site cannot
    // open a socket with a token it obtained (e.g. a leaked `?token=` link) from a user's browser.
    if (origin === undefined) return
    const allowed = ws.allowedOrigins
    if (allowed.includes('*') || allowed.includes(origin)) return
    if (allowed.length === 0 && sameOrigin(origin, request.headers.host)) return
    fail('origin', new Errors.OriginNotAllowed())
  }

  async function identify (request: FastifyRequest): Promise<Principal> {
    const query = request.query as Record<string, unknown>
    const authorization = request.headers.authorization
    let token: string | undefined
    if (authorization !== undefined) {
      const match = /^Bearer +(\S+) *$/i.exec(authorization)
      if (match?.[1] === undefined) fail('invalid', new Errors.InvalidToken())
      token = match[1]
    }
    const protocols = request.headers['sec-websocket-protocol']
    if (token === undefined && typeof protocols === 'string') {
      token = protocols.split(',').map(p => p.trim()).find(p => p.startsWith(BEARER_PROTOCOL_PREFIX))?.slice(BEARER_PROTOCOL_PREFIX.length)
    }
    if (token === undefined && typeof query.token === 'string') token = query.token
    if (token !== undefined) {
      try {
        return app.verifyAccessToken(token)
      } catch (err) {
        fail(isExpired(token) ? 'expired' : 'invalid', err as Error)
      }
    }
    const key = typeof request.headers['x-api-key'] === 'string' ? request.headers['x-api-key'] : typeof query.api_key === 'string' ? query.api_key : undefined
    if (key !== undefined) {
      const principal = key.length <= 256 ? await app.auth.authenticateApiKey(key) : null
      if (principal === null) fail('invalid', new Errors.InvalidToken())
      return principal
    }
    return fail('missing', new Errors.Unauthorized())
  }

  app.get('/ws', {
    websocket: true,
    // Browser hardening headers mean nothing on a handshake, and on an accepted one they are
    // never even sent (ws writes the 101 itself); building them cost a tenth of a handshake.
    helmet: false,
    config: { rateLimit: { max: ws.handshakesPerIpPerMinute, timeWindow: '1 minute' } },
    // preHandler, after the rate limit's onRequest hook: refused handshakes (bad tokens, foreign
    // origins) spend the address's handshake budget too, so credential guessing is throttled.
    preHandler: async (request) => {
      if (app.lifecycle.shuttingDown) throw new Errors.ShuttingDown()
      checkOrigin(request)
      const principal = await identify(request)
      const refusal = app.realtime.admit(principal, request.ip)
      if (refusal === 'draining') throw new Errors.ShuttingDown()
      if (refusal !== null) tooMany(refusal)
      // Last, after the cheap local checks: one Redis round trip with the Redis engine.
      const reservation = await app.realtime.reserve(principal, request.ip)
      if ('refusal' in reservation) tooMany(reservation.refusal)
      reserved.set(request, reservation.id)
      request.principal = principal
      // The 101 that ws writes and the welcome frame that follows it leave in one write: the
      // upgrade and the handler run within this tick. Uncorked on the next tick whatever
      // happens, so a refusal or a failed upgrade is never held back.
      const tcp = request.raw.socket
      tcp.cork()
      process.nextTick(uncork, tcp)
    }
  }, (socket, request) => {
    // Synchronous from here to attachWsEvents: no frame can arrive before the listeners.
    const principal = request.principal!
    const transport = wsTransport(socket)
    // Concurrent handshakes can pass admission together, or a drain can start in between; both
    // are re-checked now that the socket exists. A drain gets the restart code, like every client.
    const id = reserved.get(request)
    const refusal = app.realtime.admit(principal, request.ip)
    if (refusal !== null && id !== undefined) app.realtime.release(principal, request.ip, id)
    if (refusal === 'draining') {
      socket.close(CloseCodes.SERVICE_RESTART, CloseReasons[CloseCodes.SERVICE_RESTART])
      return
    }
    if (refusal !== null) {
      metrics.rateLimited(refusal)
      socket.close(CloseCodes.RATE_LIMITED, 'too many connections')
      return
    }
    const connection = app.realtime.connect(transport, principal, {
      ip: request.ip,
      ...(request.headers['user-agent'] === undefined ? {} : { userAgent: request.headers['user-agent'] })
    }, id)
    releaseHttpExchange(socket)
    attachWsEvents(socket, connection)
  })
}

function uncork (socket: Socket): void {
  socket.uncork()
}

/**
 * Once upgraded, nothing needs the HTTP exchange any more, but two references would keep it
 * — request, reply, every header, a logger: kilobytes — for the socket's whole life:
 * @fastify/websocket's per-socket 'error' listener closes over request and reply, and the TCP
 * socket still points at the ServerResponse built for routing. attachWsEvents installs our
 * own error listener in place of the first; the second is detached. Idle connections are most
 * of a real-time server's memory (docs/performance.md).
 */
function releaseHttpExchange (socket: WebSocket): void {
  socket.removeAllListeners('error')
  const tcp = (socket as unknown as { _socket?: Socket & { _httpMessage?: ServerResponse | null } })._socket
  const response = tcp?._httpMessage
  if (tcp !== undefined && response !== undefined && response !== null) response.detachSocket(tcp)
}

function sameOrigin (origin: string, host: string | undefined): boolean {
  if (host === undefined) return false
  try {
    return new URL(origin).host === host
  } catch {
    return false
  }
}

/** Only for the metrics label: the token was already rejected. */
function isExpired (token: string): boolean {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { exp?: unknown }
    return typeof payload.exp === 'number' && payload.exp * 1000 < Date.now()
  } catch {
    return false
  }
}

export default wsRoutes
