import { Errors } from '../errors.js'
import type { HistoryQuery, PageQuery, StreamPosition } from './engine.js'

/** What a history read asks for, over WebSocket (`history`) or REST (GET /rooms/:id/messages). */
export interface HistoryRequestInput {
  since?: StreamPosition | undefined
  before?: number | undefined
  after?: number | undefined
  epoch?: string | undefined
  limit: number
  maxBytes: number
}

/** A recovery-style read (the newest, or after `since`), or a page read back or forward. */
export type HistoryRequest =
  | { page: false, query: HistoryQuery }
  | { page: true, query: PageQuery }

/**
 * One rule for both edges: `before` or `after` (one at a time, optionally in `epoch`) asks for
 * a page (HistoryPage); otherwise the read is today's, the newest or what follows `since`.
 * A combination that means two things is refused with a message that says why.
 */
export function historyRequest (input: HistoryRequestInput): HistoryRequest {
  const { since, before, after, epoch, limit, maxBytes } = input
  if (before !== undefined && after !== undefined) {
    throw new Errors.Validation('`before` and `after` do not go together: a page goes one way (ask again with its `next`)')
  }
  if (before === undefined && after === undefined) {
    if (epoch !== undefined) throw new Errors.Validation('`epoch` goes with `before` or `after`')
    return { page: false, query: { limit, maxBytes, ...(since === undefined ? {} : { since }) } }
  }
  if (since !== undefined) {
    throw new Errors.Validation('`since` (what was missed after a position) does not go with `before` or `after` (paging)')
  }
  return {
    page: true,
    query: {
      limit,
      maxBytes,
      ...(before === undefined ? {} : { before }),
      ...(after === undefined ? {} : { after }),
      ...(epoch === undefined ? {} : { epoch })
    }
  }
}
