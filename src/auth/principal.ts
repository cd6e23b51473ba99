import type { UserRole } from '../store/types.js'

/**
 * Who made a request: a signed-in user (a JWT, Switchboard's own or the application's identity
 * provider's) or a service/device (API key).
 */
export type Principal = UserPrincipal | ApiKeyPrincipal

export interface UserPrincipal {
  kind: 'user'
  userId: string
  role: UserRole
  /** The access token's jti (null when an identity provider's token has none) and expiry (epoch seconds), for logs and live expiry. */
  tokenId: string | null
  expiresAt: number
  /**
   * The sign-in the token belongs to (its `sid` claim, the refresh-token family): what revocation
   * ends. Null for an identity provider's token: Switchboard holds no session for it.
   */
  sessionId: string | null
  /** Set for a user of the application's identity provider (no Switchboard account): the display name its token gave. */
  external?: { name: string | null }
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
