import type { Principal } from '../auth/principal.js'
import type { Publication } from './engine.js'
import type { FrameCodec } from './frame-codec.js'
import type { PreparedFrame } from './transport.js'

/**
 * What the hub needs of a member (a Connection in the node, a fake in unit tests). The hub
 * owns this interface so that it never imports the connection: it only indexes and hands out.
 */
export interface HubMember {
  readonly id: string
  readonly principal: Principal
  readonly meta: { readonly ip: string }
  readonly subscriptions: { has: (room: string) => boolean }
  /** A publication of a room it joined; `frame` gives the bytes in its codec, shared by every member of that codec. */
  deliver: (room: string, epoch: string, publication: Publication, frame: (codec: FrameCodec) => PreparedFrame) => void
  /** Another push to a room it joined (a presence event); `frame` as for `deliver`. */
  pushToRoom: (room: string, frame: (codec: FrameCodec) => PreparedFrame) => void
}

/** This node's interest in a room starts with its first member and ends with its last. */
export interface RoomInterest {
  /** The room has its first member here: resolves once the room's publications reach this node. */
  subscribe: (room: string) => Promise<void>
  /** The room's last member here left. */
  unsubscribe: (room: string) => void
}

export interface ConnectionFilter {
  user?: string
  room?: string
}

/** One room's members on this node and the readiness they share (this node's broker subscription). */
interface HubRoom<C> {
  members: Set<C>
  ready: Promise<void>
}

/**
 * The local hub: this node's connections indexed by id, by owner (user or API key) and by
 * address, and its rooms with their members, both ways (a room's members here; a member's
 * rooms are its own `subscriptions`). Empty rooms are deleted at once. Everything is
 * synchronous except a room's readiness, which the hub keeps but does not make.
 *
 * Broadcast hands one publication to every member of a room with one shared frame builder:
 * the first member of each codec that writes builds that codec's bytes, every other member of
 * the codec writes the same bytes (a publication is encoded at most once per codec).
 */
export class Hub<C extends HubMember> {
  private readonly members = new Map<string, C>()
  private readonly byOwner = new Map<string, Set<C>>()
  private readonly byIp = new Map<string, number>()
  private readonly rooms = new Map<string, HubRoom<C>>()
  constructor (
    private readonly interest: RoomInterest,
    /** Builds a publication's frame in one codec: called at most once per broadcast and codec. */
    private readonly frameOf: (room: string, epoch: string, publication: Publication, codec: FrameCodec) => PreparedFrame,
    /** After a broadcast that wrote: how many members wrote a frame, and their bytes in all (for metrics). */
    private readonly written: (publication: Publication, members: number, bytes: number) => void
  ) {}

  /** Indexes a member that just connected. */
  add (member: C): void {
    this.members.set(member.id, member)
    const key = ownerKey(member.principal)
    let set = this.byOwner.get(key)
    if (set === undefined) this.byOwner.set(key, set = new Set())
    set.add(member)
    this.byIp.set(member.meta.ip, (this.byIp.get(member.meta.ip) ?? 0) + 1)
  }

  /** Forgets a member; false when it was not here (a second call does nothing). */
  remove (member: C): boolean {
    if (!this.members.delete(member.id)) return false
    const key = ownerKey(member.principal)
    const set = this.byOwner.get(key)
    set?.delete(member)
    if (set?.size === 0) this.byOwner.delete(key)
    const count = (this.byIp.get(member.meta.ip) ?? 1) - 1
    if (count <= 0) this.byIp.delete(member.meta.ip)
    else this.byIp.set(member.meta.ip, count)
    return true
  }

  /** The member with this connection id, if it is on this node. */
  get (id: string): C | undefined {
    return this.members.get(id)
  }

  /** Every member, live: a member removed while iterating is skipped. */
  all (): IterableIterator<C> {
    return this.members.values()
  }

  /** Members on this node. */
  get size (): number {
    return this.members.size
  }

  /** Rooms with at least one member on this node. */
  get roomCount (): number {
    return this.rooms.size
  }

  /** Connections here of the principal's owner (a user, or an API key). */
  countOf (principal: Principal): number {
    return this.byOwner.get(ownerKey(principal))?.size ?? 0
  }

  /** Connections here from this address. */
  countAt (ip: string): number {
    return this.byIp.get(ip) ?? 0
  }

  /** Ids of the users (not API keys) connected here. */
  userIds (): string[] {
    const users: string[] = []
    for (const key of this.byOwner.keys()) if (key.startsWith('user:')) users.push(key.slice('user:'.length))
    return users
  }

  /** Connections authenticated with this API key. */
  ofApiKey (keyId: string): C[] {
    return [...(this.byOwner.get(`key:${keyId}`) ?? [])]
  }

  /** Connections of a user and/or subscribed to a room (every connection with no filter). */
  select (filter: ConnectionFilter): C[] {
    let candidates: Iterable<C> = this.members.values()
    if (filter.user !== undefined) candidates = this.byOwner.get(`user:${filter.user}`) ?? []
    const out: C[] = []
    for (const member of candidates) {
      if (filter.room !== undefined && !member.subscriptions.has(filter.room)) continue
      out.push(member)
    }
    return out
  }

  /** Members of `room` that belong to `userId` (all of them when null). */
  membersOf (room: string, userId: string | null): C[] {
    const local = this.rooms.get(room)
    if (local === undefined) return []
    return [...local.members].filter(c => userId === null || (c.principal.kind === 'user' && c.principal.userId === userId))
  }

  /** Each room here with its member count (the server API's active rooms). */
  * roomSizes (): IterableIterator<[string, number]> {
    for (const [room, local] of this.rooms) yield [room, local.members.size]
  }

  /** Every room here with a copy of its members (for a reset that touches them all). */
  roomsWithMembers (): Array<[string, C[]]> {
    return [...this.rooms].map(([room, local]) => [room, [...local.members]])
  }

  /**
   * Adds `member` to `room`; resolves once the room is ready here. The first member makes
   * the room and asks for its publications (`interest.subscribe`); if that fails, the room
   * is forgotten so that the next member asks again.
   */
  join (member: C, room: string): Promise<void> {
    let local = this.rooms.get(room)
    if (local === undefined) {
      const created: HubRoom<C> = { members: new Set(), ready: Promise.resolve() }
      created.ready = this.interest.subscribe(room).catch((err: unknown) => {
        if (this.rooms.get(room) === created) this.rooms.delete(room)
        throw err
      })
      this.rooms.set(room, created)
      local = created
    }
    local.members.add(member)
    return local.ready
  }

  /** Takes `member` out of `room`; the last one out deletes the room and ends the interest. */
  leave (member: C, room: string): void {
    const local = this.rooms.get(room)
    if (local === undefined || !local.members.delete(member)) return
    if (local.members.size === 0) {
      this.rooms.delete(room)
      this.interest.unsubscribe(room)
    }
  }

  /**
   * Hands a publication to each member of `room` once. Its frame is built once per codec (by
   * the first member of that codec that writes it) and the same bytes go to every other member
   * of the codec: one closure per publication, nothing per member.
   */
  broadcast (room: string, epoch: string, publication: Publication): void {
    const local = this.rooms.get(room)
    if (local === undefined) return
    const frames: [PreparedFrame | undefined, PreparedFrame | undefined] = [undefined, undefined]
    let written = 0
    let bytes = 0
    const shared = (codec: FrameCodec): PreparedFrame => {
      const frame = frames[codec.slot] ??= this.frameOf(room, epoch, publication, codec)
      written++
      bytes += frame.byteLength
      return frame
    }
    for (const member of local.members) member.deliver(room, epoch, publication, shared)
    if (written > 0) this.written(publication, written, bytes)
  }

  /** Hands a push other than a publication (a presence event) to each member of `room`, framed once per codec. */
  push (room: string, build: (codec: FrameCodec) => PreparedFrame): void {
    const local = this.rooms.get(room)
    if (local === undefined) return
    const frames: [PreparedFrame | undefined, PreparedFrame | undefined] = [undefined, undefined]
    const shared = (codec: FrameCodec): PreparedFrame => (frames[codec.slot] ??= build(codec))
    for (const member of local.members) member.pushToRoom(room, shared)
  }
}

/** The hub's index key of a principal's owner: one user, or one API key. */
function ownerKey (principal: Principal): string {
  return principal.kind === 'user' ? `user:${principal.userId}` : `key:${principal.keyId}`
}
