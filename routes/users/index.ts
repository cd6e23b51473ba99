import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { isBuiltinUserId } from '../../src/auth/external-claims.js'
import { errorResponses, pageOf, PageQuerySchema, UserIdSchema, type Security } from '../../src/schemas/common.js'
import { CreateUserBodySchema, SetPasswordBodySchema, UserPatchSchema, UserSchema } from '../../src/schemas/auth.js'
import { publicUser } from '../../src/auth/service.js'

/**
 * Account administration (admins only): the user directory, disabling and re-enabling, roles,
 * password resets, signing a user out everywhere, and deletion. Who may do what, and what each
 * action does to open sessions and sockets, is docs/authorization.md, "Accounts".
 */
const userRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)
  const security: Security = [{ bearerAuth: [] }]
  const params = Type.Object({ id: UserIdSchema })

  app.get('/', {
    schema: {
      tags: ['users'],
      summary: 'Search users by username prefix (admin)',
      security,
      querystring: Type.Composite([PageQuerySchema, Type.Object({ q: Type.String({ maxLength: 32, default: '' }) })]),
      response: { 200: pageOf(Type.Ref(UserSchema)), ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const { q, limit, after } = request.query
    const items = await app.store.searchUsers(q.toLowerCase(), { limit, after })
    return { items, nextCursor: items.length === limit ? items[items.length - 1]!.id : null }
  })

  app.post('/', {
    schema: {
      tags: ['users'],
      summary: 'Create an account (admin), whether or not registration is open',
      description: 'How accounts are made on a server with ALLOW_REGISTRATION=false. A deleted username answers SB_ERR_USERNAME_RETIRED.',
      security,
      body: CreateUserBodySchema,
      response: { 201: Type.Object({ user: Type.Ref(UserSchema) }), ...errorResponses(400, 401, 403, 409) }
    }
  }, async (request, reply) => {
    const { username, password, role } = request.body
    const user = await app.auth.register(username, password, role)
    request.log.info({ user: user.id, role: user.role, by: request.principal?.kind === 'user' ? request.principal.userId : null }, 'account created by an admin')
    return reply.code(201).send({ user: publicUser(user) })
  })

  app.get('/:id', {
    schema: {
      tags: ['users'], summary: 'One account (admin)', security, params,
      response: { 200: Type.Ref(UserSchema), ...errorResponses(400, 401, 403, 404) }
    }
  }, async (request) => {
    const user = await app.store.getUser(request.params.id)
    if (user === undefined) throw new Errors.UserNotFound()
    return user
  })

  app.patch('/:id', {
    schema: {
      tags: ['users'],
      summary: 'Disable or enable an account, or change its role (admin)',
      description: 'Disabling takes effect at once on every node: the user\'s tokens get 401, its sockets close with 4504 (terminal), ' +
        'its sessions are revoked and sign-in answers SB_ERR_ACCOUNT_DISABLED. Enabling lets it sign in again. Removing the admin ' +
        'role signs the user out everywhere; a granted role is in the user\'s next token. The last enabled admin account cannot ' +
        'be demoted or disabled (SB_ERR_LAST_ADMIN). A user of the identity provider can be disabled (recorded here) but its ' +
        'role is its token\'s (SB_ERR_EXTERNAL_USER).',
      security,
      params,
      body: UserPatchSchema,
      response: { 200: Type.Ref(UserSchema), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request) => {
    const user = await app.auth.updateUser(request.params.id, request.body)
    request.log.info({ user: user.id, change: request.body, by: request.principal?.kind === 'user' ? request.principal.userId : null }, 'account changed')
    return user
  })

  app.delete('/:id', {
    schema: {
      tags: ['users'],
      summary: 'Delete an account (admin)',
      description: 'Its memberships, bans, sessions and the API keys it created go; its tokens get 401 and its sockets (and those ' +
        'of its keys) close on every node. Rooms it created and its publications stay, attributed to it. A built-in username is ' +
        'kept as a tombstone and never reused (registration answers SB_ERR_USERNAME_RETIRED). The last enabled admin account ' +
        'cannot be deleted (SB_ERR_LAST_ADMIN).',
      security,
      params,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    if (!(await app.auth.deleteUser(request.params.id))) throw new Errors.UserNotFound()
    request.log.info({ user: request.params.id, by: request.principal?.kind === 'user' ? request.principal.userId : null }, 'account deleted')
    return reply.code(204).send(null)
  })

  app.post('/:id/password', {
    schema: {
      tags: ['users'],
      summary: 'Set a user\'s password (admin); every session of that user ends',
      security,
      params,
      body: SetPasswordBodySchema,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    await app.auth.resetPassword(request.params.id, request.body.password)
    request.log.info({ user: request.params.id, by: request.principal?.kind === 'user' ? request.principal.userId : null }, 'password reset by an admin')
    return reply.code(204).send(null)
  })

  app.post('/:id/logout-all', {
    schema: {
      tags: ['users'],
      summary: 'Sign a user out everywhere (admin): every session ends, sockets close with 4001',
      security,
      params,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request, reply) => {
    const { id } = request.params
    if (!isBuiltinUserId(id)) throw new Errors.ExternalUser()
    if (await app.store.getUser(id) === undefined) throw new Errors.UserNotFound()
    await app.auth.revokeUserSessions(id)
    request.log.info({ user: id, by: request.principal?.kind === 'user' ? request.principal.userId : null }, 'user signed out everywhere by an admin')
    return reply.code(204).send(null)
  })
}

export default userRoutes
