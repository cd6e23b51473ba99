import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Principal } from '../../src/auth/principal.js'
import type { RoomGrant, RoomOperation } from '../../src/realtime/authorizer.js'
import { RealtimeError } from '../../src/realtime/errors.js'
import type { Logger } from '../../src/realtime/logger.js'
import type { GrantRenewal, GrantSource } from '../../src/realtime/metrics.js'
import { RoomAuthorizer } from '../../src/realtime/room-authorizer.js'

const log: Logger = { debug () {}, info () {}, warn () {}, error () {}, child: () => log }
const alice: Principal = { kind: 'user', userId: 'alice', role: 'user', tokenId: 't', expiresAt: 0, sessionId: 's' }
const TTL = 1000

/** One store answer the test settles by hand. */
interface Ask { room: string, operation: RoomOperation, resolve: (grant: RoomGrant) => void, reject: (err: unknown) => void }

/** A RoomAuthorizer on a clock the test moves, over a store whose answers the test gives. */
function setup (): { authorizer: RoomAuthorizer, asks: Ask[], sources: GrantSource[], renewals: GrantRenewal[], advance: (ms: number) => void } {
  let clock = 0
  const asks: Ask[] = []
  const sources: GrantSource[] = []
  const renewals: GrantRenewal[] = []
  const authorizer = new RoomAuthorizer({
    authorize: async (_principal, room, operation) => await new Promise<RoomGrant>((resolve, reject) => { asks.push({ room, operation, resolve, reject }) }),
    cacheMs: TTL,
    metrics: { roomAuthorization: (s) => { sources.push(s) }, grantRenewal: (r) => { renewals.push(r) } },
    log,
    now: () => clock
  })
  return { authorizer, asks, sources, renewals, advance: (ms) => { clock += ms } }
}

const options = (n: number): RoomGrant => ({ stream: { historySize: n, historyTtlSeconds: 60 }, presenceEvents: true })
/** Lets the microtasks that follow a settled answer run. */
const settle = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

/** Alice is granted publish in 'r' (options(1)), then uses the grant at half its life: asks[1] is its renewal. */
async function grantThenRenew (authorizer: RoomAuthorizer, asks: Ask[], advance: (ms: number) => void): Promise<void> {
  const first = authorizer.authorize(alice, 'r', 'publish')
  asks[0]!.resolve(options(1))
  await first
  advance(TTL / 2)
  await authorizer.authorize(alice, 'r', 'publish')
  assert.equal(asks.length, 2)
}

describe('RoomAuthorizer (grant cache in front of the store)', () => {
  it('a kept grant answers without the store', async () => {
    const { authorizer, asks, sources } = setup()
    const first = authorizer.authorize(alice, 'r', 'publish')
    asks[0]!.resolve(options(1))
    assert.deepEqual(await first, options(1))
    assert.deepEqual(await authorizer.authorize(alice, 'r', 'publish'), options(1))
    assert.equal(asks.length, 1)
    assert.deepEqual(sources, ['store', 'cache'])
  })

  it('concurrent asks of one grant share the store answer in flight', async () => {
    const { authorizer, asks, sources } = setup()
    const both = Promise.all([authorizer.authorize(alice, 'r', 'subscribe'), authorizer.authorize(alice, 'r', 'subscribe')])
    assert.equal(asks.length, 1)
    asks[0]!.resolve(options(2))
    assert.deepEqual(await both, [options(2), options(2)])
    assert.deepEqual(sources, ['store', 'shared'])
  })

  it('a grant used past half its life is renewed in the background, once, and lives on', async () => {
    const { authorizer, asks, sources, renewals, advance } = setup()
    const first = authorizer.authorize(alice, 'r', 'publish')
    asks[0]!.resolve(options(1))
    await first
    advance(TTL / 2 - 1)
    await authorizer.authorize(alice, 'r', 'publish')
    assert.equal(asks.length, 1, 'no renewal before half its life')
    advance(1)
    assert.deepEqual(await authorizer.authorize(alice, 'r', 'publish'), options(1), 'the grant answers at once')
    await authorizer.authorize(alice, 'r', 'publish')
    assert.equal(asks.length, 2, 'one renewal, however many uses')
    asks[1]!.resolve(options(3))
    await settle()
    assert.deepEqual(renewals, ['renewed'])
    advance(TTL - 1)
    assert.deepEqual(await authorizer.authorize(alice, 'r', 'publish'), options(3), 'the renewed grant outlives the first one')
    assert.equal(asks.length, 3, 'and, past its own half life, is renewed in turn')
    assert.deepEqual(sources, ['store', 'cache', 'cache', 'cache', 'cache'])
  })

  it('a renewal refused by the store ends the grant now', async () => {
    const { authorizer, asks, renewals, advance } = setup()
    await grantThenRenew(authorizer, asks, advance)
    asks[1]!.reject(new RealtimeError('forbidden', 'banned'))
    await settle()
    assert.deepEqual(renewals, ['refused'])
    const again = authorizer.authorize(alice, 'r', 'publish')
    assert.equal(asks.length, 3, 'the store is asked again')
    asks[2]!.reject(new RealtimeError('forbidden', 'banned'))
    await assert.rejects(again, /banned/)
  })

  it('an answer asked before a change that drops grants is used once, not kept, and not shared after it', async () => {
    const { authorizer, asks } = setup()
    const before = authorizer.revision
    const stale = authorizer.authorize(alice, 'r', 'subscribe')
    authorizer.roomChanged('r')
    assert.equal(authorizer.revision, before + 1)
    const after = authorizer.authorize(alice, 'r', 'subscribe')
    assert.equal(asks.length, 2, 'an ask after the change does not share the answer asked before it')
    asks[0]!.resolve(options(1))
    assert.deepEqual(await stale, options(1), 'the caller that asked gets its answer')
    asks[1]!.resolve(options(2))
    assert.deepEqual(await after, options(2))
    assert.deepEqual(await authorizer.authorize(alice, 'r', 'subscribe'), options(2), 'the answer asked after the change is kept')
    assert.equal(asks.length, 2)

    authorizer.principalChanged({ kind: 'user', userId: 'alice' })
    const stale2 = authorizer.authorize(alice, 'r', 'subscribe')
    authorizer.reset()
    asks[2]!.resolve(options(9))
    await stale2
    const next = authorizer.authorize(alice, 'r', 'subscribe')
    assert.equal(asks.length, 4, 'an answer from before a reset was not kept')
    asks[3]!.resolve(options(4))
    await next
  })

  it('a renewal overtaken by a change that drops grants is not kept', async () => {
    const { authorizer, asks, renewals, advance } = setup()
    await grantThenRenew(authorizer, asks, advance)
    authorizer.principalChanged({ kind: 'user', userId: 'bob' })
    asks[1]!.resolve(options(5))
    await settle()
    assert.deepEqual(renewals, ['superseded'])
    assert.deepEqual(await authorizer.authorize(alice, 'r', 'publish'), options(1), 'the grant lasts as it was, to its expiry')
    advance(TTL / 2)
    const expired = authorizer.authorize(alice, 'r', 'publish')
    assert.equal(asks.length, 3, 'past its expiry the store is asked')
    asks[2]!.resolve(options(6))
    await expired
  })

  it('with no cache every ask reaches the store', async () => {
    const asked: string[] = []
    const authorizer = new RoomAuthorizer({
      authorize: async (_p, room) => { asked.push(room); return options(0) },
      cacheMs: 0,
      metrics: { roomAuthorization () {}, grantRenewal () {} },
      log,
      now: () => 0
    })
    await authorizer.authorize(alice, 'r', 'history')
    await authorizer.authorize(alice, 'r', 'history')
    assert.deepEqual(asked, ['r', 'r'])
  })
})
