import type { TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import { Decoder } from '@msgpack/msgpack'
import { COMMAND_SCHEMAS, CommandIdSchema, type ClientCommand, type CommandId, type CommandType, type PublishCommand } from '@switchboard/protocol/messages'
import type { Payload } from './engine.js'

/*
 * The server's reading of client commands, against the wire contract's schemas. It stays on
 * the server side, not in packages/protocol/: TypeCompiler generates its checks with `new Function`
 * when this module loads, which a browser page under a strict Content-Security-Policy refuses
 * and which no client needs (the SDK sends commands, it never validates them), and the depth
 * bound is a defence of the server's stack.
 */

/** `data` deeper than this is refused: re-serialising it must not exhaust the stack. */
export const MAX_DATA_DEPTH = 32

export type ParseResult =
  | { ok: true, command: ClientCommand }
  | { ok: false, id?: CommandId, message: string }

const checks = Object.fromEntries(
  Object.entries(COMMAND_SCHEMAS).map(([type, schema]) => [type, TypeCompiler.Compile(schema as TSchema)])
) as Record<CommandType, TypeCheck<TSchema>>

const idCheck = TypeCompiler.Compile(CommandIdSchema)

/**
 * Parses one text frame (`switchboard.v1`) into a command. Never throws: anything wrong becomes
 * a message naming the failing path, plus the command id when one could be read, for a
 * `bad_request` error.
 */
export function parseCommand (text: string): ParseResult {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { ok: false, message: 'frame is not valid JSON' }
  }
  return checkCommand(value)
}

/** What a MessagePack value with no JSON form is refused with: its message names the path. */
class ShapeError extends Error {}

/**
 * Client frames are read with @msgpack/msgpack, not msgpackr (which writes every frame and
 * which the SDK reads with): msgpackr's decoder reads its own extensions whatever its options
 * say (records, compiled with `new Function` per shape; structured-clone references that can
 * make cycles; typed arrays, sets, errors) and recurses, so hostile input reaches far more
 * code. @msgpack/msgpack decodes standard MessagePack only, without recursion, hands unknown
 * extensions back as ExtData and refuses `__proto__` keys (docs/performance.md, "MessagePack
 * codec libraries"). Keys must be strings (a number key is not turned into one), and 64-bit
 * integers come as bigint, so that one beyond 2^53 is refused instead of rounded; the rest of
 * what has no JSON form (timestamps, ExtData) is refused by plainValue below.
 */
const decoder = new Decoder({
  useBigInt64: true,
  mapKeyConverter: (key: unknown): string => {
    if (typeof key !== 'string') throw new ShapeError('/: map keys must be strings')
    return key
  }
})

/**
 * Parses one binary frame (`switchboard.v1.msgpack`) into a command, as parseCommand does a
 * text frame. Only values with a JSON form are accepted, and raw bytes (`bin`) only as the
 * whole `data` of a publish. Never throws.
 */
export function parseMsgpackCommand (bytes: Uint8Array): ParseResult {
  let decoded: unknown
  try {
    decoded = decoder.decode(bytes)
  } catch (err) {
    if (err instanceof ShapeError) return { ok: false, message: err.message }
    // The decoder's own message may quote the input; the client gets a fixed one.
    return { ok: false, message: 'frame is not valid MessagePack (one value, nothing after it; no __proto__ keys)' }
  }
  let value: unknown
  try {
    value = plainValue(decoded, 0, '')
  } catch (err) {
    if (!(err instanceof ShapeError)) throw err
    const id = isPlainObject(decoded) ? decoded.id : undefined
    return idCheck.Check(id) ? { ok: false, id: id as CommandId, message: err.message } : { ok: false, message: err.message }
  }
  return checkCommand(value)
}


/**
 * A decoded MessagePack value as the JSON value it stands for, or ShapeError: integers beyond
 * 2^53, non-finite floats and extension values (timestamps as Date, ExtData) have no JSON
 * form. `bin` is kept only as the command's `data`. Recursion is bounded: nothing nests beyond
 * the data depth.
 */
function plainValue (value: unknown, depth: number, path: string): unknown {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new ShapeError(`${path || '/'}: a number must be finite`)
    return value
  }
  if (typeof value === 'bigint') {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) throw new ShapeError(`${path || '/'}: integer beyond 2^53`)
    return Number(value)
  }
  if (value instanceof Uint8Array) {
    if (path !== '/data') throw new ShapeError(`${path || '/'}: raw bytes are allowed only as the whole data of a publish`)
    return value
  }
  if (depth > MAX_DATA_DEPTH) throw new ShapeError(`/data: nested deeper than ${MAX_DATA_DEPTH} levels`)
  if (Array.isArray(value)) return value.map((item, i) => plainValue(item, depth + 1, `${path}/${i}`))
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, plainValue(item, depth + 1, `${path}/${key}`)]))
  }
  throw new ShapeError(`${path || '/'}: MessagePack extension types are not allowed`)
}

/** A map as the decoder makes it: an object literal, not a Date, an ExtData or another class. */
function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype
}

/**
 * Standard base64 (RFC 4648 §4) with its padding: what `encoding: "base64"` promises. A loop,
 * not a regular expression: `^(?:[A-Za-z0-9+/]{4})*…$` backtracks per group, costs tens of
 * milliseconds for a payload at the default limit and overflows the stack for a few megabytes.
 */
export function isStandardBase64 (text: string): boolean {
  const length = text.length
  if (length % 4 !== 0) return false
  let end = length
  if (end > 0 && text.charCodeAt(end - 1) === 0x3d) end -= text.charCodeAt(end - 2) === 0x3d ? 2 : 1
  for (let i = 0; i < end; i++) {
    const c = text.charCodeAt(i)
    // A-Z, a-z, 0-9, '+', '/'
    if (!((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2f)) return false
  }
  return true
}

/** The bytes a standard base64 string (isStandardBase64) decodes to, counted without decoding it. */
export function base64DecodedLength (text: string): number {
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0
  return text.length / 4 * 3 - padding
}

/** A decoded frame against the command schemas (the part both codecs share). */
function checkCommand (value: unknown): ParseResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, message: '/: expected a JSON object' }
  }
  const record = value as Record<string, unknown>
  const id = Object.hasOwn(record, 'id') && idCheck.Check(record.id) ? record.id as CommandId : undefined
  const withId = (message: string): ParseResult => id === undefined ? { ok: false, message } : { ok: false, id, message }
  const type = Object.hasOwn(record, 'type') ? record.type : undefined
  if (typeof type !== 'string' || !Object.hasOwn(checks, type)) {
    return withId(`/type: expected one of ${Object.keys(COMMAND_SCHEMAS).join(', ')}`)
  }
  const check = checks[type as CommandType]
  if (!check.Check(value)) {
    const first = check.Errors(value).First()
    return withId(`${first?.path === '' || first === undefined ? '/' : first.path}: ${first?.message ?? 'invalid'}`)
  }
  if (type === 'publish') {
    if (record.data instanceof Uint8Array) {
      if (record.encoding !== undefined) return withId('/encoding: data is raw bytes already; send encoding only with a base64 string')
    } else if (record.encoding !== undefined) {
      if (typeof record.data !== 'string') return withId('/data: with encoding "base64", data must be a string')
      if (!isStandardBase64(record.data)) return withId('/data: not valid base64 (standard alphabet, padded)')
    } else if (depthExceeds(record.data, MAX_DATA_DEPTH)) {
      return withId(`/data: nested deeper than ${MAX_DATA_DEPTH} levels`)
    }
  }
  return { ok: true, command: value as ClientCommand }
}

/**
 * A publish command's payload as the engines keep it: raw bytes (MessagePack `bin`, or base64
 * with `encoding`) copied out of the frame, or the JSON text of `data`, serialised once here.
 */
export function publishPayload (command: PublishCommand): Payload {
  const { data } = command
  if (data instanceof Uint8Array) return { kind: 'binary', payload: Buffer.from(data) }
  if (command.encoding === 'base64') return { kind: 'binary', payload: Buffer.from(data as string, 'base64') }
  return { kind: 'json', payload: JSON.stringify(data) }
}

/** Iterative, so hostile nesting cannot overflow the stack while being measured. */
export function depthExceeds (root: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[root, 0]]
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!
    if (typeof value !== 'object' || value === null) continue
    if (depth >= max) return true
    for (const child of Array.isArray(value) ? value : Object.values(value)) stack.push([child, depth + 1])
  }
  return false
}
