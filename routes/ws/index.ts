import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger, FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { WebSocket } from 'ws'
import { AppError, Errors, httpAnswer, isUnavailableError, type HttpAnswer } from '../../src/errors.js'
import { redactUrl } from '../../src/logger.js'
import { destroyOnError, writeRefusal } from '../../src/http-refusal.js'
import type { Principal } from '../../src/auth/principal.js'
import { credentialError, readCredentials } from '../../src/auth/credentials.js'
import { clientAddress, trustProxyFunction } from '../../src/client-address.js'
import { createRateLimiter, type RateLimiter } from '../../src/limits/rate-limiter.js'
import { CloseCodes, CloseReasons } from '@switchboard/protocol/close-codes'
import { attachWsEvents, wsTransport } from '../../src/realtime/ws-transport.js'
import { declineNarrowOffers } from '../../src/realtime/ws-deflate.js'
import { codecOf, selectProtocol } from '../../src/realtime/frame-codec.js'
import { PROTOCOL_VERSION } from '@switchboard/protocol/messages'
import type { AuthFailureReason } from '../../src/realtime/metrics.js'

/**
 * GET /ws: the WebSocket endpoint. Its upgrades are taken before Fastify routes them
 * (plugins/websocket.ts, `directUpgrade`): a reconnect storm after a deploy is thousands of
 * handshakes a second, and Fastify's request lifecycle — response object, request and reply,
 * hooks, child logger — was about a seventh of each one's CPU. So the checks a handshake
 * needs are made here, in this order, before the upgrade, and a refused client gets a plain
 * HTTP answer with the API's error body and no socket:
 *
 * 1. drain state (503);
 * 2. the per-address handshake budget (WS_HANDSHAKES_PER_IP_PER_MINUTE, 429 + Retry-After;
 *    cluster-wide with Redis): counted before the credentials, so refused handshakes spend it
 *    too and token guessing is throttled;
 * 3. Origin (403), credentials (401: read by src/auth/credentials.ts, checked by `app.identify`);
 * 4. the connection caps per user and per address (429; cluster-wide with Redis);
 * 5. the application backend's connect hook, when it is on (403 SB_ERR_HOOK_REFUSED with its
 *    reason, or 503 SB_ERR_HOOK_UNAVAILABLE when it cannot answer): last, as the dearest check,
 *    holding the connection's reserved place while it waits.
 *
 * After the upgrade the socket is handed to the real-time node, with its listeners attached
 * before any await. A plain GET /ws without an upgrade is an ordinary Fastify route (426).
 */
const wsRoutes: FastifyPluginAsync = async (app) => {
  const { ws } = app.config
  const metrics = app.realtimeMetrics
  const trust = trustProxyFunction(app.config.trustProxy)
  const handshakes = handshakeLimiter(app)
  const wss = app.websocketServer
  // pino has it; a logger without it (Fastify accepts any with the same methods) logs always.
  const log = app.log as FastifyBaseLogger & { isLevelEnabled?: (level: string) => boolean }
  const infoEnabled = (): boolean => log.isLevelEnabled?.('info') ?? true

  // One line per handshake, as Fastify logs a request (the URL's credentials censored).
  function refuseWith (socket: Duplex, request: IncomingMessage, ip: string, answer: HttpAnswer): void {
    if (infoEnabled()) app.log.info({ url: redactUrl(request.url ?? ''), ip, statusCode: answer.statusCode, code: answer.code }, 'websocket handshake refused')
    writeRefusal(socket, answer)
  }

  function authFailure (reason: AuthFailureReason, error: HttpAnswer): HttpAnswer {
    metrics.authFailure(reason)
    return error
  }

  function tooMany (refusal: 'connections_per_user' | 'connections_per_ip'): HttpAnswer {
    metrics.rateLimited(refusal)
    return httpAnswer(new Errors.TooManyConnections(refusal === 'connections_per_user' ? 'Too many open connections for this user' : 'Too many open connections from this address'))
  }

  function checkOrigin (headers: IncomingHttpHeaders): HttpAnswer | null {
    const origin = headers.origin
    // Non-browser clients send no Origin. Browsers always do, so a page on a foreign site cannot
    // open a socket with a token it obtained (e.g. a leaked `?token=` link) from a user's browser.
    if (origin === undefined) return null
    const allowed = ws.allowedOrigins
    if (allowed.includes('*') || allowed.includes(origin)) return null
    if (allowed.length === 0 && sameOrigin(origin, headers.host)) return null
    return authFailure('origin', httpAnswer(new Errors.OriginNotAllowed()))
  }

  /** The principal, or the 401 its credentials earn (src/auth/credentials.ts says where they are read). */
  async function identify (request: IncomingMessage): Promise<Principal | HttpAnswer> {
    const principal = await app.identify(readCredentials(request, 'websocket'))
    return typeof principal === 'string' ? authFailure(principal, httpAnswer(credentialError(principal))) : principal
  }

  async function handshake (request: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const ip = clientAddress(request, trust)
    if (app.lifecycle.shuttingDown) return refuseWith(socket, request, ip, httpAnswer(new Errors.ShuttingDown()))
    const budget = await handshakes.take(ip)
    if (!budget.allowed) {
      metrics.rateLimited('handshakes')
      const seconds = Math.max(1, Math.ceil(budget.retryAfterMs / 1000))
      return refuseWith(socket, request, ip, httpAnswer(new Errors.RateLimited(`Rate limit exceeded, retry in ${seconds} seconds`).withRetryAfter(budget.retryAfterMs)))
    }
    const origin = checkOrigin(request.headers)
    if (origin !== null) return refuseWith(socket, request, ip, origin)
    const principal = await identify(request)
    if ('statusCode' in principal) return refuseWith(socket, request, ip, principal)
    const refusal = app.realtime.admit(principal, ip)
    if (refusal === 'draining') return refuseWith(socket, request, ip, httpAnswer(new Errors.ShuttingDown()))
    if (refusal === 'revoked') return refuseWith(socket, request, ip, authFailure('revoked', httpAnswer(new Errors.InvalidToken())))
    if (refusal !== null) return refuseWith(socket, request, ip, tooMany(refusal))
    // Last, after the cheap local checks: one Redis round trip with the Redis engine.
    const reservation = await app.realtime.reserve(principal, ip)
    if ('refusal' in reservation) return refuseWith(socket, request, ip, tooMany(reservation.refusal))
    let info: unknown
    try {
      ({ info } = await app.backendHooks.connect(principal, {
        id: reservation.id,
        ip,
        ...(request.headers['user-agent'] === undefined ? {} : { userAgent: request.headers['user-agent'] }),
        protocol: selectProtocol(new Set((request.headers['sec-websocket-protocol'] ?? '').split(',').map(p => p.trim()))) || PROTOCOL_VERSION
      }))
    } catch (err) {
      app.realtime.release(principal, ip, reservation.id)
      if (err instanceof AppError) return refuseWith(socket, request, ip, httpAnswer(err))
      throw err
    }

    if (app.wsDeflate !== null) {
      // A client asking for a smaller server window than the one every frame is deflated with
      // is declined compression, not refused (src/realtime/ws-deflate.ts).
      const offers = declineNarrowOffers(request.headers['sec-websocket-extensions'])
      if (offers === undefined) delete request.headers['sec-websocket-extensions']
      else request.headers['sec-websocket-extensions'] = offers
    }
    // The 101 that ws writes and the welcome frame that follows it leave in one write: the
    // socket is corked around the upgrade, which ws completes synchronously, and the welcome
    // corks it again (ws-transport.ts) until that tick's flush; uncorked here whatever
    // happens, so a refusal or a failed upgrade is never held back.
    socket.cork()
    socket.removeListener('error', destroyOnError)
    let upgraded = false
    try {
      // ws answers a malformed upgrade (version, key) with 400 itself and never calls back.
      wss.handleUpgrade(request, socket, head, (websocket) => {
        upgraded = true
        try {
          open(websocket, principal, ip, request.url, request.headers['user-agent'], reservation.id, info)
        } catch (err) {
          // The 101 is written: no HTTP answer is possible any more, only the end of the socket.
          app.log.error({ err }, 'websocket connection set-up failed')
          websocket.terminate()
        }
      })
    } finally {
      socket.uncork()
    }
    if (!upgraded) app.realtime.release(principal, ip, reservation.id)
  }

  function open (websocket: WebSocket, principal: Principal, ip: string, url: string | undefined, userAgent: string | undefined, id: string, info: unknown): void {
    // Synchronous from here to attachWsEvents: no frame can arrive before the listeners.
    // Concurrent handshakes can pass admission together, or a drain can start (or the session
    // be revoked) in between; each is re-checked now that the socket exists. A drain gets the
    // restart code, like every client; a revoked session 4001, as its open sockets did.
    const refusal = app.realtime.admit(principal, ip)
    if (refusal !== null) app.realtime.release(principal, ip, id)
    if (refusal === 'draining') {
      websocket.close(CloseCodes.SERVICE_RESTART, CloseReasons[CloseCodes.SERVICE_RESTART])
      return
    }
    if (refusal === 'revoked') {
      metrics.authFailure('revoked')
      websocket.close(CloseCodes.TOKEN_EXPIRED, 'session revoked')
      return
    }
    if (refusal !== null) {
      metrics.rateLimited(refusal)
      websocket.close(CloseCodes.RATE_LIMITED, 'too many connections')
      return
    }
    // The subprotocol the handshake selected (plugins/websocket.ts) chooses the codec; none is JSON.
    const meta = { ip, codec: codecOf(websocket.protocol), ...(userAgent === undefined ? {} : { userAgent }), ...(info === undefined ? {} : { info }) }
    const connection = app.realtime.connect(wsTransport(websocket, app.wsDeflate), principal, meta, id)
    attachWsEvents(websocket, connection)
    // Checked first: the line's fields would cost a handshake something even with info off.
    if (infoEnabled()) app.log.info({ url: redactUrl(url ?? ''), ip, connId: id, principal: connection.publicId }, 'websocket connected')
  }

  app.directUpgrade('/ws', (request, socket, head) => {
    // Node removed its own error listener before handing the socket over: until ws owns it, a
    // reset by the client must end this socket, not the process.
    socket.on('error', destroyOnError)
    handshake(request, socket as Socket, head).catch((err: unknown) => {
      // As the HTTP error handler answers: a dependency that is down (the store looking up an
      // API key) is a temporary 503 with its code; anything else is a bug.
      if (isUnavailableError(err)) {
        app.log.warn({ err }, 'websocket handshake: dependency unavailable')
        writeRefusal(socket, httpAnswer(err))
        return
      }
      app.log.error({ err }, 'websocket handshake failed')
      writeRefusal(socket, httpAnswer(new Errors.Internal()))
    })
  })

  // Without an Upgrade header the request reaches Fastify: say what this endpoint is.
  app.get('/ws', { schema: { hide: true } }, async (_request, reply) => {
    const { statusCode, code, message } = httpAnswer(new Errors.UpgradeRequired())
    return reply.code(statusCode).header('upgrade', 'websocket').send({ statusCode, code, error: STATUS_CODES[statusCode], message })
  })
}

/** Per client address, GCRA over a minute; shared by every node when the cluster has Redis. */
function handshakeLimiter (app: FastifyInstance): RateLimiter {
  const perMinute = app.config.ws.handshakesPerIpPerMinute
  return createRateLimiter({
    ratePerSecond: perMinute / 60,
    burst: perMinute,
    redis: app.redis,
    prefix: `${app.config.redis?.keyPrefix ?? 'sb:'}handshake-rate:`,
    log: app.log,
    what: 'handshake rate'
  })
}

function sameOrigin (origin: string, host: string | undefined): boolean {
  if (host === undefined) return false
  try {
    return new URL(origin).host === host
  } catch {
    return false
  }
}

export default wsRoutes
