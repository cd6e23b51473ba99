import { runScriptBuffer } from '../../redis.js'
import type { History, HistoryPage, HistoryQuery, HistoryResult, PageQuery, Publication, StreamOptions, StreamPosition } from '../engine.js'
import { latestResult, newEpoch, pageResult, PUBLICATION_OVERHEAD_BYTES, sinceResult } from '../engine.js'
import { entryToPublication } from './codec.js'
import { archivedPage, type WindowPage } from './archive-pages.js'
import type { ArchiveStore } from './archiver.js'
import type { PartContext } from './context.js'
import { MIN_META_TTL_MS } from './keys.js'
import { engineScript, toNumber } from './scripts.js'

const HISTORY = engineScript(new URL('./lua/history.lua', import.meta.url))
const PAGE = engineScript(new URL('./lua/page.lua', import.meta.url))

/**
 * History over Redis: each room's stream, read in one script that also answers the stream's
 * position, so a page and the top it is judged against always agree (the recovery rule itself
 * is engine.ts's sinceResult).
 */
export function createRedisHistory ({ cmd, keys, assertOpen }: PartContext, archive: ArchiveStore | null, now: () => number = Date.now): History {
  async function readStream (room: string, streamOptions: StreamOptions, limit: number, since?: StreamPosition, maxBytes = Number.MAX_SAFE_INTEGER): Promise<{ epoch: string, offset: number, publications: Publication[] }> {
    const k = keys.room(room)
    // A Buffer reply: binary payloads come back as the bytes they were (entryToPublication).
    const result = await runScriptBuffer(cmd, HISTORY, [k.meta, k.stream], [
      newEpoch(), Math.max(0, Math.floor(streamOptions.historySize)), Math.max(0, Math.floor(streamOptions.historyTtlSeconds * 1000)),
      limit, since?.epoch ?? '', since === undefined ? 0 : Math.floor(since.offset) + 1, MIN_META_TTL_MS,
      Math.min(Number.MAX_SAFE_INTEGER, Math.floor(maxBytes)), PUBLICATION_OVERHEAD_BYTES
    ]) as [Buffer, number, unknown[]]
    return { epoch: result[0].toString(), offset: toNumber(result[1]), publications: result[2].map(entryToPublication) }
  }

  return {
    async history (room: string, query: HistoryQuery, streamOptions: StreamOptions): Promise<HistoryResult> {
      assertOpen()
      const limit = Math.max(0, Math.floor(query.limit))
      const { since } = query
      const { epoch, offset, publications } = await readStream(room, streamOptions, limit, since, query.maxBytes)
      if (since === undefined) return latestResult(epoch, offset, publications)
      return sinceResult(since, epoch, offset, publications)
    },

    /**
     * Pages through the stream window (XREVRANGE backward, XRANGE forward); for a room with
     * the cluster archive, joined to what PostgreSQL keeps beyond it (archive-pages.ts).
     */
    async page (room: string, query: PageQuery, streamOptions: StreamOptions): Promise<HistoryPage> {
      assertOpen()
      const archiveDays = streamOptions.archiveDays ?? 0
      if (archive === null || archiveDays <= 0) {
        const { top, publications, more } = await readWindow(room, query, streamOptions)
        return pageResult(query, top, publications, more)
      }
      return await archivedPage(archive, room, query, archiveDays, now(), async q => await readWindow(room, q, streamOptions))
    },

    async position (room: string): Promise<StreamPosition> {
      assertOpen()
      const { epoch, offset } = await readStream(room, { historySize: 0, historyTtlSeconds: 0 }, 0)
      return { epoch, offset }
    },

    async removeHistory (room: string): Promise<void> {
      assertOpen()
      const k = keys.room(room)
      // Idempotency keys stay until their window ends, but they name the old epoch and the
      // publish script ignores a key from another epoch: deleting them would need a SCAN.
      // The archive queue goes with the room: what it held is never archived.
      await cmd.del(k.meta, k.stream, k.archiveQueue, k.archiveQueueBytes)
      if (archive !== null) await archive.purgeArchive(room)
    }
  }

  /** The stream window's part of a page: the room's top, the publications, whether more remain. */
  async function readWindow (room: string, query: PageQuery, streamOptions: StreamOptions): Promise<WindowPage> {
      const backward = query.after === undefined
      const bound = backward ? Math.floor(query.before ?? Number.MAX_SAFE_INTEGER) : Math.max(0, Math.floor(query.after ?? 0))
      const k = keys.room(room)
      const result = await runScriptBuffer(cmd, PAGE, [k.meta, k.stream], [
        newEpoch(), Math.max(0, Math.floor(streamOptions.historySize)), Math.max(0, Math.floor(streamOptions.historyTtlSeconds * 1000)),
        Math.max(0, Math.floor(query.limit)), query.epoch ?? '', backward ? 'before' : 'after', Math.min(bound, Number.MAX_SAFE_INTEGER), MIN_META_TTL_MS,
        Math.min(Number.MAX_SAFE_INTEGER, Math.floor(query.maxBytes ?? Number.MAX_SAFE_INTEGER)), PUBLICATION_OVERHEAD_BYTES
      ]) as [Buffer, number, number, unknown[]]
      const top = { epoch: result[0].toString(), offset: toNumber(result[1]) }
      return { top, publications: result[3].map(entryToPublication), more: toNumber(result[2]) === 1 }
  }
}
