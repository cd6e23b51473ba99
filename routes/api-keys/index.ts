import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { errorResponses, pageOf, PageQuerySchema, type Security } from '../../src/schemas/common.js'
import { ApiKeySchema, CreateApiKeyBodySchema, CreatedApiKeySchema } from '../../src/schemas/api-keys.js'

/** API keys for services and devices. Administrators only; a key is shown once, at creation. */
const apiKeyRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)
  const security: Security = [{ bearerAuth: [] }]

  app.post('/', {
    schema: {
      tags: ['api-keys'],
      summary: 'Create an API key with scopes such as `publish:sensors.*`',
      security,
      body: CreateApiKeyBodySchema,
      response: { 201: CreatedApiKeySchema, ...errorResponses(400, 401, 403) }
    }
  }, async (request, reply) => {
    const principal = request.principal!
    const createdBy = principal.kind === 'user' ? principal.userId : principal.keyId
    const created = await app.auth.createApiKey(request.body.name, request.body.scopes, createdBy)
    request.log.info({ apiKeyId: created.apiKey.id, scopes: created.apiKey.scopes }, 'api key created')
    return reply.code(201).send(created)
  })

  app.get('/', {
    schema: {
      tags: ['api-keys'],
      summary: 'List API keys (without the keys themselves)',
      security,
      querystring: PageQuerySchema,
      response: { 200: pageOf(Type.Ref(ApiKeySchema)), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const items = await app.store.listApiKeys(request.query)
    return { items, nextCursor: items.length === request.query.limit ? items[items.length - 1]!.id : null }
  })

  app.delete('/:id', {
    schema: {
      tags: ['api-keys'],
      summary: 'Revoke an API key',
      security,
      params: Type.Object({ id: Type.String({ format: 'uuid' }) }),
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request, reply) => {
    if (!(await app.store.deleteApiKey(request.params.id))) throw new Errors.ApiKeyNotFound()
    // Revocation is live: sockets opened with the key close now, not when they next reconnect.
    const closed = app.realtime.kickApiKey(request.params.id)
    request.log.info({ apiKeyId: request.params.id, closed }, 'api key revoked')
    return reply.code(204).send(null)
  })
}

export default apiKeyRoutes
