// The MessagePack reader (switchboard.v1.msgpack) under attack: random bytes, mutated commands,
// values with no JSON form, hostile lengths and nesting. Every frame gets exactly one answer
// (a reply, or bad_request), the connection and the process survive, Object.prototype stays
// untouched; the JSON envelope's fuzzing is in frames.test.ts.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { build, wsConnect, type WsClient, type WsFrame } from '../helper.js'
import { encodeMsgpack } from '@switchboard/protocol/msgpack'
import { MSGPACK_PROTOCOL_VERSION } from '@switchboard/protocol/messages'
import { parseMsgpackCommand } from '../../src/realtime/command-parser.js'
import { assertReply } from '../ws-support.js'

let probeSeq = 0

/**
 * Sends one binary frame, then a ping marker; returns the answers (replies and errors, not the
 * pushes of a room a mutated command may have subscribed to) that arrived before the marker's reply.
 */
async function probe (client: WsClient, bytes: Uint8Array): Promise<WsFrame[]> {
  const start = client.frames.length
  const marker = `probe-${++probeSeq}`
  client.send(bytes)
  client.send({ type: 'ping', id: marker })
  await client.next(f => f.type === 'reply' && f.id === marker)
  const end = client.frames.findIndex((f, i) => i >= start && f.type === 'reply' && f.id === marker)
  return client.frames.slice(start, end).filter(f => f.type === 'reply' || f.type === 'error')
}

/**
 * Exactly one answer: for a frame the reader refuses, bad_request (with the id when one could
 * be read); for one it accepts, a reply or the command's own refusal (a mutated room name may
 * name no room), never an internal error.
 */
async function expectOneAnswer (client: WsClient, bytes: Uint8Array, { replyAllowed = true } = {}): Promise<WsFrame> {
  const answers = await probe(client, bytes)
  const shown = `${Buffer.from(bytes).subarray(0, 60).toString('hex')} → ${JSON.stringify(answers).slice(0, 400)}`
  assert.equal(answers.length, 1, shown)
  const answer = answers[0]!
  const parsed = parseMsgpackCommand(bytes)
  if (answer.type === 'reply') {
    assert.ok(replyAllowed && parsed.ok, shown)
    return answer
  }
  assert.equal(answer.type, 'error', shown)
  if (parsed.ok) {
    assert.notEqual(answer.error.code, 'internal', shown)
  } else {
    assert.equal(answer.error.code, 'bad_request', shown)
    assert.equal(answer.id, parsed.id, shown)
  }
  return answer
}

/** A MessagePack value of any kind msgpackr writes, JSON-able or not. */
const anyValue: fc.Arbitrary<unknown> = fc.letrec(tie => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.jsonValue({ maxDepth: 2 }),
    fc.uint8Array({ maxLength: 16 }),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
    fc.date({ noInvalidDate: true }),
    fc.double(),
    fc.array(tie('value'), { maxLength: 3 }),
    fc.array(fc.tuple(fc.oneof(fc.string(), fc.integer(), fc.boolean()), tie('value')), { maxLength: 3 }).map(entries => new Map(entries))
  )
})).value

const TEMPLATES = [
  { type: 'publish', id: 'x', room: 'fuzz', data: new Uint8Array([0, 255]) },
  { type: 'publish', id: 'x', room: 'fuzz', data: { a: [1, 'b'] } },
  { type: 'subscribe', id: 'x', room: 'fuzz', since: { epoch: 'e', offset: 0 } },
  { type: 'history', id: 'x', room: 'fuzz', limit: 3 },
  { type: 'ping', id: 7 }
]

describe('MessagePack envelope fuzzing', () => {
  it('every frame gets one reply or one bad_request; the connection survives; Object.prototype untouched', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '1000000', WS_MESSAGES_BURST: '1000000' } })
    const token = await srv.userToken('fuzzer')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'fuzz' } })).status, 201)
    const client = await wsConnect(t, srv, { token, protocols: [MSGPACK_PROTOCOL_VERSION] })
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort()
    for (const template of TEMPLATES) assert.ok(parseMsgpackCommand(encodeMsgpack(template)).ok, JSON.stringify(template))

    await t.test('random bytes', async () => {
      await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => {
        await expectOneAnswer(client, bytes)
      }), { numRuns: 300 })
    })

    await t.test('any MessagePack value, alone and as the data of a publish', async () => {
      await fc.assert(fc.asyncProperty(anyValue, async (value) => {
        await expectOneAnswer(client, encodeMsgpack(value))
        await expectOneAnswer(client, encodeMsgpack({ type: 'publish', id: 'v', room: 'fuzz', data: value }))
      }), { numRuns: 300 })
    })

    await t.test('valid commands with bytes flipped, cut short or extended', async () => {
      const mutated = fc.tuple(fc.constantFrom(...TEMPLATES.map(template => Buffer.from(encodeMsgpack(template)))), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'cut', 'append'))
        .map(([bytes, at, byte, how]) => {
          const i = at % bytes.length
          if (how === 'cut') return bytes.subarray(0, i)
          if (how === 'append') return Buffer.concat([bytes, Buffer.from([byte])])
          const copy = Buffer.from(bytes)
          copy[i] = byte
          return copy
        })
      await fc.assert(fc.asyncProperty(mutated, async (bytes) => {
        await expectOneAnswer(client, bytes)
      }), { numRuns: 400 })
    })

    await t.test('hostile lengths: declared far beyond the frame', async () => {
      const huge = [0xff, 0xff, 0xff, 0xff]
      for (const head of [0xdd, 0xdf, 0xdb, 0xc6, 0xc9]) {
        await expectOneAnswer(client, Buffer.from([head, ...huge]), { replyAllowed: false })
        // The same as a command's data.
        const envelope = Buffer.from(encodeMsgpack({ type: 'publish', id: 'len', room: 'fuzz', data: 0 }))
        const withLength = Buffer.concat([envelope.subarray(0, envelope.length - 1), Buffer.from([head, ...huge])])
        const answer = await expectOneAnswer(client, withLength, { replyAllowed: false })
        assert.equal(answer.id, undefined, 'a frame that does not decode has no id to echo')
      }
    })

    await t.test('deep nesting: refused, not a stack overflow', async () => {
      for (const depth of [33, 1000, 60_000]) {
        const arrays = Buffer.alloc(depth, 0x91)
        const frame = Buffer.concat([Buffer.from(encodeMsgpack({ type: 'publish', id: 'deep', room: 'fuzz', data: 0 })).subarray(0, -1), arrays, Buffer.from([0x01])])
        await expectOneAnswer(client, frame, { replyAllowed: false })
        await expectOneAnswer(client, Buffer.concat([arrays, Buffer.from([0xc0])]), { replyAllowed: false })
      }
    })

    await t.test('__proto__ keys are refused; constructor and prototype keys stay data', async () => {
      for (const key of ['__proto__', 'constructor', 'prototype']) {
        const data = new Map<string, unknown>([[key, new Map([['polluted', true]])]])
        const answer = await expectOneAnswer(client, encodeMsgpack(new Map<string, unknown>([['type', 'publish'], ['id', 'pp'], ['room', 'fuzz'], ['data', data]])), { replyAllowed: key !== '__proto__' })
        if (key === '__proto__') assert.match(answer.error.message, /no __proto__ keys/)
        await expectOneAnswer(client, encodeMsgpack(new Map<string, unknown>([[key, 1], ['type', 'ping'], ['id', 'pp']])), { replyAllowed: false })
      }
      assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)
      assert.equal(({} as Record<string, unknown>).polluted, undefined)
      // Published by a JSON client, such a key is data, and a MessagePack client reads it back as an own property.
      const json = await wsConnect(t, srv, { token })
      assertReply(await json.command({ type: 'publish', room: 'fuzz', data: JSON.parse('{"__proto__":{"polluted":true}}') as unknown }))
      const history = assertReply(await client.command({ type: 'history', room: 'fuzz', limit: 1 }))
      const first = (history.publications as Array<{ data: object }>)[0]!.data
      assert.deepEqual(Object.getOwnPropertyDescriptor(first, '__proto__')?.value, { polluted: true })
      assert.equal(Object.getPrototypeOf(first), Object.prototype)
    })

    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)
    assert.equal(client.socket.readyState, client.socket.OPEN)
    assertReply(await client.command({ type: 'ping' }))
    // Mutated commands may be refused for what they ask (no such room), never with a server error.
    assert.deepEqual(client.frames.filter(f => f.type === 'error' && f.error.code === 'internal'), [])
  })
})

describe('base64 payloads (switchboard.v1)', () => {
  // Once checked with a regular expression that backtracked per four characters: a few
  // megabytes of base64 threw "Maximum call stack size exceeded" out of the parser, and the
  // connection was closed with 1011 instead of answered.
  it('megabytes of base64 are answered (published, or refused as over the limit), never a handler failure', async (t) => {
    const limit = 4 * 1024 * 1024
    const srv = await build(t, { env: { WS_MAX_MESSAGE_BYTES: String(limit), WS_MAX_BUFFERED_BYTES: String(64 * 1024 * 1024) } })
    const token = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'big' } })).status, 201)
    const client = await wsConnect(t, srv, { token })
    const atLimit = Buffer.alloc(limit, 0xab).toString('base64')
    const published = await client.command({ type: 'publish', room: 'big', data: atLimit, encoding: 'base64' })
    assert.equal(published.type, 'reply', JSON.stringify(published).slice(0, 300))
    // The same length, one character off the alphabet at the very end.
    const invalid = await client.command({ type: 'publish', room: 'big', data: atLimit.slice(0, -1) + '!', encoding: 'base64' })
    assert.equal(invalid.type, 'error', JSON.stringify(invalid).slice(0, 300))
    assert.equal(invalid.error.code, 'bad_request')
    assertReply(await client.command({ type: 'ping' }))
    assert.equal(client.socket.readyState, client.socket.OPEN)
  })
})

