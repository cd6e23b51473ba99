import type { Static } from '@sinclair/typebox'
import type { RoomSchema } from '../../src/schemas/rooms.js'
import { request } from './api.js'
import { describeError, type Context } from './context.js'
import { field, formatTime, h, replace, select } from './dom.js'

interface ActiveRooms { items: Array<{ room: string, subscribers: number }>, total: number, nodesAnswered: number, nodesKnown: number, partial: boolean }
/** A room's settings as GET /rooms/:id answers them: the server's schema (types only, nothing bundled). */
type Room = Static<typeof RoomSchema>
interface Publication { offset: number, data: unknown, encoding?: 'base64', from: { id: string }, ts: number }

const REFRESH_MS = 5_000
const LIST_LIMIT = 100
const HISTORY_LIMIT = 20
/** Room ids are lowercase slugs: the search box keeps what can match, and the server's pattern never answers 400 to typing. */
const NOT_IN_ROOM_ID = /[^a-z0-9_.:-]/g

/** One publication in a line: the text of `{ text }`, else its JSON (cut), or its size for bytes. */
export function preview (p: Publication): string {
  if (p.encoding === 'base64' && typeof p.data === 'string') return `Binary, ${Math.floor(p.data.length * 3 / 4)} bytes`
  const { data } = p
  const text = typeof data === 'object' && data !== null && typeof (data as { text?: unknown }).text === 'string' ? (data as { text: string }).text : JSON.stringify(data)
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}

/**
 * The cluster's active rooms (GET /admin/rooms: every node counted), searchable by prefix, and
 * an inspector for one: its presence, its latest history, a box to publish a test message as
 * the admin, and its settings (PATCH /rooms/:id).
 */
export function roomsSection (ctx: Context): { el: HTMLElement, dispose (): void } {
  const auth = ctx.session
  const search = h('input', { type: 'search', name: 'room-search', 'aria-label': 'Search active rooms by prefix', placeholder: 'Search rooms (prefix)', maxlength: 64, autocapitalize: 'none', spellcheck: 'false' })
  const list = h('ul', { class: 'active-rooms', 'aria-labelledby': 'active-rooms-title' })
  const coverage = h('p', { class: 'hint' })
  const error = h('p', { class: 'error', role: 'alert' })
  const inspector = h('div', { class: 'inspector' })
  let inspected: { room: string, reload (): Promise<void> } | null = null
  let timer: ReturnType<typeof setTimeout> | undefined
  let searchTimer: ReturnType<typeof setTimeout> | undefined
  let disposed = false

  async function refresh (): Promise<void> {
    clearTimeout(timer)
    try {
      const prefix = search.value.toLowerCase().replace(NOT_IN_ROOM_ID, '')
      const rooms = await request<ActiveRooms>('GET', `/admin/rooms?limit=${LIST_LIMIT}&prefix=${encodeURIComponent(prefix)}`, { auth })
      if (disposed) return
      error.textContent = ''
      coverage.textContent = `${rooms.total} active room${rooms.total === 1 ? '' : 's'}${rooms.total > rooms.items.length ? ` (the busiest ${rooms.items.length} shown)` : ''}, ` +
        `counted on ${rooms.nodesAnswered} of ${rooms.nodesKnown} node${rooms.nodesKnown === 1 ? '' : 's'}${rooms.partial ? ' (partial)' : ''}.`
      replace(list, ...rooms.items.map(({ room, subscribers }) => h('li', { class: inspected?.room === room ? 'selected' : '' },
        h('span', { class: 'who' }, h('strong', {}, room), ` ${subscribers} subscriber${subscribers === 1 ? '' : 's'}`),
        h('button', { type: 'button', class: 'secondary', 'aria-label': `Inspect ${room}`, onclick: () => { inspect(room) } }, 'Inspect'))))
      if (rooms.items.length === 0) list.append(h('li', {}, 'No active rooms match.'))
      await inspected?.reload()
    } catch (err) {
      if (!disposed) error.textContent = `Could not load the rooms: ${describeError(err)}`
    }
    if (!disposed) timer = setTimeout(() => { void refresh() }, REFRESH_MS)
  }

  function inspect (room: string): void {
    const path = `/rooms/${encodeURIComponent(room)}`
    const presence = h('p', { 'aria-live': 'polite' }, 'Loading…')
    const messages = h('ol', { class: 'history', 'aria-label': `Latest messages in ${room}` })
    const status = h('p', { class: 'hint', role: 'status' })
    const problem = h('p', { class: 'error', role: 'alert' })
    const settings = h('div', {}, h('p', { class: 'hint' }, 'Loading the settings…'))
    const text = h('input', { type: 'text', name: 'test-message', maxlength: 1000, required: true })
    const publish = h('form', { class: 'row publish' }, field('Test message', text),
      h('button', { type: 'submit' }, 'Publish'))
    publish.addEventListener('submit', (event) => {
      event.preventDefault()
      status.textContent = problem.textContent = ''
      request<{ offset: number }>('POST', `${path}/messages`, { auth, body: { data: { text: text.value } } }).then((res) => {
        if (disposed) return
        status.textContent = `Published at offset ${res.offset}.`
        text.value = ''
        return reload()
      }, (err: unknown) => { if (!disposed) problem.textContent = `Could not publish: ${describeError(err)}` })
    })

    async function reload (): Promise<void> {
      try {
        const [who, history] = await Promise.all([
          request<{ users: string[], connections: number }>('GET', `${path}/presence`, { auth }),
          request<{ publications: Publication[] }>('GET', `${path}/messages?limit=${HISTORY_LIMIT}`, { auth })
        ])
        if (disposed || inspected?.room !== room) return
        presence.textContent = who.users.length === 0
          ? 'Nobody is subscribed.'
          : `${who.users.join(', ')} (${who.connections} connection${who.connections === 1 ? '' : 's'})`
        replace(messages, ...[...history.publications].reverse().map(p => h('li', {},
          h('span', { class: 'meta' }, `#${p.offset} ${p.from.id} `, h('time', { datetime: new Date(p.ts).toISOString() }, formatTime(p.ts))), ' ',
          h('span', { class: 'text' }, preview(p)))))
        if (history.publications.length === 0) messages.append(h('li', {}, 'No messages in the history.'))
      } catch (err) {
        if (!disposed) problem.textContent = `Could not load ${room}: ${describeError(err)}`
      }
    }

    inspected = { room, reload }
    for (const li of list.children) li.classList.toggle('selected', li.querySelector('strong')?.textContent === room)
    replace(inspector,
      h('div', { class: 'row' },
        h('h3', { id: 'inspector-title' }, `Room ${room}`),
        h('button', { type: 'button', class: 'link', onclick: () => { inspected = null; inspector.replaceChildren() } }, 'Close')),
      status, problem,
      h('h4', {}, 'Presence'), presence,
      h('h4', {}, 'Latest messages'), messages,
      publish,
      h('h4', {}, 'Settings'), settings)
    void reload()
    request<Room>('GET', path, { auth }).then((r) => {
      if (!disposed && inspected?.room === room) replace(settings, settingsForm(r, status, problem))
    }, (err: unknown) => { if (!disposed) replace(settings, h('p', { class: 'hint' }, `No settings to edit: ${describeError(err)}`)) })
    inspector.querySelector('h3')?.scrollIntoView({ block: 'nearest' })
  }

  /** The room's settings; Save sends only what changed. */
  function settingsForm (room: Room, status: HTMLElement, problem: HTMLElement): HTMLFormElement {
    const name = h('input', { type: 'text', name: 'name', maxlength: 100, value: room.name ?? '' })
    const visibility = select([['public', 'Public'], ['private', 'Private']], { name: 'visibility' })
    visibility.value = room.visibility
    const publishPolicy = select([['members', 'Members'], ['moderators', 'Moderators and owners']], { name: 'publish' })
    publishPolicy.value = room.publish
    const number = (n: string, value: number | null, min: number, max: number): HTMLInputElement =>
      h('input', { type: 'number', name: n, min, max, step: 1, value: value === null ? '' : String(value) })
    const historySize = number('historySize', room.historySize, 0, 10_000)
    const historyTtl = number('historyTtlSeconds', room.historyTtlSeconds, 1, 30 * 86_400)
    const maxMembers = number('maxMembers', room.maxMembers, 1, 1_000_000)
    const archiveDays = number('archiveDays', room.archiveDays, 1, 3650)
    const presenceEvents = h('input', { type: 'checkbox', name: 'presenceEvents', checked: room.presenceEvents })
    const archive = h('input', { type: 'checkbox', name: 'archive', checked: room.archive })
    const form = h('form', { class: 'settings', 'aria-label': `Settings of ${room.id}` },
      field('Name', name), field('Visibility', visibility), field('Who may publish', publishPolicy),
      field('History size', historySize, 'Publications kept for recovery (0: none)'),
      field('History TTL (seconds)', historyTtl),
      field('Member cap', maxMembers, 'Empty: none'),
      field('Archive days', archiveDays),
      h('label', { class: 'check' }, presenceEvents, ' Push join and leave events'),
      h('label', { class: 'check' }, archive, ' Keep an archive beyond the recovery window'),
      h('button', { type: 'submit' }, 'Save settings'))
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      status.textContent = problem.textContent = ''
      const wanted: Partial<Room> = {
        name: name.value.trim() === '' ? null : name.value.trim(),
        visibility: visibility.value as Room['visibility'],
        publish: publishPolicy.value as Room['publish'],
        historySize: historySize.valueAsNumber,
        historyTtlSeconds: historyTtl.valueAsNumber,
        maxMembers: maxMembers.value === '' ? null : maxMembers.valueAsNumber,
        archiveDays: archiveDays.valueAsNumber,
        presenceEvents: presenceEvents.checked,
        archive: archive.checked
      }
      const changed = Object.fromEntries(Object.entries(wanted).filter(([key, value]) => room[key as keyof Room] !== value))
      if (Object.keys(changed).length === 0) {
        status.textContent = 'Nothing changed.'
        return
      }
      request<Room>('PATCH', `/rooms/${encodeURIComponent(room.id)}`, { auth, body: changed }).then((saved) => {
        if (disposed) return
        Object.assign(room, saved)
        status.textContent = `Saved the settings of ${room.id} (${Object.keys(changed).join(', ')}).`
      }, (err: unknown) => { if (!disposed) problem.textContent = `Could not save the settings: ${describeError(err)}` })
    })
    return form
  }

  search.addEventListener('input', () => {
    clearTimeout(searchTimer)
    searchTimer = setTimeout(() => { void refresh() }, 250)
  })
  void refresh()
  const el = h('section', { 'aria-labelledby': 'active-rooms-title' },
    h('h2', { id: 'active-rooms-title' }, 'Active rooms'),
    search, coverage, error, list, inspector)
  return { el, dispose () { disposed = true; clearTimeout(timer); clearTimeout(searchTimer) } }
}
