import { maxFrameBytes } from '@switchboard/protocol/limits'
import { systemClock, type Clock } from './clock.js'
import type { CommandFrame, WireCodec, WireFrame } from './codec.js'
import { SwitchboardError } from './errors.js'
import { payloadBytes, utf8Length } from './payload.js'
import type { WelcomeFrame } from './types.js'

/**
 * Commands written but not answered, at most. The server answers `rate_limited` beyond 64
 * per connection; staying well under it leaves room for the client's own commands.
 */
const MAX_IN_FLIGHT = 32
/** How often a command refused with `rate_limited` is sent again before it fails. */
const MAX_RATE_RETRIES = 3

/** A command frame without its id (the queue numbers it); a publish's bytes are a Uint8Array. */
export type { CommandFrame }
/** Settles a command: the server's `result`, or the error. */
export type Done = (error: SwitchboardError | null, result: unknown) => void

export interface CommandOptions {
  /** Internal commands (restores, refresh, liveness) jump the queue and are not bounded by it. */
  urgent: boolean
  /** Sent again on the next connection when the connection is lost before the reply (reads, and publishes with their key). */
  resend: boolean
  /** Called instead of `done` when the command is dropped because its connection was lost (when `resend` is false). */
  dropped: () => void
  done: Done
  /** Carried by the errors of a publish, so that it can be retried without doubling it. */
  idempotencyKey?: string
}

/** A command the queue holds, as its owner sees it: a handle to ask about or withdraw. */
export interface Command extends Readonly<CommandOptions> {
  readonly id: number
  readonly frame: CommandFrame
}

/** The open connection as the writer sees it. */
export interface Link {
  /** Writes one frame; may throw when the socket failed (its close event follows). */
  send (frame: WireFrame): void
  /** The connection's codec: how a command becomes a frame. */
  codec: WireCodec
  /**
   * The server's payload limit (the welcome's): a publish's bytes, or the JSON text of its
   * value, may not be larger. Frames may be up to maxFrameBytes of it: a larger one would
   * close the connection with 1009.
   */
  maxMessageBytes: number
}

/** An answer frame (`reply` or `error`) with an id. */
export interface AnswerFrame {
  type: 'reply' | 'error'
  id: number
  result?: unknown
  error?: { code: SwitchboardError['code'], message: string, temporary: boolean, retryAfterMs?: unknown }
}

export interface CommandQueueOptions {
  /** Per command, counted from when it is written. */
  requestTimeoutMs: number
  /** The open connection to write to, or null while there is none: commands then wait. */
  link: () => Link | null
  clock?: Clock
}

interface Entry extends Command {
  frame: CommandFrame
  /** False while its frame is being prepared (a Blob being read): the writer waits at it. */
  ready: boolean
  cancelTimeout: (() => void) | undefined
  rateRetries: number
}

/**
 * The client's commands from the call to the answer: numbered in call order, waiting while
 * there is no connection, then written by a single writer (urgent ones first, at most 32
 * unanswered, paced under the server's message rate), matched to their reply or error by id,
 * timed out after `requestTimeoutMs`, and sent again when refused with `rate_limited`. On a
 * lost connection resendable commands go back to the front in their first order and the
 * others are dropped; on close every one fails with `closed`.
 */
export class CommandQueue {
  private nextId = 1
  private readonly inFlight = new Map<number, Entry>()
  private readonly urgent: Entry[] = []
  private readonly queue: Entry[] = []
  private readonly pacer: Pacer
  private readonly clock: Clock
  private cancelFlush: (() => void) | undefined

  constructor (private readonly options: CommandQueueOptions) {
    this.clock = options.clock ?? systemClock
    this.pacer = new Pacer(this.clock)
  }

  /** Commands waiting for the connection, urgent ones aside (what `maxQueuedCommands` bounds). */
  get waiting (): number {
    return this.queue.length
  }

  /** True when nothing waits or awaits an answer. */
  get isEmpty (): boolean {
    return this.queue.length === 0 && this.urgent.length === 0 && this.inFlight.size === 0
  }

  /** Queues a command behind the others of its kind; call `flush` to write what can be. */
  add (frame: CommandFrame, options: CommandOptions): Command {
    const entry: Entry = { id: this.nextId++, frame, ready: true, cancelTimeout: undefined, rateRetries: 0, ...options }
    ;(options.urgent ? this.urgent : this.queue).push(entry)
    return entry
  }

  /**
   * Queues a (non-urgent) command whose frame is still being prepared, such as a publish of a
   * Blob being read: it takes its place in call order now, and the commands behind it wait
   * until `frame` settles (then it is written as usual), or it fails with `failed`'s error.
   * `placeholder` stands for the frame meanwhile (its type names the command in errors).
   */
  addWhenReady (placeholder: CommandFrame, frame: Promise<CommandFrame>, options: CommandOptions, failed: (err: unknown) => SwitchboardError): Command {
    const entry: Entry = { id: this.nextId++, frame: placeholder, ready: false, cancelTimeout: undefined, rateRetries: 0, ...options, urgent: false }
    this.queue.push(entry)
    frame.then((ready) => {
      if (!this.queue.includes(entry)) return // withdrawn or closed meanwhile
      entry.frame = ready
      entry.ready = true
      this.flush()
    }, (err: unknown) => {
      if (!this.queue.includes(entry)) return
      this.withdraw(entry)
      entry.done(failed(err), undefined)
      this.flush()
    })
    return entry
  }

  /** True when the command was written on this connection and awaits its answer. */
  isInFlight (command: Command): boolean {
    return this.inFlight.get(command.id) === command
  }

  /** True when the command waits to be written. */
  isWaiting (command: Command): boolean {
    return this.urgent.includes(command as Entry) || this.queue.includes(command as Entry)
  }

  /** Takes a command that was not written yet out of the queue (one in flight stays). */
  withdraw (command: Command): void {
    for (const list of [this.urgent, this.queue]) {
      const index = list.indexOf(command as Entry)
      if (index !== -1) list.splice(index, 1)
    }
  }

  /** A connection opened: pace the writer a little under the server's bucket from the welcome. */
  connected (limits: Pick<WelcomeFrame['limits'], 'messagesBurst' | 'messagesPerSecond'>): void {
    this.pacer.reset(limits.messagesBurst, limits.messagesPerSecond)
  }

  /** The single writer: urgent commands first, at most MAX_IN_FLIGHT unanswered, paced by the server's rate. */
  flush (): void {
    this.cancelFlush?.()
    this.cancelFlush = undefined
    const link = this.options.link()
    if (link === null) return
    while (this.inFlight.size < MAX_IN_FLIGHT && (this.urgent.length > 0 || this.queue.length > 0)) {
      // A command still being prepared holds back the ones behind it (call order); urgent ones pass.
      if (this.urgent.length === 0 && !this.queue[0]!.ready) return
      const wait = this.pacer.take()
      if (wait > 0) {
        this.cancelFlush = this.clock.after(wait, () => this.flush())
        return
      }
      const command = (this.urgent.length > 0 ? this.urgent : this.queue).shift()!
      const frame = link.codec.encode({ ...command.frame, id: command.id })
      // Refused here rather than by the server: an oversize frame would close the connection
      // with 1009, a code the client must not reconnect after.
      const oversize = tooLarge(command.frame, frame, link.maxMessageBytes)
      if (oversize !== null) {
        command.done(new SwitchboardError('bad_request', oversize, false, command.idempotencyKey), undefined)
        continue
      }
      this.inFlight.set(command.id, command)
      command.cancelTimeout = this.clock.after(this.options.requestTimeoutMs, () => this.timedOut(command))
      try {
        link.send(frame)
      } catch {
        // The socket failed under us: its close event requeues the command.
        return
      }
    }
  }

  /**
   * Settles the command a `reply` or `error` answers (nothing when it timed out already). A
   * `rate_limited` refusal is not final: the server did not run the command, so it goes back
   * before every later one (by id) and the writer pauses, up to MAX_RATE_RETRIES times.
   */
  answer (frame: AnswerFrame): void {
    const command = this.inFlight.get(frame.id)
    if (command === undefined) return // timed out already
    this.inFlight.delete(command.id)
    command.cancelTimeout?.()
    command.cancelTimeout = undefined
    if (frame.type === 'reply') {
      command.done(null, frame.result)
    } else {
      const error = frame.error!
      if (error.code === 'rate_limited' && command.rateRetries < MAX_RATE_RETRIES) {
        command.rateRetries++
        insertInOrder(command.urgent ? this.urgent : this.queue, command)
        // Pause the writer for a token, or for as long as the server said (the per-user publish
        // rate is shared by every connection of the user, so this connection's own pacing
        // cannot see it).
        this.pacer.refused(error.retryAfterMs)
      } else {
        command.done(new SwitchboardError(error.code, error.message, error.temporary, command.idempotencyKey), undefined)
      }
    }
    this.flush()
  }

  /**
   * The connection was lost: answers to what was written will not come. Resendable commands go
   * back to the front of the queue in id order (a publish keeps its key, so the server answers
   * a repeat with the first position); the others and every urgent command (they belong to the
   * lost connection) are dropped.
   */
  connectionLost (): void {
    this.cancelFlush?.()
    this.cancelFlush = undefined
    const inFlight = [...this.inFlight.values()].sort((a, b) => a.id - b.id)
    this.inFlight.clear()
    const requeue: Entry[] = []
    for (const command of inFlight) {
      command.cancelTimeout?.()
      command.cancelTimeout = undefined
      if (command.resend) requeue.push(command)
      else command.dropped()
    }
    this.queue.unshift(...requeue)
    for (const command of this.urgent.splice(0)) command.dropped()
  }

  /** The client closed: every command fails with `error` (a publish's error keeps its key). */
  close (error: SwitchboardError): void {
    this.cancelFlush?.()
    this.cancelFlush = undefined
    const commands = [...this.inFlight.values(), ...this.urgent, ...this.queue]
    this.inFlight.clear()
    this.urgent.length = 0
    this.queue.length = 0
    for (const command of commands) {
      command.cancelTimeout?.()
      command.cancelTimeout = undefined
      command.done(command.idempotencyKey === undefined ? error : new SwitchboardError(error.code, error.message, error.temporary, command.idempotencyKey), undefined)
    }
  }

  private timedOut (command: Entry): void {
    if (this.inFlight.get(command.id) !== command) return
    this.inFlight.delete(command.id)
    command.cancelTimeout = undefined
    const what = command.frame.type === 'publish' ? 'publish (it may have been stored: retry with the same idempotencyKey)' : command.frame.type
    command.done(new SwitchboardError('timeout', `No reply to ${what} within ${this.options.requestTimeoutMs} ms`, true, command.idempotencyKey), undefined)
    this.flush()
  }
}

/** A token bucket that keeps the writer under the server's message rate. */
class Pacer {
  private tokens = 0
  private capacity = 0
  private rate = 0
  private at = 0

  constructor (private readonly clock: Clock) {}

  reset (burst: number, perSecond: number): void {
    // A little under the server's bucket: frames sent at the limit can arrive bunched up.
    this.capacity = Math.max(1, burst - 2)
    this.tokens = this.capacity
    this.rate = perSecond * 0.95
    this.at = this.clock.now()
  }

  /** Milliseconds until the bucket has a token (0: one was taken). */
  take (): number {
    this.refill()
    if (this.tokens >= 1) {
      this.tokens -= 1
      return 0
    }
    return Math.max(1, Math.ceil((1 - this.tokens) * 1000 / this.rate))
  }

  /** A frame was refused for rate: wait a token's time, or the server's `retryAfterMs` if longer. */
  refused (retryAfterMs: unknown): void {
    const pause = typeof retryAfterMs === 'number' && retryAfterMs > 0 ? retryAfterMs * this.rate / 1000 : 0
    // Counted from now, not from the last send: the time the refusal took to arrive is not
    // part of the wait the server asked for.
    this.refill()
    this.tokens = Math.min(this.tokens, 1 - Math.max(1, pause))
  }

  /** Brings the bucket up to now: the tokens earned since it was last looked at. */
  private refill (): void {
    const now = this.clock.now()
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.at) * this.rate / 1000)
    this.at = now
  }
}

/**
 * Puts a refused command back before every later one (by id), so several commands refused in
 * a row go out again in the order they were first sent.
 */
function insertInOrder (list: Entry[], command: Entry): void {
  let index = 0
  while (index < list.length && list[index]!.id < command.id) index++
  list.splice(index, 0, command)
}

/**
 * Why a command may not be sent, or null: a publish's payload over `maxMessageBytes` (which
 * the server would refuse), or a frame over maxFrameBytes (which would close the connection).
 * Measured as the server measures: the bytes, or the UTF-8 length of the JSON text of a value.
 */
function tooLarge (command: CommandFrame, frame: WireFrame, maxMessageBytes: number): string | null {
  const frameLimit = maxFrameBytes(maxMessageBytes)
  // A JSON frame holds the JSON text of its data as it is: a frame within the payload limit
  // needs no closer look (three bytes per UTF-16 code unit at most).
  const small = typeof frame === 'string' && frame.length * 3 <= maxMessageBytes
  if (command.type === 'publish' && !small) {
    const bytes = payloadBytes(command.data)
    if (bytes > maxMessageBytes) {
      return `The publish payload is ${bytes} bytes, over the server's maxMessageBytes (${maxMessageBytes}); it was not sent`
    }
  }
  const frameBytes = typeof frame === 'string' ? (frame.length * 3 <= frameLimit ? 0 : utf8Length(frame)) : frame.byteLength
  if (frameBytes > frameLimit) {
    return `The ${command.type} frame is ${frameBytes} bytes, over the server's frame limit (${frameLimit} for maxMessageBytes ${maxMessageBytes}); it was not sent`
  }
  return null
}
