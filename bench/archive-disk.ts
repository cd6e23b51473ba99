import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { publicationBytes } from '../src/realtime/engine.js'
import { createSqliteHistory } from '../src/realtime/sqlite-history.js'
import { createStore } from '../src/store/index.js'

/**
 * What the archive costs on disk (issue 21): docs/performance.md, "The archive on disk".
 * `--messages` publications with a JSON payload of `--size` bytes (a chat line's shape:
 * `{"text":"xxx…"}`) into one archived room of the store's real SQLite file through the real
 * sqlite-history module, 100 per commit; then a checkpoint (the WAL folded into the file) and
 * the file's size, per message and per million.
 *
 *   node --import tsx bench/archive-disk.ts [--messages 200000] [--size 100]
 */

const { values } = parseArgs({ options: { messages: { type: 'string', default: '200000' }, size: { type: 'string', default: '100' } } })
const messages = Number(values.messages)
const size = Number(values.size)
const ARCHIVED = { historySize: 100, historyTtlSeconds: 3600, archiveDays: 30 }
const PER_COMMIT = 100

const dir = mkdtempSync(join(tmpdir(), 'switchboard-archive-'))
try {
  const file = join(dir, 'bench.db')
  const store = await createStore(`sqlite:${file}`)
  const connection = store.sqlite!
  const history = createSqliteHistory(connection)
  const payload = JSON.stringify({ text: 'x'.repeat(Math.max(0, size - 11)) })
  const empty = statSync(file).size
  for (let offset = 0; offset < messages;) {
    await new Promise<void>((resolve) => {
      let left = Math.min(PER_COMMIT, messages - offset)
      for (let i = left; i > 0; i--) {
        offset += 1
        const publication = { kind: 'json' as const, payload, offset, from: { id: 'user-0042' }, ts: Date.now() }
        history.append('room-0', 'epoch-01', { publication, storedAt: Date.now(), bytes: publicationBytes(payload, 'user-0042') }, ARCHIVED, () => { if (--left === 0) resolve() })
      }
    })
  }
  await history.close()
  connection.pragma('wal_checkpoint(TRUNCATE)')
  const bytes = statSync(file).size - empty
  await store.close()
  const perMessage = bytes / messages
  process.stdout.write(`${messages} messages, payload ${Buffer.byteLength(payload)} B JSON: ${(bytes / 1048576).toFixed(1)} MiB on disk, ` +
    `${perMessage.toFixed(0)} B per message, ${(perMessage * 1e6 / 1073741824).toFixed(2)} GiB per million\n`)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
