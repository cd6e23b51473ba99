/**
 * The Prometheus metrics of one app: its registry, every `switchboard_*` metric, the
 * RealtimeMetrics the core feeds (src/realtime/metrics.ts) and the scrape. plugins/metrics.ts
 * builds it, decorates it and closes it; GET /metrics serves the scrape.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { AuthFailureReason, GrantRenewal, GrantSource, MetricTotals, RateLimitScope, RealtimeMetrics } from './realtime/metrics.js'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import { COMMAND_SCHEMAS } from '@switchboard/protocol/messages'
import type { PoolStats } from './store/index.js'
import type { CompressionTotals } from './realtime/ws-deflate.js'
import { HOOK_NAMES } from './config.js'
import type { HookDropReason, HookMetrics, HookOutcome } from './hooks/metrics.js'

export interface Metrics {
  /** This app's registry: its own `switchboard_*` metrics plus the shared process metrics. */
  readonly registry: Registry
  /** What the real-time core calls; cheap enough for per-frame paths. */
  readonly realtime: RealtimeMetrics
  /** What the hooks to the application's backend call (src/hooks). */
  readonly hooks: HookMetrics
  /** The Content-Type that goes with `scrape()`. */
  readonly contentType: string
  /** Prometheus text exposition of everything in `registry`. */
  scrape(): Promise<string>
  /**
   * One HTTP request answered: its method, its route pattern (`/rooms/:id`, never the URL;
   * undefined when no route matched) and status, and how long it took.
   */
  httpRequest(method: string, route: string | undefined, statusCode: number, seconds: number): void
  /** A publication confirmed by the cluster archive (PostgreSQL), `seconds` after its publish. */
  archived(seconds: number): void
  /** Rows one run of the cluster archive's retention sweep deleted on this node. */
  archiveSwept(rows: number): void
  /** Running totals for the admin page's headline numbers (GET /admin/stats), without a scrape. */
  totals(): MetricTotals
  /** Drops every metric of this app (process metrics stay for the other apps). */
  close(): void
}

/** From an in-process fan-out (tens of µs) to a node in trouble (1 s); a cross-node hop lands in between. */
const PUBLISH_TO_WRITE_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
/** From a health probe (sub-ms) to a login's deliberately slow password hash and a request cut at its deadline. */
const HTTP_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** The methods the API answers; whatever else a client sends is `other`, so it cannot grow the label set. */
const HTTP_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
/** A pong may take up to a heartbeat interval (25 s by default) before the connection is dropped. */
/** A hook answers within HOOKS_TIMEOUT_MS (1 s by default, 30 s at most). */
const HOOK_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** Archiving runs within a batch's round trips (ms); a database outage holds publications for its length. */
const ARCHIVE_LAG_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
const PING_RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25]

// Written as records so that adding a reason or scope to the core's union fails to compile
// here until its series is pre-created too.
const AUTH_FAILURE_REASONS = Object.keys({ missing: 1, invalid: 1, expired: 1, revoked: 1, account_closed: 1, origin: 1 } satisfies Record<AuthFailureReason, 1>)
const RATE_LIMIT_SCOPES = Object.keys({ messages: 1, publishes_per_user: 1, handshakes: 1, connections_per_user: 1, connections_per_ip: 1 } satisfies Record<RateLimitScope, 1>)
const GRANT_SOURCES = Object.keys({ cache: 1, store: 1, shared: 1 } satisfies Record<GrantSource, 1>)
const GRANT_RENEWALS = Object.keys({ renewed: 1, superseded: 1, refused: 1, failed: 1 } satisfies Record<GrantRenewal, 1>)
const HOOK_OUTCOMES = Object.keys({ ok: 1, refused: 1, timeout: 1, unreachable: 1, status: 1, invalid: 1, busy: 1 } satisfies Record<HookOutcome, 1>)
const HOOK_DROP_REASONS = Object.keys({ queue_full: 1, retries: 1, rejected: 1 } satisfies Record<HookDropReason, 1>)
const MESSAGE_TYPES = new Set([...Object.keys(COMMAND_SCHEMAS), 'invalid'])
const SERVER_CLOSE_CODES = new Set<number>(Object.values(CloseCodes))
const NO_COMPRESSION: CompressionTotals = { deflates: 0, deflateSeconds: 0, framesCompressed: 0, bytesSaved: 0 }

/**
 * Default metrics hang a GC PerformanceObserver and an event-loop delay monitor on the process
 * that prom-client can never remove, so collecting them once per app would leak both in a
 * process that builds many apps (the tests). They describe the process, not the app, so one
 * set is created on first use and shared by every app's registry.
 */
let processRegistry: Registry | undefined

/**
 * How often the event-loop delay monitor behind nodejs_eventloop_lag_* samples, in ms.
 * prom-client's default (10 ms) wakes the loop a hundred times a second (two epoll returns
 * each): most of an idle node's CPU apart from its heartbeats (docs/performance.md,
 * "Idle CPU"). A stall still shows in the next sample; one shorter than the interval that ends
 * between two samples does not, which is acceptable for a lag metric read per scrape.
 */
const LOOP_DELAY_SAMPLE_MS = 100

function processMetrics (): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    // Includes nodejs_eventloop_lag_seconds and its p50/p90/p99 from monitorEventLoopDelay.
    collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: LOOP_DELAY_SAMPLE_MS })
  }
  return processRegistry
}

/**
 * A counter whose hot path is a plain addition: prom-client's own `inc` hashes and validates
 * labels on every call, so totals are kept here and copied into the counter at scrape time.
 * Metrics join the registries named in their constructor, so nothing else needs to hold them.
 */
function tally (registry: Registry, name: string, help: string): { value: number } {
  const state = { value: 0 }
  new Counter({ name, help, registers: [registry], collect () { this.reset(); this.inc(state.value) } })
  return state
}

/** The labelled form of `tally`; `initial` label values are exported as 0 before their first event, so rate() works from it. */
function labelledTally (registry: Registry, name: string, help: string, label: string, initial: readonly string[] = []): Map<string, number> {
  const counts = new Map<string, number>(initial.map(value => [value, 0]))
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect () {
      this.reset()
      for (const [value, count] of counts) this.inc({ [label]: value }, count)
    }
  })
  return counts
}

function bump (counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1)
}

/**
 * A peer may close with any code from 1000 to 4999; exporting each as its own series would let
 * one client grow the label set without bound. Codes the server itself sends and the
 * RFC 6455 range keep their number; anything else is `other`.
 */
function closeCodeLabel (code: number): string {
  return SERVER_CLOSE_CODES.has(code) || (code >= 1000 && code <= 1015) ? String(code) : 'other'
}

/**
 * Builds a registry of its own (never prom-client's global one: several apps live in one test
 * process, and each must count only its own connections) and the RealtimeMetrics the core
 * feeds into it.
 */
export function createMetrics (sources: { databasePool?: () => PoolStats, historyBytes?: () => number | undefined, compression?: () => CompressionTotals | undefined, hookQueueBytes?: () => number | undefined, archivePending?: () => number | undefined } = {}): Metrics {
  const own = new Registry()

  let open = 0
  new Gauge({ name: 'switchboard_connections', help: 'WebSocket connections open now', registers: [own], collect () { this.set(open) } })
  const connects = tally(own, 'switchboard_connects_total', 'WebSocket connections accepted (after the upgrade)')
  const disconnects = labelledTally(own, 'switchboard_disconnects_total', 'WebSocket connections ended, by close code (1006: the peer vanished)', 'code')
  const messagesIn = labelledTally(own, 'switchboard_messages_in_total', 'Client commands received, by type (`invalid`: failed to parse)', 'type', [...MESSAGE_TYPES])
  const messagesOut = tally(own, 'switchboard_messages_out_total', 'Publication frames written to subscribers\' sockets (one per subscriber per publication)')
  const bytesOut = tally(own, 'switchboard_bytes_out_total', 'Bytes of the frames counted by switchboard_messages_out_total')
  const slowConsumers = tally(own, 'switchboard_slow_consumer_cutoffs_total', 'Connections cut off for passing their outbound buffer budget (close 4008)')
  const authFailures = labelledTally(own, 'switchboard_auth_failures_total', 'WebSocket handshakes refused for authentication or origin, by reason', 'reason', AUTH_FAILURE_REASONS)
  const rateLimited = labelledTally(own, 'switchboard_rate_limited_total', 'Messages or handshakes refused by a rate limit or connection cap, by scope', 'scope', RATE_LIMIT_SCOPES)
  const recoveries = labelledTally(own, 'switchboard_recoveries_total', 'Subscribes with `since`, by whether everything missed was recovered', 'recovered', ['true', 'false'])
  const roomAuthorizations = labelledTally(own, 'switchboard_room_authorizations_total', 'Room access checks of publishes, history and presence, by what answered them (cache: a kept grant; store: a query; shared: a query already in flight for the same grant)', 'source', GRANT_SOURCES)
  const grantRenewals = labelledTally(own, 'switchboard_grant_renewals_total', 'Background renewals of grants past half their life, by outcome (superseded: a revocation came meanwhile; failed: the store could not answer)', 'outcome', GRANT_RENEWALS)
  const publishToWrite = new Histogram({
    name: 'switchboard_publish_to_write_seconds',
    help: 'From a publish being accepted to its frame being written to the local subscribers',
    buckets: PUBLISH_TO_WRITE_BUCKETS,
    registers: [own]
  })
  const pingRtt = new Histogram({
    name: 'switchboard_ping_rtt_seconds',
    help: 'Round trip of the server heartbeat ping to the client pong',
    buckets: PING_RTT_BUCKETS,
    registers: [own]
  })

  // Hooks: labelled by hook and outcome (both closed sets), so prom-client's own counter serves;
  // a hook call costs an HTTP round trip, far more than the label lookup.
  const hookCalls = new Counter({ name: 'switchboard_hook_calls_total', help: 'Calls to the application\'s backend (HOOKS_URL), one per attempt, by hook and outcome (ok, refused, timeout, unreachable, status: not 2xx, invalid: not the hook\'s answer, busy: HOOKS_CONCURRENCY reached, no request made)', labelNames: ['hook', 'outcome'], registers: [own] })
  const hookSeconds = new Histogram({ name: 'switchboard_hook_seconds', help: 'Latency of hook calls that were made, by hook', labelNames: ['hook'], buckets: HOOK_SECONDS_BUCKETS, registers: [own] })
  const hookDropped = new Counter({ name: 'switchboard_hook_events_dropped_total', help: 'Hook events (published, join, leave, disconnect) never delivered, by hook and reason (queue_full: HOOKS_QUEUE_BYTES reached; retries: HOOKS_RETRIES ran out; rejected: the backend answered 4xx)', labelNames: ['hook', 'reason'], registers: [own] })
  // With hooks configured their series start at 0, so rate() works from the first scrape.
  if (sources.hookQueueBytes !== undefined) {
    const queued = sources.hookQueueBytes
    new Gauge({ name: 'switchboard_hook_queue_bytes', help: 'Bytes of hook events waiting to be delivered (HOOKS_QUEUE_BYTES bounds it)', registers: [own], collect () { this.set(queued() ?? 0) } })
    for (const hook of HOOK_NAMES) {
      for (const outcome of HOOK_OUTCOMES) hookCalls.inc({ hook, outcome }, 0)
    }
    for (const hook of ['published', 'join', 'leave', 'disconnect']) {
      for (const reason of HOOK_DROP_REASONS) hookDropped.inc({ hook, reason }, 0)
    }
  }
  const hooks: HookMetrics = {
    call (hook, outcome, seconds) {
      hookCalls.inc({ hook, outcome })
      if (seconds !== null) hookSeconds.observe({ hook }, seconds)
    },
    dropped (hook, reason) { hookDropped.inc({ hook, reason }) }
  }

  // Labelled by route pattern, not URL: a scanner's made-up paths all land on `unmatched`.
  const httpLabels = ['method', 'route', 'status_code']
  const httpRequests = new Counter({ name: 'switchboard_http_requests_total', help: 'HTTP requests answered, by method, route pattern (`unmatched`: no route) and status code', labelNames: httpLabels, registers: [own] })
  const httpDuration = new Histogram({ name: 'switchboard_http_request_duration_seconds', help: 'From an HTTP request\'s arrival to its answer sent, by method, route pattern and status code', labelNames: httpLabels, buckets: HTTP_DURATION_BUCKETS, registers: [own] })

  // The cluster archive: its lag per publication, and what waits in the queues (0 without one).
  const archiveLag = new Histogram({ name: 'switchboard_archive_lag_seconds', help: 'From a publish to its row confirmed by the cluster archive (PostgreSQL), per archived publication', buckets: ARCHIVE_LAG_BUCKETS, registers: [own] })
  const archiveSwept = new Counter({ name: 'switchboard_archive_swept_rows_total', help: 'Rows the cluster archive\'s retention sweep deleted on this node (past their room\'s archiveDays, or of deleted rooms)', registers: [own] })
  const archivePending = sources.archivePending
  new Gauge({ name: 'switchboard_archive_queue_length', help: 'Publications waiting in Redis for the cluster archive, in the rooms\' queues this node looked at last (ARCHIVE_QUEUE_ROOM_BYTES bounds each room\'s)', registers: [own], collect () { this.set(archivePending?.() ?? 0) } })

  const historyBytes = sources.historyBytes
  if (historyBytes !== undefined) {
    new Gauge({
      name: 'switchboard_history_bytes',
      help: 'Bytes of history this node holds (in-memory engine; HISTORY_MEMORY_BYTES bounds it; 0 with Redis, which holds it instead)',
      registers: [own],
      collect () { this.set(historyBytes() ?? 0) }
    })
  }

  // permessage-deflate (WS_COMPRESSION=on): kept by the compression itself, read at scrape time; 0 while off.
  const compression = sources.compression
  const compressionCounter = (name: string, help: string, read: (totals: CompressionTotals) => number): void => {
    new Counter({ name, help, registers: [own], collect () { this.reset(); this.inc(read(compression?.() ?? NO_COMPRESSION)) } })
  }
  compressionCounter('switchboard_ws_deflates_total', 'Frame payloads deflated for permessage-deflate: one per frame however many sockets it goes to (WS_COMPRESSION=on)', t => t.deflates)
  compressionCounter('switchboard_ws_deflate_seconds_total', 'Event-loop seconds spent deflating them', t => t.deflateSeconds)
  compressionCounter('switchboard_ws_compressed_frames_total', 'Frames written compressed, one per socket', t => t.framesCompressed)
  compressionCounter('switchboard_ws_compression_saved_bytes_total', 'Bytes compression kept off the wire: those frames\' uncompressed size minus what was written', t => t.bytesSaved)

  const pool = sources.databasePool
  if (pool !== undefined) {
    // Read at scrape time: the pool keeps its own counts.
    new Gauge({
      name: 'switchboard_db_pool_connections',
      help: 'PostgreSQL connections of this node\'s pool, by state (busy: running a query)',
      labelNames: ['state'],
      registers: [own],
      collect () {
        const { open, idle } = pool()
        this.set({ state: 'busy' }, open - idle)
        this.set({ state: 'idle' }, idle)
      }
    })
    new Gauge({
      name: 'switchboard_db_pool_waiting',
      help: 'Queries waiting for a PostgreSQL connection (the pool is at DATABASE_POOL_MAX, every connection busy)',
      registers: [own],
      collect () { this.set(pool().waiting) }
    })
  }

  const realtime: RealtimeMetrics = {
    connectionOpened () { open++; connects.value++ },
    connectionClosed (code) { open--; bump(disconnects, closeCodeLabel(code)) },
    // The type is attacker-chosen text when parsing failed; only known types become labels.
    messageIn (type) { bump(messagesIn, MESSAGE_TYPES.has(type) ? type : 'invalid') },
    messagesOut (frames, bytes) { messagesOut.value += frames; bytesOut.value += bytes },
    publishToWrite (seconds) { publishToWrite.observe(seconds) },
    slowConsumer () { slowConsumers.value++ },
    authFailure (reason) { bump(authFailures, reason) },
    rateLimited (scope) { bump(rateLimited, scope) },
    recovery (recovered) { bump(recoveries, recovered ? 'true' : 'false') },
    pingRtt (seconds) { pingRtt.observe(seconds) },
    roomAuthorization (source) { bump(roomAuthorizations, source) },
    grantRenewal (outcome) { bump(grantRenewals, outcome) }
  }

  // Merged last: a merged registry holds the metrics that exist at the time of the merge.
  const registry = Registry.merge([processMetrics(), own])
  return {
    registry,
    realtime,
    hooks,
    contentType: registry.contentType,
    archived (seconds) { archiveLag.observe(seconds) },
    archiveSwept (rows) { archiveSwept.inc(rows) },
    httpRequest (method, route, statusCode, seconds) {
      // A route at '/' under a prefix matches with and without the slash: one label, as the docs write it.
      const pattern = route === undefined ? 'unmatched' : route.length > 1 && route.endsWith('/') ? route.slice(0, -1) : route
      const labels = { method: HTTP_METHODS.has(method) ? method : 'other', route: pattern, status_code: String(statusCode) }
      httpRequests.inc(labels)
      httpDuration.observe(labels, seconds)
    },
    scrape: () => registry.metrics(),
    totals: () => {
      let messagesInTotal = 0
      for (const count of messagesIn.values()) messagesInTotal += count
      return { connections: open, messagesIn: messagesInTotal, messagesOut: messagesOut.value }
    },
    close: () => { registry.clear(); own.clear() }
  }
}
