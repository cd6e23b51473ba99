import { isUnreachable } from './api.js'
import { describeError, type View } from './context.js'
import { h } from './dom.js'

/**
 * Shown instead of the sign-in form when the tab has a sign-in but the server could not be
 * asked whether it still holds (at start, after a reload). The sign-in is kept; "Try again"
 * asks again. `attempts` counts the tries so far, so a retry that fails visibly did something.
 */
export function unreachableView (err: unknown, attempts: number, retry: () => Promise<void>): View {
  const unreachable = isUnreachable(err)
  const again = h('button', { type: 'button' }, 'Try again')
  const status = h('p', { class: 'hint', role: 'status' },
    attempts > 1 ? `Still no answer after ${attempts} tries (last at ${new Date().toLocaleTimeString()}).` : '')
  again.addEventListener('click', () => {
    again.disabled = true
    status.textContent = 'Trying to reach the server…'
    // On success the session signs in and the page moves on; on failure this view is shown anew.
    void retry().finally(() => { again.disabled = false })
  })
  const el = h('section', { 'aria-labelledby': 'unreachable-title' },
    h('h1', { id: 'unreachable-title' }, unreachable ? 'Cannot reach the server' : 'Could not check your sign-in'),
    h('div', { class: 'panel' },
      h('p', {}, unreachable
        ? 'The Switchboard server did not answer, so your sign-in could not be checked. Your network connection may be down, or the server may be restarting.'
        : `The server answered with an error, so your sign-in could not be checked: ${describeError(err)}`),
      h('p', {}, 'You are still signed in on this tab: once the server is back, try again.'),
      status,
      h('div', { class: 'row' }, again)))
  return { el, dispose () {} }
}
