/**
 * Two deliveries of one signal this close together are one shutdown request: Ctrl-C on
 * `npm start` reaches npm and the server at once, and npm forwards its own copy a moment later.
 */
export const REPEAT_WINDOW_MS = 1000

export const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const
export type ShutdownSignal = typeof SHUTDOWN_SIGNALS[number]

export interface ShutdownSignalHandlers {
  /** The first request: begin the graceful shutdown. */
  shutdown: (signal: ShutdownSignal) => void
  /** The same signal again within REPEAT_WINDOW_MS: the same request, nothing to do. */
  repeated: (signal: ShutdownSignal) => void
  /** An operator insisting (another signal, or the same one later): exit now. */
  force: (signal: ShutdownSignal) => void
}

export interface ShutdownSignals {
  /** A shutdown began for another cause (a fatal error): from now on any signal forces. */
  began: () => void
  uninstall: () => void
}

/**
 * Listens for SIGINT and SIGTERM and sorts each delivery into a first request, a repeat of it
 * or an insistence (see ShutdownSignalHandlers). Without this, the copy npm forwards made the
 * server exit at once and every WebSocket client saw 1006 instead of `reconnect` and 1012.
 */
export function onShutdownSignals (handlers: ShutdownSignalHandlers, now: () => number = Date.now): ShutdownSignals {
  let first: { signal: ShutdownSignal | null, at: number } | null = null
  const listener = (signal: ShutdownSignal): void => {
    if (first === null) {
      first = { signal, at: now() }
      handlers.shutdown(signal)
    } else if (first.signal === signal && now() - first.at < REPEAT_WINDOW_MS) {
      handlers.repeated(signal)
    } else {
      handlers.force(signal)
    }
  }
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, listener)
  return {
    began: () => { first ??= { signal: null, at: now() } },
    uninstall: () => { for (const signal of SHUTDOWN_SIGNALS) process.removeListener(signal, listener) }
  }
}
