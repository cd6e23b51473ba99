import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import {
  errorFrame, presenceFrame, reconnectFrame, replyFrame, unsubscribedFrame, welcomeFrame, welcomeSettings
} from '@switchboard/protocol/frames'
import { messageText } from '../../src/realtime/publication-frames.js'
import type { Publication } from '../../src/realtime/engine.js'
import { SERVER_FRAME_SCHEMAS, UNSUBSCRIBE_REASONS, type UnsubscribeReason } from '@switchboard/protocol/messages'

/** The schema a frame of this type must follow (by its `title`, which names the AsyncAPI message too). */
function schemaOf (type: string): TSchema {
  const title = type === 'join' || type === 'leave' ? 'join / leave' : type
  const schema = SERVER_FRAME_SCHEMAS.find(s => s.title === title)
  assert.ok(schema, `a schema titled ${title}`)
  return schema
}

function assertFollowsSchema (text: string): Record<string, unknown> {
  const frame = JSON.parse(text) as Record<string, unknown>
  const check = TypeCompiler.Compile(schemaOf(frame.type as string))
  assert.ok(check.Check(frame), `${text}: ${[...check.Errors(frame)].map(e => `${e.path} ${e.message}`).join('; ')}`)
  return frame
}

describe('frame builders (packages/protocol/src/frames.ts, publications: src/realtime/publication-frames.ts)', () => {
  const limits = { maxMessageBytes: 65536, messagesPerSecond: 50, messagesBurst: 100, maxSubscriptions: 100, maxBufferedBytes: 1 << 20, idleTimeoutMs: 60_000 }
  // The server's publications carry their payload as the JSON text it was published as.
  const publication: Publication = { offset: 7, payload: JSON.stringify({ text: 'hi', n: [1, 2] }), kind: 'json', from: { id: 'alice' }, ts: 1_700_000_000_000 }

  it('build every server frame type, each valid against its schema', () => {
    const frames = [
      welcomeFrame('c-1', { id: 'alice', role: 'user' }, welcomeSettings(25_000, limits), 1_700_000_060_000),
      welcomeFrame('c-2', { id: 'key:svc', role: 'apiKey' }, welcomeSettings(25_000, limits), null),
      replyFrame(1, { epoch: 'e', offset: 3 }),
      replyFrame('a', {}),
      errorFrame('x', { code: 'rate_limited', message: 'slow down', temporary: true, retryAfterMs: 250 }),
      errorFrame(undefined, { code: 'bad_request', message: 'frame is not valid JSON', temporary: false }),
      messageText('lobby', 'e1', publication),
      presenceFrame('join', 'lobby', { id: 'bob' }),
      presenceFrame('leave', 'lobby', { id: 'bob' }),
      ...Object.keys(UNSUBSCRIBE_REASONS).map(reason => unsubscribedFrame('lobby', reason as UnsubscribeReason)),
      reconnectFrame(1500)
    ]
    const types = new Set(frames.map(text => assertFollowsSchema(text).type))
    const schemaTypes = SERVER_FRAME_SCHEMAS.flatMap(schema => {
      const type = schema.properties.type as { const?: string, anyOf?: Array<{ const: string }> }
      return type.anyOf?.map(t => t.const) ?? [type.const!]
    })
    assert.deepEqual([...types].sort(), schemaTypes.sort(), 'a builder for every server frame type')
  })

  it('keep the keys in schema order and omit what is absent (the bytes clients have always seen)', () => {
    assert.equal(errorFrame(undefined, { code: 'bad_request', message: 'm', temporary: false }),
      '{"type":"error","error":{"code":"bad_request","message":"m","temporary":false}}')
    assert.equal(errorFrame(4, { code: 'unavailable', message: 'm', temporary: true, retryAfterMs: 10 }),
      '{"type":"error","id":4,"error":{"code":"unavailable","message":"m","temporary":true,"retryAfterMs":10}}')
    assert.equal(messageText('r', 'e', publication),
      '{"type":"message","room":"r","epoch":"e","offset":7,"data":{"text":"hi","n":[1,2]},"from":{"id":"alice"},"ts":1700000000000}')
    assert.equal(welcomeFrame('c', { id: 'u', role: 'admin' }, welcomeSettings(1000, limits), null),
      '{"type":"welcome","protocol":"switchboard.v1","connectionId":"c","user":{"id":"u","role":"admin"},"heartbeatMs":1000,' +
      '"limits":{"maxMessageBytes":65536,"messagesPerSecond":50,"messagesBurst":100,"maxSubscriptions":100,"maxBufferedBytes":1048576,"idleTimeoutMs":60000},"tokenExpiresAt":null}')
  })
})
