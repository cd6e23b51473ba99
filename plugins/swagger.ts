import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { APP_VERSION } from '../src/version.js'

/** OpenAPI at /docs/json, built from the routes' own schemas, and Swagger UI at /docs. */
export default fp(async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Switchboard',
        description: 'REST API of the Switchboard real-time server: auth, rooms, members, API keys, the server API for backends, health.',
        version: APP_VERSION
      },
      tags: [
        { name: 'server-api', description: 'The server API for backends: an API key with the `admin` scope, or an admin\'s token (docs/api.md, "Server API for backends")' },
        { name: 'admin', description: 'Operator tools for admins and `admin`-scoped API keys: connections, stats' }
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' }
        }
      }
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}`
    }
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
}, { name: 'swagger' })
