import type { GapEvent, Publication, Subscription, SubscriptionEvent } from '@switchboard/client'
import { ApiError, listAll, request } from './api.js'
import { formatBytes, fromBase64, IMAGE_ACCEPT, imageName, imageRefusal, sniffImage, SNIFF_BYTES } from './binary.js'
import { describeError, type Context, type View } from './context.js'
import { field, formatTime, h, replace, select } from './dom.js'
import type { Room } from './rooms.js'

interface Member { userId: string, role: 'owner' | 'moderator' | 'member' }
/** A publication as REST carries it: bytes as base64 beside `encoding` (the SDK decodes its own). */
type RestPublication = Publication & { encoding?: 'base64' }
interface HistoryPage { epoch: string, offset: number, complete: boolean, publications: RestPublication[] }
/** A page read back through the archive (`?before=`): newest first, and where the next one starts. */
interface OlderPage { epoch: string, publications: RestPublication[], next: { epoch: string, before?: number } | null }
/** Where the next page back starts. */
interface OlderCursor { epoch: string, before: number }

/** Publications shown on open, loaded again after a gap, and per page when scrolling back. */
const HISTORY_LIMIT = 50
/** Scrolled to within this many pixels of the top of the messages: the page before is loaded. */
const LOAD_OLDER_WITHIN_PX = 120
const ROLES: Array<[Member['role'], string]> = [['member', 'member'], ['moderator', 'moderator'], ['owner', 'owner']]

/**
 * What a message says in words: its `text`, the JSON of anything else (a service may publish
 * any JSON), or what its bytes are (room views show images and offer other bytes as a download).
 */
export function textOf (data: unknown): string {
  if (data instanceof Uint8Array) {
    const type = sniffImage(data)
    return type === null ? `Binary message, ${formatBytes(data.length)}` : `${imageName(type)} image, ${formatBytes(data.length)}`
  }
  if (typeof data === 'object' && data !== null && typeof (data as { text?: unknown }).text === 'string') return (data as { text: string }).text
  return JSON.stringify(data)
}

/** A REST publication as the SDK hands publications over: bytes as a Uint8Array. */
function fromRest ({ encoding, ...p }: RestPublication): Publication {
  if (encoding !== 'base64' || typeof p.data !== 'string') return p
  try {
    return { ...p, data: fromBase64(p.data) }
  } catch {
    return p // not base64 after all: shown as the text it is
  }
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
  // The picker itself stays hidden: the button opens it, and is what keyboards and screen readers reach.
  const fileInput = h('input', {
    type: 'file',
    accept: IMAGE_ACCEPT,
    hidden: true,
    'aria-label': 'Image file',
    onchange: () => {
      const file = fileInput.files?.[0]
      // Cleared, so that choosing the same file again (after a refusal or a failure) is a change too.
      fileInput.value = ''
      if (file !== undefined) void sendImage(file)
    }
  })
  const attach = h('button', { type: 'button', class: 'secondary', disabled: true, onclick: () => fileInput.click() }, 'Attach image')
  const composerHint = h('p', { class: 'hint', id: 'composer-hint' })
  input.setAttribute('aria-describedby', composerHint.id)
  // An image pasted into the message box is sent as an image; pasted text stays text.
  input.addEventListener('paste', (event) => {
    const file = event.clipboardData?.files[0]
    if (file === undefined) return
    event.preventDefault()
    void sendImage(file)
  })
  const composer = h('form', {
    class: 'composer',
    onsubmit: (event) => { event.preventDefault(); publish() }
  }, h('label', { for: input.id, class: 'visually-hidden' }, 'Message'), input, send, attach, fileInput)

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

  /**
   * Blob URLs of the images and downloads shown. Each keeps its bytes alive until revoked, so
   * all are revoked when the messages leave the page (dispose: messages are never removed from
   * an open room's list otherwise).
   */
  const blobUrls = new Set<string>()

  function blobUrl (bytes: Uint8Array, type: string): string {
    // slice(): a Blob takes views of an ArrayBuffer only, never of a SharedArrayBuffer; the
    // copy (at most maxMessageBytes) is one the Blob would make anyway.
    const url = URL.createObjectURL(new Blob([bytes.slice()], { type }))
    blobUrls.add(url)
    return url
  }

  /** Bytes offered as a file to save, for what the page does not show. */
  function download (bytes: Uint8Array, p: Publication, words: string): HTMLParagraphElement {
    return h('p', { class: 'binary' }, `${words}, ${formatBytes(bytes.length)} `,
      h('a', { href: blobUrl(bytes, 'application/octet-stream'), download: `switchboard-${roomId.replace(/[^a-z0-9_.-]/g, '_')}-${p.offset}.bin` }, 'Download'))
  }

  /**
   * Bytes whose first bytes are a PNG, JPEG, GIF or WebP signature are shown as that image,
   * from a Blob URL with that type (the CSP allows `img-src blob:`); other bytes, and an image
   * the browser cannot decode, are offered as a download.
   */
  function bytesBody (bytes: Uint8Array, p: Publication): HTMLElement {
    const type = sniffImage(bytes)
    if (type === null) return download(bytes, p, 'Binary message')
    const img = h('img', { src: blobUrl(bytes, type), alt: `${imageName(type)} image from ${p.from.id}, ${formatBytes(bytes.length)}`, decoding: 'async' })
    const body = h('p', { class: 'image' }, img)
    img.addEventListener('error', () => body.replaceWith(download(bytes, p, `${imageName(type)} image that could not be shown`)))
    return body
  }

  function messageItem (epoch: string, p: Publication): HTMLLIElement {
    const mine = p.from.id === ctx.user.id
    return h('li', { 'data-epoch': epoch, 'data-offset': p.offset, class: mine ? 'mine' : null },
      h('span', { class: 'from' }, p.from.id),
      mine ? h('span', { class: 'visually-hidden' }, '(you)') : null,
      h('time', { datetime: new Date(p.ts).toISOString(), title: new Date(p.ts).toLocaleString() }, formatTime(p.ts)),
      p.data instanceof Uint8Array ? bytesBody(p.data, p) : h('p', { class: 'text' }, textOf(p.data)))
  }

  /** Shows a publication once (by epoch and offset), before `before` or at the end. */
  function show (epoch: string, p: Publication, before: Node | null = null): void {
    const key = `${epoch}:${p.offset}`
    if (seen.has(key)) return
    seen.add(key)
    empty.remove()
    const atBottom = before === null && messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40
    const item = messageItem(epoch, p)
    messages.insertBefore(item, before)
    if (!atBottom) return
    messages.scrollTop = messages.scrollHeight
    // An image gets its height once decoded: stay at the bottom then too.
    item.querySelector('img')?.addEventListener('load', () => { messages.scrollTop = messages.scrollHeight }, { once: true })
  }

  // ----------------------------------------------------------------------------------------
  // Scrolling back through the archive

  /** Where the next page back starts; null once the room's first message is shown. */
  let older: OlderCursor | null = null
  let loadingOlder = false
  /** Before the first message: a button to load the page before, then "Beginning of the room". */
  const historyStart = h('li', { class: 'history-start' })
  const empty = h('li', { class: 'empty', role: 'note' }, 'No messages yet. Write the first one below.')

  function renderHistoryStart (): void {
    if (older === null) {
      historyStart.className = 'history-start beginning'
      replace(historyStart, 'Beginning of the room')
    } else if (loadingOlder) {
      historyStart.className = 'history-start loading'
      replace(historyStart, 'Loading older messages…')
    } else {
      historyStart.className = 'history-start'
      replace(historyStart, h('button', { type: 'button', class: 'link', onclick: () => { void loadOlder() } }, 'Load older messages'))
    }
  }

  /**
   * Loads the page before the oldest message shown (GET …/messages?before=&epoch=, newest first)
   * and puts it above, keeping what the user was looking at where it was; then again while the
   * messages do not fill the list (nothing to scroll yet), until the room's first message.
   */
  async function loadOlder (): Promise<void> {
    if (older === null || loadingOlder || disposed) return
    const cursor = older
    loadingOlder = true
    renderHistoryStart()
    try {
      const page = await request<OlderPage>('GET', `${path}/messages?limit=${HISTORY_LIMIT}&epoch=${encodeURIComponent(cursor.epoch)}&before=${cursor.before}`, { auth })
      if (disposed) return
      const fromBottom = messages.scrollHeight - messages.scrollTop
      const anchor = historyStart.nextSibling
      // Busy while the older page goes in: screen readers announce new messages, not the backlog.
      messages.setAttribute('aria-busy', 'true')
      for (const p of [...page.publications].reverse()) show(page.epoch, fromRest(p), anchor)
      messages.setAttribute('aria-busy', 'false')
      messages.scrollTop = messages.scrollHeight - fromBottom
      older = page.next?.before === undefined ? null : { epoch: page.next.epoch, before: page.next.before }
    } catch (err) {
      if (!disposed) error.textContent = `Could not load older messages: ${describeError(err)}`
      return
    } finally {
      loadingOlder = false
      if (!disposed) renderHistoryStart()
    }
    if (older === null && seen.size === 0) messages.append(empty)
    else if (messages.scrollHeight <= messages.clientHeight + LOAD_OLDER_WITHIN_PX) await loadOlder()
  }

  messages.addEventListener('scroll', () => {
    if (messages.scrollTop < LOAD_OLDER_WITHIN_PX) void loadOlder()
  })

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

  /** The server's `limits.maxMessageBytes`, from the latest welcome (kept while reconnecting). */
  let maxMessageBytes = ctx.client.welcome?.limits.maxMessageBytes ?? null
  const offWelcome = ctx.client.on('welcome', (welcome) => {
    maxMessageBytes = welcome.limits.maxMessageBytes
    if (canWrite) composerHint.textContent = writeHint()
  })

  /**
   * The last image that failed, with the idempotency key it was sent with: "Send it again" reuses
   * the key, so an image that did reach the server (a timed-out reply) is not stored twice.
   */
  let failedImage: { bytes: Uint8Array, idempotencyKey: string } | null = null

  /**
   * Checks a picked or pasted file and publishes its bytes as they are (a binary publication):
   * a type other than PNG, JPEG, GIF or WebP (by its first bytes), or a size over the server's
   * limit, is refused here with the reason and nothing is sent.
   */
  async function sendImage (file: Blob): Promise<void> {
    error.textContent = ''
    failedImage = null
    let bytes: Uint8Array
    try {
      const head = new Uint8Array(await file.slice(0, SNIFF_BYTES).arrayBuffer())
      // Without a welcome yet (not possible while the composer is enabled) the server decides.
      const refusal = imageRefusal(head, file.size, maxMessageBytes ?? Number.MAX_SAFE_INTEGER)
      if (refusal !== null) {
        if (!disposed) error.textContent = refusal
        return
      }
      bytes = new Uint8Array(await file.arrayBuffer())
    } catch (err) {
      if (!disposed) error.textContent = `Could not read the file: ${describeError(err)}`
      return
    }
    if (!disposed) publishImage(bytes)
  }

  function publishImage (bytes: Uint8Array, idempotencyKey?: string): void {
    error.textContent = ''
    failedImage = null
    // Shown when the room echoes it, like a text message.
    ctx.client.publish(roomId, bytes, idempotencyKey === undefined ? {} : { idempotencyKey }).catch((err: unknown) => {
      if (disposed) return
      const key = (err as { idempotencyKey?: unknown }).idempotencyKey
      const reason = (err as { code?: unknown }).code === 'timeout' ? 'no answer from the server in time' : describeError(err)
      error.textContent = `Image not sent: ${reason}.`
      if (typeof key !== 'string') return
      const failed = { bytes, idempotencyKey: key }
      failedImage = failed
      error.append(' ', h('button', {
        type: 'button',
        class: 'link',
        onclick: () => { if (failedImage === failed) publishImage(failed.bytes, failed.idempotencyKey) }
      }, 'Send it again'), ' (it will not appear twice).')
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
      h('button', {
        type: 'button',
        class: 'secondary',
        'aria-label': `Remove ${m.userId}`,
        onclick: () => {
          if (confirm(`Remove ${m.userId} from ${roomId}? They can no longer read or write here unless added again.`)) void act(request('DELETE', target, { auth }))
        }
      }, 'Remove'),
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
      ? writeHint()
      : myRole === null ? 'Join the room to write in it.' : 'Only moderators and owners write in this room.'
    updateComposer()
  }

  function writeHint (): string {
    const upTo = maxMessageBytes === null ? '' : ` up to ${formatBytes(maxMessageBytes)}`
    return `Enter sends. Attach or paste an image (PNG, JPEG, GIF, WebP)${upTo}.`
  }

  /** The message box works once subscribed, for those who may write. */
  function updateComposer (): void {
    input.disabled = send.disabled = attach.disabled = fileInput.disabled = !canWrite || sub === null
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
        for (const p of history.publications) show(history.epoch, fromRest(p))
        const last = history.publications[history.publications.length - 1]
        // Pages are capped by bytes too: the rest of the newest HISTORY_LIMIT follows the last one shown.
        if (history.complete || last === undefined) break
        history = await request<HistoryPage>('GET', `${path}/messages?limit=${HISTORY_LIMIT}&epoch=${encodeURIComponent(history.epoch)}&since=${last.offset}`, { auth })
        if (disposed) return
      }
      messages.setAttribute('aria-busy', 'false')
      // Older messages come from the archive, before the first one shown (or, with none shown,
      // before the room's current position: the window may have expired where the archive has not).
      const first = messages.querySelector<HTMLElement>('li[data-offset]')
      older = { epoch: history.epoch, before: first === null ? history.offset + 1 : Number(first.dataset.offset) }
      renderHistoryStart()
      messages.prepend(historyStart)
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
      void loadOlder()
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
      offWelcome()
      for (const url of blobUrls) URL.revokeObjectURL(url)
      blobUrls.clear()
      // Also cancels a subscribe still waiting for its reply.
      void ctx.client.unsubscribe(roomId).catch(() => {})
    }
  }
}
