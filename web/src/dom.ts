/**
 * A small element builder. Text always becomes text nodes (never innerHTML), so user content
 * (usernames, messages, room names) cannot inject markup.
 */
export type Child = Node | string | number | null | undefined | false
type Listener = (event: Event) => void
export type Props = Record<string, string | number | boolean | null | undefined | Listener>

export function h<K extends keyof HTMLElementTagNameMap> (tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue
    if (typeof value === 'function') el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = String(value)
    else if (value === true) el.setAttribute(key, '')
    else el.setAttribute(key, String(value))
  }
  append(el, ...children)
  return el
}

export function append (parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    parent.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child)
  }
}

/** Replaces an element's content. */
export function replace (parent: Element, ...children: Child[]): void {
  parent.replaceChildren()
  append(parent, ...children)
}

/** A labelled input: the label's `for` points at the input, so screen readers and taps find it. */
export function field (label: string, input: HTMLInputElement | HTMLSelectElement, hint?: string): HTMLDivElement {
  input.id ||= `f-${Math.random().toString(36).slice(2, 10)}`
  const hintEl = hint === undefined ? null : h('p', { class: 'hint', id: `${input.id}-hint` }, hint)
  if (hintEl !== null) input.setAttribute('aria-describedby', hintEl.id)
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hintEl)
}

export function select (options: Array<[value: string, label: string]>, props: Props = {}): HTMLSelectElement {
  return h('select', props, ...options.map(([value, label]) => h('option', { value }, label)))
}

/**
 * An error that stays on screen until the user dismisses it, or until the caller clears it on
 * the user's next action: a view that refreshes itself (the admin page every few seconds) must
 * not wipe it before it has been read.
 */
export interface StickyError {
  el: HTMLDivElement
  show (message: string): void
  clear (): void
}

export function stickyError (): StickyError {
  const text = h('p', { role: 'alert' })
  const dismiss = h('button', { type: 'button', class: 'link' }, 'Dismiss')
  const el = h('div', { class: 'sticky-error', hidden: true }, text, dismiss)
  const clear = (): void => {
    text.textContent = ''
    el.hidden = true
  }
  dismiss.addEventListener('click', clear)
  return {
    el,
    show (message) {
      text.textContent = message
      el.hidden = false
    },
    clear
  }
}

/** Local time for a message: HH:MM today, else the date too. */
export function formatTime (ms: number): string {
  const date = new Date(ms)
  const today = new Date().toDateString() === date.toDateString()
  return today
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' })
}
