import { loadRedisScript, type RedisScript } from '../../redis.js'

/**
 * How the engine's Lua is assembled: each script is its own file under lua/, after the
 * functions they share (common.lua). Each part (broker, history, presence, counters) loads
 * the scripts it runs.
 */

const COMMON = new URL('./lua/common.lua', import.meta.url)

/** An engine script: common.lua (the server clock, stream offsets, the room's meta), then `files` in order. */
export function engineScript (...files: URL[]): RedisScript {
  return loadRedisScript(COMMON, ...files)
}

/**
 * Connection ids per refresh script. A script holds Redis for every client while it runs:
 * one script for a room of 10,000 held every node's publishes behind it, every refresh
 * (measured in docs/scale-out.md#presence); between batches other commands run.
 */
export const REFRESH_BATCH = 500

/** A script's integer reply (ioredis gives a number; a string where the script returned one). */
export function toNumber (value: unknown): number {
  return typeof value === 'number' ? value : Number(value)
}
