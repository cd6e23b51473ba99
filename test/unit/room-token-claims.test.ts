import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { readRoomClaims, roomTokenCovers, type RoomTokenGrant } from '../../src/auth/room-token-claims.js'

const MAX_EXP = 2_000_000_000
const valid = { typ: 'room', sub: 'bob', rooms: ['game:42:*', 'lobby'], ops: ['subscribe', 'publish'], exp: 1_900_000_000 }

describe('room token claims', () => {
  it('reads a valid grant, and names the claim that makes a payload unusable', () => {
    const grant = readRoomClaims(valid, MAX_EXP) as RoomTokenGrant
    assert.equal(grant.userId, 'bob')
    assert.deepEqual(grant.rooms, ['game:42:*', 'lobby'])
    assert.deepEqual([...grant.ops], ['subscribe', 'publish'])
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ typ: undefined }, 'typ'], [{ typ: 'Room' }, 'typ'],
      [{ sub: '' }, 'sub'], [{ sub: 'a b' }, 'sub'], [{ sub: ['bob'] }, 'sub'],
      [{ rooms: ['*'] }, 'rooms'], [{ rooms: ['game:4*'] }, 'rooms'], [{ rooms: ['user:*'] }, 'rooms'], [{ rooms: ['user:bob'] }, 'rooms'],
      [{ rooms: ['Game'] }, 'rooms'], [{ rooms: [] }, 'rooms'], [{ rooms: Array(17).fill('lobby') }, 'rooms'],
      [{ ops: ['subscribe', 'update'] }, 'ops'], [{ ops: ['history', 'history'] }, 'ops'], [{ ops: [] }, 'ops'],
      [{ exp: MAX_EXP + 1 }, 'exp'], [{ exp: '1900000000' }, 'exp']
    ]
    for (const [change, claim] of cases) assert.equal(readRoomClaims({ ...valid, ...change }, MAX_EXP), claim, JSON.stringify(change))
  })

  it('covers a room only by an equal name or a namespace pattern, and an op only when listed', () => {
    const grant = readRoomClaims(valid, MAX_EXP) as RoomTokenGrant
    for (const room of ['game:42:chat', 'game:42:a:b', 'lobby']) assert.ok(roomTokenCovers(grant, room, 'subscribe'), room)
    for (const room of ['game:42', 'game:42:', 'game:420:chat', 'game:4', 'lobby2', 'user:bob']) assert.ok(!roomTokenCovers(grant, room, 'subscribe'), room)
    assert.ok(!roomTokenCovers(grant, 'lobby', 'history'))
  })

  it('a pattern covers exactly the rooms that start with its prefix and go on past it (property)', () => {
    const segment = fc.stringMatching(/^[a-z0-9]{1,6}$/)
    fc.assert(fc.property(segment, segment, fc.stringMatching(/^[a-z0-9_.:-]{0,10}$/), (namespace, id, rest) => {
      const grant = readRoomClaims({ ...valid, rooms: [`${namespace}:*`] }, MAX_EXP) as RoomTokenGrant
      const room = `${id}${rest}`
      assert.equal(roomTokenCovers(grant, room, 'publish'), room.startsWith(`${namespace}:`) && room.length > namespace.length + 1)
    }))
  })
})
