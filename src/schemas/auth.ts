import { Type, type Static } from '@sinclair/typebox'
import { PasswordSchema, TimestampSchema, UserIdSchema, UsernameSchema } from './common.js'

export const UserSchema = Type.Object({
  id: UserIdSchema,
  role: Type.Union([Type.Literal('admin'), Type.Literal('user')]),
  createdAt: TimestampSchema,
  disabled: Type.Boolean({ description: 'A disabled account cannot sign in and its tokens are refused (PATCH /users/:id)' })
}, { $id: 'User', title: 'User' })
export type UserDto = Static<typeof UserSchema>

export const CredentialsSchema = Type.Object({
  username: UsernameSchema,
  password: PasswordSchema
}, { additionalProperties: false })

/**
 * Sign-in takes any password up to a bound: one shorter than the registration rule is a wrong
 * password like any other (401 invalid username or password), not a 400 that tells a guesser
 * the rule or a user that this was not their password.
 */
export const LoginSchema = Type.Object({
  username: UsernameSchema,
  password: Type.String({ minLength: 1, maxLength: 1024 })
}, { additionalProperties: false })

/** Refresh tokens are 43 base64url characters; the bound keeps junk out of the database query. */
export const RefreshTokenSchema = Type.String({ minLength: 1, maxLength: 256 })

export const RefreshBodySchema = Type.Object({ refreshToken: RefreshTokenSchema }, { additionalProperties: false })

export const TokenPairSchema = Type.Object({
  accessToken: Type.String({ description: 'JWT (HS256) for `Authorization: Bearer`' }),
  refreshToken: Type.String({ description: 'Opaque, single use: exchange at /auth/refresh' }),
  expiresIn: Type.Integer({ description: 'Access token lifetime in seconds' }),
  tokenType: Type.Literal('Bearer'),
  user: Type.Ref(UserSchema)
})

/** POST /auth/password: a user changes their own password. */
export const ChangePasswordBodySchema = Type.Object({
  currentPassword: Type.String({ minLength: 1, maxLength: 128 }),
  newPassword: PasswordSchema
}, { additionalProperties: false })

/** PATCH /users/:id: what an admin changes on an account; at least one of them. */
export const UserPatchSchema = Type.Object({
  disabled: Type.Optional(Type.Boolean({ description: 'true: the account cannot sign in, its tokens stop and its sockets close (4504) on every node; false: it may sign in again' })),
  role: Type.Optional(Type.Union([Type.Literal('admin'), Type.Literal('user')], { description: 'Server role. Losing `admin` signs the user out everywhere (the role is in the access token)' }))
}, { additionalProperties: false, minProperties: 1 })

/** POST /users: an admin creates an account. */
export const CreateUserBodySchema = Type.Object({
  username: UsernameSchema,
  password: PasswordSchema,
  role: Type.Optional(Type.Union([Type.Literal('admin'), Type.Literal('user')], { default: 'user' }))
}, { additionalProperties: false })

/** POST /users/:id/password: an admin sets a user's password. */
export const SetPasswordBodySchema = Type.Object({ password: PasswordSchema }, { additionalProperties: false })

export const MeSchema = Type.Union([
  Type.Object({
    kind: Type.Literal('user'),
    user: Type.Ref(UserSchema),
    tokenExpiresAt: Type.Integer({ description: 'When the access token expires, in epoch milliseconds like every time in the API and the welcome frame' }),
    source: Type.Union([Type.Literal('builtin'), Type.Literal('external')], { description: 'builtin: a Switchboard account; external: a user of the application\'s identity provider' }),
    name: Type.Optional(Type.String({ description: 'Display name from the identity provider\'s token (IDP_NAME_CLAIM)' }))
  }),
  Type.Object({ kind: Type.Literal('apiKey'), apiKey: Type.Object({ id: Type.String(), name: Type.String(), scopes: Type.Array(Type.String()) }) })
])
