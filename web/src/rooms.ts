import { listAll, request } from './api.js'
import { describeError, type Context, type View } from './context.js'
import { field, h, replace, select } from './dom.js'

export interface Room {
  id: string
  name: string | null
  visibility: 'public' | 'private'
  publish: 'members' | 'moderators'
  createdBy: string
}

export function roomHash (id: string): string {
  return `#/rooms/${encodeURIComponent(id)}`
}

/** The rooms the user can see (public ones and their private ones), and a form to create one. */
export function roomsView (ctx: Context): View {
  const list = h('ul', { class: 'rooms', 'aria-label': 'Rooms' })
  const listStatus = h('p', { class: 'hint', role: 'status' }, 'Loading rooms…')
  const listError = h('p', { class: 'error', role: 'alert' })

  const id = h('input', { name: 'id', required: true, pattern: '[a-z0-9][a-z0-9_.:\\-]{0,63}', maxlength: 64, autocapitalize: 'none', spellcheck: 'false' })
  const name = h('input', { name: 'name', maxlength: 100 })
  // Short option labels, the explanation in the hint below: a long option label was cut off
  // by the select's width on narrow screens.
  const visibility = select([['public', 'Public'], ['private', 'Private']], { name: 'visibility' })
  const createError = h('p', { class: 'error', role: 'alert' })
  const create = h('button', { type: 'submit' }, 'Create room')
  const form = h('form', {
    class: 'stack panel',
    'aria-labelledby': 'create-title',
    onsubmit: (event) => {
      event.preventDefault()
      void (async () => {
        createError.textContent = ''
        create.disabled = true
        try {
          const room = await request<Room>('POST', '/rooms', {
            auth: ctx.session,
            body: { id: id.value.trim(), visibility: visibility.value, ...(name.value.trim() === '' ? {} : { name: name.value.trim() }) }
          })
          ctx.navigate(roomHash(room.id))
        } catch (err) {
          createError.textContent = describeError(err)
          id.focus()
        } finally {
          create.disabled = false
        }
      })()
    }
  },
  h('h2', { id: 'create-title' }, 'Create a room'),
  field('Room id', id, 'Lowercase letters, digits, _ . - (e.g. team or ns:team); it cannot change'),
  field('Name (optional)', name),
  field('Visibility', visibility, 'Public: anyone signed in can find, read and join it. Private: members only.'),
  createError,
  h('div', { class: 'row' }, create))

  /** Each read of the list has a number: an older answer arriving after a newer one is dropped. */
  let reads = 0
  let disposed = false

  async function load (): Promise<void> {
    const read = ++reads
    try {
      const rooms = await listAll<Room>('/rooms', ctx.session)
      if (disposed || read !== reads) return
      listError.textContent = ''
      replace(list, ...rooms.map(room => h('li', { 'data-room': room.id },
        h('a', { href: roomHash(room.id) }, room.name ?? room.id),
        room.name !== null ? h('span', { class: 'hint' }, room.id) : null,
        h('span', { class: 'badge' }, room.visibility))))
      listStatus.textContent = rooms.length === 0 ? 'No rooms yet: create the first one below.' : `${rooms.length} room${rooms.length === 1 ? '' : 's'}`
    } catch (err) {
      if (disposed || read !== reads) return
      listStatus.textContent = ''
      listError.textContent = `Could not load the rooms: ${describeError(err)}`
    }
  }

  // A room added to or removed from the user's list (docs/protocol.md §11): the list is read
  // again rather than patched from the event, so the server's answer stays the one truth (and
  // an event someone else published in that shape changes nothing).
  const stopWatching = ctx.onMembership(() => { void load() })
  void load()

  const el = h('section', { 'aria-labelledby': 'rooms-title' },
    h('h1', { id: 'rooms-title' }, 'Rooms'),
    listStatus, listError, list, form)
  return {
    el,
    dispose () {
      disposed = true
      stopWatching()
    }
  }
}
