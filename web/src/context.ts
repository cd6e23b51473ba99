import type { SwitchboardClient } from '@switchboard/client'
import type { MembershipEvent } from '@switchboard/protocol/membership-events'
import type { Session, User } from './session.js'

/** What every view gets: the signed-in session, its one real-time client, navigation. */
export interface Context {
  session: Session
  user: User
  client: SwitchboardClient
  navigate (hash: string): void
  /**
   * Calls `listener` with each membership event of the user's personal room (a room added to or
   * removed from their list, docs/protocol.md §11), and with null when the personal room was
   * subscribed again after a reconnect (events may have been missed: read the list again).
   * Returns the function that stops it.
   */
  onMembership (listener: (event: MembershipEvent | null) => void): () => void
}

/** A mounted view: its element, and what to stop (subscriptions, timers) when leaving it. */
export interface View {
  el: HTMLElement
  /** The element to focus after navigation (defaults to the view's h1). */
  focus?: HTMLElement
  dispose (): void
}

/** The message of any failure, for an error line on the page. */
export function describeError (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
