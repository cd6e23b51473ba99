import { SwitchboardClient } from '@switchboard/client'
import { adminView } from './admin.js'
import { accountView } from './account.js'
import { watchConnection } from './connection.js'
import { isMembershipEvent, type MembershipEvent } from '@switchboard/protocol/membership-events'
import { describeError, type Context, type View } from './context.js'
import { h, replace, stickyError } from './dom.js'
import { loginView } from './login.js'
import { roomView, textOf } from './room.js'
import { roomsView } from './rooms.js'
import { Session, type User } from './session.js'
import { unreachableView } from './unreachable.js'

/*
 * The Switchboard web app: sign-in over REST, then one WebSocket (the SDK's client) for every
 * room the user opens. Routing is by hash (#/rooms, #/rooms/<id>, #/admin), so the server only
 * serves one page. docs/web.md describes it.
 */

const main = document.getElementById('main')!
const nav = document.getElementById('nav')!
const session = new Session()
/** The personal room could not be subscribed (or was lost): shown on every page until dismissed. */
const personalError = stickyError()
/** A sign-out the server could not be told of yet, then that it has been. */
const signOutStatus = stickyError()
/** What was sent to the user personally: kept across pages until dismissed, the latest few. */
const personalMessages = h('div', { class: 'personal-messages' })
const MAX_PERSONAL_MESSAGES = 5
document.getElementById('alerts')!.append(personalError.el, signOutStatus.el, personalMessages)
/** The next try to tell the server of a sign-out, while one is waiting. */
let signOutRetry: ReturnType<typeof setTimeout> | null = null
const SIGN_OUT_RETRY_MAX_MS = 30_000

let ctx: Context | null = null
let view: View | null = null
let stopIndicator: (() => void) | null = null
/** Where a signed-out visitor wanted to go, restored after sign-in. */
let wanted = ''
/** A line shown at the top of the next view (e.g. after signing out). */
let notice = ''
/**
 * Why the tab's sign-in could not be checked at start (server unreachable), and how many tries
 * failed: while set, the page says so instead of showing the sign-in form.
 */
let unchecked: { error: unknown, attempts: number } | null = null

function navigate (hash: string): void {
  if (location.hash === hash) route()
  else location.hash = hash
}

function route (): void {
  view?.dispose()
  view = null
  const hash = location.hash.replace(/^#/, '')
  let next: View
  if (ctx === null) {
    if (hash !== '' && hash !== '/login') wanted = location.hash
    next = unchecked === null ? loginView(session) : unreachableView(unchecked.error, unchecked.attempts, start)
  } else if (hash === '/admin' && ctx.user.role === 'admin') {
    next = adminView(ctx)
  } else if (hash === '/account') {
    next = accountView(ctx)
  } else if (hash.startsWith('/rooms/') && hash.length > '/rooms/'.length) {
    let id = hash.slice('/rooms/'.length)
    try { id = decodeURIComponent(id) } catch { /* keep it as typed */ }
    next = roomView(ctx, id)
  } else {
    next = roomsView(ctx)
  }
  view = next
  if (notice !== '') {
    next.el.prepend(h('p', { class: 'note', role: 'status' }, notice))
    notice = ''
  }
  replace(main, next.el)
  // Focus moves to the new view's heading, so keyboard and screen reader users start there.
  const target = next.focus ?? next.el.querySelector('h1')
  if (target instanceof HTMLElement) {
    if (!target.hasAttribute('tabindex') && !(target instanceof HTMLInputElement)) target.tabIndex = -1
    target.focus()
  }
}

function signedIn (user: User): void {
  const client = new SwitchboardClient({
    url: location.origin,
    // MessagePack: images travel as bytes (bin), without the third more base64 adds on JSON.
    codec: 'msgpack',
    // The SDK asks shortly before the token expires, after a 4001 close and before connecting
    // with an expired token: the session renews it through /auth/refresh when needed.
    // stale: the SDK saw the token refused, or suspects it (a browser cannot see a 401): renew it.
    getToken: ({ stale }) => session.token(stale)
  })
  client.on('error', (err) => { console.warn('switchboard:', err.message) })
  // The personal room (docs/protocol.md §11): what services send to this user shows up on any
  // page. Being subscribed also keeps the connection from closing as idle (4002) while the user
  // is on a page without rooms, so the indicator stays true everywhere.
  // Without it the user would miss what is sent to them and never know: say so, in words.
  const personalLost = (why: string): void => {
    if (ctx?.client !== client) return // signed out meanwhile: nothing is missed
    personalError.show(`Messages sent to you personally (by a service or an administrator) will not show up: ${why}. Reload the page to try again.`)
  }
  const membershipListeners = new Set<(event: MembershipEvent | null) => void>()
  const onMembership = (listener: (event: MembershipEvent | null) => void): () => void => {
    membershipListeners.add(listener)
    return () => { membershipListeners.delete(listener) }
  }
  client.subscribe(`user:${user.id}`, (event) => {
    if (event.type !== 'message') return
    // Rooms added to or removed from the list update the views that show it, no note.
    if (isMembershipEvent(event.data)) for (const listener of membershipListeners) listener(event.data)
    else showPersonalMessage(`Message for you from ${event.from.id}: ${textOf(event.data)}`)
  }).then((subscription) => {
    // Subscribed again after a reconnect: what was missed may not all have been replayed.
    subscription.on('subscribed', () => { for (const listener of membershipListeners) listener(null) })
    subscription.on('end', ({ reason, error }) => {
      // closed, unsubscribed: this page ended it (sign-out).
      if (reason !== 'closed' && reason !== 'unsubscribed') personalLost(`the server stopped sending them (${error?.message ?? reason})`)
    })
  }, (err: unknown) => {
    if ((err as { code?: unknown }).code === 'closed') return
    console.warn('switchboard: personal room:', err)
    personalLost(`the server refused to send them (${describeError(err)})`)
  })
  ctx = { session, user, client, navigate, onMembership }
  // Signing in reached the server: a sign-out it has not heard of yet is told now.
  if (session.hasPendingSignOut()) retrySignOut(0)
  stopIndicator = watchConnection(client)
  renderNav(user)
}

function showPersonalMessage (text: string): void {
  const note = h('p', { class: 'note', role: 'status' }, h('span', {}, text), ' ',
    h('button', { type: 'button', class: 'link', onclick: () => { note.remove() } }, 'Dismiss'))
  personalMessages.append(note)
  while (personalMessages.childElementCount > MAX_PERSONAL_MESSAGES) personalMessages.firstElementChild?.remove()
}

function signedOut (): void {
  const old = ctx
  ctx = null
  personalError.clear()
  personalMessages.replaceChildren()
  stopIndicator?.()
  stopIndicator = null
  view?.dispose()
  view = null
  void old?.client.close()
  nav.hidden = true
  nav.replaceChildren()
}

/** Signed out here at once; the server is told now, or as soon as it answers again. */
async function signOut (): Promise<void> {
  const earlierWaiting = session.hasPendingSignOut()
  if (await session.logout()) {
    // This call also delivered an earlier sign-out: its warning above the page is out of date.
    if (earlierWaiting) signOutStatus.show('The server has now ended your earlier sign-in.')
    return
  }
  signOutStatus.show('You are signed out on this page, but the server could not be reached to end the sign-in there. ' +
    'Keep this tab open: it will tell the server as soon as it answers.')
  retrySignOut(1000)
}

function retrySignOut (delayMs: number): void {
  if (signOutRetry !== null) clearTimeout(signOutRetry)
  signOutRetry = setTimeout(() => {
    signOutRetry = null
    void session.endPendingSignOuts().then((done) => {
      if (done) signOutStatus.show('The server has now ended your earlier sign-in.')
      else retrySignOut(Math.min(delayMs * 2, SIGN_OUT_RETRY_MAX_MS))
    })
  }, delayMs)
}

function renderNav (user: User): void {
  const signOutButton = h('button', {
    type: 'button',
    class: 'link',
    onclick: () => { void signOut() }
  }, 'Sign out')
  replace(nav,
    h('a', { href: '#/rooms' }, 'Rooms'),
    user.role === 'admin' ? h('a', { href: '#/admin' }, 'Admin') : null,
    h('a', { href: '#/account' }, 'Account'),
    h('span', { class: 'who' }, 'Signed in as ', h('strong', {}, user.id)),
    signOutButton)
  nav.hidden = false
}

session.onChange((user) => {
  if (user !== null) {
    unchecked = null
    signedIn(user)
    const target = wanted !== '' ? wanted : '#/rooms'
    wanted = ''
    navigate(target)
  } else {
    const wasSignedIn = ctx !== null
    signedOut()
    if (wasSignedIn) notice = 'You are signed out.'
    navigate('#/login')
  }
})

// The skip link targets <main> without touching the hash (which is the router's).
document.querySelector('.skip')?.addEventListener('click', (event) => {
  event.preventDefault()
  main.focus()
})

window.addEventListener('hashchange', route)
// A link to the page already shown does not change the hash: show it again (fresh data).
document.addEventListener('click', (event) => {
  const link = event.target instanceof Element ? event.target.closest('a[href^="#/"]') : null
  if (link !== null && link.getAttribute('href') === location.hash) {
    event.preventDefault()
    route()
  }
})

/** Signs in from the tab's refresh token when it has one; also the unreachable view's "Try again". */
async function start (): Promise<void> {
  let user: User | null = null
  try {
    user = await session.restore()
    unchecked = null
  } catch (error) {
    unchecked = { error, attempts: (unchecked?.attempts ?? 0) + 1 }
  }
  // restore() signing in already routed (onChange); otherwise show the sign-in form, or why
  // the sign-in could not be checked.
  if (user === null) route()
}

if (location.hash !== '' && location.hash !== '#/login') wanted = location.hash
// A sign-out the server could not be told of before this reload: told now, and again until it hears.
if (session.hasPendingSignOut()) retrySignOut(0)
void start()
