/**
 * The Switchboard client SDK (`switchboard/client`): Node 20+ (with `ws`) and browsers.
 * docs/client.md has an example and the reconnect and recovery rules.
 */
export { SwitchboardClient } from './client.js'
export { NEWEST } from './types.js'
export { Subscription } from './subscription.js'
export { SwitchboardError, type ClientErrorCode, type SwitchboardErrorCode } from './errors.js'
export { backoffBound, backoffDelay } from './backoff.js'
export { DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_CAP_MS } from './reconnect-policy.js'
export { isReconnectCode, CloseCodes } from '@switchboard/protocol/close-codes'
export type {
  ClientEvents,
  CodecName,
  ConnectionState,
  DisconnectEvent,
  EndReason,
  ErrorCode,
  GapEvent,
  HistoryOptions,
  HistoryPage,
  PageOptions,
  HistoryResult,
  MessageFrame,
  PresenceOptions,
  PresenceResult,
  Publication,
  PublishOptions,
  PublishResult,
  ReconnectOptions,
  RetryEvent,
  StreamPosition,
  SubscribeOptions,
  SubscribeResult,
  SubscriptionEvent,
  SubscriptionEvents,
  SubscriptionHandler,
  SubscriptionState,
  SwitchboardClientOptions,
  TokenContext,
  UnsubscribeReason,
  WebSocketConstructor,
  WebSocketLike,
  WelcomeFrame
} from './types.js'
