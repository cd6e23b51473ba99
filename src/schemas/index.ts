import { ErrorResponseSchema } from './common.js'
import { UserSchema } from './auth.js'
import { ApiKeySchema } from './api-keys.js'
import { BanSchema, MembershipSchema, RoomSchema } from './rooms.js'

/** Schemas with an $id, added to the app once so routes can `Type.Ref` them and /docs names them. */
export const SHARED_SCHEMAS = [ErrorResponseSchema, UserSchema, ApiKeySchema, RoomSchema, MembershipSchema, BanSchema]
