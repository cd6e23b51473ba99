import {
  createRedisConnection, DEFAULT_REDIS_TIMEOUT_MS, describeRedisEndpoint, hashTag, quitRedis, redisScript as script, runScript, type RedisEndpoint, type RedisScript as Script
} from '../../redis.js'
import type {
  BrokerHandler, ControlMessage, Engine, HistoryQuery, HistoryResult, PresenceInfo, Publication, PublishRequest,
  PublishResult, RoomEvent, StreamOptions, StreamPosition
} from '../engine.js'
import { latestResult, newEpoch, PUBLICATION_OVERHEAD_BYTES, publicationBytes, sinceResult } from '../engine.js'
import type { Logger } from '../logger.js'

export interface RedisEngineOptions extends RedisEndpoint {
  /** Prepended to every key and channel, so several deployments can share one Redis. */
  keyPrefix?: string
  /** A dead node's connections leave presence within this many seconds; default 30. */
  presenceTtlSeconds?: number
  log: Logger
  /** How long a publish's idempotency key is remembered per room; default 5 minutes. */
  idempotencyWindowMs?: number
  /** Connect and command timeout: calls fail after this long instead of hanging; default 2000. */
  timeoutMs?: number
  /**
   * Replicas that must have a publication (Redis WAIT) before its publish is acknowledged; 0
   * (the default) acknowledges once the primary has it. See docs/scale-out.md#redis-sentinel.
   */
  waitReplicas?: number
  /** How long WAIT may take; a publish not confirmed by then fails with `unavailable`. Default 500. */
  waitTimeoutMs?: number
  /** Receives what a broker handler threw; the default logs it. */
  onHandlerError?: (err: unknown, room: string) => void
  /**
   * Bytes (publicationBytes) one room's stream may hold (HISTORY_ROOM_BYTES): each publish
   * trims the oldest past it, keeping the newest. Absent: only count and TTL bound a stream.
   */
  roomHistoryBytes?: number
}

export type RedisEngine = Engine & { ping(): Promise<void> }

const DEFAULT_IDEMPOTENCY_WINDOW_MS = 5 * 60_000
/** The epoch (meta key) outlives a quiet room's history, so a client resumes in the same epoch after a lull. */
const MIN_META_TTL_MS = 24 * 3600_000
/** Rooms one sweep looks at, per round; the rest wait for the next round. */
const SWEEP_BATCH = 100
/**
 * Connection ids per refresh script. A script holds Redis for every client while it runs:
 * one script for a room of 10,000 took 27-38 ms on the benchmark machine, every refresh, and
 * every node's publishes waited behind it; 500 take about 1.5 ms, and other commands run
 * between the batches.
 */
export const REFRESH_BATCH = 500

// ---------------------------------------------------------------------------------------
// Lua. Every script touches the keys of one room only (one hash tag), so it also runs on
// Redis Cluster; times come from the server's clock (TIME), so every node agrees on them.

const LUA_COMMON = `
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%.0f', n) end
local function offsetOf(entry) return tonumber(string.match(entry[1], '^(%d+)')) end
local function fieldOf(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function timeOf(entry) return tonumber(fieldOf(entry, 't') or 0) end
-- Bytes of the stream's publications before this entry, in this epoch (0 for entries stored
-- before streams counted bytes).
local function startOf(entry) return tonumber(fieldOf(entry, 'c') or 0) end
-- Offset of the oldest entry for which keep(entry) holds, where keep is false on a prefix of
-- the stream and true after it (entries are appended in time and byte order): binary search.
-- nil when it holds for none or none is held.
local function firstWhere(stream, keep)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if not first then return nil end
  if keep(first) then return offsetOf(first) end
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not keep(last) then return nil end
  local lo, hi = offsetOf(first), offsetOf(last)
  local bound = hi
  while bound - lo > 1 do
    local mid = math.floor((lo + bound) / 2)
    local entry = redis.call('XRANGE', stream, int(mid), '+', 'COUNT', 1)[1]
    local o = offsetOf(entry)
    if o >= bound then bound = mid
    elseif keep(entry) then hi = o; bound = o
    else lo = o end
  end
  return hi
end
-- Offset of the oldest entry stored after cutoff, or nil when every entry expired.
local function firstLive(stream, cutoff)
  return firstWhere(stream, function(entry) return timeOf(entry) > cutoff end)
end
-- The room's epoch and offset, creating the stream (offset 0, the caller's fresh epoch) when
-- missing. A stream key left without its meta belongs to no epoch any more: it goes.
local function ensureMeta(meta, stream, newEpoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = newEpoch
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  end
  return epoch, tonumber(redis.call('HGET', meta, 'offset'))
end
`

/**
 * KEYS: meta, stream[, idempotency key]. ARGV: fresh epoch, historySize, historyTtlMs,
 * metaTtlMs, payload, channel, idempotency window ms, publisher id, ts, kind, the
 * publication's bytes, the room's byte cap, the channel message's head. Returns {epoch,
 * offset, duplicate}. Numbering, storage and delivery are one atomic step: every node sees
 * the same order.
 *
 * Each entry records `c`, the bytes published in the epoch before it (the meta's `bytes` is
 * the running total), so the stream's size is `bytes - c` of its oldest entry whatever trimmed
 * it, and the byte cap is one binary search, not a walk over what is dropped.
 */
const PUBLISH_LUA = LUA_COMMON + `
local meta, stream, idem = KEYS[1], KEYS[2], KEYS[3]
local epoch, _ = ensureMeta(meta, stream, ARGV[1])
if idem then
  local seen = redis.call('GET', idem)
  if seen then
    local at = string.find(seen, ':', 1, true)
    -- A key from an earlier epoch (history removed since) is stale: publish anew.
    if at and string.sub(seen, 1, at - 1) == epoch then
      return { epoch, tonumber(string.sub(seen, at + 1)), 1 }
    end
  end
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local now = nowMs()
local size, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if size > 0 and ttl > 0 then
  local start = tonumber(redis.call('HGET', meta, 'bytes') or '0')
  local total = start + tonumber(ARGV[11])
  redis.call('HSET', meta, 'bytes', int(total))
  redis.call('XADD', stream, 'MAXLEN', size, int(offset) .. '-0', 't', int(now), 'c', int(start),
    'f', ARGV[8], 's', ARGV[9], 'k', ARGV[10], 'd', ARGV[5])
  local cutoff, floor = now - ttl, total - tonumber(ARGV[12])
  -- The newest publication stays even alone over the room's cap: a room keeps its last word.
  local keep = firstWhere(stream, function(entry) return timeOf(entry) > cutoff and startOf(entry) >= floor end) or offset
  redis.call('XTRIM', stream, 'MINID', int(keep) .. '-0')
  redis.call('PEXPIRE', stream, ttl)
else
  redis.call('DEL', stream)
end
redis.call('PEXPIRE', meta, ARGV[4])
if idem then redis.call('SET', idem, epoch .. ':' .. int(offset), 'PX', ARGV[7]) end
redis.call('PUBLISH', ARGV[6], 'm|' .. epoch .. '|' .. int(offset) .. '|' .. ARGV[13] .. ARGV[5])
return { epoch, offset, 0 }
`

/**
 * KEYS: meta, stream. ARGV: fresh epoch, historySize, historyTtlMs, limit, since epoch ('' for
 * the newest), first offset wanted (with since), min meta TTL ms, max bytes of the page, the
 * bytes counted per publication beyond payload and publisher. Returns {epoch, offset,
 * entries}; limit 0 is position(). One snapshot: the entries and the top always agree.
 * Entries are read a few at a time, so a page capped by bytes never copies much more than it
 * returns, however large the publications.
 */
const HISTORY_LUA = LUA_COMMON + `
local meta, stream = KEYS[1], KEYS[2]
local epoch, offset = ensureMeta(meta, stream, ARGV[1])
-- Reading a stream keeps its epoch alive: subscribers of a quiet room hold positions in it.
if redis.call('PTTL', meta) < tonumber(ARGV[7]) then redis.call('PEXPIRE', meta, ARGV[7]) end
local size, ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local sinceEpoch = ARGV[5]
if limit <= 0 or size <= 0 or (sinceEpoch ~= '' and sinceEpoch ~= epoch) then return { epoch, offset, {} } end
local live = firstLive(stream, nowMs() - ttl)
if not live then return { epoch, offset, {} } end
local from = math.max(live, offset - size + 1)
if sinceEpoch == '' then from = math.max(from, offset - limit + 1) else from = math.max(from, tonumber(ARGV[6])) end
if from > offset then return { epoch, offset, {} } end
local maxBytes, overhead = tonumber(ARGV[8]), tonumber(ARGV[9])
local out, used = {}, 0
while #out < limit do
  local batch = redis.call('XRANGE', stream, int(from), '+', 'COUNT', math.min(16, limit - #out))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local bytes = #(fieldOf(entry, 'd') or '') + #(fieldOf(entry, 'f') or '') + overhead
    if #out > 0 and used + bytes > maxBytes then return { epoch, offset, out } end
    used = used + bytes
    out[#out + 1] = entry
  end
  from = offsetOf(batch[#batch]) + 1
end
return { epoch, offset, out }
`

/*
 * Presence of a room: KEYS are a hash connId → userId, a sorted set connId → expiry (server
 * ms) and a hash userId → live connection count. purge() drops expired connections and
 * returns the users whose last connection that was: each such user gets exactly one `leave`,
 * from whoever purged them (a removal is atomic, so only one caller sees it).
 */
const PRESENCE_COMMON = LUA_COMMON + `
local conns, expiries, users = KEYS[1], KEYS[2], KEYS[3]
local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', expiries, '-inf', int(now), 'LIMIT', 0, 1000)
  local vanished = {}
  for _, conn in ipairs(dead) do
    local user = redis.call('HGET', conns, conn)
    redis.call('HDEL', conns, conn)
    redis.call('ZREM', expiries, conn)
    if user and redis.call('HINCRBY', users, user, -1) <= 0 then
      redis.call('HDEL', users, user)
      vanished[#vanished + 1] = user
    end
  end
  return vanished
end
local function without(list, item)
  local out, found = {}, false
  for _, v in ipairs(list) do if v == item and not found then found = true else out[#out + 1] = v end end
  return out, found
end
local function earliest()
  local first = redis.call('ZRANGE', expiries, 0, 0, 'WITHSCORES')
  return first[2] or ''
end
local function keep(ms)
  redis.call('PEXPIRE', conns, ms)
  redis.call('PEXPIRE', expiries, ms)
  redis.call('PEXPIRE', users, ms)
end
`

/** ARGV: connId, userId, lifetime ms, keys TTL ms. Returns {first (0/1), earliest expiry, vanished users}. */
const PRESENCE_ADD_LUA = PRESENCE_COMMON + `
local conn, user = ARGV[1], ARGV[2]
local now = nowMs()
local vanished = purge(now)
local first = 0
if redis.call('HEXISTS', conns, conn) == 0 then
  redis.call('HSET', conns, conn, user)
  if redis.call('HINCRBY', users, user, 1) == 1 then first = 1 end
end
redis.call('ZADD', expiries, int(now + tonumber(ARGV[3])), conn)
if first == 1 then
  -- The user was present until now through a connection that just expired: presence never
  -- lapsed, so neither a leave nor a join.
  local rest, found = without(vanished, user)
  if found then vanished = rest; first = 0 end
end
keep(ARGV[4])
return { first, earliest(), vanished }
`

/** ARGV: connId, userId. Returns {last (0/1), vanished users (other than this one)}. */
const PRESENCE_REMOVE_LUA = PRESENCE_COMMON + `
local conn, user = ARGV[1], ARGV[2]
local vanished = purge(nowMs())
local last = 0
if redis.call('HGET', conns, conn) == user then
  redis.call('HDEL', conns, conn)
  redis.call('ZREM', expiries, conn)
  if redis.call('HINCRBY', users, user, -1) <= 0 then
    redis.call('HDEL', users, user)
    last = 1
  end
else
  -- This connection expired a moment ago: its removal is the user's leave, reported once.
  local rest, found = without(vanished, user)
  if found then vanished = rest; last = 1 end
end
return { last, vanished }
`

/**
 * ARGV: lifetime ms, keys TTL ms, last batch (1/0), connIds of this node (one batch of them).
 * Extends them; the last batch then purges (after all of this node's batches are extended, so
 * a slow node's own connections are not purged under it). Returns {earliest expiry ('' before
 * the last batch), vanished users, connIds that are gone (purged by another node while this
 * one was late)}.
 */
const PRESENCE_REFRESH_LUA = PRESENCE_COMMON + `
local now = nowMs()
local expiry = int(now + tonumber(ARGV[1]))
local missing = {}
for i = 4, #ARGV do
  if redis.call('HEXISTS', conns, ARGV[i]) == 1 then redis.call('ZADD', expiries, expiry, ARGV[i])
  else missing[#missing + 1] = ARGV[i] end
end
keep(ARGV[2])
if ARGV[3] ~= '1' then return { '', {}, missing } end
local vanished = purge(now)
return { earliest(), vanished, missing }
`

/** Returns {earliest expiry ('' when the room is empty), vanished users}. */
const PRESENCE_SWEEP_LUA = PRESENCE_COMMON + `
local vanished = purge(nowMs())
return { earliest(), vanished }
`

/** Returns {live connection count, distinct users of the live connections}. Read-only. */
const PRESENCE_GET_LUA = PRESENCE_COMMON + `
local live = redis.call('ZRANGEBYSCORE', expiries, '(' .. int(nowMs()), '+inf')
if #live == 0 then return { 0, {} } end
local seen, out, count = {}, {}, 0
-- HMGET in slices: unpack() of a huge room would overflow Lua's stack.
for i = 1, #live, 500 do
  local owners = redis.call('HMGET', conns, unpack(live, i, math.min(i + 499, #live)))
  for _, user in ipairs(owners) do
    if user then
      count = count + 1
      if not seen[user] then seen[user] = true; out[#out + 1] = user end
    end
  end
end
return { count, out }
`

/** KEYS: the presence room index. ARGV: batch size. Rooms whose earliest expiry has passed. */
const DUE_ROOMS_LUA = LUA_COMMON + `
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(nowMs()), 'LIMIT', 0, tonumber(ARGV[1]))
`

/*
 * Cluster-wide connection counts: one sorted set per user (or API key), connection id → expiry
 * (server ms). The node holding a connection refreshes it with its presence refresh, so a dead
 * node's connections stop counting within the presence TTL.
 */

/** KEYS: the user's set. ARGV: connId, limit, lifetime ms, key TTL ms. Returns 1 (reserved) or 0 (at the limit). */
const CONN_RESERVE_LUA = LUA_COMMON + `
local now = nowMs()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now))
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], int(now + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`

/** KEYS: the user's set. ARGV: lifetime ms, key TTL ms, this node's connIds of that user. */
const CONN_REFRESH_LUA = LUA_COMMON + `
local expiry = int(nowMs() + tonumber(ARGV[1]))
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

const SCRIPTS = {
  publish: script(PUBLISH_LUA),
  history: script(HISTORY_LUA),
  presenceAdd: script(PRESENCE_ADD_LUA),
  presenceRemove: script(PRESENCE_REMOVE_LUA),
  presenceRefresh: script(PRESENCE_REFRESH_LUA),
  presenceSweep: script(PRESENCE_SWEEP_LUA),
  presenceGet: script(PRESENCE_GET_LUA),
  dueRooms: script(DUE_ROOMS_LUA),
  connReserve: script(CONN_RESERVE_LUA),
  connRefresh: script(CONN_REFRESH_LUA)
}

function toNumber (value: unknown): number {
  return typeof value === 'number' ? value : Number(value)
}

/** A stream entry as XRANGE returns it: [id, [field, value, ...]]. */
function entryToPublication (entry: unknown): Publication {
  const [id, list] = entry as [string, string[]]
  const fields: Record<string, string | undefined> = {}
  for (let i = 0; i + 1 < list.length; i += 2) fields[list[i]!] = list[i + 1]
  const offset = Number(id.slice(0, id.indexOf('-')))
  if (fields.k === undefined) return legacyPublication(offset, fields.d ?? '{}')
  return { offset, payload: fields.d ?? 'null', kind: 'json', from: { id: fields.f ?? '' }, ts: Number(fields.s) }
}

/**
 * Entries and channel messages written before payloads were kept as text carry one JSON
 * envelope `{data, from, ts}`; they stay readable while they live out their TTL.
 */
function legacyPublication (offset: number, envelope: string): Publication {
  const parsed = JSON.parse(envelope) as { data?: unknown, from?: { id?: string }, ts?: number }
  return { offset, payload: JSON.stringify(parsed.data ?? null), kind: 'json', from: { id: parsed.from?.id ?? '' }, ts: parsed.ts ?? 0 }
}

/**
 * The channel message after `m|epoch|offset|`: `ts|kind|length of the publisher id|` then the
 * publisher id and the payload, unescaped. Built here, so the length is in the units JS reads
 * it back in; the payload runs to the end of the message and may hold anything.
 */
function messageHead (request: PublishRequest): string {
  return `${request.ts}|${request.kind}|${request.from.id.length}|${request.from.id}`
}

function decodeMessage (offset: number, rest: string): Publication {
  const tsEnd = rest.indexOf('|')
  const kindEnd = rest.indexOf('|', tsEnd + 1)
  const lengthEnd = rest.indexOf('|', kindEnd + 1)
  const fromEnd = lengthEnd + 1 + Number(rest.slice(kindEnd + 1, lengthEnd))
  return {
    offset,
    payload: rest.slice(fromEnd),
    kind: 'json',
    from: { id: rest.slice(lengthEnd + 1, fromEnd) },
    ts: Number(rest.slice(0, tsEnd))
  }
}

/**
 * The Redis engine: every node of a cluster shares numbering, history and presence through
 * one Redis, and publications reach every node subscribed to the room through pub/sub.
 *
 * - Publish is one Lua script (number, store in the room's stream, publish on the room's
 *   channel), so order is identical on every node and an acknowledged publication is stored.
 * - Three connections: commands (fail fast while Redis is away: no offline queue, short
 *   timeouts), pub/sub, and housekeeping (the presence refreshes and sweeps, so a publish
 *   never queues behind their batches). When the pub/sub connection comes back after a drop,
 *   it restores its channels and calls the handler's onReset: live delivery may have skipped
 *   publications, and subscribers recover them from history.
 * - Presence entries carry an expiry this node refreshes for its own connections; a node that
 *   dies stops refreshing, and a sweeper on every other node removes its connections and
 *   publishes the `leave` events, within presenceTtlSeconds.
 *
 * Redis being away never throws out of an event: calls reject (the node answers `unavailable`)
 * and ioredis reconnects with backoff.
 */
export async function createRedisEngine (options: RedisEngineOptions): Promise<RedisEngine> {
  const prefix = options.keyPrefix ?? 'sb:'
  if (/[{}]/.test(prefix)) throw new Error('redis engine: keyPrefix must not contain { or } (they delimit the hash tag)')
  const log = options.log
  const timeoutMs = options.timeoutMs ?? DEFAULT_REDIS_TIMEOUT_MS
  const waitReplicas = options.waitReplicas ?? 0
  const waitTimeoutMs = options.waitTimeoutMs ?? 500
  // WAIT runs on the command connection: its own timeout must end before the connection's.
  if (waitReplicas > 0 && waitTimeoutMs >= timeoutMs) throw new Error('redis engine: waitTimeoutMs must be shorter than timeoutMs')
  const idempotencyWindowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS
  const roomHistoryBytes = Math.min(Number.MAX_SAFE_INTEGER, options.roomHistoryBytes ?? Number.MAX_SAFE_INTEGER)
  const presenceTtlMs = Math.max(1, options.presenceTtlSeconds ?? 30) * 1000
  // Refreshed every ttl/3 with a lifetime of 3/4 ttl: one missed refresh is tolerated, and
  // with a sweep every ttl/4 a dead node's connections leave within ttl of its last refresh.
  const refreshMs = Math.floor(presenceTtlMs / 3)
  const presenceLifetimeMs = Math.floor(presenceTtlMs * 3 / 4)
  const sweepMs = Math.floor(presenceTtlMs / 4)
  // Whole presence keys outlive their entries, so a cluster that vanished leaves no garbage.
  const presenceKeysTtlMs = presenceLifetimeMs + presenceTtlMs
  const onHandlerError = options.onHandlerError ?? ((err: unknown, room: string) => {
    log.error({ err, room }, 'broker handler failed')
  })

  const cmd = createRedisConnection(options, { name: 'switchboard-cmd', log, timeoutMs })
  // Presence and connection-count refreshes and the sweep, on a connection of their own. A
  // refresh sends one script per room and per counted key, all at once (each up to
  // REFRESH_BATCH ids): on a node serving 10,000 rooms, 10,000 scripts. On the command
  // connection every publish, history read and subscribe behind them waited for the whole
  // queue; on its own connection Redis serves the two connections in turn, so a publish waits
  // for the script running, not for the rest of the refresh.
  const housekeeping = createRedisConnection(options, { name: 'switchboard-housekeeping', log, timeoutMs })
  // The pub/sub connection restores its channels itself (then tells the handler), so it knows
  // when they are active again.
  const sub = createRedisConnection(options, { name: 'switchboard-sub', log, timeoutMs, options: { autoResubscribe: false } })

  let closed = false
  let handler: BrokerHandler | null = null
  /** Channel → room for every room this node subscribed to. */
  const channels = new Map<string, string>()
  /** This node's presence entries, room → connId → userId: what the refresh keeps alive. */
  const local = new Map<string, Map<string, string>>()

  const keysOf = (room: string) => {
    const base = `${prefix}{${hashTag(room)}}`
    return {
      meta: `${base}:meta`,
      stream: `${base}:stream`,
      channel: `${base}:ch`,
      idem: (key: string) => `${base}:idem:${key}`,
      presence: [`${base}:pres:conns`, `${base}:pres:expiry`, `${base}:pres:users`]
    }
  }
  /** Rooms with presence entries, scored by their earliest expiry (never later than it): what sweepers visit. */
  const presenceIndex = `${prefix}presence:rooms`
  /** One channel for the whole cluster: every node subscribes to it for as long as it runs. */
  const controlChannel = `${prefix}control`
  const connectionsKey = (key: string): string => `${prefix}conns:{${hashTag(key)}}`
  /** This node's counted connections, key → connIds: what the refresh keeps alive. */
  const localConnections = new Map<string, Set<string>>()
  let controlHandler: ((message: ControlMessage) => void) | null = null

  // -------------------------------------------------------------------------------------
  // Scripts

  async function run (s: Script, keys: string[], args: Array<string | number>, conn = cmd): Promise<unknown> {
    return await runScript(conn, s, keys, args)
  }

  function assertOpen (): void {
    if (closed) throw new Error('redis engine is closed')
  }

  // -------------------------------------------------------------------------------------
  // Broker

  function deliver (room: string, call: (h: BrokerHandler) => void): void {
    if (handler === null) return
    try {
      call(handler)
    } catch (err) {
      onHandlerError(err, room)
    }
  }

  sub.on('message', (channel: string, message: string) => {
    if (channel === controlChannel) {
      if (closed || controlHandler === null) return
      let parsed: ControlMessage
      try {
        parsed = JSON.parse(message) as ControlMessage
      } catch (err) {
        log.warn({ err }, 'unreadable message on the control channel')
        return
      }
      try {
        controlHandler(parsed)
      } catch (err) {
        log.error({ err, control: parsed.type }, 'control handler failed')
      }
      return
    }
    const room = channels.get(channel)
    if (room === undefined || closed) return
    try {
      if (message.startsWith('m|') || message.startsWith('p|')) {
        const epochEnd = message.indexOf('|', 2)
        const offsetEnd = message.indexOf('|', epochEnd + 1)
        const epoch = message.slice(2, epochEnd)
        const offset = Number(message.slice(epochEnd + 1, offsetEnd))
        const rest = message.slice(offsetEnd + 1)
        const publication = message.startsWith('m|') ? decodeMessage(offset, rest) : legacyPublication(offset, rest)
        deliver(room, (h) => { h.onPublication(room, epoch, publication) })
      } else if (message.startsWith('e|')) {
        const event = JSON.parse(message.slice(2)) as RoomEvent
        deliver(room, (h) => { h.onEvent(room, event) })
      }
    } catch (err) {
      log.warn({ err, room }, 'unreadable message on a room channel')
    }
  })

  // The control channel is (re)subscribed on every 'ready'. Control messages sent while this
  // node was cut off are lost: the control channel is best-effort (docs/scale-out.md).
  let controlSubscription: Promise<void> = Promise.resolve()
  function subscribeControl (): void {
    controlSubscription = sub.subscribe(controlChannel).then(() => {}, (err: unknown) => {
      log.warn({ err }, 'subscribing to the control channel failed; retried on reconnect')
    })
  }
  sub.on('ready', () => { if (!closed) subscribeControl() })

  let subscriberLost = false
  // Publications sent while the connection was down reached nobody here; nothing was lost
  // for a node with no room subscribed.
  sub.on('close', () => { if (channels.size > 0) subscriberLost = true })
  sub.on('ready', () => {
    if (!subscriberLost || closed) return
    void (async () => {
      const wanted = [...channels.keys()]
      try {
        if (wanted.length > 0) await sub.subscribe(...wanted)
      } catch (err) {
        // Dropped again: the next 'ready' tries again, and only then is continuity restored.
        log.warn({ err }, 'restoring room subscriptions failed')
        return
      }
      subscriberLost = false
      log.info({ rooms: wanted.length }, 'room subscriptions restored; subscribers recover from history')
      if (handler !== null) {
        try {
          handler.onReset()
        } catch (err) {
          log.error({ err }, 'broker reset handler failed')
        }
      }
    })()
  })

  async function publish (room: string, request: PublishRequest, streamOptions: StreamOptions): Promise<PublishResult> {
    assertOpen()
    const k = keysOf(room)
    const historyTtlMs = Math.max(0, Math.floor(streamOptions.historyTtlSeconds * 1000))
    const keys = request.idempotencyKey === undefined ? [k.meta, k.stream] : [k.meta, k.stream, k.idem(request.idempotencyKey)]
    const result = await run(SCRIPTS.publish, keys, [
      newEpoch(), Math.max(0, Math.floor(streamOptions.historySize)), historyTtlMs,
      Math.max(historyTtlMs, MIN_META_TTL_MS), request.payload, k.channel, idempotencyWindowMs,
      request.from.id, request.ts, request.kind, publicationBytes(request.payload, request.from.id), roomHistoryBytes, messageHead(request)
    ]) as [string, number, number]
    // Also for a duplicate: its first attempt may have failed exactly here.
    if (waitReplicas > 0) {
      const confirmed = toNumber(await cmd.wait(waitReplicas, waitTimeoutMs))
      if (confirmed < waitReplicas) {
        // Stored and delivered on the primary, but not known to survive a failover: not
        // acknowledged. The client retries with its idempotency key and gets this same position.
        throw new Error(`publish confirmed by ${confirmed} of ${waitReplicas} replicas within ${waitTimeoutMs} ms`)
      }
    }
    return { epoch: result[0], offset: toNumber(result[1]), duplicate: toNumber(result[2]) === 1 }
  }

  async function subscribe (room: string): Promise<void> {
    assertOpen()
    const { channel } = keysOf(room)
    channels.set(channel, room)
    try {
      await sub.subscribe(channel)
    } catch (err) {
      channels.delete(channel)
      throw err
    }
  }

  async function unsubscribe (room: string): Promise<void> {
    assertOpen()
    const { channel } = keysOf(room)
    if (!channels.delete(channel)) return
    // Without a connection there is no subscription to end: it is not restored on reconnect.
    if (sub.status !== 'ready') return
    await sub.unsubscribe(channel)
  }

  async function publishEvent (room: string, event: RoomEvent): Promise<void> {
    assertOpen()
    await cmd.publish(keysOf(room).channel, `e|${JSON.stringify(event)}`)
  }

  // -------------------------------------------------------------------------------------
  // History

  async function readStream (room: string, streamOptions: StreamOptions, limit: number, since?: StreamPosition, maxBytes = Number.MAX_SAFE_INTEGER): Promise<{ epoch: string, offset: number, publications: Publication[] }> {
    const k = keysOf(room)
    const result = await run(SCRIPTS.history, [k.meta, k.stream], [
      newEpoch(), Math.max(0, Math.floor(streamOptions.historySize)), Math.max(0, Math.floor(streamOptions.historyTtlSeconds * 1000)),
      limit, since?.epoch ?? '', since === undefined ? 0 : Math.floor(since.offset) + 1, MIN_META_TTL_MS,
      Math.min(Number.MAX_SAFE_INTEGER, Math.floor(maxBytes)), PUBLICATION_OVERHEAD_BYTES
    ]) as [string, number, unknown[]]
    return { epoch: result[0], offset: toNumber(result[1]), publications: result[2].map(entryToPublication) }
  }

  async function history (room: string, query: HistoryQuery, streamOptions: StreamOptions): Promise<HistoryResult> {
    assertOpen()
    const limit = Math.max(0, Math.floor(query.limit))
    const { since } = query
    const { epoch, offset, publications } = await readStream(room, streamOptions, limit, since, query.maxBytes)
    if (since === undefined) return latestResult(epoch, offset, publications)
    return sinceResult(since, epoch, offset, publications)
  }

  async function position (room: string): Promise<StreamPosition> {
    assertOpen()
    const { epoch, offset } = await readStream(room, { historySize: 0, historyTtlSeconds: 0 }, 0)
    return { epoch, offset }
  }

  async function removeHistory (room: string): Promise<void> {
    assertOpen()
    const k = keysOf(room)
    // Idempotency keys stay until their window ends, but they name the old epoch and the
    // publish script ignores a key from another epoch: deleting them would need a SCAN.
    await cmd.del(k.meta, k.stream)
  }

  // -------------------------------------------------------------------------------------
  // Presence

  function announceLeaves (room: string, users: unknown): void {
    for (const user of users as string[]) {
      publishEvent(room, { type: 'leave', user: { id: user } })
        .catch((err: unknown) => log.warn({ err, room }, 'presence leave event failed'))
    }
  }

  function indexRoom (room: string, earliest: unknown): void {
    if (earliest === '' || earliest === null) return
    // LT: only ever lowers a room's score, so a sweeper never comes later than an expiry.
    cmd.zadd(presenceIndex, 'LT', String(earliest), room)
      .catch((err: unknown) => log.warn({ err, room }, 'presence index update failed'))
  }

  async function addEntry (room: string, connectionId: string, userId: string): Promise<boolean> {
    const result = await run(SCRIPTS.presenceAdd, keysOf(room).presence, [connectionId, userId, presenceLifetimeMs, presenceKeysTtlMs]) as [number, string, string[]]
    indexRoom(room, result[1])
    announceLeaves(room, result[2])
    return toNumber(result[0]) === 1
  }

  async function addPresence (room: string, connectionId: string, userId: string): Promise<boolean> {
    assertOpen()
    // Registered before Redis answers: if the add fails, the next refresh adds it (and joins).
    let mine = local.get(room)
    if (mine === undefined) local.set(room, mine = new Map())
    mine.set(connectionId, userId)
    return await addEntry(room, connectionId, userId)
  }

  async function removePresence (room: string, connectionId: string, userId: string): Promise<boolean> {
    assertOpen()
    const mine = local.get(room)
    if (mine?.get(connectionId) === userId) {
      mine.delete(connectionId)
      if (mine.size === 0) local.delete(room)
    }
    const result = await run(SCRIPTS.presenceRemove, keysOf(room).presence, [connectionId, userId]) as [number, string[]]
    announceLeaves(room, result[1])
    return toNumber(result[0]) === 1
  }

  async function getPresence (room: string): Promise<PresenceInfo> {
    assertOpen()
    const result = await run(SCRIPTS.presenceGet, keysOf(room).presence, []) as [number, string[]]
    return { users: [...result[1]].sort(), connections: toNumber(result[0]) }
  }

  async function refreshRoom (room: string, mine: Map<string, string>): Promise<void> {
    const ids = [...mine.keys()]
    const missing: string[] = []
    for (let from = 0; from < ids.length; from += REFRESH_BATCH) {
      const last = from + REFRESH_BATCH >= ids.length
      const result = await run(SCRIPTS.presenceRefresh, keysOf(room).presence, [presenceLifetimeMs, presenceKeysTtlMs, last ? 1 : 0, ...ids.slice(from, from + REFRESH_BATCH)], housekeeping) as [string, string[], string[]]
      missing.push(...result[2])
      if (last) {
        indexRoom(room, result[0])
        announceLeaves(room, result[1])
      }
    }
    for (const connectionId of missing) {
      // Purged by another node while this one was late (or never added: Redis was away):
      // still connected here, so it comes back, with a join if it is the user's first.
      const userId = local.get(room)?.get(connectionId)
      if (userId === undefined) continue
      const first = await addEntry(room, connectionId, userId)
      if (first) await publishEvent(room, { type: 'join', user: { id: userId } })
    }
  }

  async function refreshConnections (key: string, ids: string[]): Promise<void> {
    for (let from = 0; from < ids.length; from += REFRESH_BATCH) {
      await run(SCRIPTS.connRefresh, [connectionsKey(key)], [presenceLifetimeMs, presenceKeysTtlMs, ...ids.slice(from, from + REFRESH_BATCH)], housekeeping)
    }
  }

  let refreshing = false
  async function refresh (): Promise<void> {
    if (refreshing || closed || housekeeping.status !== 'ready') return
    refreshing = true
    try {
      await Promise.all([
        ...[...local].map(([room, mine]) => refreshRoom(room, new Map(mine))
          .catch((err: unknown) => log.warn({ err, room }, 'presence refresh failed'))),
        ...[...localConnections].map(([key, ids]) => refreshConnections(key, [...ids])
          .catch((err: unknown) => log.warn({ err }, 'connection count refresh failed')))
      ])
    } finally {
      refreshing = false
    }
  }

  /** After a reconnect every node refreshes first: sweeping at once would evict live connections whose refresh failed during the outage. */
  let sweepPausedUntil = 0
  let sweeping = false
  async function sweep (): Promise<void> {
    if (sweeping || closed || housekeeping.status !== 'ready' || Date.now() < sweepPausedUntil) return
    sweeping = true
    try {
      const due = await run(SCRIPTS.dueRooms, [presenceIndex], [SWEEP_BATCH], housekeeping) as string[]
      for (const room of due) {
        const keys = keysOf(room).presence
        let [earliest, vanished] = await run(SCRIPTS.presenceSweep, keys, [], housekeeping) as [string, string[]]
        announceLeaves(room, vanished)
        if (earliest === '') {
          await housekeeping.zrem(presenceIndex, room)
          // An add may have landed between the sweep and the removal from the index: look again.
          ;[earliest, vanished] = await run(SCRIPTS.presenceSweep, keys, [], housekeeping) as [string, string[]]
          announceLeaves(room, vanished)
        }
        if (earliest !== '') await housekeeping.zadd(presenceIndex, earliest, room)
      }
    } catch (err) {
      log.warn({ err }, 'presence sweep failed')
    } finally {
      sweeping = false
    }
  }

  let housekeepingReadyCount = 0
  housekeeping.on('ready', () => {
    if (++housekeepingReadyCount === 1 || closed) return
    sweepPausedUntil = Date.now() + refreshMs
    void refresh()
  })

  const refreshTimer = setInterval(() => { void refresh() }, refreshMs)
  const sweepTimer = setInterval(() => { void sweep() }, sweepMs)
  // Housekeeping must never keep a process alive on its own.
  refreshTimer.unref()
  sweepTimer.unref()

  // -------------------------------------------------------------------------------------
  // Start: connect all three; an unreachable Redis is not fatal (the node starts not ready, and
  // ioredis keeps trying).

  await Promise.all([cmd, sub, housekeeping].map(async (conn) => {
    try {
      await conn.connect()
    } catch (err) {
      log.warn({ err, ...describeRedisEndpoint(options) }, 'redis not reachable yet; retrying in the background')
    }
  }))

  await controlSubscription

  async function reserveConnection (key: string, connectionId: string, limit: number): Promise<boolean> {
    assertOpen()
    // Counted here before Redis answers: if the call fails, the next refresh counts it.
    let ids = localConnections.get(key)
    if (ids === undefined) localConnections.set(key, ids = new Set())
    ids.add(connectionId)
    const reserved = toNumber(await run(SCRIPTS.connReserve, [connectionsKey(key)], [connectionId, Math.floor(limit), presenceLifetimeMs, presenceKeysTtlMs])) === 1
    if (!reserved) forgetConnection(key, connectionId)
    return reserved
  }

  function forgetConnection (key: string, connectionId: string): void {
    const ids = localConnections.get(key)
    if (ids?.delete(connectionId) === true && ids.size === 0) localConnections.delete(key)
  }

  async function releaseConnection (key: string, connectionId: string): Promise<void> {
    assertOpen()
    forgetConnection(key, connectionId)
    await cmd.zrem(connectionsKey(key), connectionId)
  }

  return {
    kind: 'redis',
    broker: {
      setHandler (h: BrokerHandler) { handler = h },
      publish,
      subscribe,
      unsubscribe,
      publishEvent,
      async close () {
        handler = null
        channels.clear()
      }
    },
    history: { history, position, removeHistory },
    presence: { add: addPresence, remove: removePresence, get: getPresence },
    control: {
      async publishControl (message: ControlMessage) {
        assertOpen()
        await cmd.publish(controlChannel, JSON.stringify(message))
      },
      onControl (h) { controlHandler = h }
    },
    connections: { reserve: reserveConnection, release: releaseConnection },
    async ping () {
      assertOpen()
      // All three: without the pub/sub connection this node would serve no live publications,
      // without housekeeping its connections would expire from presence and the counts.
      await Promise.all([cmd.ping(), sub.ping(), housekeeping.ping()])
    },
    async close () {
      if (closed) return
      closed = true
      clearInterval(refreshTimer)
      clearInterval(sweepTimer)
      handler = null
      controlHandler = null
      channels.clear()
      localConnections.clear()
      // Presence entries are left to expire: on a clean shutdown the node removed its
      // connections already, and after a crash nobody could.
      local.clear()
      await Promise.all([quitRedis(cmd), quitRedis(sub), quitRedis(housekeeping)])
    }
  }
}
