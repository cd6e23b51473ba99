/**
 * One answer per key, shared by every ask of that key for `ttlMs` (concurrent asks share the
 * one in flight); a failed answer is not kept. Entries stay in order of age (a new answer for
 * a key goes to the back), so the expired ones are dropped from the front as new ones come,
 * and at `capacity` the oldest goes: a node asked about more keys than that keeps sharing the
 * answers asked for most recently, instead of dropping every answer at once.
 */
export class SharedAnswers<T> {
  private readonly answers = new Map<string, { at: number, answer: Promise<T> }>()

  constructor (private readonly ttlMs: number, private readonly capacity: number, private readonly now: () => number) {}

  get (key: string, ask: () => Promise<T>): Promise<T> {
    const at = this.now()
    const kept = this.answers.get(key)
    if (kept !== undefined && at - kept.at < this.ttlMs) return kept.answer
    this.answers.delete(key)
    for (const [oldest, entry] of this.answers) {
      if (this.answers.size < this.capacity && at - entry.at < this.ttlMs) break
      this.answers.delete(oldest)
    }
    const entry = { at, answer: ask() }
    this.answers.set(key, entry)
    entry.answer.catch(() => { if (this.answers.get(key) === entry) this.answers.delete(key) })
    return entry.answer
  }

  /** Something changed what `key`'s answer would be: the next ask asks anew. */
  drop (key: string): void {
    this.answers.delete(key)
  }

  clear (): void {
    this.answers.clear()
  }

  get size (): number {
    return this.answers.size
  }
}
