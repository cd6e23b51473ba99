import type { NodeReport } from './engine.js'
import type { Logger } from './logger.js'

/** A report is dropped once its node has missed this many intervals: it stopped, or lost Redis. */
export const REPORT_EXPIRY_INTERVALS = 3
/**
 * Nodes remembered at most. Reports come from the cluster's own Redis, but a bound keeps a
 * misconfigured neighbour (two clusters on one key prefix, a restart loop) from growing the map.
 */
export const MAX_REPORTED_NODES = 1024

/** A node's figures as GET /admin/nodes shows them: the report, whether it is this node, and its age. */
export interface ReportedNode extends NodeReport {
  /** True for the node that answered the request. */
  self: boolean
  /** Epoch ms when this node last heard from it (its own clock: no skew between nodes). */
  lastSeenAt: number
}

export interface NodeReportsOptions {
  nodeId: string
  intervalMs: number
  /** This node's figures now, apart from its id, the report's time and the loop delay (measured here). */
  figures: () => Omit<NodeReport, 'id' | 'reportedAt' | 'eventLoopDelayMs'>
  /** Sends this node's report to the others; absent: a single node (the in-memory engine), which reports to itself. */
  publish?: (report: NodeReport) => Promise<void>
  log: Logger
  now?: () => number
}

/**
 * Node reports (issue 25): every `intervalMs` this node records its own figures and sends them
 * on the control channel; every node keeps the last report of each node it hears from and
 * forgets one that has missed REPORT_EXPIRY_INTERVALS intervals. On the in-memory engine the
 * one node reports to itself, so the answer has the same shape everywhere.
 *
 * The event-loop delay is how late the report timer itself fired: no extra timer samples the
 * loop (an idle node's wake-ups are budgeted, docs/performance.md), and a stall at the moment a
 * report is due shows in it.
 */
export class NodeReports {
  private readonly reports = new Map<string, { report: NodeReport, lastSeenAt: number }>()
  private readonly now: () => number
  private timer: NodeJS.Timeout | undefined
  private lastTick: number | undefined

  constructor (private readonly options: NodeReportsOptions) {
    this.now = options.now ?? Date.now
  }

  /** Reports now, then every interval, until `close`. */
  start (): void {
    if (this.timer !== undefined) return
    this.tick()
    this.timer = setInterval(() => this.tick(), this.options.intervalMs)
    this.timer.unref()
  }

  /** Records this node's report, sends it to the others and forgets expired nodes. */
  tick (): void {
    const at = this.now()
    const eventLoopDelayMs = this.lastTick === undefined ? 0 : Math.max(0, at - this.lastTick - this.options.intervalMs)
    this.lastTick = at
    const report: NodeReport = { ...this.options.figures(), id: this.options.nodeId, reportedAt: at, eventLoopDelayMs }
    this.reports.set(report.id, { report, lastSeenAt: at })
    this.prune(at)
    this.options.publish?.(report).catch((err: unknown) => this.options.log.warn({ err }, 'node report not sent'))
  }

  /** Another node's report, from the control channel. */
  receive (report: NodeReport): void {
    if (report.id === this.options.nodeId) return
    if (!this.reports.has(report.id) && this.reports.size >= MAX_REPORTED_NODES) return
    this.reports.set(report.id, { report, lastSeenAt: this.now() })
  }

  /** The live nodes (reported within the expiry), this one first, then by address. */
  list (): ReportedNode[] {
    this.prune(this.now())
    const self = this.options.nodeId
    return [...this.reports.values()]
      .map(({ report, lastSeenAt }) => ({ ...report, self: report.id === self, lastSeenAt }))
      .sort((a, b) => Number(b.self) - Number(a.self) || a.address.localeCompare(b.address) || a.id.localeCompare(b.id))
  }

  /** How many other nodes are alive, as far as their reports tell. */
  peers (): number {
    this.prune(this.now())
    return this.reports.size - (this.reports.has(this.options.nodeId) ? 1 : 0)
  }

  close (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  private prune (at: number): void {
    const oldest = at - this.options.intervalMs * REPORT_EXPIRY_INTERVALS
    for (const [id, { lastSeenAt }] of this.reports) {
      if (lastSeenAt < oldest && id !== this.options.nodeId) this.reports.delete(id)
    }
  }
}
