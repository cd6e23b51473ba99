import { Type, type Static, type TSchema } from '@sinclair/typebox'

/** Built-in accounts: the username is the user id, lowercase, immutable, safe in URLs and room names. */
export const USERNAME_PATTERN = '[a-z0-9][a-z0-9_.-]{2,31}'
/**
 * The prefix of the users of the application's identity provider (IDP_USER_PREFIX): a
 * lowercase word and a colon. No username holds a colon, so no external id equals one.
 */
export const EXTERNAL_PREFIX_PATTERN = '[a-z][a-z0-9_-]{0,15}:'
/**
 * What follows the prefix: the identity provider's own id (`auth0|abc`, `google-oauth2|123`, a
 * UUID, an e-mail address), printable ASCII without spaces, quotes, slashes, braces or `%`,
 * so that it is safe in logs, URL paths and Redis keys; bounded so it cannot bloat either.
 */
export const EXTERNAL_SUBJECT_PATTERN = '[A-Za-z0-9._~@|+=:-]{1,128}'

export const UsernameSchema = Type.String({ pattern: `^${USERNAME_PATTERN}$`, description: 'Username of a built-in account', examples: ['alice'] })

/** A user id: a built-in username, or an identity provider's user under its prefix (docs/integration.md). */
export const UserIdSchema = Type.String({
  pattern: `^(${USERNAME_PATTERN}|${EXTERNAL_PREFIX_PATTERN}${EXTERNAL_SUBJECT_PATTERN})$`,
  description: 'User id: the username of a built-in account, or `ext:<id>` for a user of the application\'s identity provider',
  examples: ['alice', 'ext:auth0|5f7c8ec7c33c6c004bbafe82']
})

/** Room ids are slugs; a `ns:name` form gives namespaces. */
export const RoomIdSchema = Type.String({ pattern: '^[a-z0-9][a-z0-9_.:-]{0,63}$', description: 'Room id (slug, `ns:name` allowed)', examples: ['lobby', 'chat:general'] })

export const PasswordSchema = Type.String({ minLength: 8, maxLength: 128, description: '8 to 128 characters' })

export const TimestampSchema = Type.Integer({ description: 'Epoch milliseconds' })

/** The one error shape of every 4xx/5xx response. */
export const ErrorResponseSchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'Stable machine-readable code, e.g. SB_ERR_ROOM_NOT_FOUND' }),
  error: Type.String({ description: 'HTTP status text' }),
  message: Type.String()
}, { $id: 'ErrorResponse', title: 'ErrorResponse' })

export type ErrorResponse = Static<typeof ErrorResponseSchema>

export const ErrorRef = Type.Ref(ErrorResponseSchema)

/** Keyset pagination: pass the previous page's `nextCursor` as `after`. */
export const PageQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 50 }),
  after: Type.Optional(Type.String({ maxLength: 128, description: 'Cursor: the last id of the previous page' }))
})

export function pageOf<T extends TSchema> (item: T) {
  return Type.Object({
    items: Type.Array(item),
    nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `after` for the next page; null on the last page' })
  })
}

/** Standard error responses a route may produce, keyed by status, for route schemas. */
export function errorResponses (...codes: number[]): Record<number, typeof ErrorRef> {
  const out: Record<number, typeof ErrorRef> = {}
  for (const code of codes) out[code] = ErrorRef
  return out
}

/** OpenAPI security requirements, typed for route schemas. */
export type Security = Array<Record<string, string[]>>
