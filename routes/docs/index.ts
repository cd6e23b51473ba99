import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { buildAsyncApi } from '@switchboard/protocol/asyncapi'
import { PROTOCOL_VERSION } from '@switchboard/protocol/messages'

/**
 * GET /docs/asyncapi.json: the WebSocket protocol as AsyncAPI 2.6.0, next to the OpenAPI
 * document at /docs/json. Public, like the rest of /docs.
 */
const docsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  // The document describes the protocol, so it carries the protocol's version. It has no
  // `servers` entry: behind a proxy the public ws(s):// URL is not this process's to know,
  // and a host-relative `/ws` channel is right wherever the document was fetched from.
  // Built once: it depends only on code.
  const document = buildAsyncApi({ version: PROTOCOL_VERSION })

  app.get('/asyncapi.json', {
    schema: {
      tags: ['docs'],
      summary: 'AsyncAPI 2.6.0 document of the WebSocket protocol (generated from its schemas)',
      response: {
        200: Type.Object({
          asyncapi: Type.Literal('2.6.0'),
          info: Type.Object({ title: Type.String(), version: Type.String() }, { additionalProperties: true }),
          channels: Type.Object({}, { additionalProperties: true }),
          components: Type.Object({}, { additionalProperties: true })
        }, { additionalProperties: true, description: 'See https://www.asyncapi.com/docs/reference/specification/v2.6.0' })
      }
    }
  }, async () => document)
}

export default docsRoutes
