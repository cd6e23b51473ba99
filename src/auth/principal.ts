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
