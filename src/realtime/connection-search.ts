import type { ConnectionDescription } from './connection.js'
import type { ControlMessage } from './engine.js'
import type { ConnectionFilter } from './hub.js'
import { ScatterGather } from './scatter-gather.js'

/** Most connections a listing returns (and one node puts in its answer). */
export const MAX_CONNECTIONS_LISTED = 500
/**
 * Bytes of connection descriptions one node puts in an answer at most: a connection may hold
 * WS_MAX_SUBSCRIPTIONS rooms, so the count alone does not bound a control message.
 */
export const MAX_ANSWER_BYTES = 256 * 1024

/** A connection and the node it lives on. */
export type ListedConnection = ConnectionDescription & { node: string }

export interface ConnectionListing {
  /** The oldest first, at most `limit`. */
  items: ListedConnection[]
  /** Nodes whose connections are in the listing (this one first). */
  nodesAnswered: string[]
  /** Nodes known from their reports that did not answer in time: their connections are missing. */
  nodesMissing: string[]
  /** True when more connections matched than the listing holds (`limit`, or a node's answer bound). */
  truncated: boolean
}

type Answer = Omit<Extract<ControlMessage, { type: 'connections_answer' }>, 'node'>
type Query = Omit<Extract<ControlMessage, { type: 'connections_query' }>, 'node'>
/** What a connection search sends on the control channel (the control adds the sender's `node`). */
export type ConnectionSearchMessage = Query | Answer

export interface ConnectionSearchOptions {
  nodeId: string
  /** This node's connections matching the filter. */
  local: (filter: ConnectionFilter) => ConnectionDescription[]
  send: (message: ConnectionSearchMessage) => Promise<boolean>
  /** The other live nodes' ids (from the node reports): who should answer. */
  peers: () => string[]
  timeoutMs?: number
}

/**
 * GET /admin/connections across the cluster: this node asks every node (`connections_query`
 * with the filter and a limit), each answers with its matching connections, at most `limit`
 * and MAX_ANSWER_BYTES (`connections_answer`), and the listing says which nodes answered and
 * which were missing when the wait ended. On the in-memory engine: this node's connections.
 */
export class ConnectionSearch {
  private readonly gathering: ScatterGather<Pick<Answer, 'items' | 'truncated'>>

  constructor (private readonly options: ConnectionSearchOptions) {
    this.gathering = new ScatterGather({ peers: options.peers, what: 'connection listings', ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) })
  }

  async list (filter: ConnectionFilter, limit: number): Promise<ConnectionListing> {
    const bounded = Math.max(1, Math.min(limit, MAX_CONNECTIONS_LISTED))
    const own = this.answerOf(filter, bounded)
    const { answers, missing } = await this.gathering.gather(async (id) => await this.options.send({ type: 'connections_query', id, ...filter, limit: bounded }))
    const all = [{ node: this.options.nodeId, answer: own }, ...answers]
    const items = all.flatMap(({ node, answer }) => answer.items.map(c => ({ ...c, node })))
      .sort((a, b) => a.connectedAt - b.connectedAt || (a.id < b.id ? -1 : 1))
    return {
      items: items.slice(0, bounded),
      nodesAnswered: all.map(a => a.node),
      nodesMissing: missing,
      truncated: items.length > bounded || all.some(a => a.answer.truncated)
    }
  }

  /** Another node asks: answer with this node's matching connections. */
  query (message: Query, from: string): void {
    const filter: ConnectionFilter = {
      ...(message.user === undefined ? {} : { user: message.user }),
      ...(message.room === undefined ? {} : { room: message.room })
    }
    const { items, truncated } = this.answerOf(filter, Math.min(message.limit, MAX_CONNECTIONS_LISTED))
    void this.options.send({ type: 'connections_answer', id: message.id, to: from, items, truncated })
  }

  /** Another node answered: kept when it is for a listing of this node still waiting. */
  answer (message: Answer, from: string): void {
    if (message.to !== this.options.nodeId) return
    this.gathering.answer(message.id, from, { items: message.items, truncated: message.truncated })
  }

  close (): void {
    this.gathering.close()
  }

  private answerOf (filter: ConnectionFilter, limit: number): Pick<Answer, 'items' | 'truncated'> {
    const matching = this.options.local(filter).sort((a, b) => a.connectedAt - b.connectedAt)
    const items: ConnectionDescription[] = []
    let bytes = 0
    for (const connection of matching) {
      if (items.length >= limit) break
      bytes += JSON.stringify(connection).length
      if (bytes > MAX_ANSWER_BYTES) break
      items.push(connection)
    }
    return { items, truncated: items.length < matching.length }
  }
}
