import createError from '@fastify/error'

/**
 * Every application error a client can receive, in one table. The HTTP body always has the
 * shape { statusCode, code, error, message } (see ErrorResponseSchema); `code` is stable and
 * documented, `message` is for humans.
 */
export const Errors = {
  BadRequest: createError('SB_ERR_BAD_REQUEST', 'Malformed HTTP request', 400),
  Unauthorized: createError('SB_ERR_UNAUTHORIZED', 'Authentication required', 401),
  InvalidToken: createError('SB_ERR_INVALID_TOKEN', 'Invalid or expired token', 401),
  InvalidCredentials: createError('SB_ERR_INVALID_CREDENTIALS', 'Invalid username or password', 401),
  InvalidRefreshToken: createError('SB_ERR_INVALID_REFRESH_TOKEN', 'Invalid, expired or revoked refresh token', 401),
  Forbidden: createError('SB_ERR_FORBIDDEN', '%s', 403),
  RegistrationClosed: createError('SB_ERR_REGISTRATION_CLOSED', 'Registration is disabled on this server', 403),
  Banned: createError('SB_ERR_BANNED', 'You are banned from this room', 403),
  HistoryLimit: createError('SB_ERR_HISTORY_LIMIT', '%s', 403),
  RoomLimit: createError('SB_ERR_ROOM_LIMIT', '%s', 403),
  RoomNotFound: createError('SB_ERR_ROOM_NOT_FOUND', 'Room not found', 404),
  UserNotFound: createError('SB_ERR_USER_NOT_FOUND', 'User not found', 404),
  MemberNotFound: createError('SB_ERR_MEMBER_NOT_FOUND', 'Not a member of this room', 404),
  BanNotFound: createError('SB_ERR_BAN_NOT_FOUND', 'No ban for this user in this room', 404),
  ConnectionNotFound: createError('SB_ERR_CONNECTION_NOT_FOUND', 'Connection not found on this node', 404),
  ApiKeyNotFound: createError('SB_ERR_API_KEY_NOT_FOUND', 'API key not found', 404),
  RouteNotFound: createError('SB_ERR_NOT_FOUND', 'Route %s %s not found', 404),
  RequestTimeout: createError('SB_ERR_REQUEST_TIMEOUT', 'The request was not received in time', 408),
  NoWebSocketEndpoint: createError('SB_ERR_NO_WEBSOCKET_ENDPOINT', 'No WebSocket endpoint at %s %s (upgrades are served at GET /ws only)', 404),
  UsernameTaken: createError('SB_ERR_USERNAME_TAKEN', 'Username is already taken', 409),
  RoomExists: createError('SB_ERR_ROOM_EXISTS', 'A room with this id already exists', 409),
  RoomFull: createError('SB_ERR_ROOM_FULL', 'The room has reached its member limit', 409),
  LastOwner: createError('SB_ERR_LAST_OWNER', 'A room must keep at least one owner', 409),
  UserBanned: createError('SB_ERR_USER_BANNED', 'The user is banned from this room; lift the ban first', 409),
  TooManyLoginAttempts: createError('SB_ERR_TOO_MANY_LOGIN_ATTEMPTS', 'Too many failed login attempts; retry later', 429),
  OriginNotAllowed: createError('SB_ERR_ORIGIN_NOT_ALLOWED', 'Origin not allowed', 403),
  TooManyConnections: createError('SB_ERR_TOO_MANY_CONNECTIONS', '%s', 429),
  PayloadTooLarge: createError('SB_ERR_PAYLOAD_TOO_LARGE', '%s', 413),
  HeadersTooLarge: createError('SB_ERR_HEADERS_TOO_LARGE', 'Request headers too large', 431),
  ShuttingDown: createError('SB_ERR_SHUTTING_DOWN', 'Server is shutting down', 503),
  Unavailable: createError('SB_ERR_UNAVAILABLE', '%s', 503)
} as const

/**
 * A dependency that is down (the store, Redis) surfaces as one of our 503 errors: temporary,
 * and its code and message are shown to the client as they are. Any other 5xx is a bug and
 * is answered with SB_ERR_INTERNAL only. The HTTP error handler and the WebSocket handshake
 * (which runs outside Fastify's lifecycle) both answer by this rule.
 */
export function isUnavailableError (err: unknown): err is Error & { statusCode: 503, code: string } {
  const { statusCode, code } = (err ?? {}) as { statusCode?: unknown, code?: unknown }
  return err instanceof Error && statusCode === 503 && typeof code === 'string' && code.startsWith('SB_ERR_')
}
