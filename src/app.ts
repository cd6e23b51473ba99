import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config.js'
import { buildLoggerOptions } from './logger.js'
import { SHARED_SCHEMAS } from './schemas/index.js'
import { createValidatorCompiler } from './validation.js'
import { Errors, httpAnswer } from './errors.js'
import { trustProxyFunction } from './client-address.js'
import { clientErrorRefusal, writeRefusal } from './http-refusal.js'
import configPlugin from '../plugins/config.js'
import shutdownPlugin from '../plugins/shutdown.js'
import connectionCapPlugin from '../plugins/connection-cap.js'
import securityPlugin from '../plugins/security.js'
import redisPlugin from '../plugins/redis.js'
import rateLimitPlugin from '../plugins/rate-limit.js'
import swaggerPlugin from '../plugins/swagger.js'
import storePlugin from '../plugins/store.js'
import authPlugin from '../plugins/auth.js'
import roomsPlugin from '../plugins/rooms.js'
import metricsPlugin from '../plugins/metrics.js'
import hooksPlugin from '../plugins/hooks.js'
import realtimePlugin from '../plugins/realtime.js'
import websocketPlugin from '../plugins/websocket.js'
import healthRoutes from '../routes/health/index.js'
import authRoutes from '../routes/auth/index.js'
import apiKeyRoutes from '../routes/api-keys/index.js'
import roomRoutes from '../routes/rooms/index.js'
import userRoutes from '../routes/users/index.js'
import wsRoutes from '../routes/ws/index.js'
import adminRoutes from '../routes/admin/index.js'
import broadcastRoutes from '../routes/broadcast/index.js'
import metricsRoutes from '../routes/metrics/index.js'
import docsRoutes from '../routes/docs/index.js'
import webPlugin from '../plugins/web.js'

export type App = FastifyInstance

export interface BuildOptions {
  /** Overrides the logger (tests pass `false` or a stream-backed pino). */
  logger?: FastifyServerOptions['logger'] | FastifyServerOptions['loggerInstance']
}

/**
 * Builds the whole application for a configuration, without listening. The server entry
 * (src/server.ts) and the tests (test/helper.ts) both start here, so what is tested is what runs.
 */
export async function buildApp (config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const logger = options.logger ?? buildLoggerOptions(config)
  // One code path for HTTP and HTTPS: Fastify's typings pick a different instance type when
  // `https` is present, but an https.Server is an http.Server for everything used here.
  const createServer = Fastify as (options: object) => FastifyInstance
  const deadlines = serverDeadlines(config.http)
  const app = createServer({
    ...(isLoggerInstance(logger) ? { loggerInstance: logger } : { logger }),
    ...(config.tls === null
      ? { http: deadlines }
      // A client that never finishes the TLS handshake gets no longer than one that never finishes its headers.
      : { https: { cert: config.tls.cert, key: config.tls.key, handshakeTimeout: config.http.headersTimeoutMs, ...deadlines } }),
    requestTimeout: config.http.requestTimeoutMs,
    connectionTimeout: config.http.connectionTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    clientErrorHandler: answerClientError,
    trustProxy: trustProxyFunction(config.trustProxy),
    // REST bodies are small; the largest is a published message (issue 3) below 64 KiB.
    bodyLimit: 256 * 1024,
    // Tokens are long but bounded; a URL beyond this is refused by the router.
    routerOptions: { maxParamLength: 200 },
    forceCloseConnections: 'idle',
    // Not Fastify's blanket 503 while closing: it bypasses the route hooks, so a WebSocket
    // handshake refused that way never has its raw socket released and close() waits forever.
    // Readiness and the /ws handshake answer 503 themselves from the lifecycle state instead.
    return503OnClosing: false
  }).withTypeProvider<TypeBoxTypeProvider>()

  for (const schema of SHARED_SCHEMAS) app.addSchema(schema)
  app.setValidatorCompiler(createValidatorCompiler(SHARED_SCHEMAS))

  // Plugins in dependency order: each declares what it needs, this list shows the order.
  await app.register(configPlugin, { config })
  await app.register(shutdownPlugin)
  await app.register(connectionCapPlugin)
  await app.register(redisPlugin)
  await app.register(securityPlugin)
  await app.register(rateLimitPlugin)
  installErrorHandlers(app)
  await app.register(swaggerPlugin)
  await app.register(storePlugin)
  await app.register(authPlugin)
  await app.register(roomsPlugin)
  await app.register(metricsPlugin)
  await app.register(hooksPlugin)
  await app.register(realtimePlugin)
  await app.register(websocketPlugin)

  // Routes: encapsulated, not wrapped in fastify-plugin.
  await app.register(healthRoutes, { prefix: '/health' })
  await app.register(authRoutes, { prefix: '/auth' })
  await app.register(apiKeyRoutes, { prefix: '/api-keys' })
  await app.register(roomRoutes, { prefix: '/rooms' })
  await app.register(userRoutes, { prefix: '/users' })
  await app.register(adminRoutes, { prefix: '/admin' })
  await app.register(broadcastRoutes)
  await app.register(wsRoutes)
  await app.register(metricsRoutes, { prefix: '/metrics' })
  await app.register(docsRoutes, { prefix: '/docs' })
  // Last: the web app at / only adds `/` and its hashed /assets/ files.
  await app.register(webPlugin)

  return app
}

/**
 * What a connection gets when node's parser refuses its request or a deadline cuts it (as
 * Fastify's clientErrorHandler): the API's error body, where Fastify's has no `code`, and a
 * log line without the error itself, whose `rawPacket` holds the raw request bytes, the
 * Authorization header and the query string's credentials included.
 */
function answerClientError (this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
  // Reset by the client: there is no one to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  this.log.debug({ code: err.code }, 'client error')
  // Only the HTTP parser's refusals and deadlines have an HTTP answer. The others (with TLS: a
  // failed or timed-out handshake) come before any HTTP, on a socket an answer could not leave.
  const http = err.code?.startsWith('HPE_') === true || err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
  // As node does: a response already under way cannot be followed by another one.
  if (!http || (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true) {
    socket.destroy()
    return
  }
  writeRefusal(socket, clientErrorRefusal(err.code))
}

/**
 * Node's own request deadlines (http.createServer options). Node checks them on an interval,
 * 30 s unless told otherwise, so a deadline could be missed by up to that much; a quarter of
 * the shortest one keeps the lateness small.
 */
function serverDeadlines (http: Config['http']): { headersTimeout: number, requestTimeout: number, connectionsCheckingInterval: number } {
  return {
    headersTimeout: http.headersTimeoutMs,
    requestTimeout: http.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(25, Math.floor(Math.min(http.headersTimeoutMs, http.requestTimeoutMs) / 4))
  }
}

function isLoggerInstance (logger: unknown): logger is NonNullable<FastifyServerOptions['loggerInstance']> {
  return typeof logger === 'object' && logger !== null && typeof (logger as { child?: unknown }).child === 'function'
}

/**
 * One error shape for every failure: { statusCode, code, error, message }, rendered from the
 * error table (src/errors.ts, httpAnswer). Below 500 the message is the client's to read; from
 * 500 up the client gets a generic message and the log gets everything.
 */
function installErrorHandlers (app: FastifyInstance): void {
  app.setErrorHandler((err: Error & { code?: string }, request, reply) => {
    const { statusCode, code, message, headers } = httpAnswer(err)
    if (statusCode >= 500) request.log.error({ err }, 'request failed')
    else {
      request.log.info({ err: { message: err.message, code: err.code }, statusCode }, 'request rejected')
      if (headers !== undefined) void reply.headers(headers)
    }
    return reply.code(statusCode).send({ statusCode, code, error: statusText(statusCode), message })
  })

  // Unknown routes are rate limited too (plugins/rate-limit.ts counts every request).
  app.setNotFoundHandler((request) => {
    throw new Errors.RouteNotFound(request.method, request.url.split('?')[0])
  })
}

function statusText (statusCode: number): string {
  return STATUS_CODES[statusCode] ?? (statusCode >= 500 ? 'Server Error' : 'Client Error')
}
