/**
 * Time as the SDK's units see it, injectable so their tests run on a fake clock without
 * sleeping. `after` returns a canceller instead of a timer handle: Node's and browsers' handle
 * types differ, and a fake clock has neither.
 */
export interface Clock {
  now (): number
  /** Calls `callback` once `ms` have passed; the returned function cancels it (a no-op once it ran). */
  after (ms: number, callback: () => void): () => void
}

/**
 * The real clock. It looks up `Date` and `setTimeout` on every call rather than keeping
 * references, so tests that mock the global timers (node:test `mock.timers`) drive it too.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  after (ms, callback) {
    const timer = setTimeout(callback, ms)
    return () => clearTimeout(timer)
  }
}
