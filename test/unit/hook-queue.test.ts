import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { CallSlots } from '../../src/hooks/call-slots.js'
import { EventQueue, type HookEvent } from '../../src/hooks/event-queue.js'
import { HookCallError } from '../../src/hooks/http-client.js'
import type { HookDropReason, HookMetrics } from '../../src/hooks/metrics.js'

/** Metrics that remember the drops. */
function recording (): HookMetrics & { drops: HookDropReason[] } {
  const drops: HookDropReason[] = []
  return { drops, call: () => {}, dropped: (_hook, reason) => { drops.push(reason) } }
}

const event = (id: string, bytes = 10): HookEvent => ({ hook: 'published', id, body: 'x'.repeat(bytes) })
const settle = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

describe('hook call slots', () => {
  it('give events at most half of HOOKS_CONCURRENCY; refusing hooks take any free slot and never wait', () => {
    const slots = new CallSlots(4)
    assert.equal(slots.take('event'), true)
    assert.equal(slots.take('event'), true)
    assert.equal(slots.take('event'), false, 'events hold at most half')
    assert.equal(slots.take('refusing'), true)
    assert.equal(slots.take('refusing'), true)
    assert.equal(slots.take('refusing'), false, 'every slot taken')
    let freed = 0
    slots.onFree = () => { freed++ }
    slots.give('event')
    assert.equal(freed, 1)
    assert.equal(slots.take('refusing'), true)
  })
})

describe('hook event queue', () => {
  it('retries what the backend did not take, with the same event, then drops it as `retries`', async () => {
    const metrics = recording()
    const sent: string[] = []
    const queue = new EventQueue({
      slots: new CallSlots(2),
      send: async (e) => { sent.push(e.id); throw new HookCallError('timeout', 'slow') },
      maxBytes: 1000,
      retries: 2,
      metrics,
      backoffMs: () => 0
    })
    queue.push(event('a'))
    while (metrics.drops.length === 0) await new Promise(resolve => setTimeout(resolve, 1))
    assert.deepEqual(sent, ['a', 'a', 'a'])
    assert.deepEqual(metrics.drops, ['retries'])
    assert.equal(queue.queuedBytes, 0)
  })

  it('drops a 4xx at once (`rejected`) but retries a 429 and a 5xx', async () => {
    const metrics = recording()
    const attempts = new Map<string, number>()
    const queue = new EventQueue({
      slots: new CallSlots(8),
      send: async (e) => {
        const n = (attempts.get(e.id) ?? 0) + 1
        attempts.set(e.id, n)
        if (n > 1) return
        throw new HookCallError('status', 'HTTP', Number(e.id))
      },
      maxBytes: 1000,
      retries: 3,
      metrics,
      backoffMs: () => 0
    })
    for (const status of ['400', '429', '503']) queue.push(event(status))
    while (attempts.get('429') !== 2 || attempts.get('503') !== 2) await new Promise(resolve => setTimeout(resolve, 1))
    assert.equal(attempts.get('400'), 1)
    assert.deepEqual(metrics.drops, ['rejected'])
  })

  it('holds at most maxBytes, events waiting for a retry included, and drops the rest as `queue_full`', async () => {
    const metrics = recording()
    const pending: Array<() => void> = []
    const queue = new EventQueue({
      slots: new CallSlots(2),
      send: async () => { await new Promise<void>(resolve => pending.push(resolve)) },
      maxBytes: 100,
      retries: 0,
      metrics
    })
    for (let i = 0; i < 5; i++) queue.push(event(String(i), 30))
    assert.equal(queue.queuedBytes, 90)
    assert.deepEqual(metrics.drops, ['queue_full', 'queue_full'])
    assert.equal(pending.length, 1, 'one event slot of two: one in flight')
    pending.shift()!()
    await settle()
    assert.equal(queue.queuedBytes, 60)
    queue.close()
    assert.equal(queue.queuedBytes, 0)
  })
})
