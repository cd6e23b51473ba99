import fp from 'fastify-plugin'
import helmet from '@fastify/helmet'
import cors from '@fastify/cors'

/**
 * Browser-facing hardening: helmet's headers everywhere (with a CSP loose enough for the
 * Swagger UI at /docs), and CORS only for the origins listed in CORS_ORIGINS.
 */
export default fp(async (app) => {
  await app.register(helmet, {
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
        // blob:: the web app shows images sent in a room from Blob URLs of their bytes.
        imgSrc: ["'self'", 'data:', 'blob:'],
        connectSrc: ["'self'", 'ws:', 'wss:'],
        // helmet adds upgrade-insecure-requests by default. On a server without TLS it makes a
        // browser fetch the web app's /assets/ over https from a plain-http page, which fails
        // for any address but localhost (a phone on the LAN gets a blank page). Behind a TLS
        // proxy the page is https already and its URLs are relative, so nothing needs it.
        upgradeInsecureRequests: app.config.tls === null ? null : []
      }
    }
  })
  const origins = app.config.corsOrigins
  await app.register(cors, {
    origin: origins.includes('*') ? true : origins.length === 0 ? false : origins,
    credentials: false,
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    allowedHeaders: ['Authorization', 'Content-Type', 'X-API-Key'],
    exposedHeaders: ['Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset'],
    maxAge: 600
  })
}, { name: 'security', dependencies: ['config'] })
