import type { RedisClient } from '../../redis.js'
import type { Logger } from '../logger.js'
import type { KeyLayout } from './keys.js'

/** What index.ts gives every part of the engine, besides what is the part's own. */
export interface PartContext {
  /** The command connection: fails fast while Redis is away. */
  cmd: RedisClient
  keys: KeyLayout
  log: Logger
  /** True once the engine closed: what arrives after is dropped. */
  isClosed(): boolean
  /** Throws once the engine closed: every call checks it first. */
  assertOpen(): void
}
