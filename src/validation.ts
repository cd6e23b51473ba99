import { Ajv, type Options } from 'ajv'
import addFormatsModule from 'ajv-formats'
import type { FastifySchemaCompiler } from 'fastify'
import type { TSchema } from '@sinclair/typebox'

// ajv-formats is CommonJS; under NodeNext its default export arrives one level down.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default

/**
 * Request validation with one Ajv per HTTP part. JSON bodies must match their schema
 * exactly: no type coercion (coercion would turn `0` into `null` for a nullable field) and no
 * silently dropped extra properties. Query strings, params and headers arrive as text, so
 * those are coerced to the declared types.
 */
export function createValidatorCompiler (sharedSchemas: TSchema[]): FastifySchemaCompiler<TSchema> {
  const common: Options = { removeAdditional: false, useDefaults: true, allErrors: false, strict: false }
  const body = addFormats(new Ajv({ ...common, coerceTypes: false }))
  const text = addFormats(new Ajv({ ...common, coerceTypes: 'array' }))
  for (const schema of sharedSchemas) {
    body.addSchema(schema)
    text.addSchema(schema)
  }
  return ({ schema, httpPart, contentType }) => {
    // Raw bytes (POST /rooms/:id/messages) arrive as a Buffer that their parser read and
    // bounded: their schema documents them in OpenAPI, it has nothing to check.
    if (httpPart === 'body' && contentType === 'application/octet-stream') return () => true
    return (httpPart === 'body' ? body : text).compile(schema)
  }
}
