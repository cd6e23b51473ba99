import { format } from 'node:util'
import type { ErrorCode } from '@switchboard/protocol/messages'
import type { ProtocolError } from '@switchboard/protocol/frames'

/**
 * Every application error a client can receive, in one table: REST and WebSocket render the
 * same errors from it. Each row gives
 * - `code`: the stable `SB_ERR_*` of the HTTP body { statusCode, code, error, message }
 *   (ErrorResponseSchema) and of a refused WebSocket handshake;
 * - `status`: its HTTP status;
 * - `protocol`: the code of the WebSocket `error` frame (the wire contract's ERROR_CODES,
 *   packages/protocol/src/messages.ts), when a command meets the same failure;
 * - `temporary`: true when the same call may succeed later (the `temporary` of the frame);
 * - `message`: for humans, with `%s` for the constructor's arguments (util.format).
 *
 * To add an error, add one row here and one line to docs/errors.md (a unit test checks that
 * the docs list every row), then throw it: `throw new Errors.RoomArchived()`, or with the
 * message's arguments, `throw new Errors.Forbidden('Not allowed to publish here')`. A wait
 * the client should respect goes with it: `throw new Errors.RateLimited(msg).withRetryAfter(ms)`
 * (REST sends it as Retry-After, the WebSocket as `retryAfterMs`).
 * Services throw these; the edges render them: the HTTP error handler (src/app.ts) and the
 * handshake refusals (routes/ws) through httpAnswer, command errors through protocolErrorOf.
 */
export const ERRORS = {
  Validation: { code: 'SB_ERR_VALIDATION', status: 400, protocol: 'bad_request', temporary: false, message: '%s' },
  BadRequest: { code: 'SB_ERR_BAD_REQUEST', status: 400, protocol: 'bad_request', temporary: false, message: '%s' },
  Unauthorized: { code: 'SB_ERR_UNAUTHORIZED', status: 401, protocol: 'unauthorized', temporary: false, message: 'Authentication required' },
  InvalidToken: { code: 'SB_ERR_INVALID_TOKEN', status: 401, protocol: 'unauthorized', temporary: false, message: 'Invalid or expired token' },
  InvalidCredentials: { code: 'SB_ERR_INVALID_CREDENTIALS', status: 401, protocol: 'unauthorized', temporary: false, message: 'Invalid username or password' },
  InvalidRefreshToken: { code: 'SB_ERR_INVALID_REFRESH_TOKEN', status: 401, protocol: 'unauthorized', temporary: false, message: 'Invalid, expired or revoked refresh token' },
  Forbidden: { code: 'SB_ERR_FORBIDDEN', status: 403, protocol: 'forbidden', temporary: false, message: '%s' },
  ExternalAccountsOnly: { code: 'SB_ERR_EXTERNAL_ACCOUNTS_ONLY', status: 403, protocol: 'forbidden', temporary: false, message: 'Users sign in through the application\'s identity provider on this server (AUTH_ACCOUNTS=external): registration, password sign-in and refresh tokens are off' },
  AccountDisabled: { code: 'SB_ERR_ACCOUNT_DISABLED', status: 403, protocol: 'forbidden', temporary: false, message: 'This account is disabled; ask an administrator' },
  WrongPassword: { code: 'SB_ERR_WRONG_PASSWORD', status: 403, protocol: 'forbidden', temporary: false, message: 'The current password is wrong' },
  RegistrationClosed: { code: 'SB_ERR_REGISTRATION_CLOSED', status: 403, protocol: 'forbidden', temporary: false, message: 'Registration is disabled on this server' },
  InvalidRoomToken: { code: 'SB_ERR_INVALID_ROOM_TOKEN', status: 403, protocol: 'forbidden', temporary: false, message: 'Invalid or expired room token' },
  Banned: { code: 'SB_ERR_BANNED', status: 403, protocol: 'forbidden', temporary: false, message: 'You are banned from this room' },
  HistoryLimit: { code: 'SB_ERR_HISTORY_LIMIT', status: 403, protocol: 'forbidden', temporary: false, message: '%s' },
  RoomLimit: { code: 'SB_ERR_ROOM_LIMIT', status: 403, protocol: 'forbidden', temporary: false, message: '%s' },
  HookRefused: { code: 'SB_ERR_HOOK_REFUSED', status: 403, protocol: 'forbidden', temporary: false, message: 'Refused by the application: %s' },
  OriginNotAllowed: { code: 'SB_ERR_ORIGIN_NOT_ALLOWED', status: 403, protocol: 'forbidden', temporary: false, message: 'Origin not allowed' },
  RoomNotFound: { code: 'SB_ERR_ROOM_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'Room not found' },
  UserNotFound: { code: 'SB_ERR_USER_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'User not found' },
  MemberNotFound: { code: 'SB_ERR_MEMBER_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'Not a member of this room' },
  BanNotFound: { code: 'SB_ERR_BAN_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'No ban for this user in this room' },
  ConnectionNotFound: { code: 'SB_ERR_CONNECTION_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'Connection not found on this node' },
  SubscriptionNotFound: { code: 'SB_ERR_SUBSCRIPTION_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'This connection is not subscribed to that room' },
  ApiKeyNotFound: { code: 'SB_ERR_API_KEY_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'API key not found' },
  RouteNotFound: { code: 'SB_ERR_NOT_FOUND', status: 404, protocol: 'not_found', temporary: false, message: 'Route %s %s not found' },
  NoWebSocketEndpoint: { code: 'SB_ERR_NO_WEBSOCKET_ENDPOINT', status: 404, protocol: 'not_found', temporary: false, message: 'No WebSocket endpoint at %s %s (upgrades are served at GET /ws only)' },
  RequestTimeout: { code: 'SB_ERR_REQUEST_TIMEOUT', status: 408, protocol: 'bad_request', temporary: false, message: 'The request was not received in time' },
  Conflict: { code: 'SB_ERR_CONFLICT', status: 409, protocol: 'conflict', temporary: false, message: '%s' },
  UsernameTaken: { code: 'SB_ERR_USERNAME_TAKEN', status: 409, protocol: 'conflict', temporary: false, message: 'Username is already taken' },
  UsernameRetired: { code: 'SB_ERR_USERNAME_RETIRED', status: 409, protocol: 'conflict', temporary: false, message: 'This username belonged to a deleted account and can never be used again' },
  LastAdmin: { code: 'SB_ERR_LAST_ADMIN', status: 409, protocol: 'conflict', temporary: false, message: 'The server must keep at least one enabled admin account: make another admin first' },
  ExternalUser: { code: 'SB_ERR_EXTERNAL_USER', status: 409, protocol: 'conflict', temporary: false, message: 'This user signs in through the identity provider, which owns its password, role and sessions; here it can only be disabled or deleted' },
  RoomExists: { code: 'SB_ERR_ROOM_EXISTS', status: 409, protocol: 'conflict', temporary: false, message: 'A room with this id already exists' },
  RoomFull: { code: 'SB_ERR_ROOM_FULL', status: 409, protocol: 'conflict', temporary: false, message: 'The room has reached its member limit' },
  LastOwner: { code: 'SB_ERR_LAST_OWNER', status: 409, protocol: 'conflict', temporary: false, message: 'A room must keep at least one owner' },
  UserBanned: { code: 'SB_ERR_USER_BANNED', status: 409, protocol: 'conflict', temporary: false, message: 'The user is banned from this room; lift the ban first' },
  PayloadTooLarge: { code: 'SB_ERR_PAYLOAD_TOO_LARGE', status: 413, protocol: 'bad_request', temporary: false, message: '%s' },
  UpgradeRequired: { code: 'SB_ERR_UPGRADE_REQUIRED', status: 426, protocol: 'bad_request', temporary: false, message: 'This is the WebSocket endpoint: connect with a WebSocket client (docs/protocol.md)' },
  HeadersTooLarge: { code: 'SB_ERR_HEADERS_TOO_LARGE', status: 431, protocol: 'bad_request', temporary: false, message: 'Request headers too large' },
  RateLimited: { code: 'SB_ERR_RATE_LIMITED', status: 429, protocol: 'rate_limited', temporary: true, message: '%s' },
  TooManyLoginAttempts: { code: 'SB_ERR_TOO_MANY_LOGIN_ATTEMPTS', status: 429, protocol: 'rate_limited', temporary: true, message: 'Too many failed login attempts; retry later' },
  TooManyConnections: { code: 'SB_ERR_TOO_MANY_CONNECTIONS', status: 429, protocol: 'rate_limited', temporary: true, message: '%s' },
  Internal: { code: 'SB_ERR_INTERNAL', status: 500, protocol: 'internal', temporary: false, message: 'Internal server error' },
  ShuttingDown: { code: 'SB_ERR_SHUTTING_DOWN', status: 503, protocol: 'unavailable', temporary: true, message: 'Server is shutting down' },
  Unavailable: { code: 'SB_ERR_UNAVAILABLE', status: 503, protocol: 'unavailable', temporary: true, message: '%s' },
  HookUnavailable: { code: 'SB_ERR_HOOK_UNAVAILABLE', status: 503, protocol: 'unavailable', temporary: true, message: 'The application\'s backend gave no usable answer to the %s hook (%s); retry' }
} as const satisfies Record<string, ErrorSpec>

/** One row of the table. */
export interface ErrorSpec {
  readonly code: `SB_ERR_${string}`
  readonly status: number
  readonly protocol: ErrorCode
  readonly temporary: boolean
  readonly message: string
}

export type ErrorName = keyof typeof ERRORS
export type AppErrorCode = typeof ERRORS[ErrorName]['code']

/**
 * The row that stands for a protocol code when only the code is known (a command error of
 * the real-time core, RealtimeError): what REST answers for it.
 */
export const ERROR_OF_PROTOCOL_CODE: Record<ErrorCode, ErrorName> = {
  bad_request: 'BadRequest',
  unauthorized: 'Unauthorized',
  forbidden: 'Forbidden',
  not_found: 'RoomNotFound',
  rate_limited: 'RateLimited',
  conflict: 'Conflict',
  unavailable: 'Unavailable',
  internal: 'Internal'
}

/**
 * An error of the table: an expected failure with its HTTP status, its protocol code and
 * whether it is temporary. Anything else that is thrown is a bug (500 over REST, 1011 on the
 * socket).
 */
export class AppError extends Error {
  readonly code: AppErrorCode
  readonly statusCode: number
  readonly protocolCode: ErrorCode
  readonly temporary: boolean
  /** When the call would be accepted again (rate limits): Retry-After over REST, `retryAfterMs` on the socket. */
  retryAfterMs: number | undefined

  constructor (spec: typeof ERRORS[ErrorName], message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = spec.code
    this.statusCode = spec.status
    this.protocolCode = spec.protocol
    this.temporary = spec.temporary
  }

  /** Sets the wait the client should respect before retrying; returns the error, for `throw`. */
  withRetryAfter (ms: number): this {
    this.retryAfterMs = ms
    return this
  }
}

/** The constructor of one row: `new Errors.Forbidden('message')`, arguments filling the `%s`. */
export interface AppErrorClass {
  new (...args: unknown[]): AppError
}

function errorClass (name: string, spec: typeof ERRORS[ErrorName]): AppErrorClass {
  const ErrorOfRow = class extends AppError {
    constructor (...args: unknown[]) {
      // As @fastify/error did: a trailing `{ cause }` is the cause, not a message argument.
      const last = args.at(-1)
      const cause = typeof last === 'object' && last !== null && 'cause' in last ? (args.pop() as { cause: unknown }).cause : undefined
      super(spec, format(spec.message, ...args), cause === undefined ? undefined : { cause })
      this.name = name
    }
  }
  Object.defineProperty(ErrorOfRow, 'name', { value: name })
  return ErrorOfRow
}

/** The table's rows as constructors: `throw new Errors.RoomNotFound()`. */
export const Errors = Object.fromEntries(
  Object.entries(ERRORS).map(([name, spec]) => [name, errorClass(name, spec)])
) as { readonly [N in ErrorName]: AppErrorClass }

/**
 * A dependency that is down (the store, Redis) or a draining node: one of our 503 errors,
 * temporary, and its code and message are shown to the client as they are. Any other 5xx is
 * a bug and is answered with SB_ERR_INTERNAL only. The HTTP error handler and the WebSocket
 * handshake (which runs outside Fastify's lifecycle) both answer by this rule (httpAnswer).
 */
export function isUnavailableError (err: unknown): err is AppError {
  return err instanceof AppError && err.statusCode === 503
}

/** What an HTTP client is told of an error: the status, the body's code and message, extra headers. */
export interface HttpAnswer {
  statusCode: number
  code: string
  message: string
  headers?: Record<string, string>
}

interface HttpErrorLike {
  statusCode?: unknown
  code?: unknown
  message?: unknown
  validation?: unknown
  headers?: Record<string, string>
}

/** Fastify's own refusals, worded to say what to send instead. */
const FASTIFY_MESSAGES: Record<string, string> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'Unsupported content type: send JSON with content-type: application/json (POST /rooms/:id/messages also takes application/octet-stream)'
}

/**
 * Renders any error for HTTP: an error of the table as its row says; Fastify's own errors (a
 * body that is not JSON, a failed schema) with their status and code; from 500 up, the client
 * learns nothing but SB_ERR_INTERNAL unless the error is a dependency outage (isUnavailableError).
 */
export function httpAnswer (err: unknown): HttpAnswer {
  const { statusCode: status, code, message, validation, headers } = (err ?? {}) as HttpErrorLike
  let statusCode = typeof status === 'number' && status >= 400 && status < 600 ? status : 500
  if (validation !== undefined) statusCode = 400
  if (statusCode >= 500 && !isUnavailableError(err)) return { statusCode, code: ERRORS.Internal.code, message: ERRORS.Internal.message }
  const retryAfterMs = err instanceof AppError ? err.retryAfterMs : undefined
  const allHeaders = retryAfterMs === undefined ? headers : { ...headers, 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) }
  return {
    statusCode,
    code: validation !== undefined ? ERRORS.Validation.code : typeof code === 'string' ? code : `SB_ERR_HTTP_${statusCode}`,
    message: (typeof code === 'string' ? FASTIFY_MESSAGES[code] : undefined) ?? (typeof message === 'string' ? message : ''),
    ...(allHeaders === undefined ? {} : { headers: allHeaders })
  }
}

/** Renders an error of the table for a WebSocket `error` frame (packages/protocol/src/frames.ts, errorFrame). */
export function protocolErrorOf (err: AppError): ProtocolError {
  const { protocolCode: code, message, temporary, retryAfterMs } = err
  return retryAfterMs === undefined ? { code, message, temporary } : { code, message, temporary, retryAfterMs }
}
