import type { HookName } from '../config.js'
import type { CallSlots } from './call-slots.js'
import { HookCallError } from './http-client.js'
import type { HookMetrics } from './metrics.js'

/** The first retry waits about this long; each next one twice as long, up to MAX_BACKOFF_MS. */
const FIRST_BACKOFF_MS = 200
const MAX_BACKOFF_MS = 10_000

/** One event: its id (the same on every attempt) and body, serialised once. */
export interface HookEvent {
  hook: HookName
  id: string
  body: string
}

export interface EventQueueDeps {
  slots: CallSlots
  /** Sends one attempt; resolves when the backend took it (2xx). */
  send: (event: HookEvent) => Promise<void>
  maxBytes: number
  retries: number
  metrics: HookMetrics
  /** For tests of the backoff: the delay before retry `attempt` (1-based). */
  backoffMs?: (attempt: number) => number
}

interface Pending extends HookEvent {
  bytes: number
  attempts: number
}

/**
 * The fire-and-forget events (published, join, leave, disconnect): a FIFO bounded by bytes
 * (HOOKS_QUEUE_BYTES, counting the events waiting for a retry too), sent as slots free up,
 * each retried up to `retries` times with a jittered exponential backoff when the backend did
 * not take it (timeout, unreachable, 5xx, 429), then dropped and counted. A 4xx other than 429
 * is the backend refusing that event: retrying would not change it, so it is dropped at once.
 * Nothing here waits on the caller's path: `push` returns at once.
 */
export class EventQueue {
  private readonly ready: Pending[] = []
  private head = 0
  private readonly waiting = new Set<NodeJS.Timeout>()
  private bytes = 0
  private closed = false
  private readonly backoffMs: (attempt: number) => number

  constructor (private readonly deps: EventQueueDeps) {
    this.backoffMs = deps.backoffMs ?? jitteredBackoff
    deps.slots.onFree = () => { this.pump() }
  }

  /** Bytes of the events not delivered yet. */
  get queuedBytes (): number {
    return this.bytes
  }

  push (event: HookEvent): void {
    if (this.closed) return
    const bytes = Buffer.byteLength(event.body)
    if (this.bytes + bytes > this.deps.maxBytes) {
      this.deps.metrics.dropped(event.hook, 'queue_full')
      return
    }
    this.bytes += bytes
    this.ready.push({ ...event, bytes, attempts: 0 })
    this.pump()
  }

  /** Stops sending; what waits is dropped (events are not kept across a restart). */
  close (): void {
    this.closed = true
    for (const timer of this.waiting) clearTimeout(timer)
    this.waiting.clear()
    this.ready.length = 0
    this.head = 0
    this.bytes = 0
  }

  private pump (): void {
    while (!this.closed && this.head < this.ready.length && this.deps.slots.take('event')) {
      const event = this.ready[this.head++]!
      // The array is compacted once its consumed head is half of it: pushes and shifts stay O(1).
      if (this.head > 64 && this.head * 2 > this.ready.length) {
        this.ready.splice(0, this.head)
        this.head = 0
      }
      this.attempt(event)
    }
  }

  private attempt (event: Pending): void {
    event.attempts++
    this.deps.send(event).then(() => {
      this.bytes -= event.bytes
    }, (err: unknown) => {
      if (this.closed) return
      const retryable = !(err instanceof HookCallError && err.reason === 'status' && err.status !== undefined && err.status < 500 && err.status !== 429)
      if (!retryable) {
        this.bytes -= event.bytes
        this.deps.metrics.dropped(event.hook, 'rejected')
        return
      }
      if (event.attempts > this.deps.retries) {
        this.bytes -= event.bytes
        this.deps.metrics.dropped(event.hook, 'retries')
        return
      }
      const timer = setTimeout(() => {
        this.waiting.delete(timer)
        this.ready.push(event)
        this.pump()
      }, this.backoffMs(event.attempts))
      timer.unref()
      this.waiting.add(timer)
    }).finally(() => {
      // After the bookkeeping above, so the next event sent sees this one's bytes released.
      this.deps.slots.give('event')
    })
  }
}

/** Exponential from FIRST_BACKOFF_MS, capped, with half of it random so retries of many events spread out. */
function jitteredBackoff (attempt: number): number {
  const full = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (attempt - 1))
  return Math.floor(full / 2 + Math.random() * full / 2)
}
