import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { errorResponses, pageOf, PageQuerySchema } from '../../src/schemas/common.js'
import { UserSchema } from '../../src/schemas/auth.js'

/** User directory for administrators (to find people to add to rooms). */
const userRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/', {
    onRequest: app.requireAdmin,
    schema: {
      tags: ['users'],
      summary: 'Search users by username prefix (admin)',
      security: [{ bearerAuth: [] }],
      querystring: Type.Composite([PageQuerySchema, Type.Object({ q: Type.String({ maxLength: 32, default: '' }) })]),
      response: { 200: pageOf(Type.Ref(UserSchema)), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const { q, limit, after } = request.query
    const items = await app.store.searchUsers(q.toLowerCase(), { limit, after })
    return { items, nextCursor: items.length === limit ? items[items.length - 1]!.id : null }
  })
}

export default userRoutes
