import { Type } from '@sinclair/typebox'
import { ScopeSchema } from '../auth/scopes.js'
import { TimestampSchema } from './common.js'

export const ApiKeySchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  name: Type.String(),
  prefix: Type.String({ description: 'First characters of the key, to tell keys apart' }),
  scopes: Type.Array(Type.String()),
  createdBy: Type.String(),
  createdAt: TimestampSchema,
  lastUsedAt: Type.Union([TimestampSchema, Type.Null()])
}, { $id: 'ApiKey', title: 'ApiKey' })

export const CreateApiKeyBodySchema = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 100 }),
  scopes: Type.Array(ScopeSchema, { minItems: 1, maxItems: 50, uniqueItems: true })
}, { additionalProperties: false })

export const CreatedApiKeySchema = Type.Object({
  key: Type.String({ description: 'The key itself. Shown once: store it now.' }),
  apiKey: Type.Ref(ApiKeySchema)
})
