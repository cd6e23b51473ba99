import type { Cluster } from 'ioredis'
import { keySlot } from '../../redis.js'
import type { Logger } from '../logger.js'

/** How soon rooms whose shard channel could not be subscribed again are tried again. */
const RETRY_MS = 1000

export interface ShardContinuityOptions {
  /** A Cluster with sharded subscribers (one subscriber connection per primary, kept by ioredis). */
  sub: Cluster
  log: Logger
  isClosed(): boolean
  /**
   * These rooms' shard channels are active again after a gap: their subscribers recover from
   * history. Undefined: the control channel had a gap (with whatever rooms): every room resets.
   */
  onRestored(rooms: string[] | undefined): void
}

export interface ShardContinuity {
  /** SSUBSCRIBEs a room's channel, or the control channel when `room` is null. */
  subscribe(channel: string, room: string | null): Promise<void>
  unsubscribe(channel: string): Promise<void>
  /** The primaries (host:port) this node listens to for its rooms, with how many rooms each. */
  shards(): Map<string, number>
  /** Rooms whose shard channel is not known to be active (a shard lost, being followed). */
  lost(): number
  close(): void
}

/**
 * Live delivery on Redis Cluster, room by room. ioredis keeps one subscriber connection per
 * primary and subscribes each shard channel again on its slot's owner after a topology change
 * (a failover, a migrated slot), but it does not say which channels had a gap, and a gap is a
 * silent loss for their subscribers. Here each channel remembers the primary it was subscribed
 * on; when ioredis reports its subscribers ready again, every channel whose primary changed or
 * was lost meanwhile is subscribed once more (awaited: active on its new owner) and its room is
 * reset, so its subscribers recover from history. Rooms on untouched shards keep going.
 */
export function watchShardContinuity ({ sub, log, isClosed, onRestored }: ShardContinuityOptions): ShardContinuity {
  /** Channel → its room (null: the control channel), for every channel this node wants. */
  const channels = new Map<string, string | null>()
  /** Channel → the primary it was last subscribed on (host:port). */
  const owners = new Map<string, string>()
  /** Primaries a subscriber connection was lost to since the last restoration. */
  const lostNodes = new Set<string>()
  let retry: NodeJS.Timeout | null = null
  let restoring = false
  let again = false

  const ownerOf = (channel: string): string | undefined => sub.slots[keySlot(channel)]?.[0]

  sub.on('-node', (_node: unknown, nodeKey: string) => { lostNodes.add(nodeKey) })
  // A primary that gives up a slot unsubscribes its shard channels itself (an unsolicited
  // `sunsubscribe`, which ioredis reports as an error of that node): the slot map is read again
  // at once rather than at the next periodic refresh.
  sub.on('nodeError', (err: Error, nodeKey: string) => {
    if (!/sunsubscribe/i.test(err.message)) return
    lostNodes.add(nodeKey)
    sub.refreshSlotsCache()
  })
  sub.on('subscribersReady', () => { void restore() })

  async function restore (): Promise<void> {
    if (isClosed()) return
    if (restoring) { again = true; return }
    restoring = true
    try {
      const affected = [...channels.keys()].filter((channel) => {
        const was = owners.get(channel)
        return was === undefined || was !== ownerOf(channel) || lostNodes.has(was)
      })
      lostNodes.clear()
      if (affected.length === 0) return
      const failed: string[] = []
      const restored: string[] = []
      // ioredis takes the channels of one slot per SSUBSCRIBE.
      const bySlot = new Map<number, string[]>()
      for (const channel of affected) {
        const slot = keySlot(channel)
        bySlot.set(slot, [...(bySlot.get(slot) ?? []), channel])
      }
      await Promise.all([...bySlot.values()].map(async (group) => {
        try {
          await sub.ssubscribe(...group)
          for (const channel of group) {
            const owner = ownerOf(channel)
            if (owner !== undefined) owners.set(channel, owner)
            restored.push(channel)
          }
        } catch (err) {
          log.warn({ err, channels: group.length }, 'restoring shard channels failed; retried')
          failed.push(...group)
        }
      }))
      const rooms = restored.map((channel) => channels.get(channel)).filter((room): room is string => typeof room === 'string')
      const control = restored.some((channel) => channels.get(channel) === null)
      if (rooms.length > 0 || control) {
        log.info({ rooms: rooms.length, control }, 'shard channels restored after a topology change; their subscribers recover from history')
        onRestored(control ? undefined : rooms)
      }
      if (failed.length > 0) {
        for (const channel of failed) owners.delete(channel)
        scheduleRetry()
      }
    } finally {
      restoring = false
      if (again) {
        again = false
        void restore()
      }
    }
  }

  function scheduleRetry (): void {
    if (retry !== null || isClosed()) return
    retry = setTimeout(() => {
      retry = null
      sub.refreshSlotsCache()
      void restore()
    }, RETRY_MS)
    retry.unref()
  }

  return {
    async subscribe (channel, room) {
      channels.set(channel, room)
      const owner = ownerOf(channel)
      try {
        await sub.ssubscribe(channel)
      } catch (err) {
        channels.delete(channel)
        throw err
      }
      // The owner it was sent to; a slot map read meanwhile is caught by the next restoration.
      if (owner !== undefined) owners.set(channel, owner)
    },
    async unsubscribe (channel) {
      channels.delete(channel)
      owners.delete(channel)
      if (sub.status === 'ready') await sub.sunsubscribe(channel)
    },
    shards () {
      const counts = new Map<string, number>()
      for (const [channel, owner] of owners) if (channels.get(channel) !== null) counts.set(owner, (counts.get(owner) ?? 0) + 1)
      return counts
    },
    lost: () => channels.size - owners.size,
    close () {
      channels.clear()
      if (retry !== null) clearTimeout(retry)
      retry = null
    }
  }
}
