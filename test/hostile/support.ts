import v8 from 'node:v8'
import vm from 'node:vm'
import assert from 'node:assert/strict'

// The hostile suite asserts that memory comes back after an attack: that needs a full GC on
// demand, which node only offers behind --expose-gc. Turning the flag on at run time and taking
// `gc` from a fresh context works without changing how the test runner starts node.
v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/** How far RSS may stay above its baseline once an attack is over and a full GC ran. */
export const RSS_SLACK_BYTES = 50 * 1024 * 1024

/** RSS after full collections, with the loop turned between them so finalizers and frees run. */
export async function settledRss (): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return process.memoryUsage.rss()
}

/** Fails when RSS, after a full GC, stays more than RSS_SLACK_BYTES above `baseline`. */
export async function assertRssBack (baseline: number, attack: string): Promise<void> {
  const after = await settledRss()
  const grewMiB = (after - baseline) / 1024 / 1024
  assert.ok(after - baseline <= RSS_SLACK_BYTES, `${attack}: RSS stayed ${grewMiB.toFixed(1)} MiB above its baseline after a full GC`)
}
