import { describeError, type Context, type View } from './context.js'
import { field, h } from './dom.js'

/**
 * The signed-in user's own account (#/account): change the password (every other session is
 * signed out, this one stays) and sign out everywhere (this tab too). Users of the identity
 * provider have neither here: the server says so, and the page shows its words.
 */
export function accountView (ctx: Context): View {
  const { session, user } = ctx
  const current = h('input', { name: 'current-password', type: 'password', autocomplete: 'current-password', required: true, maxlength: 128 })
  const next = h('input', { name: 'new-password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128 })
  const repeat = h('input', { name: 'repeat-password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128 })
  const status = h('p', { class: 'hint', role: 'status' })
  const error = h('p', { class: 'error', role: 'alert' })
  const save = h('button', { type: 'submit' }, 'Change password')

  const form = h('form', {
    class: 'stack panel',
    'aria-labelledby': 'password-title',
    onsubmit: (event) => {
      event.preventDefault()
      status.textContent = error.textContent = ''
      repeat.setCustomValidity(repeat.value === next.value ? '' : 'The two new passwords differ')
      if (!form.reportValidity()) return
      save.disabled = true
      session.changePassword(current.value, next.value).then(() => {
        form.reset()
        status.textContent = 'Password changed. Every other session of your account was signed out; this one stays.'
      }, (err: unknown) => {
        error.textContent = `Could not change the password: ${describeError(err)}`
        current.focus()
      }).finally(() => { save.disabled = false })
    }
  },
  h('h2', { id: 'password-title' }, 'Change password'),
  field('Current password', current),
  field('New password', next, 'At least 8 characters'),
  field('New password, again', repeat),
  save)

  const everywhereError = h('p', { class: 'error', role: 'alert' })
  const everywhere = h('button', {
    type: 'button',
    class: 'danger',
    onclick: () => {
      everywhereError.textContent = ''
      if (!confirm('Sign out everywhere? Every device and tab signed in as you is signed out, this one too.')) return
      // Signed out here by the session's onChange, once the server ended every session.
      session.logoutEverywhere().catch((err: unknown) => { everywhereError.textContent = `Could not sign out everywhere: ${describeError(err)}` })
    }
  }, 'Sign out everywhere')

  const el = h('section', { 'aria-labelledby': 'account-title' },
    h('h1', { id: 'account-title' }, 'Your account'),
    h('p', {}, 'Signed in as ', h('strong', {}, user.id), user.role === 'admin' ? ' (admin)' : ''),
    status, error, form,
    h('div', { class: 'stack panel', role: 'group', 'aria-labelledby': 'everywhere-title' },
      h('h2', { id: 'everywhere-title' }, 'Sessions'),
      h('p', { class: 'hint' }, 'Lost a device, or signed in somewhere you should not have? End every session of your account.'),
      everywhereError, everywhere))
  return { el, dispose () {} }
}
