import { randomUUID } from 'node:crypto'
import { RealtimeError } from './errors.js'

/** How long a gathering waits for the other nodes' answers before it answers with what it has. */
export const GATHER_TIMEOUT_MS = 1000
/** Gatherings in flight on one node at once, per kind; more are refused (rate_limited) rather than queued. */
export const MAX_PENDING_GATHERINGS = 32

/** What came back: each answering node's answer (this node's own not included), and who is still missing. */
export interface Gathered<A> {
  answers: Array<{ node: string, answer: A }>
  /** Nodes known from the node reports when the question was asked, apart from this one. */
  expected: string[]
  /** Those of `expected` that did not answer within the timeout. */
  missing: string[]
}

export interface ScatterGatherOptions {
  /** The other live nodes' ids (from the node reports); none: a single node, nothing is sent. */
  peers: () => string[]
  /** Names the kind of question in the rate_limited error. */
  what: string
  timeoutMs?: number
}

interface Pending<A> {
  answers: Array<{ node: string, answer: A }>
  waiting: Set<string>
  done: () => void
}

/**
 * One question to every node on the control channel, and the answers gathered until every
 * node known from the node reports has answered or the timeout passed (the room census and the
 * cluster-wide connection list are both this). The caller sends the question under the id it
 * is given and hands the answers that come back to `answer`; an answer for a question that is
 * no longer waiting (late, or for another node) is dropped.
 */
export class ScatterGather<A> {
  private readonly pending = new Map<string, Pending<A>>()

  constructor (private readonly options: ScatterGatherOptions) {}

  /**
   * Asks: `send(id)` puts the question on the channel (false when it could not: nothing is
   * waited for). Throws rate_limited beyond MAX_PENDING_GATHERINGS in flight.
   */
  async gather (send: (id: string) => Promise<boolean>): Promise<Gathered<A>> {
    const expected = this.options.peers()
    if (expected.length === 0) return { answers: [], expected, missing: [] }
    if (this.pending.size >= MAX_PENDING_GATHERINGS) throw new RealtimeError('rate_limited', `Too many ${this.options.what} in flight on this node; retry shortly`, 1000)
    const id = randomUUID()
    const entry: Pending<A> = { answers: [], waiting: new Set(expected), done: () => {} }
    const complete = new Promise<void>((resolve) => { entry.done = resolve })
    this.pending.set(id, entry)
    let timer: NodeJS.Timeout | undefined
    try {
      if (await send(id)) {
        await Promise.race([complete, new Promise<void>((resolve) => { timer = setTimeout(resolve, this.options.timeoutMs ?? GATHER_TIMEOUT_MS) })])
      }
    } finally {
      clearTimeout(timer)
      this.pending.delete(id)
    }
    return { answers: entry.answers, expected, missing: [...entry.waiting] }
  }

  /**
   * A node's answer to question `id`. A node that started after the question was asked (not
   * in the reports yet) is kept too: its connections exist.
   */
  answer (id: string, from: string, answer: A): void {
    const entry = this.pending.get(id)
    if (entry === undefined || entry.answers.some(a => a.node === from)) return
    entry.answers.push({ node: from, answer })
    entry.waiting.delete(from)
    if (entry.waiting.size === 0) entry.done()
  }

  /** Waits no more: pending gatherings resolve with what they have. */
  close (): void {
    for (const entry of this.pending.values()) entry.done()
  }
}
