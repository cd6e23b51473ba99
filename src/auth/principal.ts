import type { UserRole } from '../store/types.js'

/** Who made a request: a signed-in user (JWT) or a service/device (API key). */
export type Principal = UserPrincipal | ApiKeyPrincipal

export interface UserPrincipal {
  kind: 'user'
  userId: string
  role: UserRole
  /** The access token's jti and expiry (epoch seconds), for logs and live expiry. */
  tokenId: string
  expiresAt: number
  /** The sign-in the token belongs to (its `sid` claim, the refresh-token family): what revocation ends. */
  sessionId: string
}

export interface ApiKeyPrincipal {
  kind: 'apiKey'
  keyId: string
  name: string
  scopes: string[]
}

export function isAdmin (principal: Principal | null): boolean {
  return principal?.kind === 'user' && principal.role === 'admin'
}
