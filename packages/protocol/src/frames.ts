import type { Static } from '@sinclair/typebox'
import {
  PROTOCOL_VERSION,
  type CommandId, type ErrorCode, type LimitsSchema, type UnsubscribeReason, type WelcomeFrameSchema
} from './messages.js'

/*
 * Builders of every server → client frame, beside the schemas they follow (messages.ts), so
 * the server never writes a frame by hand. Each returns the frame's JSON text, its keys in
 * the order of its schema. They are string building only, on shapes the server trusts (no
 * schema check): a publication's frame is built once and written to every subscriber
 * (src/realtime/hub.ts), so these sit on the fan-out's path and must stay this cheap.
 */

export type Limits = Static<typeof LimitsSchema>
export type WelcomeUser = Static<typeof WelcomeFrameSchema>['user']

/**
 * The welcome's node-wide part, `"heartbeatMs":…,"limits":{…}`: the same for every connection
 * of a node, so a node serialises it once and hands it to every welcomeFrame.
 */
export type WelcomeSettings = string & { readonly welcomeSettings: unique symbol }

export function welcomeSettings (heartbeatMs: number, limits: Limits): WelcomeSettings {
  return JSON.stringify({ heartbeatMs, limits: welcomeLimits(limits) }).slice(1, -1) as WelcomeSettings
}

/** The welcome's `limits`: just the fields of LimitsSchema, in its order (a node's limits hold more). */
export function welcomeLimits (limits: Limits): Limits {
  return {
    maxMessageBytes: limits.maxMessageBytes,
    messagesPerSecond: limits.messagesPerSecond,
    messagesBurst: limits.messagesBurst,
    maxSubscriptions: limits.maxSubscriptions,
    maxBufferedBytes: limits.maxBufferedBytes,
    idleTimeoutMs: limits.idleTimeoutMs
  }
}

/** The first frame of every connection. `tokenExpiresAt` in epoch milliseconds, null for API keys. */
export function welcomeFrame (connectionId: string, user: WelcomeUser, settings: WelcomeSettings, tokenExpiresAt: number | null): string {
  return `{"type":"welcome","protocol":"${PROTOCOL_VERSION}","connectionId":${JSON.stringify(connectionId)},"user":${JSON.stringify(user)},` +
    `${settings},"tokenExpiresAt":${JSON.stringify(tokenExpiresAt)}}`
}

/** The answer to command `id`; `result` is the command's result schema (messages.ts, *ResultSchema). */
export function replyFrame (id: CommandId, result: unknown): string {
  return JSON.stringify({ type: 'reply', id, result })
}

/**
 * The answer to command `id` whose result is JSON text already (history pages and subscribe
 * replies carry publications as stored text: src/realtime/publication-frames.ts), embedded as it is.
 */
export function replyFrameWithJson (id: CommandId, resultJson: string): string {
  return `{"type":"reply","id":${JSON.stringify(id)},"result":${resultJson}}`
}

/** An error as the `error` frame carries it (ProtocolErrorSchema). */
export interface ProtocolError {
  code: ErrorCode
  message: string
  /** True when the same command may succeed if retried later. */
  temporary: boolean
  retryAfterMs?: number
}

/** An error answering command `id`, or the connection as a whole when no id could be read. */
export function errorFrame (id: CommandId | undefined, { code, message, temporary, retryAfterMs }: ProtocolError): string {
  const error = retryAfterMs === undefined ? { code, message, temporary } : { code, message, temporary, retryAfterMs }
  return JSON.stringify(id === undefined ? { type: 'error', error } : { type: 'error', id, error })
}

/** A user's first connection joined `room`, or their last one left it. */
export function presenceFrame (type: 'join' | 'leave', room: string, user: { id: string, info?: unknown }): string {
  return JSON.stringify({ type, room, user: user.info === undefined ? { id: user.id } : { id: user.id, info: user.info } })
}

/** The server ended one subscription, and why. */
export function unsubscribedFrame (room: string, reason: UnsubscribeReason): string {
  return JSON.stringify({ type: 'unsubscribed', room, reason })
}

/** The node is draining: reconnect (to any node) after `retryAfterMs`. */
export function reconnectFrame (retryAfterMs: number): string {
  return JSON.stringify({ type: 'reconnect', reason: 'shutdown', retryAfterMs })
}
