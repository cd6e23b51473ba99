import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SharedAnswers } from '../../src/realtime/shared-answers.js'

/** A SharedAnswers on a clock the test moves, counting the asks that reached the source. */
function setup (capacity: number): { answers: SharedAnswers<string>, asked: string[], ask: (key: string) => Promise<string>, advance: (ms: number) => void } {
  let clock = 0
  const answers = new SharedAnswers<string>(1000, capacity, () => clock)
  const asked: string[] = []
  const ask = async (key: string): Promise<string> => await answers.get(key, async () => { asked.push(key); return `${key}@${clock}` })
  return { answers, asked, ask, advance: (ms) => { clock += ms } }
}

describe('SharedAnswers (presence answers per room)', () => {
  it('shares one answer per key for its lifetime, then asks again; a dropped key asks at once', async () => {
    const { answers, asked, ask, advance } = setup(10)
    assert.deepEqual(await Promise.all([ask('a'), ask('a'), ask('b')]), ['a@0', 'a@0', 'b@0'])
    advance(999)
    assert.equal(await ask('a'), 'a@0')
    advance(1)
    assert.equal(await ask('a'), 'a@1000')
    answers.drop('b')
    assert.equal(await ask('b'), 'b@1000')
    assert.deepEqual(asked, ['a', 'b', 'a', 'b'])
  })

  it('at capacity the oldest answer goes, not every answer: the rooms asked most recently keep sharing', async () => {
    const { answers, asked, ask, advance } = setup(3)
    for (const key of ['a', 'b', 'c']) { await ask(key); advance(10) }
    await ask('d')
    assert.equal(answers.size, 3)
    asked.length = 0
    await Promise.all([ask('b'), ask('c'), ask('d')])
    assert.deepEqual(asked, [], 'the three newest were kept')
    await ask('a')
    assert.deepEqual(asked, ['a'], 'the oldest was dropped')
    // Asked anew, 'a' went to the back, and 'b' was the oldest then.
    await Promise.all([ask('c'), ask('d'), ask('a')])
    await ask('b')
    assert.deepEqual(asked, ['a', 'b'])
  })

  it('drops expired answers as new ones come, so the map holds only the last lifetime\'s keys', async () => {
    const { answers, ask, advance } = setup(100)
    for (let i = 0; i < 50; i++) await ask(`room-${i}`)
    advance(1500)
    await ask('fresh')
    assert.equal(answers.size, 1)
  })

  it('does not keep a failed answer: the next ask tries again', async () => {
    const answers = new SharedAnswers<string>(1000, 10, () => 0)
    let calls = 0
    const failing = async (): Promise<string> => { calls++; throw new Error('engine unavailable') }
    await assert.rejects(answers.get('a', failing), /unavailable/)
    await assert.rejects(answers.get('a', failing), /unavailable/)
    assert.equal(calls, 2)
    assert.equal(answers.size, 0)
  })
})
