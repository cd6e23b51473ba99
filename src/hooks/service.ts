import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { Principal } from '../auth/principal.js'
import type { HookName, HooksConfig } from '../config.js'
import { Errors } from '../errors.js'
import { base64DecodedLength, depthExceeds, isStandardBase64, MAX_DATA_DEPTH } from '../realtime/command-parser.js'
import { principalId } from '../realtime/connection.js'
import type { Payload } from '../realtime/engine.js'
import type { Logger } from '../realtime/logger.js'
import type { HookConnection, RoomHooks } from '../realtime/room-hooks.js'
import { CallSlots } from './call-slots.js'
import { EventQueue, type HookEvent } from './event-queue.js'
import { createHookHttp, HookCallError } from './http-client.js'
import type { HookMetrics } from './metrics.js'
import { HOOK_HEADERS, signHook } from './signing.js'

/** The serialised `info` a connect hook may attach, at most: it is sent in every welcome and subscribe hook. */
export const MAX_INFO_BYTES = 4096
/** A refusal's reason is cut to this many characters before it reaches the client. */
const MAX_REASON_CHARS = 200
/** At most one warning per hook and failure kind per this interval: a backend that is down must not flood the log. */
const WARN_INTERVAL_MS = 10_000

const RefusalSchema = Type.Object({ reason: Type.Optional(Type.String()) })
const ConnectAnswerSchema = Type.Object({ refuse: Type.Optional(RefusalSchema), info: Type.Optional(Type.Unknown()) })
const SubscribeAnswerSchema = Type.Object({ refuse: Type.Optional(RefusalSchema) })
const PublishAnswerSchema = Type.Object({
  refuse: Type.Optional(RefusalSchema),
  data: Type.Optional(Type.Unknown()),
  encoding: Type.Optional(Type.Literal('base64'))
})
const compiled = <T extends TSchema>(schema: T): TypeCheck<T> => TypeCompiler.Compile(schema)
const ANSWERS = {
  connect: compiled(ConnectAnswerSchema),
  subscribe: compiled(SubscribeAnswerSchema),
  publish: compiled(PublishAnswerSchema)
}

/** What the connect hook is told of a connection about to open (its id is the one `reserve` gave). */
export interface ConnectRequest {
  id: string
  ip: string
  userAgent?: string
  /** The WebSocket subprotocol (switchboard.v1 or switchboard.v1.msgpack). */
  protocol: string
}

/** The application's backend as the server calls it: the connect hook, and the room hooks of the core. */
export interface BackendHooks extends RoomHooks {
  /**
   * The connect hook, before the upgrade: resolves with the `info` the backend attached (or
   * undefined); rejects with HookRefused or HookUnavailable. Resolves at once when it is off.
   */
  connect(principal: Principal, connection: ConnectRequest): Promise<{ info?: unknown }>
  /** Bytes of events not delivered yet. */
  queuedBytes(): number
  /** Stops the event queue and closes the sockets to the backend. */
  close(): void
}

export interface BackendHooksDeps {
  config: HooksConfig
  /** WS_MAX_MESSAGE_BYTES: a replacement from the publish hook obeys it as a client's payload does. */
  maxMessageBytes: number
  metrics: HookMetrics
  log: Logger
  now?: () => number
  /** For tests: the delay before retry `attempt` of an event. */
  backoffMs?: (attempt: number) => number
}

/**
 * Calls to the application's backend (docs/integration.md#hooks): every call is one signed
 * JSON POST to HOOKS_URL, within HOOKS_TIMEOUT_MS and the HOOKS_CONCURRENCY bound. The
 * refusing hooks (connect, subscribe, publish) wait for the answer and fail closed: a backend
 * that is slow, down, answers something else than the hook's answer, or has every slot busy
 * refuses with the temporary HookUnavailable. The events go through a bounded queue with
 * retries (EventQueue). Bodies and the secret are never logged.
 */
export function createBackendHooks (deps: BackendHooksDeps): BackendHooks {
  const { config, metrics, log } = deps
  const now = deps.now ?? Date.now
  const on = (hook: HookName): boolean => config.events.has(hook)
  const rooms = roomMatcher(config.rooms)
  // A publish answer carries a payload in base64 at worst (4/3), plus the JSON around it.
  const http = createHookHttp({ url: config.url, timeoutMs: config.timeoutMs, maxConnections: config.concurrency, maxResponseBytes: Math.ceil(deps.maxMessageBytes * 4 / 3) + 64 * 1024 })
  const slots = new CallSlots(config.concurrency)
  const lastWarned = new Map<string, number>()

  function warn (hook: HookName, reason: string, message: string): void {
    const key = `${hook}:${reason}`
    const at = now()
    if ((lastWarned.get(key) ?? -Infinity) + WARN_INTERVAL_MS > at) return
    lastWarned.set(key, at)
    log.warn({ hook, reason, detail: message }, 'hook call failed (further failures of this kind are not logged for 10 s)')
  }

  /** One signed POST: the 2xx answer's bytes and the call's seconds. A failure is counted here. */
  async function post (hook: HookName, id: string, body: string): Promise<{ bytes: Buffer, seconds: number }> {
    const timestamp = Math.floor(now() / 1000)
    const started = performance.now()
    try {
      const bytes = await http.post({
        [HOOK_HEADERS.hook]: hook,
        [HOOK_HEADERS.id]: id,
        [HOOK_HEADERS.timestamp]: String(timestamp),
        [HOOK_HEADERS.signature]: signHook(config.secret, timestamp, body)
      }, body)
      return { bytes, seconds: (performance.now() - started) / 1000 }
    } catch (err) {
      const reason = err instanceof HookCallError ? err.reason : 'unreachable'
      metrics.call(hook, reason === 'too_large' ? 'invalid' : reason, (performance.now() - started) / 1000)
      throw err
    }
  }

  /**
   * A refusing hook's call: its parsed answer, and a `Call` that counts how it ends. Rejects
   * with HookUnavailable when there is no answer to use.
   */
  async function ask<T extends TSchema> (hook: 'connect' | 'subscribe' | 'publish', body: Record<string, unknown>, check: TypeCheck<T>, data?: Payload): Promise<{ answer: Static<T>, call: Call }> {
    if (!slots.take('refusing')) {
      metrics.call(hook, 'busy', null)
      warn(hook, 'busy', `${config.concurrency} calls in flight`)
      throw new Errors.HookUnavailable(hook, 'too many calls in flight')
    }
    let posted: { bytes: Buffer, seconds: number }
    try {
      const id = randomUUID()
      posted = await post(hook, id, serialise({ ...body, id }, data))
    } catch (err) {
      const reason = err instanceof HookCallError ? err.reason : 'unreachable'
      warn(hook, reason, err instanceof Error ? err.message : String(err))
      throw new Errors.HookUnavailable(hook, describeFailure(err))
    } finally {
      slots.give('refusing')
    }
    const call = new Call(hook, posted.seconds)
    let answer: unknown
    try {
      answer = posted.bytes.length === 0 ? {} : JSON.parse(posted.bytes.toString('utf8'))
    } catch {
      answer = undefined
    }
    if (!check.Check(answer)) return call.invalid('the answer is not the hook\'s JSON object')
    return { answer, call }
  }

  /** How one answered call of a refusing hook ends: used, refused, or invalid (each counted once). */
  class Call {
    constructor (readonly hook: HookName, readonly seconds: number) {}

    ok (): void {
      metrics.call(this.hook, 'ok', this.seconds)
    }

    refuse (refusal: { reason?: string | undefined }): never {
      metrics.call(this.hook, 'refused', this.seconds)
      throw new Errors.HookRefused(cleanReason(refusal.reason))
    }

    invalid (why: string): never {
      metrics.call(this.hook, 'invalid', this.seconds)
      warn(this.hook, 'invalid', why)
      throw new Errors.HookUnavailable(this.hook, `invalid answer: ${why}`)
    }
  }

  const queue = new EventQueue({
    slots,
    maxBytes: config.queueBytes,
    retries: config.retries,
    metrics,
    send: async (event: HookEvent) => {
      let seconds: number
      try {
        ({ seconds } = await post(event.hook, event.id, event.body))
      } catch (err) {
        warn(event.hook, err instanceof HookCallError ? err.reason : 'unreachable', err instanceof Error ? err.message : String(err))
        throw err
      }
      metrics.call(event.hook, 'ok', seconds)
    },
    ...(deps.backoffMs === undefined ? {} : { backoffMs: deps.backoffMs })
  })

  function emit (hook: HookName, body: Record<string, unknown>, data?: Payload): void {
    const id = randomUUID()
    queue.push({ hook, id, body: serialise({ hook, id, ts: now(), ...body }, data) })
  }

  const header = (hook: HookName, principal: Principal): Record<string, unknown> => ({ hook, ts: now(), user: userOf(principal) })

  return {
    async connect (principal, connection) {
      if (!on('connect')) return {}
      const { answer, call } = await ask('connect', { ...header('connect', principal), connection }, ANSWERS.connect)
      if (answer.refuse !== undefined) call.refuse(answer.refuse)
      if (answer.info === undefined || answer.info === null) {
        call.ok()
        return {}
      }
      if (depthExceeds(answer.info, MAX_DATA_DEPTH)) call.invalid(`info is nested deeper than ${MAX_DATA_DEPTH} levels`)
      if (Buffer.byteLength(JSON.stringify(answer.info)) > MAX_INFO_BYTES) call.invalid(`info is over ${MAX_INFO_BYTES} bytes`)
      call.ok()
      return { info: answer.info }
    },

    async subscribe (principal, room, connection) {
      if (!on('subscribe') || !rooms(room)) return
      const { answer, call } = await ask('subscribe', { ...header('subscribe', principal), room, connection: connectionOf(connection) }, ANSWERS.subscribe)
      if (answer.refuse !== undefined) call.refuse(answer.refuse)
      call.ok()
    },

    async publish (principal, room, payload) {
      if (!on('publish') || !rooms(room)) return payload
      const { answer, call } = await ask('publish', { ...header('publish', principal), room }, ANSWERS.publish, payload)
      if (answer.refuse !== undefined) call.refuse(answer.refuse)
      if (!('data' in answer)) {
        call.ok()
        return payload
      }
      const replaced = replacement(answer.data, answer.encoding, deps.maxMessageBytes)
      if (typeof replaced === 'string') return call.invalid(replaced)
      call.ok()
      return replaced
    },

    published (principal, room, payload, result) {
      if (!on('published') || !rooms(room)) return
      emit('published', { user: userOf(principal), room, epoch: result.epoch, offset: result.offset }, payload)
    },

    joined (room, userId) {
      if (on('join') && rooms(room)) emit('join', { room, user: { id: userId } })
    },

    left (room, userId) {
      if (on('leave') && rooms(room)) emit('leave', { room, user: { id: userId } })
    },

    disconnected (principal, connection, code) {
      if (on('disconnect')) emit('disconnect', { user: userOf(principal), connection: connectionOf(connection), code })
    },

    queuedBytes: () => queue.queuedBytes,

    close () {
      queue.close()
      http.close()
    }
  }
}

/** Who acts, as the backend is told: the id other users see, its kind, and a user's role. */
function userOf (principal: Principal): Record<string, unknown> {
  return principal.kind === 'user'
    ? { id: principalId(principal), kind: 'user', role: principal.role }
    : { id: principalId(principal), kind: 'apiKey' }
}

function connectionOf (connection: HookConnection): Record<string, unknown> {
  return connection.info === undefined ? { id: connection.id, ip: connection.ip } : { id: connection.id, ip: connection.ip, info: connection.info }
}

/**
 * The body's JSON, with the payload spliced in as `data` when there is one: a JSON payload is
 * already JSON text (kept as the client sent it, not parsed again), bytes go as base64 with
 * `"encoding": "base64"`.
 */
function serialise (body: Record<string, unknown>, data?: Payload): string {
  const text = JSON.stringify(body)
  if (data === undefined) return text
  const field = data.kind === 'json' ? `"data":${data.payload}` : `"data":${JSON.stringify(data.payload.toString('base64'))},"encoding":"base64"`
  return `${text.slice(0, -1)},${field}}`
}

/** The publish hook's `data` as a payload, or why it cannot be one. */
function replacement (data: unknown, encoding: 'base64' | undefined, maxBytes: number): Payload | string {
  if (encoding === 'base64') {
    if (typeof data !== 'string' || !isStandardBase64(data)) return 'data with encoding "base64" must be a standard base64 string'
    if (base64DecodedLength(data) > maxBytes) return `the replacement is over WS_MAX_MESSAGE_BYTES (${maxBytes})`
    return { kind: 'binary', payload: Buffer.from(data, 'base64') }
  }
  if (depthExceeds(data, MAX_DATA_DEPTH)) return `data is nested deeper than ${MAX_DATA_DEPTH} levels`
  const text = JSON.stringify(data)
  if (Buffer.byteLength(text) > maxBytes) return `the replacement is over WS_MAX_MESSAGE_BYTES (${maxBytes})`
  return { kind: 'json', payload: text }
}

/** The backend's reason as the client sees it: one line of printable text, cut short. */
function cleanReason (reason: string | undefined): string {
  // eslint-disable-next-line no-control-regex -- control characters are what is removed
  const text = (reason ?? '').replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim()
  if (text === '') return 'no reason given'
  return text.length > MAX_REASON_CHARS ? `${text.slice(0, MAX_REASON_CHARS)}…` : text
}

function describeFailure (err: unknown): string {
  if (!(err instanceof HookCallError)) return 'unreachable'
  switch (err.reason) {
    case 'timeout': return 'timed out'
    case 'unreachable': return 'unreachable'
    case 'status': return `answered HTTP ${err.status ?? '?'}`
    case 'too_large': return 'answer too large'
  }
}

/** HOOKS_ROOMS as one test: an id matches when any pattern does, `*` standing for any run of characters. */
function roomMatcher (patterns: string[]): (room: string) => boolean {
  if (patterns.includes('*')) return () => true
  const source = patterns.map(p => p.split('*').map(part => part.replace(/[.]/g, '\\.')).join('.*')).join('|')
  const regex = new RegExp(`^(?:${source})$`)
  return (room) => regex.test(room)
}
