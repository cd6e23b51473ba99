import type { ControlMessage } from './engine.js'
import { ScatterGather } from './scatter-gather.js'

/** Rooms one node puts in an answer at most (the busiest first): a control message stays well under a megabyte. */
export const MAX_ROOMS_PER_ANSWER = 10_000

export interface RoomCount {
  room: string
  /** Subscriptions to the room, over every node that answered (a connection counts once per room). */
  subscribers: number
}

export interface Census {
  /** The rooms with subscribers, the busiest first (then by id). */
  rooms: RoomCount[]
  /** Nodes whose rooms are counted (this one included), and nodes known from their reports. */
  nodesAnswered: number
  nodesKnown: number
  /** True when a node left rooms out (over MAX_ROOMS_PER_ANSWER) or a known node did not answer in time. */
  partial: boolean
}

type Answer = Omit<Extract<ControlMessage, { type: 'rooms_answer' }>, 'node'>
type Query = Omit<Extract<ControlMessage, { type: 'rooms_query' }>, 'node'>
/** What a census sends on the control channel (the control adds the sender's `node`). */
export type CensusMessage = Query | Answer

export interface RoomCensusOptions {
  nodeId: string
  /** This node's rooms with their subscriber counts. */
  local: () => Iterable<[string, number]>
  /** Sends on the control channel; false when it could not (a single node, or Redis down). */
  send: (message: CensusMessage) => Promise<boolean>
  /** The other live nodes' ids (from the node reports): who should answer. */
  peers: () => string[]
  timeoutMs?: number
}

/**
 * The active rooms across the cluster, by scatter-gather on the control channel: this node
 * asks (`rooms_query`), every node answers with its own rooms (`rooms_answer`), and the census
 * resolves when every node known from the node reports has answered, or after the timeout
 * with what came (`partial`). On the in-memory engine it is this node's rooms alone.
 */
export class RoomCensus {
  private readonly gathering: ScatterGather<Pick<Answer, 'rooms' | 'truncated'>>

  constructor (private readonly options: RoomCensusOptions) {
    this.gathering = new ScatterGather({ peers: options.peers, what: 'room listings', ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) })
  }

  /** Every node's rooms with subscribers whose id starts with `prefix`, merged. */
  async gather (prefix: string): Promise<Census> {
    const own = this.answerOf(prefix)
    const { answers: others, expected } = await this.gathering.gather(async (id) => await this.options.send({ type: 'rooms_query', id, prefix }))
    const answers = [own, ...others.map(a => a.answer)]
    const merged = new Map<string, number>()
    for (const answer of answers) {
      for (const [room, count] of answer.rooms) merged.set(room, (merged.get(room) ?? 0) + count)
    }
    const rooms = [...merged].map(([room, subscribers]) => ({ room, subscribers }))
      .sort((a, b) => b.subscribers - a.subscribers || (a.room < b.room ? -1 : 1))
    return {
      rooms,
      nodesAnswered: answers.length,
      nodesKnown: expected.length + 1,
      partial: answers.length < expected.length + 1 || answers.some(a => a.truncated)
    }
  }

  /** Another node asks: answer with this node's rooms. */
  query (message: Query, from: string): void {
    const { rooms, truncated } = this.answerOf(message.prefix)
    void this.options.send({ type: 'rooms_answer', id: message.id, to: from, rooms, truncated })
  }

  /** Another node answered: kept when it is for a census of this node still waiting. */
  answer (message: Answer, from: string): void {
    if (message.to !== this.options.nodeId) return
    this.gathering.answer(message.id, from, { rooms: message.rooms, truncated: message.truncated })
  }

  /** Answers nothing more: pending censuses resolve with what they have. */
  close (): void {
    this.gathering.close()
  }

  private answerOf (prefix: string): Pick<Answer, 'rooms' | 'truncated'> {
    const rooms: Array<[string, number]> = []
    for (const [room, count] of this.options.local()) if (room.startsWith(prefix)) rooms.push([room, count])
    if (rooms.length <= MAX_ROOMS_PER_ANSWER) return { rooms, truncated: false }
    rooms.sort((a, b) => b[1] - a[1])
    return { rooms: rooms.slice(0, MAX_ROOMS_PER_ANSWER), truncated: true }
  }
}
