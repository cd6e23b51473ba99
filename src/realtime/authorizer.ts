import type { Principal } from '../auth/principal.js'
import type { StreamOptions } from './engine.js'

export type RoomOperation = 'subscribe' | 'publish' | 'history' | 'presence'

/**
 * Decides whether `principal` may perform `operation` on `room`, and returns the room's
 * stream settings. Throws RealtimeError (`not_found`, `forbidden`, …) when not.
 */
export type Authorizer = (principal: Principal, room: string, operation: RoomOperation) => Promise<StreamOptions>
