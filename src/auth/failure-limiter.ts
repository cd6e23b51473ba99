/**
 * Counts failures per key (a username) in a fixed window and says how long to wait once the
 * limit is reached. Complements the per-IP request limit: a distributed guess at one account
 * from many addresses still stops here. Memory is bounded: past `maxKeys` the oldest entries go.
 *
 * Per-process state; the Redis engine (scale-out issue) moves it to Redis for a cluster.
 */
export interface FailureLimiter {
  /** Seconds until `key` may try again, or 0 when it may try now. */
  retryAfter(key: string): number
  recordFailure(key: string): void
  reset(key: string): void
}

export function createFailureLimiter (options: { limit: number, windowMs: number, maxKeys?: number, now?: () => number }): FailureLimiter {
  const { limit, windowMs, maxKeys = 100_000, now = Date.now } = options
  const windows = new Map<string, { count: number, resetAt: number }>()

  function current (key: string): { count: number, resetAt: number } | undefined {
    const entry = windows.get(key)
    if (entry !== undefined && entry.resetAt <= now()) {
      windows.delete(key)
      return undefined
    }
    return entry
  }

  return {
    retryAfter (key) {
      const entry = current(key)
      if (entry === undefined || entry.count < limit) return 0
      return Math.max(1, Math.ceil((entry.resetAt - now()) / 1000))
    },
    recordFailure (key) {
      const entry = current(key)
      if (entry !== undefined) {
        entry.count++
        return
      }
      if (windows.size >= maxKeys) {
        const oldest = windows.keys().next()
        if (oldest.done !== true) windows.delete(oldest.value)
      }
      windows.set(key, { count: 1, resetAt: now() + windowMs })
    },
    reset (key) {
      windows.delete(key)
    }
  }
}
