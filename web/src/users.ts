import { listAll, request } from './api.js'
import { describeError, type Context } from './context.js'
import { h, replace } from './dom.js'
import type { User } from './session.js'

/**
 * The admin page's Users section: search accounts by prefix, and for each disable / enable,
 * set a password, make or remove admin, sign out everywhere, delete. Every action asks for
 * confirmation first (a dialog), then reloads the list; what failed stays on screen.
 */
export function usersSection (ctx: Context): { el: HTMLElement, dispose (): void } {
  const auth = ctx.session
  const search = h('input', { type: 'search', name: 'user-search', 'aria-label': 'Search users by name', placeholder: 'Search users', maxlength: 32, autocapitalize: 'none', spellcheck: 'false' })
  const list = h('ul', { class: 'users', 'aria-labelledby': 'users-title' })
  const status = h('p', { class: 'hint', role: 'status' })
  const error = h('p', { class: 'error', role: 'alert' })
  let disposed = false
  let searchTimer: ReturnType<typeof setTimeout> | undefined

  /** Runs one confirmed action on `u`, then reloads the list. */
  function act (what: string, done: string, action: () => Promise<unknown>): void {
    status.textContent = error.textContent = ''
    action().then(() => {
      if (disposed) return
      status.textContent = done
      void load()
    }, (err: unknown) => { if (!disposed) error.textContent = `Could not ${what}: ${describeError(err)}` })
  }

  function item (u: User): HTMLLIElement {
    const path = `/users/${encodeURIComponent(u.id)}`
    const external = u.id.includes(':')
    const self = u.id === ctx.user.id
    const button = (label: string, aria: string, onclick: () => void, danger = false): HTMLButtonElement =>
      h('button', { type: 'button', class: danger ? 'danger' : 'secondary', 'aria-label': aria, onclick }, label)
    const buttons: HTMLButtonElement[] = [
      u.disabled
        ? button('Enable', `Enable ${u.id}`, () => {
          if (confirm(`Enable ${u.id}? They can sign in again.`)) act(`enable ${u.id}`, `Enabled ${u.id}.`, () => request('PATCH', path, { auth, body: { disabled: false } }))
        })
        : button('Disable', `Disable ${u.id}`, () => {
          if (confirm(`Disable ${u.id}? They are signed out everywhere at once and cannot sign in until enabled.`)) {
            act(`disable ${u.id}`, `Disabled ${u.id}.`, () => request('PATCH', path, { auth, body: { disabled: true } }))
          }
        }, true)
    ]
    if (!external) {
      buttons.push(u.role === 'admin'
        ? button('Remove admin', `Remove admin from ${u.id}`, () => {
          if (confirm(`Remove the admin role from ${u.id}${self ? ' (you)' : ''}? They are signed out everywhere.`)) {
            act(`remove admin from ${u.id}`, `${u.id} is no longer an admin.`, () => request('PATCH', path, { auth, body: { role: 'user' } }))
          }
        })
        : button('Make admin', `Make ${u.id} an admin`, () => {
          if (confirm(`Make ${u.id} an admin? They can manage every room and account.`)) {
            act(`make ${u.id} an admin`, `${u.id} is now an admin (from their next sign-in or token refresh).`, () => request('PATCH', path, { auth, body: { role: 'admin' } }))
          }
        }))
      buttons.push(button('Reset password', `Reset the password of ${u.id}`, () => {
        const password = prompt(`New password for ${u.id} (at least 8 characters). Every session of ${u.id} ends.`)
        if (password === null) return
        act(`reset the password of ${u.id}`, `Password of ${u.id} set; they were signed out everywhere.`, () => request('POST', `${path}/password`, { auth, body: { password } }))
      }))
      buttons.push(button('Sign out everywhere', `Sign ${u.id} out everywhere`, () => {
        if (confirm(`Sign ${u.id} out everywhere?`)) act(`sign ${u.id} out`, `Signed ${u.id} out everywhere.`, () => request('POST', `${path}/logout-all`, { auth }))
      }))
    }
    buttons.push(button('Delete', `Delete ${u.id}`, () => {
      const warning = external
        ? `Delete ${u.id}? Their memberships go. They may come back with a new token from the identity provider: disable them to keep them out.`
        : `Delete ${u.id} for good? Their memberships, API keys and sessions go; their messages stay. The name can never be used again.`
      if (confirm(warning)) act(`delete ${u.id}`, `Deleted ${u.id}.`, () => request('DELETE', path, { auth }))
    }, true))
    return h('li', { class: u.disabled ? 'disabled' : '' },
      h('span', { class: 'who' }, h('strong', {}, u.id), ` ${u.role}${u.disabled ? ', disabled' : ''}${self ? ' (you)' : ''}`),
      h('span', { class: 'row' }, ...buttons))
  }

  async function load (): Promise<void> {
    try {
      const users = await listAll<User>(`/users?q=${encodeURIComponent(search.value.trim().toLowerCase())}`, auth)
      if (disposed) return
      replace(list, ...users.map(item))
      if (users.length === 0) list.append(h('li', {}, 'No users match.'))
    } catch (err) {
      if (!disposed) error.textContent = `Could not load the users: ${describeError(err)}`
    }
  }

  search.addEventListener('input', () => {
    clearTimeout(searchTimer)
    searchTimer = setTimeout(() => { void load() }, 250)
  })
  void load()
  const el = h('section', { 'aria-labelledby': 'users-title' },
    h('h2', { id: 'users-title' }, 'Users'),
    search, status, error, list)
  return { el, dispose () { disposed = true; clearTimeout(searchTimer) } }
}
