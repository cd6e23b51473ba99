import { request } from './api.js'
import { describeError, type Context, type View } from './context.js'
import { formatTime, h, replace, stickyError } from './dom.js'
import { usersSection } from './users.js'

interface Connection { id: string, principal: string, kind: 'user' | 'apiKey', ip: string, rooms: string[], connectedAt: number }
interface Stats { connections: number, messagesInPerSecond: number, messagesOutPerSecond: number }

const REFRESH_MS = 5_000

function rate (value: number): string {
  return value < 10 ? value.toFixed(1) : Math.round(value).toString()
}

/**
 * For admins: the headline numbers (GET /admin/stats) and this node's open connections
 * (GET /admin/connections) with a kick button, refreshed every few seconds; then the accounts
 * (users.ts).
 */
export function adminView (ctx: Context): View {
  const auth = ctx.session
  const connections = h('dd', {}, '–')
  const outRate = h('dd', {}, '–')
  const inRate = h('dd', {}, '–')
  const stats = h('dl', { class: 'stats', 'aria-label': 'Headline metrics' },
    h('div', {}, h('dt', {}, 'Connections'), connections),
    h('div', {}, h('dt', {}, 'Messages delivered / s'), outRate),
    h('div', {}, h('dt', {}, 'Messages received / s'), inRate))
  const list = h('ul', { class: 'connections', 'aria-labelledby': 'connections-title' })
  const status = h('p', { class: 'hint', role: 'status' })
  // Loading failures are the refresh's own: the next refresh that works clears them. A kick
  // that failed is the user's: it stays until dismissed or the next kick or Refresh.
  const error = h('p', { class: 'error', role: 'alert' })
  const kickError = stickyError()
  let timer: ReturnType<typeof setTimeout> | undefined
  let disposed = false

  function item (c: Connection): HTMLLIElement {
    const who = c.kind === 'user' ? c.principal : `API key ${c.principal}`
    return h('li', {},
      h('dl', {},
        h('div', {}, h('dt', {}, 'User'), h('dd', {}, who)),
        h('div', {}, h('dt', {}, 'Rooms'), h('dd', {}, c.rooms.length === 0 ? 'none' : c.rooms.join(', '))),
        h('div', {}, h('dt', {}, 'Since'), h('dd', {}, h('time', { datetime: new Date(c.connectedAt).toISOString() }, formatTime(c.connectedAt)))),
        h('div', {}, h('dt', {}, 'Address'), h('dd', {}, c.ip))),
      h('button', {
        type: 'button',
        class: 'danger',
        'aria-label': `Kick ${who} (connection ${c.id})`,
        onclick: () => {
          kickError.clear()
          status.textContent = ''
          request('DELETE', `/admin/connections/${encodeURIComponent(c.id)}`, { auth })
            .then(() => { status.textContent = `Disconnected ${who}.`; return refresh() },
              (err: unknown) => { if (!disposed) kickError.show(`Could not kick ${who}: ${describeError(err)}`) })
        }
      }, 'Kick'))
  }

  async function refresh (): Promise<void> {
    clearTimeout(timer)
    try {
      const [s, conns] = await Promise.all([
        request<Stats>('GET', '/admin/stats', { auth }),
        request<{ items: Connection[] }>('GET', '/admin/connections', { auth })
      ])
      if (disposed) return
      error.textContent = ''
      connections.textContent = String(s.connections)
      outRate.textContent = rate(s.messagesOutPerSecond)
      inRate.textContent = rate(s.messagesInPerSecond)
      const items = [...conns.items].sort((a, b) => a.connectedAt - b.connectedAt)
      replace(list, ...items.map(item))
      if (items.length === 0) list.append(h('li', {}, 'No open connections.'))
    } catch (err) {
      if (!disposed) error.textContent = `Could not load: ${describeError(err)}`
    }
    if (!disposed) timer = setTimeout(() => { void refresh() }, REFRESH_MS)
  }

  void refresh()
  const users = usersSection(ctx)
  const el = h('section', { 'aria-labelledby': 'admin-title' },
    h('h1', { id: 'admin-title' }, 'Admin'),
    stats,
    h('div', { class: 'row' },
      h('h2', { id: 'connections-title' }, 'Open connections on this node'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { kickError.clear(); void refresh() } }, 'Refresh')),
    status, kickError.el, error, list,
    users.el)
  return { el, dispose () { disposed = true; clearTimeout(timer); users.dispose() } }
}
