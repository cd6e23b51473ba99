import { Emitter } from './emitter.js'
import type { SwitchboardError } from './errors.js'
import type { TokenKeeper } from './token-keeper.js'
import type {
  EndReason,
  MessageFrame,
  StreamPosition,
  SubscribeResult,
  SubscriptionEvents,
  SubscriptionHandler,
  SubscriptionState
} from './types.js'

/** What a subscription needs from its client. */
export interface SubscriptionOwner {
  unsubscribe (room: string): Promise<void>
  reportError (err: unknown): void
}

/**
 * One room subscription of a client. The handler receives the room's publications in offset
 * order — live ones and those recovered after a reconnect, each once — and a `gap` event when
 * continuity could not be kept. `join` / `leave` (presence), `subscribed` (after every
 * (re)subscribe) and `end` are events on the subscription itself.
 *
 * The client keeps the position (epoch, offset) of the last publication handed to the
 * handler and resumes from it after every reconnect or `resubscribe` push.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  private current: StreamPosition | null
  private status: SubscriptionState = 'subscribing'
  /** @internal The subscribe command waiting to be sent or answered, if any. */
  command: object | null = null
  /** @internal A delayed retry after a temporary error. */
  retryTimer: ReturnType<typeof setTimeout> | undefined
  /** @internal Retries after temporary errors since the last success. */
  retries = 0
  /**
   * @internal The room token this subscription stands on: undefined until `getRoomToken` was
   * asked (or without it), null when it answered that the room needs none.
   */
  roomTokens: TokenKeeper | null | undefined = undefined
  /** @internal Settles the promise returned by `subscribe()`; null once settled. */
  pending: { resolve: () => void, reject: (err: SwitchboardError) => void } | null = null

  constructor (
    readonly room: string,
    private readonly handler: SubscriptionHandler,
    private readonly owner: SubscriptionOwner,
    /** The caller's `since`, used until the first reply gives the subscription its own position. */
    private readonly since: StreamPosition | undefined
  ) {
    super((err, event) => owner.reportError(annotate(err, `a '${String(event)}' listener of subscription ${room} threw`)))
    this.current = null
  }

  /** The last position handed to the handler (or the subscribe reply's), null before the first reply. */
  get position (): StreamPosition | null {
    return this.current === null ? null : { ...this.current }
  }

  get state (): SubscriptionState {
    return this.status
  }

  /** Ends the subscription (server side too when connected). Idempotent. */
  unsubscribe (): Promise<void> {
    return this.owner.unsubscribe(this.room)
  }

  /** @internal Where a (re)subscribe should resume from. */
  resumeFrom (): StreamPosition | undefined {
    return this.current ?? this.since
  }

  /** @internal True once a subscribe reply has been applied. */
  get confirmed (): boolean {
    return this.current !== null
  }

  /** @internal The connection was lost: the next connection resubscribes. */
  connectionLost (): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    if (this.status === 'subscribed') this.status = 'recovering'
  }

  /** @internal A `resubscribe` push: the server lost continuity; recover from the last position. */
  resubscribing (): void {
    if (this.status === 'subscribed') this.status = 'recovering'
  }

  /**
   * @internal A subscribe reply. Recovered publications go to the handler (duplicates dropped
   * by offset); `recovered: false` after a known position is a gap, reported before anything
   * of the new position arrives.
   */
  applyReply (result: SubscribeResult, sentSince: StreamPosition | undefined): void {
    if (this.status === 'ended') return
    const previous = this.current ?? sentSince ?? null
    if (result.recovered) {
      // A first subscribe with `since` has no position of its own yet: it resumes from `since`.
      this.current ??= previous
      for (const publication of result.publications) {
        this.deliver({ type: 'message', room: this.room, epoch: result.epoch, ...publication })
      }
    } else if (previous !== null) {
      this.call({ type: 'gap', room: this.room, epoch: result.epoch, offset: result.offset, previous })
    }
    this.current = { epoch: result.epoch, offset: result.offset }
    this.status = 'subscribed'
    this.retries = 0
    this.emit('subscribed', { room: this.room, epoch: result.epoch, offset: result.offset, recovered: result.recovered })
    const pending = this.pending
    this.pending = null
    pending?.resolve()
  }

  /**
   * @internal A live or recovered publication. Dropped when it is not after the current
   * position in the same epoch (a duplicate around a resubscribe), or before the first reply.
   */
  deliver (frame: MessageFrame): void {
    if (this.status === 'ended' || this.current === null) return
    if (frame.epoch === this.current.epoch && frame.offset <= this.current.offset) return
    this.current = { epoch: frame.epoch, offset: frame.offset }
    this.call(frame)
  }

  /** @internal */
  presence (type: 'join' | 'leave', user: { id: string, info?: unknown }): void {
    if (this.status === 'ended' || this.current === null) return
    this.emit(type, { room: this.room, user })
  }

  /** @internal Final: no event after this one. `rejection` settles a pending `subscribe()`. */
  end (reason: EndReason, rejection: SwitchboardError, error?: Error): void {
    if (this.status === 'ended') return
    this.status = 'ended'
    this.roomTokens?.stop()
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    this.command = null
    const pending = this.pending
    this.pending = null
    pending?.reject(rejection)
    this.emit('end', error === undefined ? { room: this.room, reason } : { room: this.room, reason, error })
  }

  private call (event: Parameters<SubscriptionHandler>[0]): void {
    try {
      this.handler(event)
    } catch (err) {
      this.owner.reportError(annotate(err, `the handler of subscription ${this.room} threw`))
    }
  }
}

function annotate (err: unknown, context: string): Error {
  return err instanceof Error ? err : new Error(`${context}: ${String(err)}`)
}
