import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Principal } from '../../src/auth/principal.js'
import type { Publication } from '../../src/realtime/engine.js'
import { jsonCodec, msgpackCodec, type FrameCodec } from '../../src/realtime/frame-codec.js'
import { Hub, type HubMember } from '../../src/realtime/hub.js'
import type { PreparedFrame } from '../../src/realtime/transport.js'

/** A member that records what it was handed; `skip` makes it take a publication without writing it. */
class FakeMember implements HubMember {
  readonly subscriptions = new Set<string>()
  readonly frames: PreparedFrame[] = []
  skip = false
  constructor (readonly id: string, readonly principal: Principal, readonly meta: { ip: string }, readonly codec: FrameCodec = jsonCodec) {}
  deliver (_room: string, _epoch: string, _publication: Publication, frame: (codec: FrameCodec) => PreparedFrame): void {
    if (!this.skip) this.frames.push(frame(this.codec))
  }

  pushToRoom (_room: string, frame: (codec: FrameCodec) => PreparedFrame): void {
    this.frames.push(frame(this.codec))
  }
}

function user (userId: string): Principal {
  return { kind: 'user', userId, role: 'user', tokenId: 't', expiresAt: 0, sessionId: 's' }
}

function apiKey (keyId: string): Principal {
  return { kind: 'apiKey', keyId, name: keyId, scopes: [] }
}

const publication: Publication = { offset: 1, payload: '{}', kind: 'json', from: { id: 'u1' }, ts: 0 }

function setup (): { hub: Hub<FakeMember>, subscribed: string[], unsubscribed: string[], built: string[], writes: Array<{ members: number, bytes: number }> } {
  const subscribed: string[] = []
  const unsubscribed: string[] = []
  const built: string[] = []
  const writes: Array<{ members: number, bytes: number }> = []
  const hub = new Hub<FakeMember>(
    { subscribe: async (room) => { subscribed.push(room) }, unsubscribe: (room) => { unsubscribed.push(room) } },
    (_room, _epoch, p, codec) => { built.push(`${p.offset} ${codec.protocol}`); return { byteLength: codec.binary ? 2 : 3 } as unknown as PreparedFrame },
    (_p, members, bytes) => { writes.push({ members, bytes }) }
  )
  return { hub, subscribed, unsubscribed, built, writes }
}

describe('Hub (local connection and room indexes)', () => {
  it('indexes members by id, owner and address, and forgets them once', () => {
    const { hub } = setup()
    const a = new FakeMember('a', user('u1'), { ip: '10.0.0.1' })
    const b = new FakeMember('b', user('u1'), { ip: '10.0.0.2' })
    const k = new FakeMember('k', apiKey('key1'), { ip: '10.0.0.1' })
    for (const m of [a, b, k]) hub.add(m)
    assert.equal(hub.size, 3)
    assert.equal(hub.get('b'), b)
    assert.equal(hub.countOf(user('u1')), 2)
    assert.equal(hub.countOf(apiKey('key1')), 1)
    assert.equal(hub.countAt('10.0.0.1'), 2)
    assert.deepEqual(hub.userIds(), ['u1'])
    assert.deepEqual(hub.ofApiKey('key1'), [k])
    assert.equal(hub.remove(a), true)
    assert.equal(hub.remove(a), false, 'a second removal does nothing')
    assert.equal(hub.countOf(user('u1')), 1)
    assert.equal(hub.countAt('10.0.0.1'), 1)
    hub.remove(b)
    assert.deepEqual(hub.userIds(), [], 'an owner with no connection left is forgotten')
    assert.equal(hub.countAt('10.0.0.2'), 0)
  })

  it('the first member of a room subscribes it, the last one out deletes it and unsubscribes', async () => {
    const { hub, subscribed, unsubscribed } = setup()
    const a = new FakeMember('a', user('u1'), { ip: 'x' })
    const b = new FakeMember('b', user('u2'), { ip: 'x' })
    await hub.join(a, 'r')
    await hub.join(b, 'r')
    assert.deepEqual(subscribed, ['r'])
    assert.equal(hub.roomCount, 1)
    assert.deepEqual(hub.membersOf('r', null), [a, b])
    assert.deepEqual(hub.membersOf('r', 'u2'), [b])
    hub.leave(a, 'r')
    hub.leave(a, 'r')
    assert.deepEqual(unsubscribed, [])
    hub.leave(b, 'r')
    assert.deepEqual(unsubscribed, ['r'])
    assert.equal(hub.roomCount, 0, 'an empty room is deleted')
    assert.deepEqual(hub.membersOf('r', null), [])
  })

  it('a room whose subscription failed is forgotten, so the next member subscribes again', async () => {
    let fail = true
    const subscribed: string[] = []
    const hub = new Hub<FakeMember>(
      { subscribe: async (room) => { subscribed.push(room); if (fail) throw new Error('down') }, unsubscribe: () => {} },
      () => ({ byteLength: 0 }) as unknown as PreparedFrame,
      () => {}
    )
    const a = new FakeMember('a', user('u1'), { ip: 'x' })
    await assert.rejects(hub.join(a, 'r'), /down/)
    assert.equal(hub.roomCount, 0)
    fail = false
    await hub.join(a, 'r')
    assert.deepEqual(subscribed, ['r', 'r'])
    assert.equal(hub.roomCount, 1)
  })

  it('broadcast calls each member of the room once, with one frame built once', async () => {
    const { hub, built, writes } = setup()
    const members = [0, 1, 2].map(i => new FakeMember(`m${i}`, user(`u${i}`), { ip: 'x' }))
    const outsider = new FakeMember('o', user('o'), { ip: 'x' })
    for (const m of members) await hub.join(m, 'r')
    await hub.join(outsider, 'other')
    members[1]!.skip = true
    hub.broadcast('r', 'e', publication)
    assert.deepEqual(built, ['1 switchboard.v1'], 'the frame was built once')
    assert.equal(members[0]!.frames.length, 1)
    assert.equal(members[1]!.frames.length, 0)
    assert.equal(members[2]!.frames[0], members[0]!.frames[0], 'the same bytes for every member')
    assert.equal(outsider.frames.length, 0)
    assert.deepEqual(writes, [{ members: 2, bytes: 6 }])
    hub.broadcast('nobody-here', 'e', publication)
    assert.equal(built.length, 1, 'a room with no member here builds nothing')
  })

  it('broadcast builds a publication at most once per codec in use in the room', async () => {
    const { hub, built, writes } = setup()
    const members = [jsonCodec, msgpackCodec, jsonCodec, msgpackCodec, msgpackCodec].map((codec, i) => new FakeMember(`m${i}`, user(`u${i}`), { ip: 'x' }, codec))
    for (const m of members) await hub.join(m, 'r')
    hub.broadcast('r', 'e', publication)
    assert.deepEqual(built, ['1 switchboard.v1', '1 switchboard.v1.msgpack'])
    assert.equal(members[2]!.frames[0], members[0]!.frames[0], 'JSON members share one frame')
    assert.equal(members[4]!.frames[0], members[1]!.frames[0], 'MessagePack members share another')
    assert.notEqual(members[0]!.frames[0], members[1]!.frames[0])
    assert.deepEqual(writes, [{ members: 5, bytes: 2 * 3 + 3 * 2 }])
  })

  it('push frames once for every member of the room', async () => {
    const { hub } = setup()
    const a = new FakeMember('a', user('u1'), { ip: 'x' })
    const b = new FakeMember('b', user('u2'), { ip: 'x' })
    await hub.join(a, 'r')
    await hub.join(b, 'r')
    let builds = 0
    hub.push('r', () => { builds++; return { byteLength: 1 } as unknown as PreparedFrame })
    assert.equal(builds, 1)
    assert.equal(a.frames[0], b.frames[0])
  })

  it('select filters by user and by room', () => {
    const { hub } = setup()
    const [a, b, c] = (['u1', 'u1', 'u2'] as const).map((u, i) => new FakeMember(`m${i}`, user(u), { ip: 'x' })) as [FakeMember, FakeMember, FakeMember]
    for (const m of [a, b, c]) hub.add(m)
    b.subscriptions.add('r')
    c.subscriptions.add('r')
    assert.deepEqual(hub.select({}), [a, b, c])
    assert.deepEqual(hub.select({ user: 'u1' }), [a, b])
    assert.deepEqual(hub.select({ room: 'r' }), [b, c])
    assert.deepEqual(hub.select({ user: 'u1', room: 'r' }), [b])
    assert.deepEqual(hub.select({ user: 'nobody' }), [])
  })
})
