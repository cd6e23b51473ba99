import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createRateMeter, type MetricTotals } from '../../src/realtime/metrics.js'

/** The admin page's message rates (GET /admin/stats) on an injected clock. Over HTTP: test/web-admin.test.ts. */

describe('createRateMeter', () => {
  it('averages over the newest sample at least a window old', () => {
    let clock = 0
    const totals: MetricTotals = { connections: 0, messagesIn: 0, messagesOut: 0 }
    const rates = createRateMeter(() => ({ ...totals }), 10_000, () => clock)
    clock = 5_000
    totals.messagesOut = 50
    assert.deepEqual(rates(), { messagesInPerSecond: 0, messagesOutPerSecond: 10, windowSeconds: 5 })
    clock = 15_000
    totals.messagesOut = 150
    // From the sample at 5 s (the newest at least 10 s old is the start, at 0 s).
    assert.equal(rates().messagesOutPerSecond, 10)
    clock = 20_000
    totals.messagesOut = 150
    // Now the base is the 5 s sample (50): 100 messages over 15 s.
    const r = rates()
    assert.equal(r.windowSeconds, 15)
    assert.ok(Math.abs(r.messagesOutPerSecond - 100 / 15) < 1e-9)
  })

  it('reads 0 when no time has passed; under a flood of reads the window still moves', () => {
    let clock = 0
    const totals: MetricTotals = { connections: 0, messagesIn: 0, messagesOut: 0 }
    const rates = createRateMeter(() => ({ ...totals }), 10_000, () => clock)
    assert.equal(rates().messagesOutPerSecond, 0)
    // A read every millisecond for a minute, at 1,000 messages a second until 50 s, then none.
    let last = rates()
    for (let i = 0; i < 60_000; i++) {
      clock += 1
      if (clock <= 50_000) totals.messagesOut++
      last = rates()
    }
    assert.ok(last.windowSeconds >= 10 && last.windowSeconds <= 10.2, `window ${last.windowSeconds} s: the last 10 s, not the minute`)
    assert.equal(last.messagesOutPerSecond, 0, 'nothing in the last 10 s')
  })
})
