import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Errors } from '../src/errors.js'
import { USERNAME_PATTERN } from '../src/schemas/common.js'
import type { Principal, UserPrincipal } from '../src/auth/principal.js'
import { createAccessTokenVerifier } from '../src/auth/access-token.js'
import { createAuthService, type AccessClaims, type AuthService } from '../src/auth/service.js'
import { createLoginThrottle } from '../src/limits/login-throttle.js'
import { createAccountStatus } from '../src/auth/account-status.js'
import { createRevocations, type Revocations } from '../src/auth/revocation.js'
import { createSessionDenylist } from '../src/auth/session-denylist.js'
import { createExternalTokenVerifier, type ExternalTokenVerifier } from '../src/auth/external-token.js'
import { routeToken } from '../src/auth/token-routing.js'
import { hasAdminScope } from '../src/auth/scopes.js'
import { createRoomTokenVerifier } from '../src/auth/room-token.js'
import { roomTokenCovers, type RoomTokenOp } from '../src/auth/room-token-claims.js'
import { credentialError, readCredentials, type AccessTokenRefusal, type CredentialRefusal, type Credentials } from '../src/auth/credentials.js'

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: AccessClaims
    user: AccessClaims & { iat: number, exp: number, iss: string }
  }
}

type Hook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

declare module 'fastify' {
  interface FastifyInstance {
    auth: AuthService
    /** Session denylist and account check (src/auth/revocation.ts); the realtime node listens to it. */
    revocations: Revocations
    /**
     * Checks an access token: the one place a JWT is verified (REST, the WebSocket handshake,
     * the in-band token refresh): signature and claims, the session not revoked, the account
     * still active. The principal, or why not. Resolves without touching the store while the
     * account's last good check is younger than ACCOUNT_CACHE_MS.
     */
    checkAccessToken(token: string): Promise<UserPrincipal | AccessTokenRefusal>
    /** `checkAccessToken`, throwing SB_ERR_INVALID_TOKEN (401) instead of returning a reason. */
    verifyAccessToken(token: string): Promise<UserPrincipal>
    /**
     * Who credentials read by src/auth/credentials.ts identify: a token checked as
     * `checkAccessToken` does, an API key looked up, or why nobody (`missing`: none presented).
     */
    identify(credentials: Credentials): Promise<Principal | CredentialRefusal>
    /**
     * Checks a room token (src/auth/room-token.ts) for `principal`'s `op` in `room`: when it is
     * valid, names this user, lists the op and covers the room, the time (epoch ms, clock
     * tolerance included) past which it grants nothing. Throws SB_ERR_INVALID_ROOM_TOKEN
     * (invalid or expired) or SB_ERR_FORBIDDEN (someone else's, another op or room, an API key).
     * It says nothing about the room itself: the room service still asks the store (the room
     * must exist, a ban wins).
     */
    checkRoomToken(token: string, principal: Principal, room: string, op: RoomTokenOp): Promise<number>
    /** onRequest hook: a user (JWT) or an API key must be presented. */
    authenticate: Hook
    /** onRequest hook: a signed-in user; API keys are refused with 403. */
    requireUser: Hook
    /** onRequest hook: a signed-in server admin. */
    requireAdmin: Hook
    /**
     * onRequest hook of the server API for backends (POST /broadcast, /admin/*): a signed-in
     * admin, or an API key with the `admin` scope (src/auth/scopes.ts).
     */
    requireServerApi: Hook
  }
  interface FastifyRequest {
    principal: Principal | null
  }
}

/** A JWT longer than this is refused unparsed: no legitimate access token comes near it. */
export const MAX_TOKEN_LENGTH = 8192
const REFRESH_SWEEP_INTERVAL_MS = 60 * 60 * 1000
const USER_ID = new RegExp(`^${USERNAME_PATTERN}$`)
/** Accounts whose last good check each node remembers (one per user active within ACCOUNT_CACHE_MS). */
const ACCOUNT_CACHE_ENTRIES = 100_000

/**
 * Authentication: access tokens signed by @fastify/jwt (HS256, the issuer, a short lifetime) and
 * verified by src/auth/access-token.ts (HS256 only, issuer checked, `exp` required, a small
 * clock tolerance), then checked against revocation (the token's session not revoked, its
 * account still active: src/auth/revocation.ts); every failure becomes 401. With an identity
 * provider configured (IDP_*), its tokens are verified by src/auth/external-token.ts instead,
 * each token routed to exactly one verifier by its issuer (src/auth/token-routing.ts). API keys
 * (X-API-Key) authenticate services and devices. Where each is read from a request is
 * src/auth/credentials.ts.
 */
export default fp(async (app) => {
  const { jwt } = app.config
  await app.register(fastifyJwt, {
    secret: jwt.secret,
    sign: { algorithm: 'HS256', iss: jwt.issuer, expiresIn: `${jwt.accessTokenTtlSeconds}s` },
    // Tokens are verified by checkAccessToken below, not by app.jwt.verify / request.jwtVerify;
    // these stay pinned to the same rules so that nothing calling them is ever looser.
    verify: {
      algorithms: ['HS256'],
      allowedIss: jwt.issuer,
      requiredClaims: ['exp', 'iat', 'iss', 'sub', 'jti', 'sid'],
      clockTolerance: jwt.clockToleranceSeconds * 1000
    }
  })

  const loginThrottle = createLoginThrottle({ ...app.config.loginThrottle, redis: app.redis, prefix: `${app.config.redis?.keyPrefix ?? 'sb:'}login-failures:`, log: app.log })
  const sessions = createSessionDenylist({
    windowMs: (jwt.accessTokenTtlSeconds + jwt.clockToleranceSeconds) * 1000,
    maxEntries: app.config.revocation.maxRevokedSessions,
    redis: app.redis,
    keyPrefix: app.config.redis?.keyPrefix ?? 'sb:',
    log: app.log
  })
  await sessions.start()
  app.addHook('onClose', async () => { sessions.close() })
  const accounts = createAccountStatus({ store: app.store, ttlMs: app.config.revocation.accountCacheMs, maxEntries: ACCOUNT_CACHE_ENTRIES })
  const revocations = createRevocations({ sessions, accounts })
  app.decorate('revocations', revocations)
  const auth = createAuthService({
    store: app.store,
    config: app.config,
    loginThrottle,
    revocations,
    signAccessToken: claims => app.jwt.sign(claims)
  })
  app.decorate('auth', auth)
  app.decorateRequest('principal', null)

  const checkToken = createAccessTokenVerifier({ secret: jwt.secret, issuer: jwt.issuer, clockToleranceMs: jwt.clockToleranceSeconds * 1000 })
  /** Switchboard's own token: HS256 with JWT_SECRET, its session not revoked, its account active. */
  async function checkOwnToken (token: string): Promise<UserPrincipal | AccessTokenRefusal> {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return 'invalid'
    const checked = checkToken(token)
    if (!checked.ok) return checked.reason
    const { sub, role, jti, exp, sid } = checked.claims
    // A correctly signed token with the wrong shape is still not ours to trust. Tokens signed
    // before sessions were named (no `sid`) are refused too: the client refreshes, once.
    if (!USER_ID.test(sub) || (role !== 'admin' && role !== 'user') || typeof sid !== 'string' || sid.length === 0) return 'invalid'
    if (sessions.isRevoked(sid)) return 'revoked'
    if (!(await accounts.isActive(sub))) return 'account_closed'
    return { kind: 'user', userId: sub, role, tokenId: jti, expiresAt: exp, sessionId: sid }
  }

  // The application's identity provider (docs/integration.md), when AUTH_ACCOUNTS lets its
  // users in. Its users have no account and no session here: nothing to check beyond the token.
  const { idp, accounts: accountKinds } = app.config
  const external = idp !== null && accountKinds !== 'builtin' ? createExternalTokenVerifier({ idp, log: app.log }) : null
  external?.keySet?.warm()
  const ownTokensAccepted = accountKinds !== 'external'
  async function checkExternalToken (verifier: ExternalTokenVerifier, token: string): Promise<UserPrincipal | AccessTokenRefusal> {
    const checked = await verifier.verify(token)
    if (!checked.ok) {
      app.log.debug({ reason: checked.detail }, 'identity provider token refused')
      return checked.reason
    }
    const { userId, admin, name, tokenId, expiresAt } = checked.identity
    // No account here, but an admin may have disabled the user (a Map lookup while it is known active).
    if (!(await accounts.isActive(userId))) return 'account_closed'
    return { kind: 'user', userId, role: admin ? 'admin' : 'user', tokenId, expiresAt, sessionId: null, external: { name } }
  }

  /** Routes a token to exactly one verifier by its issuer (src/auth/token-routing.ts); that verifier's verdict is final. */
  async function checkRoutedToken (verifier: ExternalTokenVerifier, token: string): Promise<UserPrincipal | AccessTokenRefusal> {
    // Before anything reads it: no payload of a 200 KB token is decoded to find its issuer.
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return 'invalid'
    switch (routeToken(token, { own: jwt.issuer, external: verifier.issuer })) {
      case 'own': return ownTokensAccepted ? await checkOwnToken(token) : 'invalid'
      case 'external': return await checkExternalToken(verifier, token)
      case null: return 'invalid'
    }
  }
  // Without an identity provider every token is ours: the handshake's path is the own check
  // itself, exactly as before the provider existed, not one call deeper.
  const checkAccessToken = external === null
    ? checkOwnToken
    : async (token: string): Promise<UserPrincipal | AccessTokenRefusal> => await checkRoutedToken(external, token)
  app.decorate('checkAccessToken', checkAccessToken)
  app.decorate('verifyAccessToken', async (token: string): Promise<UserPrincipal> => {
    const checked = await checkAccessToken(token)
    if (typeof checked === 'string') throw new Errors.InvalidToken()
    return checked
  })

  const roomTokens = createRoomTokenVerifier({
    secret: app.config.roomTokens.secret,
    maxTtlSeconds: app.config.roomTokens.maxTtlSeconds,
    clockToleranceSeconds: jwt.clockToleranceSeconds,
    external,
    externalUserPrefix: idp?.userPrefix ?? 'ext:',
    externalClockToleranceSeconds: idp?.clockToleranceSeconds ?? jwt.clockToleranceSeconds
  })
  app.decorate('checkRoomToken', async (token: string, principal: Principal, room: string, op: RoomTokenOp): Promise<number> => {
    if (principal.kind !== 'user') throw new Errors.Forbidden('Room tokens are for users; an API key acts by its scopes')
    const checked = await roomTokens.verify(token)
    if (!checked.ok) {
      app.log.debug({ reason: checked.detail, room }, 'room token refused')
      throw new Errors.InvalidRoomToken()
    }
    const { grant, toleranceSeconds } = checked
    if (grant.userId !== principal.userId) throw new Errors.Forbidden('The room token belongs to another user')
    if (!roomTokenCovers(grant, room, op)) throw new Errors.Forbidden(`The room token does not grant ${op} in ${room}`)
    return (grant.expiresAt + toleranceSeconds) * 1000
  })

  async function identify (credentials: Credentials): Promise<Principal | CredentialRefusal> {
    switch (credentials.kind) {
      case 'token': return await checkAccessToken(credentials.token)
      case 'apiKey': return await auth.authenticateApiKey(credentials.key) ?? 'invalid'
      case 'malformed': return 'invalid'
      case 'none': return 'missing'
    }
  }
  app.decorate('identify', identify)

  /** A REST request's principal: its headers' credentials, or the 401 they earn. */
  async function principalOf (request: FastifyRequest): Promise<Principal> {
    const principal = await identify(readCredentials(request, 'http'))
    if (typeof principal === 'string') throw credentialError(principal)
    return principal
  }

  app.decorate('authenticate', async (request: FastifyRequest) => {
    request.principal = await principalOf(request)
  })
  app.decorate('requireUser', async (request: FastifyRequest) => {
    request.principal = await principalOf(request)
    if (request.principal.kind !== 'user') throw new Errors.Forbidden('This operation needs a signed-in user, not an API key')
  })
  app.decorate('requireAdmin', async (request: FastifyRequest) => {
    request.principal = await principalOf(request)
    if (request.principal.kind !== 'user' || request.principal.role !== 'admin') throw new Errors.Forbidden('Administrators only')
  })
  app.decorate('requireServerApi', async (request: FastifyRequest) => {
    const principal = request.principal = await principalOf(request)
    const allowed = principal.kind === 'user' ? principal.role === 'admin' : hasAdminScope(principal.scopes)
    if (!allowed) throw new Errors.Forbidden('Administrators or API keys with the admin scope only')
  })

  // Expired refresh tokens are useless but would pile up forever; sweep them hourly.
  const sweep = setInterval(() => {
    app.store.deleteExpiredRefreshTokens(Date.now())
      .then(count => { if (count > 0) app.log.info({ count }, 'expired refresh tokens removed') })
      .catch((err: unknown) => app.log.warn({ err }, 'refresh token sweep failed'))
  }, REFRESH_SWEEP_INTERVAL_MS)
  sweep.unref()
  app.addHook('onClose', async () => { clearInterval(sweep) })

  const admin = app.config.admin
  if (admin !== null) {
    if (await auth.ensureAdmin(admin.username, admin.password)) app.log.info({ user: admin.username }, 'bootstrap admin created')
    else if (await app.store.isUsernameRetired(admin.username)) app.log.warn({ user: admin.username }, 'ADMIN_USERNAME names a deleted account, which is never recreated: choose another name')
  }
  if (app.config.jwt.generated) {
    app.log.warn('JWT_SECRET is not set: using a development secret generated under DATA_DIR; set JWT_SECRET in production')
  }
}, { name: 'auth', dependencies: ['config', 'store', 'redis'] })
