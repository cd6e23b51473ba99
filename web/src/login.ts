import { describeError, type View } from './context.js'
import { field, h } from './dom.js'
import type { Session } from './session.js'

/** Sign in, or register then sign in. Success is handled by the session's onChange (main.ts). */
export function loginView (session: Session): View {
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', minlength: 3, maxlength: 32 })
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, minlength: 8, maxlength: 128 })
  const error = h('p', { class: 'error', role: 'alert' })
  const signIn = h('button', { type: 'submit' }, 'Sign in')
  const register = h('button', { type: 'button', class: 'secondary' }, 'Register')

  const run = async (action: 'login' | 'register'): Promise<void> => {
    error.textContent = ''
    if (!form.reportValidity()) return
    signIn.disabled = register.disabled = true
    try {
      const name = username.value.trim().toLowerCase()
      if (action === 'login') await session.login(name, password.value)
      else await session.register(name, password.value)
    } catch (err) {
      error.textContent = describeError(err)
      password.focus()
    } finally {
      signIn.disabled = register.disabled = false
    }
  }

  const form = h('form', {
    class: 'stack panel',
    onsubmit: (event) => { event.preventDefault(); void run('login') }
  },
  field('Username', username, '3–32 characters: lowercase letters, digits, _ . -'),
  field('Password', password, 'At least 8 characters'),
  error,
  h('div', { class: 'row' }, signIn, register))
  register.addEventListener('click', () => { void run('register') })

  const el = h('section', { 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in to Switchboard'),
    form)
  return { el, focus: username, dispose () {} }
}
