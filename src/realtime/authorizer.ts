import type { Principal } from '../auth/principal.js'
import type { StreamOptions } from './engine.js'

export type RoomOperation = 'subscribe' | 'publish' | 'history' | 'presence'

/**
 * Decides whether `principal` may perform `operation` on `room`, and returns the room's
 * stream settings. Throws an error of the table (src/errors.ts: a RealtimeError, or `Errors.X`)
 * when not, answered with its protocol code (`not_found`, `forbidden`, …).
 */
export type Authorizer = (principal: Principal, room: string, operation: RoomOperation) => Promise<StreamOptions>
