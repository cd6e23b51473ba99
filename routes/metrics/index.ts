import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from '@sinclair/typebox'
import { timingSafeEqual } from 'node:crypto'
import { errorResponses, type Security } from '../../src/schemas/common.js'
import { readCredentials } from '../../src/auth/credentials.js'

/** Headers a forwarding proxy adds; their presence means the loopback peer is not the client. */
const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'] as const

function isLoopback (address: string | undefined): boolean {
  if (address === undefined) return false
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address
  return v4 === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4)
}

/**
 * A scrape from this host: the TCP peer and the client address Fastify resolved (which follows
 * TRUST_PROXY) are both loopback, and no proxy forwarded the request. The last condition
 * matters when a reverse proxy runs on the same host with TRUST_PROXY unset: every request it
 * forwards arrives from 127.0.0.1, and only its forwarding headers tell them apart.
 */
function isLocalScrape (request: FastifyRequest): boolean {
  if (FORWARDING_HEADERS.some(name => request.headers[name] !== undefined)) return false
  return isLoopback(request.socket.remoteAddress) && isLoopback(request.ip)
}

/** METRICS_TOKEN, when the request presents it as its bearer token (compared in constant time). */
function presentsScrapeToken (request: FastifyRequest, scrapeToken: string): boolean {
  const credentials = readCredentials(request, 'http')
  return credentials.kind === 'token' && credentials.from === 'authorization' && safeEqual(credentials.token, scrapeToken)
}

function safeEqual (a: string, b: string): boolean {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}

/**
 * GET /metrics in the Prometheus text format.
 *
 * Access: a Prometheus agent or sidecar on the same host/pod scrapes over loopback without
 * credentials; from anywhere else it presents METRICS_TOKEN as a bearer token (a long-lived
 * scrape secret: admin JWTs expire in minutes), or an admin access token. Metrics reveal traffic
 * and load, not secrets, but they are not for the public internet. A request relayed by a proxy
 * never counts as local (see isLocalScrape).
 */
const metricsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const security: Security = [{}, { bearerAuth: [] }]
  const scrapeToken = app.config.metricsToken

  app.get('/', {
    schema: {
      tags: ['metrics'],
      summary: 'Prometheus metrics: open from loopback, admins only from elsewhere',
      security,
      response: {
        // Per-status content types: the metrics are text, the errors keep the JSON error shape.
        200: {
          description: 'Prometheus text exposition format 0.0.4',
          content: { 'text/plain': { schema: Type.String() } }
        },
        ...errorResponses(401, 403)
      }
    },
    // preHandler, not onRequest: the rate limit's onRequest hook runs first, so refused remote
    // attempts spend the caller's request budget like any other request.
    preHandler: async (request, reply) => {
      if (isLocalScrape(request)) return
      if (scrapeToken !== null && presentsScrapeToken(request, scrapeToken)) return
      await app.requireAdmin(request, reply)
    }
  }, async (_request, reply) => {
    const text = await app.metrics.scrape()
    // A non-JSON content type makes Fastify send the string as it is, past the JSON serializer.
    return reply.type(app.metrics.contentType).header('cache-control', 'no-store').send(text)
  })
}

export default metricsRoutes
