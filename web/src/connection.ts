import { CloseCodes, type SwitchboardClient } from '@switchboard/client'
import { h } from './dom.js'

/**
 * The connection indicator in the header: connected / connecting / reconnecting in N s /
 * offline. The words go to a polite live region once per change; the per-second countdown is
 * beside it, hidden from screen readers so it is not read out every second.
 */
export function watchConnection (client: SwitchboardClient): () => void {
  const box = document.getElementById('connection')!
  const text = document.getElementById('connection-text')!
  const countdown = document.getElementById('connection-countdown')!
  let retryAt = 0
  let ticker: ReturnType<typeof setInterval> | undefined
  let stopped = ''

  // Once the SDK has stopped for good (a kick, retries exhausted), a reload starts a new
  // connection from the tab's session.
  const again = h('button', { type: 'button', class: 'link', hidden: true, onclick: () => location.reload() }, 'Reconnect')
  box.append(again)
  const show = (state: string, words: string): void => {
    box.dataset.state = state
    if (text.textContent !== words) text.textContent = words
    again.hidden = state !== 'closed'
  }
  const tick = (): void => {
    const seconds = Math.ceil((retryAt - Date.now()) / 1000)
    countdown.textContent = seconds > 0 ? ` in ${seconds} s` : '…'
    if (seconds <= 0) { clearInterval(ticker); ticker = undefined }
  }
  const render = (): void => {
    if (client.state !== 'reconnecting' && client.state !== 'connecting') {
      clearInterval(ticker)
      ticker = undefined
      countdown.textContent = ''
    }
    if (!navigator.onLine && client.state !== 'open' && client.state !== 'closed') show('offline', 'Offline: waiting for the network')
    else if (client.state === 'open') show('open', 'Connected')
    else if (client.state === 'connecting') show('connecting', 'Connecting')
    else if (client.state === 'reconnecting') show('reconnecting', 'Reconnecting')
    else show('closed', stopped === '' ? 'Offline' : `Offline: ${stopped}`)
  }

  const offs = [
    client.on('state', render),
    client.on('retry', ({ delayMs }) => {
      retryAt = Date.now() + delayMs
      clearInterval(ticker)
      ticker = setInterval(tick, 250)
      tick()
      render()
    }),
    client.on('disconnect', ({ code, reason, willReconnect }) => {
      // Kicked: an administrator closed this connection; the SDK does not reconnect after it.
      if (!willReconnect) stopped = code === CloseCodes.KICKED ? 'disconnected by an administrator' : reason
    })
  ]
  const onOnline = (): void => {
    // The network is back: try now rather than at the next backoff step (up to 30 s away).
    client.reconnectNow()
    render()
  }
  const onOffline = (): void => render()
  window.addEventListener('online', onOnline)
  window.addEventListener('offline', onOffline)
  box.hidden = false
  render()
  return () => {
    for (const off of offs) off()
    window.removeEventListener('online', onOnline)
    window.removeEventListener('offline', onOffline)
    clearInterval(ticker)
    again.remove()
    box.hidden = true
    countdown.textContent = ''
  }
}
