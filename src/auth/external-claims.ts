import { EXTERNAL_SUBJECT_PATTERN } from '../schemas/common.js'
import type { IdpConfig } from '../config.js'

/**
 * The claims mapping of the application's identity provider (docs/integration.md, "Your own
 * identity provider"): which claim names the user, which makes an admin, which gives a display
 * name. Pure functions of a verified token's payload; the verifier (external-token.ts) calls
 * them after the signature and the registered claims were checked.
 */

export type ClaimsMapping = Pick<IdpConfig, 'userClaim' | 'userPrefix' | 'admin' | 'nameClaim'>

export interface ExternalUser {
  /** The claim's value under the prefix: `ext:auth0|abc`. */
  userId: string
  admin: boolean
  name: string | null
}

const SUBJECT = new RegExp(`^${EXTERNAL_SUBJECT_PATTERN}$`)
/** Longer display names are ignored rather than cut: a cut name may read as someone else's. */
const MAX_NAME_LENGTH = 128
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

/**
 * A claim's value: the top-level claim of that name when there is one (Auth0's namespaced
 * `https://example.com/roles`), else the dotted path into nested objects (Keycloak's
 * `realm_access.roles`). Undefined when absent. Only own properties are read, so `__proto__`
 * or `constructor` name nothing.
 */
export function claimAt (payload: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(payload, name)) return payload[name]
  let value: unknown = payload
  for (const part of name.split('.')) {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, part)) return undefined
    value = (value as Record<string, unknown>)[part]
  }
  return value
}

/**
 * Who a verified payload names, or null when its user claim is missing or unusable: not a
 * string (or a safe integer), empty, longer than 128 characters, or holding anything but
 * `A-Z a-z 0-9 . _ ~ @ | + = : -` (so no control character, space, slash or quote reaches a
 * log line, a URL or a store key).
 */
export function mapExternalClaims (payload: Record<string, unknown>, mapping: ClaimsMapping): ExternalUser | null {
  const raw = claimAt(payload, mapping.userClaim)
  const subject = typeof raw === 'string' ? raw : Number.isSafeInteger(raw) ? String(raw) : null
  if (subject === null || !SUBJECT.test(subject)) return null
  return {
    userId: mapping.userPrefix + subject,
    admin: mapping.admin !== null && claimHolds(claimAt(payload, mapping.admin.claim), mapping.admin.value),
    name: mapping.nameClaim === null ? null : displayName(claimAt(payload, mapping.nameClaim))
  }
}

/** A string claim equal to `value`, or an array of strings (roles, groups) holding it. */
function claimHolds (claim: unknown, value: string): boolean {
  if (typeof claim === 'string') return claim === value
  return Array.isArray(claim) && claim.some(entry => entry === value)
}

function displayName (claim: unknown): string | null {
  if (typeof claim !== 'string') return null
  const name = claim.trim()
  return name.length === 0 || name.length > MAX_NAME_LENGTH || CONTROL.test(name) ? null : name
}

/** Whether `userId` is a user of the identity provider configured with `prefix`. */
export function isExternalUserId (userId: string, prefix: string): boolean {
  return userId.startsWith(prefix) && SUBJECT.test(userId.slice(prefix.length))
}

/**
 * Whether `userId` can be a built-in account's: usernames never hold a colon, every external
 * id does (its prefix ends with one). A built-in account must exist to be used; an external
 * user needs no row, only a disabled one refuses it (src/auth/account-status.ts).
 */
export function isBuiltinUserId (userId: string): boolean {
  return !userId.includes(':')
}
