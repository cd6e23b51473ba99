import type { GapEvent, Publication, Subscription, SubscriptionEvent } from '../../src/client/index.js'
import { ApiError, listAll, request } from './api.js'
import { describeError, type Context, type View } from './context.js'
import { field, formatTime, h, replace, select } from './dom.js'
import type { Room } from './rooms.js'

interface Member { userId: string, role: 'owner' | 'moderator' | 'member' }
interface HistoryPage { epoch: string, offset: number, complete: boolean, publications: Publication[] }

/** Publications shown on open, and loaded again after a gap. */
const HISTORY_LIMIT = 50
const ROLES: Array<[Member['role'], string]> = [['member', 'member'], ['moderator', 'moderator'], ['owner', 'owner']]

/** What a message shows: its `text`, or the JSON of anything else (a service may publish any JSON). */
export function textOf (data: unknown): string {
  if (typeof data === 'object' && data !== null && typeof (data as { text?: unknown }).text === 'string') return (data as { text: string }).text
  return JSON.stringify(data)
}

/**
 * One room: the recent history, then live messages from exactly where the history ended
 * (subscribe with `since` = the history's position, so nothing falls between the two and
 * nothing is shown twice), presence, the message box, and member management for owners and
 * moderators. Reconnects are the SDK's: a resumed subscription delivers what was missed; a gap
 * it cannot fill is shown as a note in the message list.
 */
export function roomView (ctx: Context, roomId: string): View {
  const path = `/rooms/${encodeURIComponent(roomId)}`
  const auth = ctx.session
  let disposed = false
  let sub: Subscription | null = null
  let room: Room | null = null
  let myRole: Member['role'] | null = null
  let canWrite = false
  const seen = new Set<string>()
  const online = new Set<string>()

  const title = h('h1', { id: 'room-title' }, roomId)
  const badge = h('span', { class: 'badge' })
  const actions = h('div', { class: 'row' })
  const error = h('p', { class: 'error', role: 'alert' })
  const messages = h('ol', { class: 'messages', 'aria-label': 'Messages', 'aria-live': 'polite', 'aria-relevant': 'additions', tabindex: 0 })
  const input = h('input', { id: 'message-input', name: 'message', autocomplete: 'off', maxlength: 4000, disabled: true })
  const send = h('button', { type: 'submit', disabled: true }, 'Send')
  const composerHint = h('p', { class: 'hint', id: 'composer-hint' })
  input.setAttribute('aria-describedby', composerHint.id)
  const composer = h('form', {
    class: 'composer',
    onsubmit: (event) => { event.preventDefault(); publish() }
  }, h('label', { for: input.id, class: 'visually-hidden' }, 'Message'), input, send)

  const presenceTitle = h('h2', { id: 'online-title' }, 'Online')
  const presenceList = h('ul', { 'aria-labelledby': 'online-title' })
  const membersList = h('ul', { 'aria-labelledby': 'members-title' })
  const manageError = h('p', { class: 'error', role: 'alert' })
  const manage = h('div', { hidden: true })

  const el = h('section', { class: 'room', 'aria-labelledby': 'room-title' },
    h('div', { class: 'room-head' }, h('div', {}, title, ' ', badge), actions),
    error,
    h('div', { class: 'chat' }, messages, composer, composerHint),
    h('aside', { class: 'people panel', 'aria-label': 'People' },
      presenceTitle, presenceList,
      h('h2', { id: 'members-title' }, 'Members'), membersList, manageError, manage))

  // ----------------------------------------------------------------------------------------
  // Messages

  function messageItem (epoch: string, p: Publication): HTMLLIElement {
    return h('li', { 'data-epoch': epoch, 'data-offset': p.offset },
      h('span', { class: 'from' }, p.from.id),
      h('time', { datetime: new Date(p.ts).toISOString() }, formatTime(p.ts)),
      h('p', { class: 'text' }, textOf(p.data)))
  }

  /** Shows a publication once (by epoch and offset), before `before` or at the end. */
  function show (epoch: string, p: Publication, before: Node | null = null): void {
    const key = `${epoch}:${p.offset}`
    if (seen.has(key)) return
    seen.add(key)
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40
    messages.insertBefore(messageItem(epoch, p), before)
    if (atBottom) messages.scrollTop = messages.scrollHeight
  }

  /**
   * The SDK could not recover what was missed (e.g. a server with in-memory history restarted):
   * say so where it happened, then fill in what the room's new history still has before the
   * point where live delivery resumed.
   */
  function gap (event: GapEvent): void {
    const note = h('li', { class: 'gap', role: 'note' },
      'Some messages could not be recovered after the connection was lost: messages sent meanwhile may be missing here.')
    messages.append(note)
    messages.scrollTop = messages.scrollHeight
    ctx.client.history(roomId, { limit: HISTORY_LIMIT }).then((page) => {
      if (disposed || page.epoch !== event.epoch) return
      const anchor = note.nextSibling
      for (const p of page.publications) if (p.offset <= event.offset) show(page.epoch, p, anchor)
    }, (err: unknown) => { error.textContent = `Could not load the recent messages: ${describeError(err)}` })
  }

  const handler = (event: SubscriptionEvent): void => {
    if (event.type === 'gap') gap(event)
    else show(event.epoch, event)
  }

  /**
   * The last message that failed, with the idempotency key it was sent with: sending the same
   * text again reuses the key, so a message that did reach the server (a timed-out reply) is
   * not stored twice.
   */
  let failed: { text: string, idempotencyKey: string } | null = null

  function publish (): void {
    const text = input.value.trim()
    if (text === '') return
    input.value = ''
    error.textContent = ''
    const idempotencyKey = failed?.text === text ? failed.idempotencyKey : undefined
    failed = null
    // Queued by the SDK while reconnecting and sent once connected, with one idempotency key,
    // so a retried publish is never stored twice. Our own message shows when the room echoes it.
    ctx.client.publish(roomId, { text }, idempotencyKey === undefined ? {} : { idempotencyKey }).catch((err: unknown) => {
      if (disposed) return
      const key = (err as { idempotencyKey?: unknown }).idempotencyKey
      if (typeof key === 'string') failed = { text, idempotencyKey: key }
      const reason = (err as { code?: unknown }).code === 'timeout' ? 'no answer from the server in time' : describeError(err)
      error.textContent = `Not sent: ${reason}. Press Enter to try again${typeof key === 'string' ? ' (it will not appear twice)' : ''}.`
      if (input.value === '') input.value = text
    })
  }

  // ----------------------------------------------------------------------------------------
  // Presence

  function renderPresence (): void {
    presenceTitle.textContent = `Online (${online.size})`
    replace(presenceList, ...[...online].sort().map(id => h('li', { class: 'online' }, h('span', { class: 'name' }, id))))
  }

  async function refreshPresence (): Promise<void> {
    try {
      const { users } = await ctx.client.presence(roomId)
      if (disposed) return
      online.clear()
      for (const id of users) online.add(id)
      renderPresence()
    } catch {
      // Shown again on the next join, leave or resubscribe.
    }
  }

  // ----------------------------------------------------------------------------------------
  // Members

  async function act (what: Promise<unknown>): Promise<void> {
    manageError.textContent = ''
    try {
      await what
      await loadMembers()
    } catch (err) {
      manageError.textContent = describeError(err)
    }
  }

  function memberItem (m: Member, canManage: boolean): HTMLLIElement {
    const item = h('li', {}, h('span', { class: 'name' }, m.userId), h('span', { class: 'badge' }, m.role))
    if (!canManage || m.userId === ctx.user.id) return item
    const role = select(ROLES, { 'aria-label': `Role of ${m.userId}` })
    role.value = m.role
    const target = `${path}/members/${encodeURIComponent(m.userId)}`
    item.append(h('div', { class: 'controls' },
      role,
      h('button', { type: 'button', class: 'secondary', onclick: () => { void act(request('PUT', target, { auth, body: { role: role.value } })) } }, 'Set role'),
      h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove ${m.userId}`, onclick: () => { void act(request('DELETE', target, { auth })) } }, 'Remove'),
      h('button', {
        type: 'button',
        class: 'danger',
        'aria-label': `Ban ${m.userId}`,
        onclick: () => {
          if (confirm(`Ban ${m.userId} from ${roomId}? They lose their membership.`)) void act(request('PUT', `${path}/bans/${encodeURIComponent(m.userId)}`, { auth, body: {} }))
        }
      }, 'Ban')))
    return item
  }

  function manageForm (): HTMLFormElement {
    const user = h('input', { name: 'member', required: true, autocapitalize: 'none', spellcheck: 'false', minlength: 3, maxlength: 32 })
    const role = select(ROLES, { name: 'role' })
    return h('form', {
      class: 'stack',
      'aria-label': 'Add a member',
      onsubmit: (event) => {
        event.preventDefault()
        const id = user.value.trim().toLowerCase()
        void act(request('PUT', `${path}/members/${encodeURIComponent(id)}`, { auth, body: { role: role.value } })).then(() => {
          if (manageError.textContent === '') user.value = ''
        })
      }
    }, field('Add member (username)', user), field('Role', role), h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Add member')))
  }

  async function loadMembers (): Promise<void> {
    const members = await listAll<Member>(`${path}/members`, auth)
    if (disposed || room === null) return
    myRole = members.find(m => m.userId === ctx.user.id)?.role ?? null
    const isAdmin = ctx.user.role === 'admin'
    const canManage = isAdmin || myRole === 'owner' || myRole === 'moderator'
    replace(membersList, ...members.map(m => memberItem(m, canManage)))
    manage.hidden = !canManage
    if (canManage && manage.childElementCount === 0) manage.append(manageForm())

    const buttons: HTMLButtonElement[] = []
    if (myRole === null && room.visibility === 'public' && !isAdmin) {
      buttons.push(h('button', { type: 'button', onclick: () => { void act(request('PUT', `${path}/members/${encodeURIComponent(ctx.user.id)}`, { auth, body: { role: 'member' } })) } }, 'Join room'))
    }
    if (myRole !== null) {
      buttons.push(h('button', {
        type: 'button',
        class: 'secondary',
        onclick: () => {
          request('DELETE', `${path}/members/${encodeURIComponent(ctx.user.id)}`, { auth })
            .then(() => ctx.navigate('#/rooms'), (err: unknown) => { manageError.textContent = describeError(err) })
        }
      }, 'Leave room'))
    }
    replace(actions, ...buttons)

    canWrite = isAdmin || myRole === 'owner' || myRole === 'moderator' || (myRole === 'member' && room.publish === 'members')
    composerHint.textContent = canWrite
      ? 'Enter sends.'
      : myRole === null ? 'Join the room to write in it.' : 'Only moderators and owners write in this room.'
    updateComposer()
  }

  /** The message box works once subscribed, for those who may write. */
  function updateComposer (): void {
    input.disabled = send.disabled = !canWrite || sub === null
  }

  // ----------------------------------------------------------------------------------------
  // Opening the room

  function ended (reason: string): void {
    sub = null
    updateComposer()
    online.clear()
    renderPresence()
    const why: Record<string, string> = {
      removed: 'You were removed from this room.',
      banned: 'You were banned from this room.',
      room_deleted: 'This room was deleted.',
      forbidden: 'You no longer have access to this room.',
      error: 'The connection to this room could not be restored.'
    }
    const text = why[reason]
    if (text !== undefined) el.prepend(h('p', { class: 'note', role: 'alert' }, text))
  }

  function notAvailable (): void {
    replace(el,
      h('h1', { id: 'room-title' }, 'Room not available'),
      h('p', {}, `The room “${roomId}” does not exist, or it is private and you are not a member.`),
      h('p', {}, h('a', { href: '#/rooms' }, 'Back to the rooms')))
    el.querySelector('h1')?.focus()
  }

  async function open (): Promise<void> {
    try {
      room = await request<Room>('GET', path, { auth })
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 403)) notAvailable()
      else error.textContent = `Could not open the room: ${describeError(err)}`
      return
    }
    if (disposed) return
    title.textContent = room.name ?? room.id
    badge.textContent = room.visibility
    document.title = `${room.name ?? room.id} · Switchboard`
    try {
      await loadMembers()
      let history = await request<HistoryPage>('GET', `${path}/messages?limit=${HISTORY_LIMIT}`, { auth })
      if (disposed) return
      // Busy while the history goes in: screen readers announce new messages, not the backlog.
      messages.setAttribute('aria-busy', 'true')
      for (;;) {
        for (const p of history.publications) show(history.epoch, p)
        const last = history.publications[history.publications.length - 1]
        // Pages are capped by bytes too: the rest of the newest HISTORY_LIMIT follows the last one shown.
        if (history.complete || last === undefined) break
        history = await request<HistoryPage>('GET', `${path}/messages?limit=${HISTORY_LIMIT}&epoch=${encodeURIComponent(history.epoch)}&since=${last.offset}`, { auth })
        if (disposed) return
      }
      messages.setAttribute('aria-busy', 'false')
      const since = { epoch: history.epoch, offset: history.offset }
      const subscription = await ctx.client.subscribe(roomId, handler, { since })
      if (disposed) { void subscription.unsubscribe(); return }
      sub = subscription
      subscription.on('join', ({ user }) => { online.add(user.id); renderPresence() })
      subscription.on('leave', ({ user }) => { online.delete(user.id); renderPresence() })
      // Presence is not replayed after a reconnect: ask again.
      subscription.on('subscribed', () => { void refreshPresence() })
      subscription.on('end', ({ reason }) => ended(reason))
      updateComposer()
      await refreshPresence()
    } catch (err) {
      if (!disposed) error.textContent = `Could not open the room: ${describeError(err)}`
    }
  }

  void open()
  return {
    el,
    dispose () {
      disposed = true
      document.title = 'Switchboard'
      // Also cancels a subscribe still waiting for its reply.
      void ctx.client.unsubscribe(roomId).catch(() => {})
    }
  }
}
