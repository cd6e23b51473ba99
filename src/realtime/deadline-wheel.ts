/**
 * Where an entry sits in a DeadlineWheel: kept on the entry itself (the wheel owns these two
 * fields), so that filing, moving and removing cost no lookup and no allocation per entry.
 */
export interface WheelEntry {
  /** The slot it is filed in; NOT_FILED when it is in none. */
  wheelSlot: number
  /** Its index in that slot's list. */
  wheelIndex: number
}

export const NOT_FILED = -1

/**
 * A timer wheel of deadlines (heartbeat, idle, token expiry) for many entries under one timer:
 * time is cut into slots of `slotMs`, an entry is filed in the slot of its earliest deadline,
 * and each turn visits only the slots that fell due. With thousands of idle connections, a
 * turn touches the few whose ping is due instead of every connection, so the node's idle cost
 * grows with the pings it sends, not with the connections it holds.
 *
 * Deadlines hold to within one slot, never early: a deadline at `at` is visited at the first
 * turn at or after the end of its slot. An entry is filed once; `fileBy` only ever moves it
 * earlier (a deadline that moved later is found not yet due when its slot comes, and the
 * visitor files it again), so postponing a deadline (every inbound frame does) costs nothing.
 */
export class DeadlineWheel<T extends WheelEntry> {
  private readonly slots = new Map<number, T[]>()
  /** The first slot not yet visited. */
  private next: number

  constructor (private readonly slotMs: number, now: number) {
    this.next = Math.floor(now / this.slotMs) + 1
  }

  /** Entries filed. */
  get size (): number {
    let n = 0
    for (const list of this.slots.values()) n += list.length
    return n
  }

  /**
   * Makes sure `entry` is visited no later than the turn after `at` (ms): files it, or moves
   * it to an earlier slot; a later or equal slot than where it is leaves it there.
   * An `at` of Infinity files nothing.
   */
  fileBy (entry: T, at: number): void {
    if (!Number.isFinite(at)) return
    const slot = Math.max(this.next, Math.ceil(at / this.slotMs))
    if (entry.wheelSlot !== NOT_FILED) {
      if (entry.wheelSlot <= slot) return
      this.remove(entry)
    }
    let list = this.slots.get(slot)
    if (list === undefined) this.slots.set(slot, list = [])
    entry.wheelSlot = slot
    entry.wheelIndex = list.length
    list.push(entry)
  }

  /** Takes `entry` out of the wheel (a closed connection); nothing when it is not filed. */
  remove (entry: T): void {
    const list = this.slots.get(entry.wheelSlot)
    if (list === undefined || list[entry.wheelIndex] !== entry) {
      entry.wheelSlot = NOT_FILED
      return
    }
    const last = list.pop()!
    if (last !== entry) {
      list[entry.wheelIndex] = last
      last.wheelIndex = entry.wheelIndex
    }
    if (list.length === 0) this.slots.delete(entry.wheelSlot)
    entry.wheelSlot = NOT_FILED
  }

  /**
   * Visits, slot by slot in time order, every entry whose slot ended at or before `now`. Each
   * is taken out of the wheel before its visit: the visitor files it again (by its next
   * deadline) if it is to be visited again. An entry filed during the turn into a slot that is
   * already due is visited in the same turn, after the slots before it.
   */
  turn (now: number, visit: (entry: T) => void): void {
    const last = Math.floor(now / this.slotMs)
    while (this.next <= last) {
      // After a long stall (or a clock that jumped) most slots in between are empty: go
      // straight to the earliest filed one.
      if (!this.slots.has(this.next) && last - this.next > this.slots.size) {
        let earliest = Infinity
        for (const slot of this.slots.keys()) if (slot < earliest) earliest = slot
        this.next = Math.min(earliest, last + 1)
        continue
      }
      const slot = this.next++
      const list = this.slots.get(slot)
      if (list === undefined) continue
      this.slots.delete(slot)
      for (const entry of list) entry.wheelSlot = NOT_FILED
      for (const entry of list) visit(entry)
    }
  }
}
