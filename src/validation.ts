import { Ajv, type Options } from 'ajv'
import addFormatsModule from 'ajv-formats'
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify'
import type { SchemaErrorFormatter } from 'fastify/types/schema.js'
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

/**
 * The message of a 400 for a request that fails its schema, naming what to fix: an unknown
 * property by its name (Ajv's own message says only that there is one), a choice by its
 * allowed values (a TypeBox union of literals fails each branch, and Ajv would repeat
 * "must be equal to constant" once per value), anything else as Ajv words it.
 */
export const formatValidationErrors: SchemaErrorFormatter = (errors, dataVar) => {
  const byPath = new Map<string, FastifySchemaValidationError[]>()
  for (const error of errors) byPath.set(error.instancePath, [...byPath.get(error.instancePath) ?? [], error])
  const parts: string[] = []
  for (const [path, group] of byPath) {
    const where = `${dataVar}${path}`
    const allowed = group.flatMap(e => e.keyword === 'const' ? [e.params.allowedValue] : e.keyword === 'enum' ? e.params.allowedValues as unknown[] : [])
    if (allowed.length > 0 && group.every(e => ['const', 'enum', 'anyOf'].includes(e.keyword))) {
      parts.push(`${where} must be one of ${allowed.map(v => JSON.stringify(v)).join(', ')}`)
      continue
    }
    for (const error of group) {
      parts.push(error.keyword === 'additionalProperties'
        ? `${where} has an unknown property "${String(error.params.additionalProperty)}"`
        : `${where} ${error.message ?? 'is invalid'}`)
    }
  }
  return new Error(parts.join('; '))
}
