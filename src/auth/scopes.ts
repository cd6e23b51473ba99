import { Type } from '@sinclair/typebox'

/**
 * API key scopes: `<action>:<room pattern>`. The pattern is a room id, `*` (every room), or a
 * prefix ending in `*` (`sensors.*`, `user:*`). Actions are the room operations a key may
 * perform; a key never manages rooms, members or other keys.
 *
 * One scope stands alone: `admin`, the server API for backends (POST /broadcast and the
 * /admin routes: kick, unsubscribe, presence stats, active rooms, nodes). It grants no room
 * operation of its own (a backend that also publishes one at a time adds `publish:*`), and
 * never accounts or keys: creating keys stays with signed-in admins, so a leaked admin key
 * cannot mint another.
 */
export const SCOPE_ACTIONS = ['publish', 'subscribe', 'history', 'presence'] as const
export type ScopeAction = typeof SCOPE_ACTIONS[number]

/** The scope of the server API for backends (docs/authorization.md, "API keys"). */
export const ADMIN_SCOPE = 'admin'

export const ScopeSchema = Type.String({
  pattern: '^(admin|(publish|subscribe|history|presence):(\\*|[a-z0-9][a-z0-9_.:-]{0,63}\\*?))$',
  description: '`action:pattern`, action one of publish, subscribe, history, presence; pattern a room id, `*`, or a prefix ending in `*`. ' +
    'Or `admin` alone: the server API for backends (POST /broadcast, /admin/*), no room operation and no key management',
  examples: ['publish:sensors.*', 'subscribe:*', 'admin']
})

/** True when the key holds the `admin` scope (the server API for backends). */
export function hasAdminScope (scopes: readonly string[]): boolean {
  return scopes.includes(ADMIN_SCOPE)
}

function matches (pattern: string, roomId: string): boolean {
  if (pattern === '*') return true
  if (pattern.endsWith('*')) return roomId.startsWith(pattern.slice(0, -1))
  return pattern === roomId
}

/** True when one of `scopes` grants `action` on `roomId`. */
export function scopeAllows (scopes: readonly string[], action: ScopeAction, roomId: string): boolean {
  for (const scope of scopes) {
    const colon = scope.indexOf(':')
    if (colon === -1) continue
    if (scope.slice(0, colon) === action && matches(scope.slice(colon + 1), roomId)) return true
  }
  return false
}

/** True when some scope of the key names this room at all (for reading its metadata). */
export function scopeTouches (scopes: readonly string[], roomId: string): boolean {
  return SCOPE_ACTIONS.some(action => scopeAllows(scopes, action, roomId))
}
