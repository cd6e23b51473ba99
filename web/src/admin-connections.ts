import { request } from './api.js'
import { nodeName, type ReportedNode } from './admin-cluster.js'
import { describeError, type Context } from './context.js'
import { formatTime, h, replace, stickyError } from './dom.js'

interface Connection { id: string, node: string, principal: string, kind: 'user' | 'apiKey', ip: string, rooms: string[], connectedAt: number }
interface Listing { items: Connection[], nodesAnswered: string[], nodesMissing: string[], truncated: boolean }

const REFRESH_MS = 5_000
/** What the page asks for at most; the server's own cap is 500. */
const LIMIT = 200

/**
 * Connections on every node (GET /admin/connections gathers them over the cluster), filtered
 * by user and room, with a kick (4503) and an "unsubscribe from this room" per subscription,
 * each confirmed first. Refreshed every few seconds; the line above the list says which nodes
 * answered and which did not.
 */
export function connectionsSection (ctx: Context): { el: HTMLElement, dispose (): void } {
  const auth = ctx.session
  const user = h('input', { type: 'search', name: 'connection-user', 'aria-label': 'Filter connections by user', placeholder: 'User', maxlength: 64, autocapitalize: 'none', spellcheck: 'false' })
  const room = h('input', { type: 'search', name: 'connection-room', 'aria-label': 'Filter connections by room', placeholder: 'Room', maxlength: 64, autocapitalize: 'none', spellcheck: 'false' })
  const list = h('ul', { class: 'connections', 'aria-labelledby': 'connections-title' })
  const coverage = h('p', { class: 'hint' })
  const status = h('p', { class: 'hint', role: 'status' })
  // Loading failures are the refresh's own: the next refresh that works clears them. An action
  // that failed is the user's: it stays until dismissed or the next action or Refresh.
  const error = h('p', { class: 'error', role: 'alert' })
  const actionError = stickyError()
  let nodes = new Map<string, ReportedNode>()
  let timer: ReturnType<typeof setTimeout> | undefined
  let filterTimer: ReturnType<typeof setTimeout> | undefined
  let disposed = false

  /** Runs a confirmed action, then refreshes; a failure stays on screen. */
  function act (failed: string, done: string, path: string): void {
    actionError.clear()
    status.textContent = ''
    request('DELETE', path, { auth }).then(() => {
      if (disposed) return
      status.textContent = done
      return refresh()
    }, (err: unknown) => { if (!disposed) actionError.show(`${failed}: ${describeError(err)}`) })
  }

  function where (c: Connection): string {
    const n = nodes.get(c.node)
    return n === undefined ? `node ${c.node.slice(0, 8)}` : nodeName(n)
  }

  function item (c: Connection): HTMLLIElement {
    const who = c.kind === 'user' ? c.principal : `API key ${c.principal}`
    const path = `/admin/connections/${encodeURIComponent(c.id)}`
    const rooms = c.rooms.length === 0
      ? h('dd', {}, 'none')
      : h('dd', {}, h('ul', { class: 'subscriptions' }, ...c.rooms.map(r => h('li', {},
        h('span', {}, r), ' ',
        h('button', {
          type: 'button',
          class: 'link',
          'aria-label': `Unsubscribe ${who} from ${r} (connection ${c.id})`,
          onclick: () => {
            if (!confirm(`Unsubscribe ${who} from ${r}? This connection stops receiving the room (it may subscribe again); it stays open.`)) return
            act(`Could not unsubscribe ${who} from ${r}`, `Unsubscribed ${who} from ${r}.`, `${path}/rooms/${encodeURIComponent(r)}`)
          }
        }, 'Unsubscribe')))))
    return h('li', {},
      h('dl', {},
        h('div', {}, h('dt', {}, 'User'), h('dd', {}, who)),
        h('div', {}, h('dt', {}, 'Node'), h('dd', {}, where(c))),
        h('div', {}, h('dt', {}, 'Rooms'), rooms),
        h('div', {}, h('dt', {}, 'Since'), h('dd', {}, h('time', { datetime: new Date(c.connectedAt).toISOString() }, formatTime(c.connectedAt)))),
        h('div', {}, h('dt', {}, 'Address'), h('dd', {}, c.ip))),
      h('button', {
        type: 'button',
        class: 'danger',
        'aria-label': `Kick ${who} (connection ${c.id})`,
        onclick: () => {
          if (!confirm(`Kick ${who}? This connection is closed (4503) and the app does not reconnect on its own.`)) return
          act(`Could not kick ${who}`, `Disconnected ${who}.`, path)
        }
      }, 'Kick'))
  }

  function query (): string {
    const params = new URLSearchParams({ limit: String(LIMIT) })
    const u = user.value.trim().toLowerCase()
    const r = room.value.trim().toLowerCase()
    if (u !== '') params.set('user', u)
    if (r !== '') params.set('room', r)
    return params.toString()
  }

  async function refresh (): Promise<void> {
    clearTimeout(timer)
    try {
      const [listing, reported] = await Promise.all([
        request<Listing>('GET', `/admin/connections?${query()}`, { auth }),
        request<{ items: ReportedNode[] }>('GET', '/admin/nodes', { auth })
      ])
      if (disposed) return
      error.textContent = ''
      nodes = new Map(reported.items.map(n => [n.id, n]))
      const missing = listing.nodesMissing.map(id => { const n = nodes.get(id); return n === undefined ? id.slice(0, 8) : n.address })
      coverage.textContent = `${listing.items.length}${listing.truncated ? '+' : ''} connection${listing.items.length === 1 ? '' : 's'} from ` +
        `${listing.nodesAnswered.length} of ${listing.nodesAnswered.length + listing.nodesMissing.length} node${listing.nodesAnswered.length + listing.nodesMissing.length === 1 ? '' : 's'}` +
        (missing.length === 0 ? '.' : `; not answering: ${missing.join(', ')}.`) +
        (listing.truncated ? ` Only the oldest ${listing.items.length} are listed: narrow the filter.` : '')
      replace(list, ...listing.items.map(item))
      if (listing.items.length === 0) list.append(h('li', {}, 'No open connections match.'))
    } catch (err) {
      if (!disposed) error.textContent = `Could not load: ${describeError(err)}`
    }
    if (!disposed) timer = setTimeout(() => { void refresh() }, REFRESH_MS)
  }

  for (const input of [user, room]) {
    input.addEventListener('input', () => {
      clearTimeout(filterTimer)
      filterTimer = setTimeout(() => { void refresh() }, 250)
    })
  }
  void refresh()
  const el = h('section', { 'aria-labelledby': 'connections-title' },
    h('div', { class: 'row' },
      h('h2', { id: 'connections-title' }, 'Connections'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { actionError.clear(); void refresh() } }, 'Refresh')),
    h('div', { class: 'filters' }, user, room),
    coverage, status, actionError.el, error, list)
  return { el, dispose () { disposed = true; clearTimeout(timer); clearTimeout(filterTimer) } }
}
