import type { LoadReport } from '../src/cli/load/report.js'
import { PEERS, type Variant } from './servers.js'

/**
 * The scenarios of the suite (issue 6, then issue 20's binary fan-out), sized for a 2-core
 * machine, in a full size (`npm run bench`) and a quick one (`npm run bench:quick`, a few
 * minutes). Each is one `switchboard load` invocation per server; `metrics` picks what the
 * scenario compares out of the generator's JSON report. Scenarios added since the first six
 * are named, not numbered: other issues add theirs too.
 */

export type Size = 'full' | 'quick'

export interface Scenario {
  id: 'burst' | 'steady' | 'rooms' | 'idle' | 'handshakes' | 'two-nodes' | 'binary-fanout'
  title: string
  /** What it measures, for the table notes. */
  description: string
  variants: readonly Variant[]
  /** Generator flags (without --url, --target, --token, --server-pid, --json). */
  args: string[]
  /**
   * Generator flags of a pass run against the same server process before the measured one,
   * its result discarded: the measure is then the server's steady cost, not its first
   * compilation of the code path (see docs/performance.md, "How a run works").
   */
  warmup?: string[]
  /**
   * Runs per server at least, whatever --runs says: for a measure whose target is smaller than
   * its spread between runs, three medians are a coin toss.
   */
  minRuns?: number
  /** Rooms the servers need (Switchboard creates them before the run). */
  rooms: number
  /** Connections the run opens: the per-user, per-address and handshake limits are sized from it. */
  connections: number
  /**
   * Switchboard settings raised for this scenario beyond the connection limits, each with
   * why (docs/performance.md lists them).
   */
  raise: Record<string, { value: string, why: string }>
  metrics: (r: LoadReport) => Record<string, number | null>
}

const latency = (r: LoadReport): Record<string, number | null> => ({
  p50Ms: r.latencyMs.p50,
  p99Ms: r.latencyMs.p99,
  p999Ms: r.latencyMs.p99_9
})

export function scenarios (size: Size): Scenario[] {
  const full = size === 'full'
  const burstSubs = full ? 1000 : 300
  const burstMessages = full ? 1000 : 300
  const steadySubs = full ? 1000 : 300
  const steadySeconds = full ? 10 : 2
  const roomsSubs = full ? 5000 : 1000
  const roomsCount = full ? 500 : 100
  const idle = full ? 10_000 : 2000
  const handshakes = full ? 3000 : 500
  const handshakesWarmup = full ? 1000 : 300
  const binarySubs = full ? 1000 : 300
  const binaryMessages = full ? 1000 : 300
  const binaryBytes = 1024
  // The open-loop scenarios publish for a second before the timed part: a fresh process's
  // first fan-outs run unoptimised code (30–100 ms for the first tenth of a second, every
  // server), and 1 % of a ten-second run is half a second: unwarmed, p99 would measure start-up.
  const steadyWarmupSeconds = 1
  const steadyArgs = ['--subscribers', String(steadySubs), '--rooms', '1', '--publishers', '1', '--rate', '50', '--duration', String(steadySeconds), '--warmup', String(steadyWarmupSeconds), '--size', '100']
  return [
    {
      id: 'burst',
      title: '1. Burst fan-out',
      description: `1 room, ${burstSubs} subscribers, 100-byte messages, ${burstMessages} messages as fast as backpressure allows`,
      variants: [...PEERS, 'switchboard-memory-history'],
      // --duration is the burst's cap on writing: far above what the slowest peer needs, so
      // every server sends every message (a capped run would leave messages unsent).
      args: ['--subscribers', String(burstSubs), '--rooms', '1', '--publishers', '1', '--burst', '--messages', String(burstMessages), '--size', '100', '--duration', '120', '--drain-ms', '10000'],
      rooms: 1,
      connections: burstSubs + 1,
      raise: {
        WS_MESSAGES_BURST: { value: String(burstMessages + 100), why: `the one publisher sends all ${burstMessages} messages at once (default bucket: 100)` },
        PUBLISH_BURST_PER_USER: { value: String(burstMessages + 100), why: `the same ${burstMessages} messages are one user's (default bucket: 200)` }
      },
      metrics: (r) => ({
        deliveriesPerCpuS: r.server?.deliveriesPerCpuSecond ?? null,
        deliveriesPerS: r.deliveries.perSecond,
        cpuS: r.server?.cpuSeconds.run ?? null,
        ...latency(r)
      })
    },
    {
      id: 'steady',
      title: '2. Steady fan-out',
      description: `1 room, ${steadySubs} subscribers, 50 messages/s for ${steadySeconds} s (open loop) after ${steadyWarmupSeconds} s of the same, untimed`,
      variants: PEERS,
      args: steadyArgs,
      rooms: 1,
      connections: steadySubs + 1,
      raise: {},
      metrics: (r) => ({ ...latency(r), cpuS: r.server?.cpuSeconds.run ?? null })
    },
    {
      id: 'rooms',
      title: '3. Many rooms',
      description: `${roomsSubs} subscribers in ${roomsCount} rooms of 10, 200 messages/s over 10 publishers for ${steadySeconds} s after ${steadyWarmupSeconds} s of the same, untimed`,
      variants: PEERS,
      args: ['--subscribers', String(roomsSubs), '--rooms', String(roomsCount), '--publishers', '10', '--rate', '200', '--duration', String(steadySeconds), '--warmup', String(steadyWarmupSeconds), '--size', '100', '--batch', '200'],
      rooms: roomsCount,
      connections: roomsSubs + 10,
      raise: {
        RATE_LIMIT_MAX: { value: String(roomsCount + 100), why: `set-up only: the ${roomsCount} rooms are created over REST within a minute (default 600 requests a minute)` },
        PUBLISH_RATE_PER_USER: { value: '300', why: 'the ten publishers are one user sending 200 a second together (default 100); 300 leaves room for timer jitter' }
      },
      metrics: (r) => ({ ...latency(r), deliveriesPerCpuS: r.server?.deliveriesPerCpuSecond ?? null, cpuS: r.server?.cpuSeconds.run ?? null })
    },
    {
      id: 'idle',
      title: '4. Idle capacity',
      description: `${idle} authenticated connections, each subscribed to one of 10 rooms, then idle`,
      variants: PEERS,
      args: ['--subscribers', String(idle), '--rooms', '10', '--publishers', '0', '--batch', '250'],
      rooms: 10,
      connections: idle,
      raise: {},
      metrics: (r) => ({
        rssPerConnBytes: r.server?.rssPerConnectionBytes ?? null,
        connectCpuS: r.server?.cpuSeconds.connect ?? null
      })
    },
    {
      id: 'handshakes',
      title: '5. Handshakes',
      description: `${handshakes} connections opened 50 at a time after a warm-up of ${handshakesWarmup}, each to the server's first frame (Switchboard: JWT verified before the upgrade, welcome frame; ws frame-once + JWT: the hub verifying the same JWT before the upgrade)`,
      // The JWT-checking hub only in full runs: quick stays under two minutes.
      variants: full ? [...PEERS, 'ws-framed-jwt'] : PEERS,
      args: ['--subscribers', '0', '--publishers', String(handshakes), '--messages', '0', '--batch', '50'],
      warmup: ['--subscribers', '0', '--publishers', String(handshakesWarmup), '--messages', '0', '--batch', '50'],
      // One server's connects per CPU-second move by 20 % and more between runs here, more
      // than the margin of its target: five runs each, alternating.
      ...(full ? { minRuns: 5 } : {}),
      rooms: 0,
      connections: handshakes + handshakesWarmup,
      raise: {},
      metrics: (r) => ({
        connectsPerCpuS: r.server?.connectionsPerCpuSecond ?? null,
        connectsPerS: r.connect.perSecond,
        p99ConnectMs: r.connect.p99Ms
      })
    },
    {
      id: 'two-nodes',
      title: '6. Two nodes through Redis',
      description: 'Scenario 2 with the subscribers on node A and the publisher on node B (Redis pub/sub, PostgreSQL), against scenario 2 on one node on embedded defaults and on one node on the same Redis and PostgreSQL; the same three set-ups of the frame-once hub (one process, one relaying through Redis PUBLISH, two) as the reference for what this machine\'s Redis costs any server; server CPU is the subscribers\' process only',
      // The hub's set-ups answer "can this machine judge a 1 ms line at all": the least a hop
      // through this Redis costs, measured in the same rounds (docs/performance.md).
      variants: ['switchboard', 'switchboard-redis', 'switchboard-2-nodes', 'ws-framed', 'ws-framed-redis', 'ws-framed-2-nodes'],
      // The target (the hop adds ≤ 1 ms at p50) is smaller than one node's own p50 spread
      // between runs on the 2-core machines here, and a stretch of a minute or two
      // that slows every set-up at once (docs/performance.md) can cover four runs in a row:
      // eleven runs each, alternating; the hop lines are judged round by round
      // (roundByRound in summary.ts), so such a stretch costs rounds, not the verdict.
      ...(full ? { minRuns: 11 } : {}),
      args: steadyArgs,
      rooms: 1,
      connections: steadySubs + 1,
      raise: {},
      metrics: (r) => ({ ...latency(r), cpuS: r.server?.cpuSeconds.run ?? null })
    },
    {
      id: 'binary-fanout',
      title: 'Binary fan-out',
      description: `1 room, ${binarySubs} subscribers, ${binaryMessages} messages of ${binaryBytes} random bytes as fast as backpressure allows; Switchboard on each codec (MessagePack: bytes as \`bin\`; JSON: bytes as base64), the frame-once hub in binary frames, Socket.IO 4 emitting a Buffer; bytes on the wire are WebSocket frames with their headers`,
      variants: ['switchboard-msgpack', 'switchboard-json', 'ws-framed', 'socketio'],
      // The burst's settings, with bytes: see 'burst' for --duration.
      args: ['--subscribers', String(binarySubs), '--rooms', '1', '--publishers', '1', '--burst', '--messages', String(binaryMessages), '--size', String(binaryBytes), '--binary', '--duration', '120', '--drain-ms', '10000'],
      rooms: 1,
      connections: binarySubs + 1,
      raise: {
        WS_MESSAGES_BURST: { value: String(binaryMessages + 100), why: `the one publisher sends all ${binaryMessages} messages at once (default bucket: 100)` },
        PUBLISH_BURST_PER_USER: { value: String(binaryMessages + 100), why: `the same ${binaryMessages} messages are one user's (default bucket: 200)` },
        // The peers buffer without a bound; the frames queued on a socket are the one frame
        // every subscriber shares, so the budget bounds bytes counted, not memory held.
        WS_MAX_BUFFERED_BYTES: { value: String(4 * 1024 * 1024), why: `each subscriber is sent ${binaryMessages} frames of 1.1–1.5 KB at once, about ${Math.round(binaryMessages * 1.5)} KB with base64, and the generator reads every socket from one core: behind on one, it would see it cut off as a slow consumer (4008; default budget 1 MiB)` }
      },
      metrics: (r) => ({
        deliveriesPerCpuS: r.server?.deliveriesPerCpuSecond ?? null,
        wireBytesPerDelivery: r.wire?.bytesPerDelivery ?? null,
        deliveriesPerS: r.deliveries.perSecond,
        cpuS: r.server?.cpuSeconds.run ?? null
      })
    }
  ]
}

/**
 * The limits every scenario raises, sized to it: all bench connections are one user from one
 * address (defaults: 20 per user, 1000 per address, 120 handshakes a minute per address, 256
 * HTTP connections open per address, which a `--batch` of handshakes at once comes close to),
 * and that ordinary user creates every room of the scenario (default: 50 rooms per user).
 */
export function scenarioLimits (s: Scenario): Record<string, string> {
  const n = String(s.connections + 100)
  const rooms = String(Math.max(s.rooms, 50))
  return { WS_MAX_CONNECTIONS_PER_USER: n, WS_MAX_CONNECTIONS_PER_IP: n, WS_HANDSHAKES_PER_IP_PER_MINUTE: n, HTTP_MAX_CONNECTIONS_PER_IP: n, MAX_ROOMS_PER_USER: rooms }
}

/** Whether a run measured the intended load: everything published, delivered once, nothing refused or closed. */
export function cleanRun (r: LoadReport): boolean {
  return r.deliveries.lost === 0 && r.deliveries.duplicates === 0 && r.deliveries.unexpected === 0 &&
    r.messages.unsent === 0 && Object.keys(r.messages.refused).length === 0 && r.closed.length === 0
}
