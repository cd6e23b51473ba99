import type { NodeReport } from './engine.js'
import type { Logger } from './logger.js'

/** A report is dropped once its node has missed this many intervals: it stopped, or lost Redis. */
export const REPORT_EXPIRY_INTERVALS = 3
/**
 * Nodes remembered at most. Reports come from the cluster's own Redis, but a bound keeps a
 * misconfigured neighbour (two clusters on one key prefix, a restart loop) from growing the map.
 */
export const MAX_REPORTED_NODES = 1024

/**
 * Cluster samples kept (one per report interval of this node): with the default 5 s interval,
 * the last ten minutes, so the admin console's charts show them as soon as it opens.
 */
export const CLUSTER_HISTORY_SAMPLES = 120

/** The cluster's totals at one of this node's report ticks, over the nodes alive then (GET /admin/nodes/history). */
export interface ClusterSample {
  /** Epoch ms, by this node's clock. */
  at: number
  nodes: number
  connections: number
  messagesInPerSecond: number
  messagesOutPerSecond: number
}

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
  /** A ring of CLUSTER_HISTORY_SAMPLES: `samples[next]` is the oldest once it is full. */
  private readonly samples: ClusterSample[] = []
  private next = 0
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
    this.record(at)
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

  /** The other nodes alive, as far as their reports tell: who should answer a question on the control channel. */
  peers (): string[] {
    this.prune(this.now())
    return [...this.reports.keys()].filter(id => id !== this.options.nodeId)
  }

  /** The cluster's totals at each of this node's last CLUSTER_HISTORY_SAMPLES ticks, the oldest first. */
  history (): ClusterSample[] {
    return [...this.samples.slice(this.next), ...this.samples.slice(0, this.next)]
  }

  close (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /**
   * The totals of the latest reports at this moment: each node's own rates (the same counters
   * as its /metrics), summed, so every node's ring tells the same story of the cluster.
   */
  private record (at: number): void {
    const sample: ClusterSample = { at, nodes: 0, connections: 0, messagesInPerSecond: 0, messagesOutPerSecond: 0 }
    for (const { report } of this.reports.values()) {
      sample.nodes++
      sample.connections += report.connections
      sample.messagesInPerSecond += report.messagesInPerSecond
      sample.messagesOutPerSecond += report.messagesOutPerSecond
    }
    if (this.samples.length < CLUSTER_HISTORY_SAMPLES) {
      this.samples.push(sample)
      return
    }
    this.samples[this.next] = sample
    this.next = (this.next + 1) % CLUSTER_HISTORY_SAMPLES
  }

  private prune (at: number): void {
    const oldest = at - this.options.intervalMs * REPORT_EXPIRY_INTERVALS
    for (const [id, { lastSeenAt }] of this.reports) {
      if (lastSeenAt < oldest && id !== this.options.nodeId) this.reports.delete(id)
    }
  }
}
