import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { DeadlineWheel, NOT_FILED, type WheelEntry } from '../../src/realtime/deadline-wheel.js'

interface Entry extends WheelEntry { name: string }

const entry = (name: string): Entry => ({ name, wheelSlot: NOT_FILED, wheelIndex: 0 })

/** The names a turn at `now` visits, in order. */
function turn (wheel: DeadlineWheel<Entry>, now: number): string[] {
  const seen: string[] = []
  wheel.turn(now, e => seen.push(e.name))
  return seen
}

describe('DeadlineWheel', () => {
  it('visits an entry at the first turn at or after the end of its deadline\'s slot, never before, once', () => {
    const wheel = new DeadlineWheel<Entry>(100, 0)
    const a = entry('a')
    wheel.fileBy(a, 250)
    assert.deepEqual(turn(wheel, 100), [])
    assert.deepEqual(turn(wheel, 299), [])
    assert.deepEqual(turn(wheel, 300), ['a'])
    assert.deepEqual(turn(wheel, 400), [], 'taken out before its visit: not visited again unless filed again')
    assert.equal(a.wheelSlot, NOT_FILED)
    assert.equal(wheel.size, 0)
  })

  it('visits only the due entries, slot by slot in time order', () => {
    const wheel = new DeadlineWheel<Entry>(10, 0)
    for (const [name, at] of [['late', 95], ['early', 12], ['mid', 47], ['never', 5000]] as const) wheel.fileBy(entry(name), at)
    assert.deepEqual(turn(wheel, 100), ['early', 'mid', 'late'])
    assert.equal(wheel.size, 1)
  })

  it('moves an entry only earlier: a later deadline leaves it where it is', () => {
    const wheel = new DeadlineWheel<Entry>(100, 0)
    const a = entry('a')
    wheel.fileBy(a, 500)
    wheel.fileBy(a, 900)
    wheel.fileBy(a, 150)
    assert.equal(wheel.size, 1, 'filed once')
    assert.deepEqual(turn(wheel, 200), ['a'])
    assert.deepEqual(turn(wheel, 1000), [], 'no copy left at 500 or 900')
  })

  it('removes an entry (and keeps the others of its slot)', () => {
    const wheel = new DeadlineWheel<Entry>(100, 0)
    const [a, b, c] = [entry('a'), entry('b'), entry('c')]
    for (const e of [a, b, c]) wheel.fileBy(e, 150)
    wheel.remove(a)
    wheel.remove(a)
    wheel.remove(entry('never filed'))
    assert.deepEqual(turn(wheel, 200).sort(), ['b', 'c'])
  })

  it('files a deadline already past in the next slot, and an infinite one nowhere', () => {
    const wheel = new DeadlineWheel<Entry>(100, 1000)
    wheel.fileBy(entry('past'), 10)
    wheel.fileBy(entry('never'), Infinity)
    assert.equal(wheel.size, 1)
    assert.deepEqual(turn(wheel, 1100), ['past'])
  })

  it('an entry filed again during a turn into a due slot is visited in that turn; one filed later waits', () => {
    const wheel = new DeadlineWheel<Entry>(100, 0)
    const a = entry('a')
    wheel.fileBy(a, 100)
    let visits = 0
    wheel.turn(1000, (e) => {
      visits++
      if (visits === 1) wheel.fileBy(e, 500)
      if (visits === 2) wheel.fileBy(e, 5000)
    })
    assert.equal(visits, 2)
    assert.equal(wheel.size, 1)
  })

  it('crosses a long stall without walking every empty slot between', () => {
    const wheel = new DeadlineWheel<Entry>(1, 0)
    wheel.fileBy(entry('a'), 5)
    wheel.fileBy(entry('b'), 3_000_000_000)
    assert.deepEqual(turn(wheel, 1e15), ['a', 'b'])
  })

  it('property: each filed entry is visited exactly once, at the first turn at or after its slot\'s end', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 1000 }),
      fc.array(fc.integer({ min: 0, max: 100_000 }), { maxLength: 50 }),
      fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 60 }),
      (slotMs, deadlines, steps) => {
        const wheel = new DeadlineWheel<Entry>(slotMs, 0)
        const entries = deadlines.map((at, k) => {
          const e = entry(String(k))
          wheel.fileBy(e, at)
          return e
        })
        const visitedAt = new Map<string, number>()
        let now = 0
        let previous = 0
        for (const step of [...steps, 200_000]) {
          now += step
          wheel.turn(now, (e) => {
            assert.ok(!visitedAt.has(e.name), `visited twice: ${e.name}`)
            visitedAt.set(e.name, now)
          })
          for (const [k, at] of deadlines.entries()) {
            const due = Math.max(slotMs, Math.ceil(at / slotMs) * slotMs)
            const name = entries[k]!.name
            if (due <= now && due > previous) assert.equal(visitedAt.get(name), now, `${name} (due ${due}) at the turn of ${now}`)
            if (due > now) assert.ok(!visitedAt.has(name), `${name} visited early`)
          }
          previous = now
        }
        assert.equal(visitedAt.size, deadlines.length)
      }
    ))
  })
})
