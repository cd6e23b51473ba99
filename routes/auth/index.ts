import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { publicUser } from '../../src/auth/service.js'
import { errorResponses } from '../../src/schemas/common.js'
import { CredentialsSchema, LoginSchema, MeSchema, RefreshBodySchema, TokenPairSchema, UserSchema } from '../../src/schemas/auth.js'

/**
 * Sign-up, sign-in and sessions. Login, registration and refresh share a tight per-IP budget
 * (LOGIN_RATE_LIMIT per minute) on top of the global one; login also throttles failed
 * sign-ins per address and username and per address (src/limits/login-throttle.ts).
 */
const authRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const tight = { rateLimit: { max: app.config.loginRateLimit, timeWindow: '1 minute' } }

  app.post('/register', {
    config: tight,
    schema: {
      tags: ['auth'],
      summary: 'Create an account (when ALLOW_REGISTRATION is on)',
      body: CredentialsSchema,
      response: { 201: Type.Object({ user: Type.Ref(UserSchema) }), ...errorResponses(400, 403, 409, 429) }
    }
  }, async (request, reply) => {
    if (app.config.accounts === 'external') throw new Errors.ExternalAccountsOnly()
    if (!app.config.allowRegistration) throw new Errors.RegistrationClosed()
    const user = await app.auth.register(request.body.username, request.body.password)
    request.log.info({ user: user.id }, 'user registered')
    return reply.code(201).send({ user: publicUser(user) })
  })

  app.post('/login', {
    config: tight,
    schema: {
      tags: ['auth'],
      summary: 'Sign in: returns an access token and a single-use refresh token',
      body: LoginSchema,
      response: { 200: TokenPairSchema, ...errorResponses(400, 401, 403, 429) }
    }
  }, async (request) => {
    // request.ip is the client as TRUST_PROXY allows X-Forwarded-For to name it.
    const pair = await app.auth.login(request.body.username, request.body.password, request.ip)
    request.log.info({ user: pair.user.id }, 'user signed in')
    return pair
  })

  app.post('/refresh', {
    config: tight,
    schema: {
      tags: ['auth'],
      summary: 'Exchange a refresh token for a new pair (the old one stops working)',
      body: RefreshBodySchema,
      response: { 200: TokenPairSchema, ...errorResponses(400, 401, 403, 429) }
    }
  }, async (request) => await app.auth.refresh(request.body.refreshToken))

  app.post('/logout', {
    schema: {
      tags: ['auth'],
      summary: 'End the session the refresh token belongs to',
      body: RefreshBodySchema,
      response: { 204: Type.Null(), ...errorResponses(400) }
    }
  }, async (request, reply) => {
    await app.auth.logout(request.body.refreshToken)
    return reply.code(204).send(null)
  })

  app.get('/me', {
    onRequest: app.authenticate,
    schema: {
      tags: ['auth'],
      summary: 'Who the presented credentials belong to',
      security: [{ bearerAuth: [] }, { apiKey: [] }],
      response: { 200: MeSchema, ...errorResponses(401) }
    }
  }, async (request) => {
    const principal = request.principal!
    if (principal.kind === 'apiKey') {
      return { kind: 'apiKey' as const, apiKey: { id: principal.keyId, name: principal.name, scopes: principal.scopes } }
    }
    if (principal.external !== undefined) {
      // No account of ours: the token is the whole identity. A row exists once the user joined
      // a room (its creation time); until then the token's is as good as any.
      const row = await app.store.getUser(principal.userId)
      const user = { id: principal.userId, role: principal.role, createdAt: row?.createdAt ?? Date.now() }
      const name = principal.external.name
      return { kind: 'user' as const, user, tokenExpiresAt: principal.expiresAt * 1000, source: 'external' as const, ...(name === null ? {} : { name }) }
    }
    const user = await app.store.getUser(principal.userId)
    if (user === undefined) throw new Errors.InvalidToken()
    return { kind: 'user' as const, user: publicUser(user), tokenExpiresAt: principal.expiresAt * 1000, source: 'builtin' as const }
  })
}

export default authRoutes
