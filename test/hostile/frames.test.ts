// Frame, handshake and envelope abuse, floods and a throwing handler: attacks the server held
// from the start, kept here so that they keep holding.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type net from 'node:net'
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { build, wsConnect, type WsClient, type WsFrame } from '../helper.js'
import { Connection } from '../../src/realtime/connection.js'
import { parseCommand } from '../../src/realtime/command-parser.js'
import { maxFrameBytes } from '@switchboard/protocol/limits'
import type { ClientCommand } from '@switchboard/protocol/messages'
import {
  assertErrorFrame, assertReply, within, waitFor, clientFrame, rawConnect, upgradeRequest, rawWebSocket, rawHttpStatus, assertRefusedOrDropped
} from '../ws-support.js'

describe('ws frame abuse', () => {
  it('bad UTF-8 → 1007, oversize → 1009, protocol errors → 1002; the server keeps serving', async (t) => {
    const srv = await build(t, { env: { WS_MAX_MESSAGE_BYTES: '1024' } })
    const alice = await srv.userToken('alice')
    const ping = Buffer.from(JSON.stringify({ type: 'ping', id: 'p' }))
    const cases: Array<[string, Buffer, number]> = [
      ['invalid UTF-8 in a text frame', clientFrame(0x1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 1007],
      ['a truncated UTF-8 sequence', clientFrame(0x1, Buffer.from([0x22, 0xe2, 0x82])), 1007],
      // The frame limit leaves room for a payload of WS_MAX_MESSAGE_BYTES as base64 and its envelope: 2392 bytes here.
      ['a frame over the frame limit', clientFrame(0x1, Buffer.alloc(maxFrameBytes(1024) + 1, 0x20)), 1009],
      ['fragments that add up to more than the frame limit', Buffer.concat([clientFrame(0x1, Buffer.alloc(1200, 0x20), { fin: false }), clientFrame(0x0, Buffer.alloc(1200, 0x20))]), 1009],
      ['a binary frame over the frame limit', clientFrame(0x2, Buffer.alloc(maxFrameBytes(1024) + 1)), 1009],
      ['an unmasked client frame', clientFrame(0x1, ping, { mask: false }), 1002],
      ['RSV1 set without an extension', clientFrame(0x1, ping, { rsv: 4 }), 1002],
      ['RSV3 set', clientFrame(0x1, ping, { rsv: 1 }), 1002],
      ['an unknown data opcode', clientFrame(0x3, ping), 1002],
      ['an unknown control opcode', clientFrame(0xb, Buffer.alloc(0)), 1002],
      ['a fragmented ping', clientFrame(0x9, Buffer.from('x'), { fin: false }), 1002],
      ['a continuation with nothing to continue', clientFrame(0x0, ping), 1002],
      ['a control frame over 125 bytes', clientFrame(0x9, Buffer.alloc(126)), 1002],
      ['a new text frame inside a fragmented message', Buffer.concat([clientFrame(0x1, Buffer.from('{"a"'), { fin: false }), clientFrame(0x1, ping)]), 1002],
      ['a close frame with a one-byte payload', clientFrame(0x8, Buffer.from([0x03])), 1002],
      ['a close frame with the reserved code 1005', clientFrame(0x8, Buffer.from([0x03, 0xed])), 1002],
      ['a close frame with an invalid UTF-8 reason', clientFrame(0x8, Buffer.from([0x03, 0xe8, 0xff])), 1007]
    ]
    for (const [what, bytes, code] of cases) {
      const raw = await rawWebSocket(t, srv, alice)
      raw.write(bytes)
      assert.equal(await raw.closeCode(), code, what)
      raw.destroy()
    }

    // A well-formed raw frame on the same kind of connection gets its reply: the harness itself is sound.
    const raw = await rawWebSocket(t, srv, alice)
    raw.write(clientFrame(0x1, ping))
    const reply = await raw.until(() => raw.frames.find(f => f.opcode === 0x1 && f.payload.toString().includes('"reply"')), 'the ping reply')
    assert.deepEqual(JSON.parse(reply.payload.toString()), { type: 'reply', id: 'p', result: {} })
    raw.destroy()

    const client = await wsConnect(t, srv, { token: alice })
    assertReply(await client.command({ type: 'ping' }))
    // Every abused connection was cleaned up: only the healthy client is left.
    await waitFor(() => srv.app.realtime.stats().connections === 1, 'the abused connections to be released')
  })

  it('a binary frame gets bad_request and the connection stays open', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const client = await wsConnect(t, srv, { token: alice })
    client.socket.send(Buffer.from(JSON.stringify({ type: 'ping', id: 'b' })))
    assertErrorFrame(await client.next(f => f.type === 'error'), 'bad_request')
    assertReply(await client.command({ type: 'ping' }))
    assert.equal(client.socket.readyState, client.socket.OPEN)
  })
})

describe('ws handshake abuse', () => {
  it('bad keys, versions and huge headers get 4xx or a drop, never 5xx; slow headers block nobody', async (t) => {
    const srv = await build(t)
    const alice = await srv.userToken('alice')
    const auth = { Authorization: `Bearer ${alice}` }
    const goodKey = randomBytes(16).toString('base64')
    const cases: Array<[string, string]> = [
      ['a short key', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': 'abc', 'Sec-WebSocket-Version': '13' })],
      ['a key that is not base64', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': '!!!!!!!!!!!!!!!!!!!!!!==', 'Sec-WebSocket-Version': '13' })],
      ['no key', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Version': '13' })],
      ['no version', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey })],
      ['version 12', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '12' })],
      ['a version that is not a number', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': 'x' })],
      ['an invalid subprotocol list', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'a,,b' })],
      ['bad key, no credentials', upgradeRequest(srv, { 'Sec-WebSocket-Key': 'abc', 'Sec-WebSocket-Version': '13' })],
      ['a 20 KiB header', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13', 'X-Big': 'a'.repeat(20 * 1024) })],
      ['many headers over 16 KiB', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13', ...Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`X-H${i}`, 'b'.repeat(50)])) })],
      ['a 20 KiB Authorization header', upgradeRequest(srv, { Authorization: `Bearer ${'a'.repeat(20 * 1024)}`, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13' })],
      ['a 200 KB token in the query', `GET /ws?token=${'a'.repeat(200_000)} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${goodKey}\r\nSec-WebSocket-Version: 13\r\n\r\n`],
      ['a POST upgrade', upgradeRequest(srv, { ...auth, 'Sec-WebSocket-Key': goodKey, 'Sec-WebSocket-Version': '13' }).replace(/^GET/, 'POST')],
      ['garbage', 'NOT HTTP AT ALL\r\n\r\n']
    ]
    for (const [what, request] of cases) {
      const status = await rawHttpStatus(t, srv, request)
      assertRefusedOrDropped(status, what)
      if (what === 'a short key' || what === 'no version' || what === 'version 12') assert.equal(status, 400, what)
    }
    assert.equal(srv.app.realtime.stats().connections, 0)

    // A client that trickles its headers and then stalls holds its own socket only.
    const slow = await rawConnect(t, srv)
    const partial = `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${alice.slice(0, 10)}`
    for (const char of partial.slice(0, 40)) {
      slow.write(char)
      // A pause between bytes is the trickle under test: each byte arrives in a read of its own.
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    const others = await Promise.all([1, 2, 3].map(() => wsConnect(t, srv, { token: alice })))
    for (const other of others) assertReply(await other.command({ type: 'ping' }))
    assert.equal(slow.socket.destroyed, false, 'the slow client was not connected meanwhile')
    assert.equal(slow.status, null)
    slow.destroy()
    await slow.ended

    assertReply(await (await wsConnect(t, srv, { token: alice })).command({ type: 'ping' }))
  })
})

// ---------------------------------------------------------------------------------------
// Envelope fuzzing

/** The id a conforming server can echo: the schema's CommandId, read the way the parser reads it. */
function echoableId (text: string): string | number | undefined {
  let value: unknown
  try { value = JSON.parse(text) } catch { return undefined }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, 'id')) return undefined
  const id = (value as { id: unknown }).id
  if (typeof id === 'string' && id.length >= 1 && id.length <= 64) return id
  if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) return id
  return undefined
}

let probeSeq = 0

/**
 * Sends one frame, then a ping marker; returns every frame that arrived before the marker's
 * reply. Commands run in order, so whatever the frame caused has been sent by then.
 */
async function probe (client: WsClient, text: string): Promise<WsFrame[]> {
  const start = client.frames.length
  const marker = `probe-${++probeSeq}`
  client.send(text)
  client.send({ type: 'ping', id: marker })
  await client.next(f => f.type === 'reply' && f.id === marker)
  const end = client.frames.findIndex((f, i) => i >= start && f.type === 'reply' && f.id === marker)
  return client.frames.slice(start, end)
}

/** Exactly one answer: a reply to the frame's id, or a bad_request error (with the id when it had a valid one). */
async function expectOneAnswer (client: WsClient, text: string, { replyAllowed = true, pathPrefix }: { replyAllowed?: boolean, pathPrefix?: string } = {}): Promise<WsFrame> {
  const answers = await probe(client, text)
  const shown = `${text.slice(0, 300)} → ${JSON.stringify(answers).slice(0, 500)}`
  assert.equal(answers.length, 1, shown)
  const answer = answers[0]!
  const id = echoableId(text)
  if (answer.type === 'reply') {
    assert.ok(replyAllowed, shown)
    assert.notEqual(id, undefined, shown)
    assert.equal(answer.id, id, shown)
    return answer
  }
  assertErrorFrame(answer, 'bad_request', id)
  if (pathPrefix !== undefined) assert.ok((answer.error.message as string).startsWith(pathPrefix), `expected a message naming ${pathPrefix}: ${shown}`)
  return answer
}

const MISSING = Symbol('missing')
const nonString = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }))
const nonNumber = fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }))
const nonObject = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }))
const nonInteger = fc.double({ noNaN: true, noDefaultInfinity: true }).filter(d => !Number.isInteger(d))

/** For every field of every command, values of the wrong type or out of range. */
const WRONG: Record<string, fc.Arbitrary<unknown>> = {
  type: fc.oneof(fc.string(), nonString).filter(v => !(typeof v === 'string' && ['subscribe', 'unsubscribe', 'publish', 'history', 'presence', 'ping', 'refresh'].includes(v))),
  id: fc.oneof(fc.constant(''), fc.string({ minLength: 65, maxLength: 80 }), fc.integer({ max: -1 }), nonInteger, fc.boolean(), fc.constant(null), fc.array(fc.jsonValue(), { maxLength: 3 }), fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }), fc.constant(MISSING)),
  room: fc.oneof(nonString, fc.string().filter(s => !/^[a-z0-9][a-z0-9_.:-]{0,63}$/.test(s)), fc.constant('a'.repeat(65)), fc.constant(MISSING)),
  since: fc.oneof(
    nonObject,
    fc.record({ epoch: fc.oneof(nonString, fc.constant(''), fc.string({ minLength: 65, maxLength: 70 })), offset: fc.nat() }),
    fc.record({ epoch: fc.string({ minLength: 1, maxLength: 10 }), offset: fc.oneof(nonNumber, fc.integer({ max: -1 }), nonInteger) }),
    fc.record({ epoch: fc.constant('e'), offset: fc.constant(0), extra: fc.jsonValue() }),
    fc.constant({})
  ),
  data: fc.constant(MISSING),
  idempotencyKey: fc.oneof(nonString, fc.constant(''), fc.string({ minLength: 129, maxLength: 140 })),
  limit: fc.oneof(nonNumber, fc.integer({ max: 0 }), fc.integer({ min: 1001 }), nonInteger),
  token: fc.oneof(nonString, fc.constant(''), fc.constant('t'.repeat(8193)), fc.constant(MISSING)),
  extra: fc.jsonValue()
}

const TEMPLATES: Record<ClientCommand['type'], Record<string, unknown>> = {
  subscribe: { type: 'subscribe', id: 'w1', room: 'fuzz', since: { epoch: 'e', offset: 0 } },
  unsubscribe: { type: 'unsubscribe', id: 'w1', room: 'fuzz' },
  publish: { type: 'publish', id: 'w1', room: 'fuzz', data: { a: 1 }, idempotencyKey: 'k' },
  history: { type: 'history', id: 'w1', room: 'fuzz', since: { epoch: 'e', offset: 0 }, limit: 10 },
  presence: { type: 'presence', id: 'w1', room: 'fuzz' },
  ping: { type: 'ping', id: 'w1' },
  refresh: { type: 'refresh', id: 'w1', token: 'x' },
  room_token: { type: 'room_token', id: 'w1', room: 'fuzz', token: 'x' }
}

const FIELD_CASES: Array<[ClientCommand['type'], string]> = Object.entries(TEMPLATES).flatMap(([type, template]) =>
  [...Object.keys(template), 'extra'].map(field => [type as ClientCommand['type'], field] as [ClientCommand['type'], string]))

describe('ws envelope fuzzing', () => {
  it('every frame gets one reply or one bad_request; the connection survives; Object.prototype untouched', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '1000000', WS_MESSAGES_BURST: '1000000' } })
    const token = await srv.userToken('fuzzer')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'fuzz' } })).status, 201)
    const client = await wsConnect(t, srv, { token })
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).sort()
    // The templates are valid commands, so each mutation below is the only thing wrong.
    for (const template of Object.values(TEMPLATES)) assert.ok(parseCommand(JSON.stringify(template)).ok, JSON.stringify(template))

    await t.test('random strings', async () => {
      await fc.assert(fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' })), async (text) => {
        await expectOneAnswer(client, text)
      }), { numRuns: 200 })
    })

    await t.test('random JSON values', async () => {
      await fc.assert(fc.asyncProperty(fc.jsonValue(), async (value) => {
        await expectOneAnswer(client, JSON.stringify(value))
      }), { numRuns: 200 })
    })

    await t.test('a wrong type for every field of every command', async () => {
      const arbitrary = fc.constantFrom(...FIELD_CASES).chain(([type, field]) => WRONG[field]!.map(value => ({ type, field, value })))
      await fc.assert(fc.asyncProperty(arbitrary, async ({ type, field, value }) => {
        const frame: Record<string, unknown> = { ...TEMPLATES[type] }
        if (value === MISSING) delete frame[field]
        else frame[field] = value
        const text = JSON.stringify(frame)
        await expectOneAnswer(client, text, { replyAllowed: false, pathPrefix: `/${field}` })
      }), { numRuns: 300 })
    })

    await t.test('__proto__, constructor and prototype keys', async () => {
      const key = fc.constantFrom('__proto__', 'constructor', 'prototype')
      const polluting = fc.oneof(fc.constant({ polluted: true, toString: 1, hasOwnProperty: 'x' }), fc.jsonValue())
      // Raw JSON text, so that JSON.parse makes the key a real own property.
      const frames = fc.oneof(
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"ping","id":"pp","${k}":${JSON.stringify(v)}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"${k}":${JSON.stringify(v)},"type":"ping","id":"pp"}`),
        key.map(k => `{"${k}":{"type":"ping","id":"pp"}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"publish","id":"pp","room":"fuzz","data":{"${k}":${JSON.stringify(v)}}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"publish","id":"pp","room":"fuzz","data":{"a":[{"${k}":{"${k}":${JSON.stringify(v)}}}]}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"history","id":"pp","room":"fuzz","since":{"epoch":"e","offset":0,"${k}":${JSON.stringify(v)}}}`),
        fc.tuple(key, polluting).map(([k, v]) => `{"type":"subscribe","id":{"${k}":${JSON.stringify(v)}},"room":"fuzz"}`)
      )
      await fc.assert(fc.asyncProperty(frames, async (text) => {
        await expectOneAnswer(client, text)
        assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)
      }), { numRuns: 200 })
      // Such keys are data: stored and sent back as own properties, never as prototypes.
      await expectOneAnswer(client, '{"type":"publish","id":"pp","room":"fuzz","data":{"__proto__":{"polluted":true}}}')
      const history = assertReply(await client.command({ type: 'history', room: 'fuzz', limit: 1 }))
      const data = (history.publications as Array<{ data: object }>)[0]!.data
      assert.deepEqual(Object.getOwnPropertyDescriptor(data, '__proto__')?.value, { polluted: true })
    })

    await t.test('deep nesting', async () => {
      const depth = 10_000
      const arrays = '['.repeat(depth) + ']'.repeat(depth)
      const objects = '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
      await expectOneAnswer(client, `{"type":"publish","id":"deep","room":"fuzz","data":${arrays}}`, { replyAllowed: false, pathPrefix: '/data' })
      await expectOneAnswer(client, `{"type":"publish","id":"deep","room":"fuzz","data":${objects}}`, { replyAllowed: false, pathPrefix: '/data' })
      await expectOneAnswer(client, `{"type":"subscribe","id":"deep","room":"fuzz","since":${objects}}`, { replyAllowed: false, pathPrefix: '/since' })
      await expectOneAnswer(client, `{"type":"ping","id":"deep","x":${arrays}}`, { replyAllowed: false, pathPrefix: '/x' })
      await expectOneAnswer(client, arrays, { replyAllowed: false })
      await expectOneAnswer(client, `{"type":"ping","id":${arrays}}`, { replyAllowed: false, pathPrefix: '/id' })
      // Just under the limit is still a valid publication.
      await expectOneAnswer(client, `{"type":"publish","id":"ok","room":"fuzz","data":${'['.repeat(32)}${']'.repeat(32)}}`, { replyAllowed: true })
    })

    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeys)
    assert.equal(({} as Record<string, unknown>).polluted, undefined)
    assert.equal(client.socket.readyState, client.socket.OPEN)
    assertReply(await client.command({ type: 'ping' }))
    assert.equal(client.frames.filter(f => f.type === 'error' && f.error.code !== 'bad_request').length, 0)
  })
})

describe('ws rate limits', () => {
  it('a burst over the bucket gets rate_limited errors; a flood is cut off with 4029', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '5', WS_MESSAGES_BURST: '5' } })
    const token = await srv.userToken('alice')
    const client = await wsConnect(t, srv, { token })
    const tcp = (client.socket as unknown as { _socket: net.Socket })._socket
    const ids = Array.from({ length: 10 }, (_, i) => `burst-${i}`)
    // One TCP write, so the server reads the whole burst at once and the bucket cannot refill in between.
    tcp.cork()
    for (const id of ids) client.send({ type: 'ping', id })
    tcp.uncork()
    const answers = await Promise.all(ids.map(id => client.next(f => f.id === id)))
    assert.equal(answers.filter(f => f.type === 'reply').length, 5, JSON.stringify(answers))
    const limited = answers.filter(f => f.type === 'error')
    assert.equal(limited.length, 5, JSON.stringify(answers))
    for (const frame of limited) assertErrorFrame(frame, 'rate_limited', frame.id)
    assert.equal(client.socket.readyState, client.socket.OPEN)

    const flooder = await wsConnect(t, srv, { token })
    for (let i = 0; i < 200; i++) flooder.send({ type: 'ping', id: `flood-${i}` })
    const { code } = await within(flooder.closed, 'the flooder to be cut off')
    assert.equal(code, 4029)
    assert.ok(flooder.frames.some(f => f.type === 'error' && f.error.code === 'rate_limited'), 'no rate_limited warning before the cut-off')
    // The flood cost the flooder only. (The pause only lets the first client's own bucket refill
    // by at least one token at 5/s; timers never fire early, so this cannot flake. The app's
    // clock cannot be injected, and a poll for the refill would pass even if the flood had
    // drained a bucket the client shares.)
    await new Promise(resolve => setTimeout(resolve, 250))
    assertReply(await client.command({ type: 'ping' }))
  })

  it('binary frames count against the rate: a binary flood is cut off with 4029 too', async (t) => {
    const srv = await build(t, { env: { WS_MESSAGES_PER_SECOND: '5', WS_MESSAGES_BURST: '5' } })
    const client = await wsConnect(t, srv, { token: await srv.userToken('alice') })
    for (let i = 0; i < 200; i++) client.socket.send(Buffer.from([i & 0xff]))
    const { code } = await within(client.closed, 'the binary flooder to be cut off')
    assert.equal(code, 4029)
    const errors = client.frames.filter(f => f.type === 'error')
    assert.ok(errors.length <= 5 + 20, `${errors.length} error frames for a flood`)
    assert.ok(errors.some(f => f.error.code === 'rate_limited'))
  })
})

describe('ws handler failure', () => {
  it('a throwing handler closes only its own socket with 1011; 100 others keep working', async (t) => {
    const srv = await build(t, { env: { WS_MAX_CONNECTIONS_PER_USER: '150' } })
    const crowdToken = await srv.userToken('crowd')
    const victimToken = await srv.userToken('victim')
    assert.equal((await srv.request('POST', '/rooms', { token: crowdToken, body: { id: 'lobby' } })).status, 201)
    const crowd = await Promise.all(Array.from({ length: 100 }, () => wsConnect(t, srv, { token: crowdToken })))
    for (const reply of await Promise.all(crowd.map(c => c.command({ type: 'subscribe', room: 'lobby' })))) assertReply(reply)
    const victim = await wsConnect(t, srv, { token: victimToken })
    assertReply(await victim.command({ type: 'subscribe', room: 'lobby' }))

    // The bug: `execute` throws for room `boom`, which only the victim asks for.
    const proto = Connection.prototype as unknown as { execute: (this: Connection, command: ClientCommand) => Promise<unknown> }
    const original = proto.execute
    proto.execute = function (command) {
      if ('room' in command && command.room === 'boom') throw new TypeError('injected bug for room boom')
      return original.call(this, command)
    }
    t.after(() => { proto.execute = original })

    victim.send({ type: 'subscribe', id: 'kaboom', room: 'boom' })
    const { code } = await within(victim.closed, 'the victim to be closed')
    assert.equal(code, 1011)
    assert.ok(!victim.frames.some(f => f.id === 'kaboom'), 'the failed command was answered')

    const publisher = crowd[0]!
    assertReply(await publisher.command({ type: 'publish', room: 'lobby', data: { after: 'boom' } }))
    const received = await Promise.all(crowd.map(c => c.next(f => f.type === 'message' && f.data?.after === 'boom')))
    assert.equal(received.length, 100)
    for (const client of crowd) assert.equal(client.socket.readyState, client.socket.OPEN)

    const failure = srv.logs().find(l => l.msg === 'connection handler failed')
    assert.ok(failure !== undefined, 'the failure was not logged')
    assert.equal(failure.level, 50)
    assert.match(JSON.stringify(failure.err), /injected bug for room boom/)
    assert.equal(failure.connId, victim.welcome.connectionId)
    await waitFor(() => srv.app.realtime.stats().connections === 100, 'the victim to be unregistered')
  })
  it('a bug in authorization is a bug (1011, logged at error), not a temporary `unavailable` clients would retry forever', async (t) => {
    const srv = await build(t)
    const token = await srv.userToken('alice')
    assert.equal((await srv.request('POST', '/rooms', { token, body: { id: 'lobby' } })).status, 201)
    const original = srv.app.rooms.authorize.bind(srv.app.rooms)
    srv.app.rooms.authorize = async (principal, room, action) => {
      if (room === 'lobby') throw new TypeError('injected authorization bug')
      return await original(principal, room, action)
    }
    const client = await wsConnect(t, srv, { token })
    client.send({ type: 'subscribe', id: 'bug', room: 'lobby' })
    assert.equal((await within(client.closed, 'the socket to be closed')).code, 1011)
    assert.ok(!client.frames.some(f => f.id === 'bug'), 'the command was answered as if it could be retried')
    const rest = await srv.request('POST', '/rooms/lobby/messages', { token, body: { data: 1 } })
    assert.equal(rest.status, 500)
  })
})
