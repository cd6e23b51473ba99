import { isUnreachable } from './api.js'
import { describeError, type View } from './context.js'
import { h } from './dom.js'

/** The page asks again by itself this long after the first failed try, doubling per try up to the maximum. */
const AUTO_RETRY_FIRST_MS = 5000
const AUTO_RETRY_MAX_MS = 60_000

/**
 * Shown instead of the sign-in form when the tab has a sign-in but the server could not be
 * asked whether it still holds (at start, after a reload). The sign-in is kept; the page asks
 * again by itself (after 5 s, 10 s, … up to a minute, and when the browser reports the network
 * back), and "Try again" asks at once. `attempts` counts the tries so far, so a retry that
 * fails visibly did something.
 */
export function unreachableView (err: unknown, attempts: number, retry: () => Promise<void>): View {
  const unreachable = isUnreachable(err)
  const again = h('button', { type: 'button' }, 'Try again')
  const delayMs = Math.min(AUTO_RETRY_MAX_MS, AUTO_RETRY_FIRST_MS * 2 ** Math.max(0, attempts - 1))
  const status = h('p', { class: 'hint', role: 'status' },
    `${attempts > 1 ? `Still no answer after ${attempts} tries (last at ${new Date().toLocaleTimeString()}). ` : ''}Trying again by itself in ${delayMs / 1000} s.`)
  const tryAgain = (): void => {
    if (again.disabled) return
    again.disabled = true
    status.textContent = 'Trying to reach the server…'
    // On success the session signs in and the page moves on; on failure this view is shown anew.
    void retry().finally(() => { again.disabled = false })
  }
  again.addEventListener('click', tryAgain)
  const timer = setTimeout(tryAgain, delayMs)
  window.addEventListener('online', tryAgain)
  const el = h('section', { 'aria-labelledby': 'unreachable-title' },
    h('h1', { id: 'unreachable-title' }, unreachable ? 'Cannot reach the server' : 'Could not check your sign-in'),
    h('div', { class: 'panel' },
      h('p', {}, unreachable
        ? 'The Switchboard server did not answer, so your sign-in could not be checked. Your network connection may be down, or the server may be restarting.'
        : `The server answered with an error, so your sign-in could not be checked: ${describeError(err)}`),
      h('p', {}, 'You are still signed in on this tab: once the server is back, this page goes on.'),
      status,
      h('div', { class: 'row' }, again)))
  return {
    el,
    dispose () {
      clearTimeout(timer)
      window.removeEventListener('online', tryAgain)
    }
  }
}
