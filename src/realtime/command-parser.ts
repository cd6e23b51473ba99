import type { TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import { COMMAND_SCHEMAS, CommandIdSchema, type ClientCommand, type CommandId, type CommandType } from '../protocol/messages.js'

/*
 * The server's reading of client commands, against the wire contract's schemas. It stays on
 * the server side, not in src/protocol/: TypeCompiler generates its checks with `new Function`
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
 * Parses one text frame into a command. Never throws: anything wrong becomes a message naming
 * the failing path, plus the command id when one could be read, for a `bad_request` error.
 */
export function parseCommand (text: string): ParseResult {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { ok: false, message: 'frame is not valid JSON' }
  }
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
  if (type === 'publish' && depthExceeds(record.data, MAX_DATA_DEPTH)) {
    return withId(`/data: nested deeper than ${MAX_DATA_DEPTH} levels`)
  }
  return { ok: true, command: value as ClientCommand }
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
