import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { AppError, ERRORS, ERROR_OF_PROTOCOL_CODE, Errors, httpAnswer, isUnavailableError, protocolErrorOf } from '../../src/errors.js'
import { RealtimeError, UnavailableError } from '../../src/realtime/errors.js'
import { StoreUnavailableError } from '../../src/store/unavailable.js'
import { ERROR_CODES, type ErrorCode } from '@switchboard/protocol/messages'

const rows = Object.entries(ERRORS)

/** The cells of every table row of a Markdown document whose first cell matches. */
function tableRows (doc: string, first: RegExp): string[][] {
  return doc.split('\n')
    .filter(line => line.startsWith('| '))
    .map(line => line.slice(2, -2).split(' | ').map(cell => cell.trim()))
    .filter(cells => first.test(cells[0]!))
}

describe('the error table (src/errors.ts)', () => {
  it('has each SB_ERR_ code once', () => {
    const codes = rows.map(([, spec]) => spec.code)
    assert.equal(new Set(codes).size, codes.length)
    for (const code of codes) assert.match(code, /^SB_ERR_[A-Z_]+$/)
  })

  it('docs/errors.md lists every code of the table once, with its status and WebSocket code, and no other SB_ERR_ code', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8')
    const documented = tableRows(doc, /^\d{3}$/).filter(cells => cells[1]!.startsWith('`SB_ERR_'))
    const byCode = new Map<string, string[][]>()
    for (const cells of documented) byCode.set(cells[1]!, [...(byCode.get(cells[1]!) ?? []), cells])
    for (const [name, spec] of rows) {
      const found = byCode.get(`\`${spec.code}\``) ?? []
      assert.equal(found.length, 1, `${name}: ${spec.code} listed ${found.length} times`)
      assert.equal(found[0]![0], String(spec.status), `${spec.code}: status`)
      assert.equal(found[0]![2], `\`${spec.protocol}\``, `${spec.code}: WebSocket code`)
    }
    assert.deepEqual([...byCode.keys()].sort(), rows.map(([, spec]) => `\`${spec.code}\``).sort(), 'no documented code outside the table')
  })

  it('is temporary exactly as docs/protocol.md says of its protocol code, which is listed there once', () => {
    const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8')
    const documented = new Map<string, string[][]>()
    // The error codes' table: its second column is `temporary` (unsubscribe reasons share some names).
    for (const cells of tableRows(doc, /^`[a-z_]+`$/).filter(cells => cells[1] === 'true' || cells[1] === 'false')) documented.set(cells[0]!, [...(documented.get(cells[0]!) ?? []), cells])
    for (const code of Object.keys(ERROR_CODES)) assert.equal(documented.get(`\`${code}\``)?.length, 1, `${code} in protocol.md once`)
    for (const [name, spec] of rows) {
      assert.ok(Object.hasOwn(ERROR_CODES, spec.protocol), `${name}: ${spec.protocol} is a protocol error code`)
      assert.equal(String(spec.temporary), documented.get(`\`${spec.protocol}\``)![0]![1], `${name}: temporary`)
    }
  })

  it('has a row standing for each protocol code, with that code', () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) assert.equal(ERRORS[ERROR_OF_PROTOCOL_CODE[code]].protocol, code, code)
  })
})

describe('Errors.X constructors', () => {
  it('carry their row and fill %s as @fastify/error did', () => {
    const err = new Errors.RoomNotFound()
    assert.ok(err instanceof AppError && err instanceof Error)
    assert.deepEqual([err.name, err.code, err.statusCode, err.protocolCode, err.temporary, err.message, err.retryAfterMs],
      ['RoomNotFound', 'SB_ERR_ROOM_NOT_FOUND', 404, 'not_found', false, 'Room not found', undefined])
    assert.equal(new Errors.Forbidden('Only moderators may publish').message, 'Only moderators may publish')
    assert.equal(new Errors.RouteNotFound('GET', '/nope').message, 'Route GET /nope not found')
    const cause = new Error('root')
    assert.equal(new Errors.Unavailable('down', { cause }).cause, cause)
    assert.equal(Errors.Banned.name, 'Banned')
  })

  it('RealtimeError and UnavailableError are errors of the table, by protocol code', () => {
    const err = new RealtimeError('rate_limited', 'slow down', 250)
    assert.ok(err instanceof AppError)
    assert.deepEqual([err.code, err.statusCode, err.protocolCode, err.temporary, err.retryAfterMs], ['SB_ERR_RATE_LIMITED', 429, 'rate_limited', true, 250])
    const down = new UnavailableError()
    assert.deepEqual([down.code, down.statusCode, down.message, isUnavailableError(down)], ['SB_ERR_UNAVAILABLE', 503, 'Temporarily unavailable, retry', true])
    assert.ok(isUnavailableError(new StoreUnavailableError(new Error('ECONNREFUSED'))))
    assert.equal(isUnavailableError(new Errors.Internal()), false)
  })
})

describe('rendering', () => {
  it('over HTTP: the row, Retry-After from retryAfterMs, nothing of a bug', () => {
    assert.deepEqual(httpAnswer(new Errors.Banned()), { statusCode: 403, code: 'SB_ERR_BANNED', message: 'You are banned from this room' })
    assert.deepEqual(httpAnswer(new Errors.RateLimited('wait').withRetryAfter(1200)), { statusCode: 429, code: 'SB_ERR_RATE_LIMITED', message: 'wait', headers: { 'retry-after': '2' } })
    assert.deepEqual(httpAnswer(new Errors.RateLimited('wait').withRetryAfter(0)).headers, { 'retry-after': '1' })
    assert.deepEqual(httpAnswer(new StoreUnavailableError(null)), { statusCode: 503, code: 'SB_ERR_UNAVAILABLE', message: 'The database is unavailable; retry shortly' })
    assert.deepEqual(httpAnswer(new Error('secret detail')), { statusCode: 500, code: 'SB_ERR_INTERNAL', message: 'Internal server error' })
    assert.deepEqual(httpAnswer(Object.assign(new Error('x'), { statusCode: 502, code: 'SB_ERR_UNAVAILABLE' })), { statusCode: 502, code: 'SB_ERR_INTERNAL', message: 'Internal server error' })
    assert.deepEqual(httpAnswer(Object.assign(new Error('body/name must be string'), { statusCode: 400, validation: [] })), { statusCode: 400, code: 'SB_ERR_VALIDATION', message: 'body/name must be string' })
    assert.deepEqual(httpAnswer(Object.assign(new Error('Unsupported Media Type'), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE' })), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', message: 'Unsupported content type: send JSON with content-type: application/json (POST /rooms/:id/messages also takes application/octet-stream)' })
    assert.deepEqual(httpAnswer(Object.assign(new Errors.TooManyLoginAttempts(), { headers: { 'retry-after': '30' } })).headers, { 'retry-after': '30' })
  })

  it('on the socket: the protocol code, temporary, and retryAfterMs only when set', () => {
    assert.deepEqual(protocolErrorOf(new Errors.Banned()), { code: 'forbidden', message: 'You are banned from this room', temporary: false })
    assert.deepEqual(protocolErrorOf(new Errors.RateLimited('wait').withRetryAfter(480)), { code: 'rate_limited', message: 'wait', temporary: true, retryAfterMs: 480 })
    assert.deepEqual(protocolErrorOf(new Errors.ShuttingDown()), { code: 'unavailable', message: 'Server is shutting down', temporary: true })
  })
})
