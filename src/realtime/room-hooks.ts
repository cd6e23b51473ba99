import type { Principal } from '../auth/principal.js'
import type { Payload, PublishResult } from './engine.js'

/** The connection a hook is about: what the backend is told of it. */
export interface HookConnection {
  id: string
  ip: string
  /** What the backend's connect hook attached to this connection, if anything. */
  info?: unknown
}

/**
 * What the real-time core asks of the application's backend (src/hooks implements it; the
 * core owns this interface so that it imports nothing of HTTP). Each call is a no-op when its
 * hook is off or the room is not one HOOKS_ROOMS names. The refusing calls reject with an
 * error of the table (src/errors.ts): the backend's refusal, or a temporary error when it
 * could not answer; the events never reject and never wait.
 */
export interface RoomHooks {
  /** After the room's own authorization grants a subscribe, before the subscription exists. */
  subscribe(principal: Principal, room: string, connection: HookConnection): Promise<void>
  /** After the grant of a publish: the payload to publish, the client's or the backend's replacement. */
  publish(principal: Principal, room: string, payload: Payload): Promise<Payload>
  /** A publication was accepted (on the node that published it: one event per publication; not for an idempotent retry's duplicate). */
  published(principal: Principal, room: string, payload: Payload, result: PublishResult): void
  /** A user's first connection in the room (cluster-wide, as presence counts it). */
  joined(room: string, userId: string): void
  /** A user's last connection left the room. */
  left(room: string, userId: string): void
  /** A connection registered on this node ended, with its close code. */
  disconnected(principal: Principal, connection: HookConnection, code: number): void
}

/** No backend: every hook is off. */
export const NO_ROOM_HOOKS: RoomHooks = {
  subscribe: async () => {},
  publish: async (_principal, _room, payload) => payload,
  published: () => {},
  joined: () => {},
  left: () => {},
  disconnected: () => {}
}
