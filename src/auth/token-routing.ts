/**
 * Which verifier a bearer token goes to, decided by its issuer (docs/security.md, "Whose
 * token is it"). Switchboard's own access tokens carry JWT_ISSUER, the identity provider's
 * IDP_ISSUER (the config refuses the two being equal); the issuer is read from the payload
 * *before* any verification, and the token is then verified strictly by exactly that one
 * verifier, whose verdict is final. A token refused by one is never offered to the other, and
 * each verifier checks `iss` again, so reading it unverified here widens nothing: a token
 * claiming the wrong issuer just meets a verifier that refuses it.
 */
export type TokenRoute = 'own' | 'external' | null

export interface TokenIssuers {
  own: string
  external: string
}

/** The route of `token` by its unverified `iss`; null when it names neither issuer or cannot be read. */
export function routeToken (token: string, issuers: TokenIssuers): TokenRoute {
  const issuer = unverifiedIssuer(token)
  if (issuer === issuers.own) return 'own'
  if (issuer === issuers.external) return 'external'
  return null
}

/** The `iss` string of a compact JWS's payload, unverified; undefined when there is none to read. */
export function unverifiedIssuer (token: string): string | undefined {
  const first = token.indexOf('.')
  const second = first === -1 ? -1 : token.indexOf('.', first + 1)
  if (second === -1) return undefined
  try {
    const payload: unknown = JSON.parse(Buffer.from(token.slice(first + 1, second), 'base64url').toString('utf8'))
    if (typeof payload !== 'object' || payload === null) return undefined
    const { iss } = payload as { iss?: unknown }
    return typeof iss === 'string' ? iss : undefined
  } catch {
    return undefined
  }
}
