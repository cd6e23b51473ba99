import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createSessionDenylist, type SessionDenylistOptions } from '../src/auth/session-denylist.js'
import { deleteRedisKeys } from '../support/redis.js'
import { skipUnlessRedis, TEST_REDIS_URL } from './helper.js'

/*
 * The session denylist shared through Redis, with an injected clock. Its window and bound, and
 * the account check, need no service: test/unit/revocation-units.test.ts. End to end:
 * test/hostile/revocation.test.ts.
 */

const skipRedis = await skipUnlessRedis()
const silent = { warn: () => {} }

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let at = start
  return { now: () => at, advance: (ms) => { at += ms } }
}

function denylist (options: Partial<SessionDenylistOptions> & { now: () => number }) {
  return createSessionDenylist({ windowMs: 1000, maxEntries: 1000, redis: null, keyPrefix: 'x:', log: silent, ...options })
}

describe('session denylist', () => {
  describe('through Redis', { skip: skipRedis }, () => {
    it('a node that starts later, and a running one at its next sync, deny what another node revoked', async (t) => {
      const keyPrefix = `sbrvu:${randomBytes(6).toString('hex')}:`
      const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0 })
      await redis.connect()
      t.after(async () => {
        await deleteRedisKeys(TEST_REDIS_URL, keyPrefix)
        await redis.quit()
      })
      const time = clock(Date.now())
      const options = { now: time.now, redis, keyPrefix, windowMs: 60_000 }
      const running = denylist(options)
      await running.start()
      t.after(() => { running.close() })

      const revoking = denylist(options)
      await revoking.revoke(['s1', 's2'])
      const later = denylist(options)
      await later.start()
      t.after(() => { later.close() })
      assert.equal(later.isRevoked('s1'), true)
      assert.equal(later.isRevoked('s2'), true)
      assert.equal(later.isRevoked('s3'), false)

      // The running node missed the control message: its sync (every few seconds) catches up.
      assert.equal(running.isRevoked('s1'), false)
      await new Promise<void>((resolve, reject) => {
        const deadline = Date.now() + 15_000
        const poll = setInterval(() => {
          if (running.isRevoked('s1')) { clearInterval(poll); resolve() } else if (Date.now() > deadline) { clearInterval(poll); reject(new Error('not synced within 15 s')) }
        }, 50)
      })
      // Entries past the window end in Redis too, so a node started then does not deny them.
      time.advance(60_000)
      const afterWindow = denylist(options)
      await afterWindow.start()
      t.after(() => { afterWindow.close() })
      assert.equal(afterWindow.isRevoked('s1'), false)
    })
  })
})
