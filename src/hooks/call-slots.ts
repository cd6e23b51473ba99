/**
 * The HOOKS_CONCURRENCY bound of one node: calls in flight to the backend, refusing hooks and
 * events together. Events may hold at most half the slots, so a backlog of events (a backend
 * that is slow to take them) never leaves a connect, subscribe or publish without a slot;
 * those never wait for one either: with every slot taken they fail at once (`busy`).
 */
export class CallSlots {
  private inFlight = 0
  private eventsInFlight = 0
  private readonly eventCapacity: number
  /** Called when a slot frees: the event queue sends what waits. */
  onFree: () => void = () => {}

  constructor (private readonly capacity: number) {
    this.eventCapacity = Math.max(1, Math.floor(capacity / 2))
  }

  /** A slot for one call, or false when the bound (for events, their half) is reached. */
  take (kind: 'refusing' | 'event'): boolean {
    if (this.inFlight >= this.capacity) return false
    if (kind === 'event') {
      if (this.eventsInFlight >= this.eventCapacity) return false
      this.eventsInFlight++
    }
    this.inFlight++
    return true
  }

  give (kind: 'refusing' | 'event'): void {
    this.inFlight--
    if (kind === 'event') this.eventsInFlight--
    this.onFree()
  }
}
