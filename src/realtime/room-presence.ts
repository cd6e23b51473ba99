import type { Engine, PresenceInfo } from './engine.js'
import type { RoomHooks } from './room-hooks.js'
import { viaEngine } from './errors.js'
import type { Logger } from './logger.js'
import { SharedAnswers } from './shared-answers.js'

/** How long one presence answer serves a room's asks, and for how many rooms at most. */
const PRESENCE_ANSWER_MS = 1000
const PRESENCE_ANSWER_ROOMS = 10_000

/**
 * Who is in a room, as this node answers it: one presence answer per room serves every ask
 * of that room on this node for a second, and concurrent asks share one engine call. A
 * room's presence costs the engine work in proportion to its size (with Redis, one script
 * over every entry, during which Redis serves no other client), and any member may ask as
 * often as its message rate allows: without this, one client could keep Redis busy for the
 * whole cluster. What this node learns changes a room's presence (its own joins and leaves,
 * join and leave events of rooms it serves) drops that room's answer, so an answer is never
 * older than a change seen here, and never older than a second.
 */
export class RoomPresence {
  private readonly answers: SharedAnswers<PresenceInfo>

  constructor (
    private readonly presence: Engine['presence'],
    private readonly broker: Pick<Engine['broker'], 'publishEvent'>,
    private readonly log: Logger,
    now: () => number,
    private readonly hooks: Pick<RoomHooks, 'joined' | 'left'>
  ) {
    this.answers = new SharedAnswers<PresenceInfo>(PRESENCE_ANSWER_MS, PRESENCE_ANSWER_ROOMS, now)
  }

  /** The room's presence, shared with every ask of the last second. */
  get (room: string): Promise<PresenceInfo> {
    return this.answers.get(room, () => viaEngine(this.log, () => this.presence.get(room)))
  }

  /**
   * A connection here joined: counted, and a user's first connection announced to the room
   * unless the room turned its join/leave pushes off (`announce` false: nothing is published,
   * so no node pushes it; other nodes' answers then age out within PRESENCE_ANSWER_MS).
   * Never rejects.
   */
  async join (room: string, connectionId: string, userId: string, announce: boolean, info?: unknown): Promise<void> {
    try {
      const first = await this.presence.add(room, connectionId, userId)
      this.answers.drop(room)
      // The backend hears of every first join, whether or not the room pushes them to its subscribers.
      if (first) this.hooks.joined(room, userId)
      if (first && announce) {
        await this.broker.publishEvent(room, { type: 'join', user: info === undefined ? { id: userId } : { id: userId, info } })
      }
    } catch (err) {
      // Presence is advisory: a failure must not fail the subscription it follows.
      this.log.warn({ err, room }, 'presence join failed')
    }
  }

  /** A connection here left: uncounted, and a user's last connection announced to the room unless `announce` is false. */
  leave (room: string, connectionId: string, userId: string, announce: boolean): void {
    this.answers.drop(room)
    this.presence.remove(room, connectionId, userId)
      .then(async (left) => {
        this.answers.drop(room)
        if (left) this.hooks.left(room, userId)
        if (left && announce) await this.broker.publishEvent(room, { type: 'leave', user: { id: userId } })
      })
      .catch((err: unknown) => this.log.warn({ err, room }, 'presence leave failed'))
  }

  /** A join or leave event of the room came from any node: the next ask asks anew. */
  changed (room: string): void {
    this.answers.drop(room)
  }

  /** Events may have been lost: every answer goes. */
  reset (): void {
    this.answers.clear()
  }
}
