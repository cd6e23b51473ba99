/**
 * A tiny typed event emitter (no `node:events`, so the SDK bundles for browsers). A listener
 * that throws does not stop the others: the exception goes to `onListenerError`.
 */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<(payload: never) => void>>()

  constructor (private readonly onListenerError: (err: unknown, event: keyof Events) => void = () => {}) {}

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events> (event: K, listener: (payload: Events[K]) => void): () => void {
    let set = this.listeners.get(event)
    if (set === undefined) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(listener)
    return () => this.off(event, listener)
  }

  /** Like `on`, removed after the first call. */
  once<K extends keyof Events> (event: K, listener: (payload: Events[K]) => void): () => void {
    const off = this.on(event, (payload) => {
      off()
      listener(payload)
    })
    return off
  }

  off<K extends keyof Events> (event: K, listener: (payload: Events[K]) => void): void {
    this.listeners.get(event)?.delete(listener)
  }

  listenerCount (event: keyof Events): number {
    return this.listeners.get(event)?.size ?? 0
  }

  protected emit<K extends keyof Events> (event: K, payload: Events[K]): void {
    const set = this.listeners.get(event)
    if (set === undefined) return
    // A copy: listeners may add or remove listeners while being called.
    for (const listener of [...set] as Array<(payload: Events[K]) => void>) {
      try {
        listener(payload)
      } catch (err) {
        this.onListenerError(err, event)
      }
    }
  }
}
