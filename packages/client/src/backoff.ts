/**
 * Exponential backoff with full jitter: a delay drawn uniformly from
 * [0, min(cap, base · 2^attempt)], so many clients cut off together do not come back together.
 * `random` is injectable for tests and returns a number in [0, 1).
 */
export function backoffDelay (attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * backoffBound(attempt, baseMs, capMs))
}

/** The upper bound of the delay before retry `attempt` (0-based). */
export function backoffBound (attempt: number, baseMs: number, capMs: number): number {
  // 2^attempt overflows to Infinity for huge attempts; min() keeps the cap.
  return Math.min(capMs, baseMs * 2 ** Math.max(0, attempt))
}
