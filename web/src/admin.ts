import { clusterSection } from './admin-cluster.js'
import { connectionsSection } from './admin-connections.js'
import { roomsSection } from './admin-rooms.js'
import type { Context, View } from './context.js'
import { h } from './dom.js'
import { usersSection } from './users.js'

/**
 * The admin console, for admins: the cluster (every node's figures and live charts,
 * admin-cluster.ts), the connections on every node with kick and unsubscribe
 * (admin-connections.ts), the active rooms with an inspector (admin-rooms.ts) and the accounts
 * (users.ts). docs/web.md describes it.
 */
export function adminView (ctx: Context): View {
  const parts = [clusterSection(ctx), connectionsSection(ctx), roomsSection(ctx), usersSection(ctx)]
  const el = h('section', { 'aria-labelledby': 'admin-title', class: 'admin' },
    h('h1', { id: 'admin-title' }, 'Admin'),
    h('nav', { class: 'admin-nav', 'aria-label': 'Admin sections' },
      ...[['cluster-title', 'Cluster'], ['connections-title', 'Connections'], ['active-rooms-title', 'Rooms'], ['users-title', 'Users']].map(([target, label]) =>
        h('button', { type: 'button', class: 'link', onclick: () => { document.getElementById(target!)?.scrollIntoView({ block: 'start' }) } }, label!))),
    ...parts.map(p => p.el))
  return { el, dispose () { for (const p of parts) p.dispose() } }
}
