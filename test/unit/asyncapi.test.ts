import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import type { TSchema } from '@sinclair/typebox'
import { buildAsyncApi, type AsyncApiDocument } from '@switchboard/protocol/asyncapi'
import { COMMAND_SCHEMAS, ERROR_CODES, SERVER_FRAME_SCHEMAS, UNSUBSCRIBE_REASONS } from '@switchboard/protocol/messages'
import { CloseCodes, isReconnectCode } from '@switchboard/protocol/close-codes'

function messageByName (doc: AsyncApiDocument, name: string) {
  return Object.values(doc.components.messages).find(m => m.name === name)
}

/** The payload must be the TypeBox schema itself, property for property. */
function assertSameShape (payload: Record<string, unknown>, schema: TSchema, label: string): void {
  assert.equal(payload.type, schema.type, label)
  assert.deepEqual(Object.keys(payload.properties as object), Object.keys(schema.properties as object), label)
  assert.deepEqual(payload.required, schema.required, label)
  assert.deepEqual(payload, JSON.parse(JSON.stringify(schema)), label)
}

describe('AsyncAPI document', () => {
  const doc = buildAsyncApi({ version: '1.2.3' })

  it('is AsyncAPI 2.6.0 with one /ws channel', () => {
    assert.equal(doc.asyncapi, '2.6.0')
    assert.equal(doc.info.version, '1.2.3')
    assert.deepEqual(Object.keys(doc.channels), ['/ws'])
    assert.equal(doc.servers, undefined)
  })

  it('has a message for every command, with the command schema as payload, in `publish`', () => {
    const channel = doc.channels['/ws'] as { publish: { message: { oneOf: Array<{ $ref: string }> } } }
    const refs = channel.publish.message.oneOf.map(m => m.$ref)
    for (const [type, schema] of Object.entries(COMMAND_SCHEMAS)) {
      const message = messageByName(doc, type)
      assert.ok(message, `no message for command ${type}`)
      assert.ok(refs.includes(`#/components/messages/${message.messageId}`), `${type} not in publish`)
      assertSameShape(message.payload, schema, type)
    }
    assert.equal(refs.length, Object.keys(COMMAND_SCHEMAS).length)
  })

  it('has a message for every server frame, named by its title, in `subscribe`', () => {
    const channel = doc.channels['/ws'] as { subscribe: { message: { oneOf: Array<{ $ref: string }> } } }
    const refs = channel.subscribe.message.oneOf.map(m => m.$ref)
    for (const schema of SERVER_FRAME_SCHEMAS) {
      const title = schema.title!
      const message = messageByName(doc, title)
      assert.ok(message, `no message for frame ${title}`)
      assert.match(message.messageId, /^[\w.-]+$/)
      assert.ok(refs.includes(`#/components/messages/${message.messageId}`), `${title} not in subscribe`)
      assertSameShape(message.payload, schema, title)
    }
    assert.equal(refs.length, SERVER_FRAME_SCHEMAS.length)
  })

  it('every $ref resolves inside the document', () => {
    const text = JSON.stringify(doc)
    for (const [, pointer] of text.matchAll(/"\$ref":"#\/([^"]+)"/g)) {
      let node: unknown = doc
      for (const part of pointer!.split('/')) node = (node as Record<string, unknown>)[part]
      assert.ok(node !== undefined, pointer)
    }
  })

  it('lists every error code and close code, and the security schemes', () => {
    assert.deepEqual(doc['x-error-codes'], ERROR_CODES)
    const error = messageByName(doc, 'error')!
    for (const code of Object.keys(ERROR_CODES)) assert.ok(error.description?.includes(`\`${code}\``), code)
    const closeCodes = (doc['x-close-codes'] as Array<{ code: number, reconnect: boolean }>)
    assert.deepEqual(closeCodes.map(c => c.code).sort(), Object.values(CloseCodes).sort())
    assert.equal(closeCodes.find(c => c.code === 1012)?.reconnect, true)
    assert.equal(closeCodes.find(c => c.code === 4500)?.reconnect, false)
    for (const code of Object.values(CloseCodes)) assert.ok(doc.info.description.includes(`| ${code} |`), String(code))
    const schemes = doc.components.securitySchemes
    assert.deepEqual(schemes.bearerHeader, { ...schemes.bearerHeader, type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
    assert.equal(schemes.bearerSubprotocol?.name, 'Sec-WebSocket-Protocol')
    assert.deepEqual([schemes.bearerQuery?.in, schemes.bearerQuery?.name], ['query', 'token'])
    assert.deepEqual([schemes.apiKeyHeader?.in, schemes.apiKeyHeader?.name], ['header', 'X-API-Key'])
    assert.deepEqual([schemes.apiKeyQuery?.in, schemes.apiKeyQuery?.name], ['query', 'api_key'])
  })

  it('is plain JSON: it survives a round trip unchanged and holds no symbol keys', () => {
    const text = JSON.stringify(doc)
    assert.deepEqual(JSON.parse(text), doc)
    const stack: unknown[] = [doc]
    while (stack.length > 0) {
      const node = stack.pop()
      if (typeof node !== 'object' || node === null) continue
      assert.equal(Object.getOwnPropertySymbols(node).length, 0)
      stack.push(...Object.values(node))
    }
  })

  it('adds a ws(s) server when given a URL', () => {
    const withServer = buildAsyncApi({ version: '1', serverUrl: 'https://rt.example.com' })
    assert.deepEqual((withServer.servers as Record<string, { url: string, protocol: string }>).switchboard, {
      ...(withServer.servers as Record<string, object>).switchboard,
      url: 'wss://rt.example.com',
      protocol: 'wss'
    })
  })
})

describe('docs/protocol.md', () => {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
  const row = (first: string) => doc.split('\n').find(line => line.startsWith(`| ${first} |`))

  it('shows every command and every server frame type in an example', () => {
    const frameTypes = SERVER_FRAME_SCHEMAS.flatMap(schema => {
      const type = schema.properties.type as { const?: string, anyOf?: Array<{ const: string }> }
      return type.anyOf?.map(t => t.const) ?? [type.const!]
    })
    for (const type of [...Object.keys(COMMAND_SCHEMAS), ...frameTypes]) assert.ok(doc.includes(`{ "type": "${type}"`) || doc.includes(`"type": "${type}",`), type)
  })

  it('has a row for every error code, close code and unsubscribe reason, with the right reconnect advice', () => {
    for (const code of Object.keys(ERROR_CODES)) assert.ok(row(`\`${code}\``), code)
    for (const reason of Object.keys(UNSUBSCRIBE_REASONS)) assert.ok(row(`\`${reason}\``), reason)
    for (const code of Object.values(CloseCodes)) {
      const line = row(String(code))
      assert.ok(line, String(code))
      assert.match(line, isReconnectCode(code) ? /\| \*\*yes\*\*/ : /\| no( \(.*\))? \|$/, String(code))
    }
  })
})
