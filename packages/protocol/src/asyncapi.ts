import { Type, type TSchema } from '@sinclair/typebox'
import { CloseCodes, CloseReasons, isReconnectCode, type CloseCode } from './close-codes.js'
import {
  COMMAND_SCHEMAS, ERROR_CODES, MSGPACK_PROTOCOL_VERSION, PROTOCOL_VERSION, PROTOCOL_VERSIONS, SERVER_FRAME_SCHEMAS, UNSUBSCRIBE_REASONS,
  HistoryPageSchema, HistoryResultSchema, PresenceResultSchema, PublishResultSchema, RefreshResultSchema, SubscribeResultSchema,
  type CommandType
} from './messages.js'

/** Plain JSON Schema: TypeBox keeps its own bookkeeping under symbol keys, which JSON drops. */
export type JsonSchema = Record<string, unknown>

export interface AsyncApiMessage {
  messageId: string
  name: string
  title: string
  summary: string
  description?: string
  contentType: 'application/json'
  payload: JsonSchema
  correlationId?: { description: string, location: string }
  [extension: `x-${string}`]: unknown
}

export interface AsyncApiDocument {
  asyncapi: '2.6.0'
  id: string
  info: { title: string, version: string, description: string }
  defaultContentType: 'application/json'
  servers?: Record<string, unknown>
  channels: Record<string, unknown>
  components: {
    messages: Record<string, AsyncApiMessage>
    securitySchemes: Record<string, Record<string, unknown>>
  }
  [extension: `x-${string}`]: unknown
}

function jsonSchema (schema: TSchema): JsonSchema {
  return JSON.parse(JSON.stringify(schema)) as JsonSchema
}

/** Component keys must match `^[\w\d.\-_]+$`; titles such as `join / leave` do not. */
function messageKey (title: string): string {
  return title.replace(/[^A-Za-z0-9._-]+/g, '-')
}

// Prose only: every shape comes from the schemas in protocol.ts.
const COMMAND_SUMMARIES: Record<CommandType, string> = {
  subscribe: 'Start receiving a room\'s publications; with `since`, first recover what was missed',
  unsubscribe: 'Stop receiving a room\'s publications',
  publish: 'Publish `data` to a room; the reply carries its (epoch, offset)',
  history: 'Read a room\'s recent publications, or those after a position',
  presence: 'Who is subscribed to a room, deduplicated per user',
  ping: 'Application-level round trip (the server also sends WebSocket pings)',
  refresh: 'Replace the connection\'s access token before it expires',
  room_token: 'Renew the room token of a subscription made with one, before it expires (else `unsubscribed`, `token_expired`)'
}

const FRAME_SUMMARIES: Record<string, string> = {
  welcome: 'First frame on every connection: who you are, the heartbeat and the limits',
  reply: 'Success of the command with the same `id`',
  error: 'Failure of the command with the same `id`, or of a frame that had none',
  message: 'A publication in a room you subscribed to, in offset order',
  'join / leave': 'A user\'s first connection joined, or last connection left, a room you subscribed to',
  unsubscribed: 'The server ended one of your subscriptions',
  reconnect: 'This node is draining: reconnect after `retryAfterMs`; close 1012 follows'
}

/** Commands whose reply carries data; for `unsubscribe` and `ping` the reply is the acknowledgement. */
const RESULT_SCHEMAS = Object.entries({
  subscribe: SubscribeResultSchema,
  publish: PublishResultSchema,
  // Recovery-style (`since`, or neither) or a page read back or forward (`before` / `after`).
  history: Type.Union([HistoryResultSchema, HistoryPageSchema]),
  presence: PresenceResultSchema,
  refresh: RefreshResultSchema
} satisfies Partial<Record<CommandType, TSchema>>) as Array<[CommandType, TSchema]>

const commandCorrelation = {
  description: 'The client-chosen `id`, echoed by the `reply` or `error` for this command',
  location: '$message.payload#/id'
}

function table (head: [string, string], rows: Array<[string, string]>): string {
  return [`| ${head[0]} | ${head[1]} |`, '|---|---|', ...rows.map(([a, b]) => `| ${a} | ${b} |`)].join('\n')
}

function closeCodeEntries (): Array<{ code: CloseCode, name: string, reason: string, reconnect: boolean }> {
  return Object.entries(CloseCodes).map(([name, code]) => ({ code, name, reason: CloseReasons[code], reconnect: isReconnectCode(code) }))
}

const SECURITY_SCHEMES: Record<string, Record<string, unknown>> = {
  bearerHeader: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: '`Authorization: Bearer <access token>` on the upgrade request (clients that can set headers).'
  },
  bearerSubprotocol: {
    type: 'httpApiKey',
    in: 'header',
    name: 'Sec-WebSocket-Protocol',
    description: `\`Sec-WebSocket-Protocol: ${PROTOCOL_VERSION}, bearer.<access token>\` (browsers: \`new WebSocket(url, ['${PROTOCOL_VERSION}', 'bearer.' + token])\`). The server selects \`${PROTOCOL_VERSION}\` and never echoes the token.`
  },
  bearerQuery: {
    type: 'httpApiKey',
    in: 'query',
    name: 'token',
    description: '`?token=<access token>`. Redacted from the server\'s logs, but URLs can be logged elsewhere: prefer a header or the subprotocol.'
  },
  apiKeyHeader: {
    type: 'httpApiKey',
    in: 'header',
    name: 'X-API-Key',
    description: 'An API key (server-to-server); it acts by its scopes.'
  },
  apiKeyQuery: {
    type: 'httpApiKey',
    in: 'query',
    name: 'api_key',
    description: '`?api_key=<key>`, for clients that can set neither headers nor subprotocols. Redacted from the server\'s logs.'
  }
}

/**
 * Builds the AsyncAPI 2.6.0 document of the WebSocket protocol from the TypeBox schemas in
 * protocol.ts, so the published contract cannot drift from what the server checks. One
 * channel, `/ws`: `publish` lists the client commands, `subscribe` the server frames (AsyncAPI
 * 2.x names operations from the server's side). Error codes, close codes and unsubscribe
 * reasons are given both as Markdown in descriptions and as `x-` extensions for tools.
 * `serverUrl` (ws:, wss:, http: or https:) adds a server entry; without it the document is
 * host-relative, which is right when the public URL is only known to the proxy in front.
 */
export function buildAsyncApi (info: { version: string, serverUrl?: string }): AsyncApiDocument {
  const messages: Record<string, AsyncApiMessage> = {}
  const add = (schema: TSchema, message: Omit<AsyncApiMessage, 'messageId' | 'name' | 'title' | 'contentType' | 'payload'>): string => {
    const title = schema.title
    if (typeof title !== 'string') throw new Error('every protocol schema needs a title to name its message')
    const key = messageKey(title)
    if (Object.hasOwn(messages, key)) throw new Error(`two protocol schemas are both named ${key}`)
    messages[key] = { messageId: key, name: title, title, contentType: 'application/json', payload: jsonSchema(schema), ...message }
    return key
  }

  const commandKeys = (Object.entries(COMMAND_SCHEMAS) as Array<[CommandType, TSchema]>).map(([type, schema]) =>
    add(schema, { summary: COMMAND_SUMMARIES[type], correlationId: commandCorrelation }))

  const frameKeys = SERVER_FRAME_SCHEMAS.map(schema => {
    const title = schema.title ?? ''
    const summary = FRAME_SUMMARIES[title] ?? title
    switch (title) {
      case 'reply':
        return add(schema, {
          summary,
          description: '`result` depends on the command; `x-results` has its schema for each command that returns data.',
          correlationId: commandCorrelation,
          'x-results': Object.fromEntries(RESULT_SCHEMAS.map(([type, result]) => [type, jsonSchema(result)]))
        })
      case 'error':
        return add(schema, {
          summary,
          description: `\`error.temporary\` is true when retrying later may succeed.\n\n${table(['code', 'meaning'], Object.entries(ERROR_CODES).map(([code, text]) => [`\`${code}\``, text]))}`,
          correlationId: commandCorrelation,
          'x-error-codes': ERROR_CODES
        })
      case 'unsubscribed':
        return add(schema, {
          summary,
          description: table(['reason', 'meaning'], Object.entries(UNSUBSCRIBE_REASONS).map(([reason, text]) => [`\`${reason}\``, text])),
          'x-unsubscribe-reasons': UNSUBSCRIBE_REASONS
        })
      default:
        return add(schema, { summary })
    }
  })

  const refs = (keys: string[]) => keys.map(key => ({ $ref: `#/components/messages/${key}` }))
  const security = Object.keys(SECURITY_SCHEMES).map(name => ({ [name]: [] }))
  const closeCodes = closeCodeEntries()
  const closeTable = table(['close code', 'meaning'], closeCodes.map(c => [String(c.code), `${c.reason} (${c.reconnect ? 'reconnect' : 'do not reconnect'})`]))

  const doc: AsyncApiDocument = {
    asyncapi: '2.6.0',
    id: 'urn:switchboard:realtime',
    info: {
      title: 'Switchboard real-time protocol',
      version: info.version,
      description: [
        `WebSocket protocol \`${PROTOCOL_VERSION}\`: JSON text frames, one envelope per frame; or \`${MSGPACK_PROTOCOL_VERSION}\`: the same envelopes, each one MessagePack map in a binary frame, raw bytes as \`bin\` (on JSON frames they are base64 with \`"encoding": "base64"\`). The subprotocol offered chooses the codec (MessagePack when both are; JSON when none is). Authenticate on the upgrade request with one of the security schemes; the HTTP answer is 401, 403, 429 or 503 before any upgrade when the handshake is refused. docs/protocol.md is the guide for client authors.`,
        'Close codes 4000–4499 and 1012 mean reconnect (after `retryAfterMs` when a `reconnect` frame came first; after 4001, refresh the token first); 4500–4999 mean do not reconnect.',
        closeTable
      ].join('\n\n')
    },
    defaultContentType: 'application/json',
    'x-content-types': { [PROTOCOL_VERSION]: 'application/json', [MSGPACK_PROTOCOL_VERSION]: 'application/msgpack' },
    channels: {
      '/ws': {
        description: 'The one WebSocket endpoint. Every frame is one of the messages below.',
        bindings: {
          ws: {
            method: 'GET',
            query: {
              type: 'object',
              properties: {
                token: { type: 'string', description: 'Access token (JWT), when no header or subprotocol carries one' },
                api_key: { type: 'string', description: 'API key, when no header carries one' }
              }
            },
            headers: {
              type: 'object',
              properties: {
                Authorization: { type: 'string', description: '`Bearer <access token>`' },
                'X-API-Key': { type: 'string' },
                'Sec-WebSocket-Protocol': { type: 'string', description: `\`${PROTOCOL_VERSION}\` or \`${MSGPACK_PROTOCOL_VERSION}\`, optionally followed by \`bearer.<access token>\`` },
                Origin: { type: 'string', description: 'Browsers send it; a foreign origin is refused with 403. Requests without one are allowed.' }
              }
            },
            bindingVersion: '0.1.0'
          }
        },
        publish: {
          operationId: 'sendCommand',
          summary: 'Client → server: commands',
          security,
          message: { oneOf: refs(commandKeys) }
        },
        subscribe: {
          operationId: 'receiveFrame',
          summary: 'Server → client: replies, errors and pushes',
          security,
          message: { oneOf: refs(frameKeys) }
        }
      }
    },
    components: { messages, securitySchemes: SECURITY_SCHEMES },
    'x-protocol': PROTOCOL_VERSION,
    'x-protocols': [...PROTOCOL_VERSIONS],
    'x-error-codes': ERROR_CODES,
    'x-close-codes': closeCodes,
    'x-unsubscribe-reasons': UNSUBSCRIBE_REASONS
  }

  if (info.serverUrl !== undefined) {
    const url = new URL(info.serverUrl)
    const secure = url.protocol === 'wss:' || url.protocol === 'https:'
    url.protocol = secure ? 'wss:' : 'ws:'
    doc.servers = {
      switchboard: {
        url: url.href.replace(/\/$/, ''),
        protocol: secure ? 'wss' : 'ws',
        description: 'This Switchboard server',
        security
      }
    }
  }
  return doc
}
