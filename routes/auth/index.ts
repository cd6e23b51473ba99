import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { Errors } from '../../src/errors.js'
import { publicUser } from '../../src/auth/service.js'
import type { UserPrincipal } from '../../src/auth/principal.js'
import { errorResponses } from '../../src/schemas/common.js'
import { ChangePasswordBodySchema, CredentialsSchema, LoginSchema, MeSchema, RefreshBodySchema, TokenPairSchema, UserSchema } from '../../src/schemas/auth.js'

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

  app.post('/password', {
    // The current password is guessed no faster here than at /login: the same budgets.
    config: tight,
    onRequest: app.requireUser,
    schema: {
      tags: ['auth'],
      summary: 'Change your own password: every other session is signed out, this one stays',
      description: 'The current password is checked under the login throttle (a wrong one counts as a failed sign-in from this ' +
        'address for this user). On success every other session of the account ends at once (their access tokens get 401, ' +
        'their sockets close with 4001, their refresh tokens stop working); the session of the token that made the request ' +
        'keeps working. Users of the identity provider have no password here (SB_ERR_EXTERNAL_USER).',
      security: [{ bearerAuth: [] }],
      body: ChangePasswordBodySchema,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 403, 409, 429) }
    }
  }, async (request, reply) => {
    const principal = request.principal as UserPrincipal
    await app.auth.changeOwnPassword(principal.userId, principal.sessionId, request.body.currentPassword, request.body.newPassword, request.ip)
    request.log.info({ user: principal.userId }, 'password changed; other sessions signed out')
    return reply.code(204).send(null)
  })

  app.post('/logout-all', {
    onRequest: app.requireUser,
    schema: {
      tags: ['auth'],
      summary: 'Sign out everywhere: every session of your account ends, this one included',
      description: 'Every refresh token of the account is revoked and every access token stops at once (401), on every node; ' +
        'open sockets close with 4001. Sign in again afterwards. Users of the identity provider hold no session here: they ' +
        'sign out at the provider (SB_ERR_EXTERNAL_USER).',
      security: [{ bearerAuth: [] }],
      response: { 204: Type.Null(), ...errorResponses(401, 403, 409) }
    }
  }, async (request, reply) => {
    const principal = request.principal as UserPrincipal
    if (principal.external !== undefined) throw new Errors.ExternalUser()
    await app.auth.revokeUserSessions(principal.userId)
    request.log.info({ user: principal.userId }, 'signed out everywhere')
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
      const user = { id: principal.userId, role: principal.role, createdAt: row?.createdAt ?? Date.now(), disabled: false }
      const name = principal.external.name
      return { kind: 'user' as const, user, tokenExpiresAt: principal.expiresAt * 1000, source: 'external' as const, ...(name === null ? {} : { name }) }
    }
    const user = await app.store.getUser(principal.userId)
    if (user === undefined) throw new Errors.InvalidToken()
    return { kind: 'user' as const, user: publicUser(user), tokenExpiresAt: principal.expiresAt * 1000, source: 'builtin' as const }
  })
}

export default authRoutes
