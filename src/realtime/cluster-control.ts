import { randomUUID } from 'node:crypto'
import { AppError } from '../errors.js'
import { CloseCodes } from '@switchboard/protocol/close-codes'
import type { UnsubscribeReason } from '@switchboard/protocol/messages'
import type { Connection } from './connection.js'
import type { ControlMessage, Engine, RoomChange } from './engine.js'
import { viaEngine } from './errors.js'
import type { Hub } from './hub.js'
import type { Logger } from './logger.js'
import type { RoomAuthorizer } from './room-authorizer.js'

/**
 * What the node needs of the auth layer to apply revocations (src/auth/revocation.ts): given
 * to it, so that the core imports nothing of auth but the principal's type.
 */
export interface RevocationHost {
  /** A Map lookup: true when the session's tokens were revoked (a handshake racing a revocation is refused). */
  isSessionRevoked(sessionId: string): boolean
  /** Another node revoked these sessions: deny their tokens here too, until `until` (ms). */
  sessionsRevoked(sessionIds: string[], until: number): void
  /** Another node closed this account: stop taking it for active here. */
  accountClosed(userId: string): void
  /** Of these users (connected here), those whose accounts are gone or disabled, from the store. */
  closedAccounts(userIds: string[]): Promise<string[]>
  /** How often the node asks closedAccounts about its connected users (ms). */
  recheckMs: number
}

export interface ClusterControlDeps {
  engine: Engine
  hub: Hub<Connection>
  authorizer: RoomAuthorizer
  /** Absent: no session or account revocation reaches the sockets (tests of the bare core). */
  revocation?: RevocationHost
  log: Logger
}

/**
 * Kicks, room changes and revocations, on this node and across nodes. Each action is applied
 * here first (sockets closed, subscriptions revoked, grants dropped), then sent on the
 * engine's control channel; what other nodes send is applied here the same way (this node's
 * own messages, echoed back, are ignored). Also asks the store, every `recheckMs`, which
 * connected users' accounts were removed behind the auth service's back.
 */
export class ClusterControl {
  /** Names this node on the control channel, so it ignores the echo of what it applied already. */
  readonly nodeId = randomUUID()
  /** Other nodes exist only with a shared engine: with the in-memory one, an unknown connection id is simply unknown. */
  readonly clustered: boolean
  /** Parts of the node that speak on the channel too (node reports, the room census): what they hear. */
  private readonly listeners: Array<(message: ControlMessage) => void> = []
  private readonly accountTimer: NodeJS.Timeout | undefined
  private accountCheck: Promise<void> | null = null

  constructor (private readonly deps: ClusterControlDeps) {
    const { engine, revocation } = deps
    this.clustered = engine.kind !== 'memory' && engine.control !== undefined
    engine.control?.onControl((message) => this.applyRemote(message))
    // An account removed straight in the database announces nothing: ask the store, in
    // batches, which connected users are gone, and close their sockets. One run at a time.
    this.accountTimer = revocation === undefined ? undefined : setInterval(() => this.checkAccounts(), revocation.recheckMs)
    this.accountTimer?.unref()
  }

  /**
   * Closes one connection with 4503 (kicked). `local` when it was on this node; `forwarded`
   * when it is not here and the other nodes were told (best-effort: whether it existed is
   * not known); null when it is nowhere (a single node) or the message could not be sent.
   */
  async kick (connectionId: string): Promise<'local' | 'forwarded' | null> {
    if (this.kickLocal(connectionId)) return 'local'
    return await this.send({ type: 'kick', connectionId }) ? 'forwarded' : null
  }

  /** Closes every connection of a user with 4503, on every node; returns how many were on this one. */
  async kickUser (userId: string): Promise<number> {
    const closed = this.kickUserLocal(userId)
    await this.send({ type: 'kick_user', userId })
    return closed
  }

  /**
   * Closes every connection authenticated with an API key that was just revoked (4503): on
   * this node at once, on the others when the control message reaches them. Returns how many
   * were on this node.
   */
  kickApiKey (keyId: string): number {
    const closed = this.kickApiKeyLocal(keyId)
    void this.send({ type: 'kick_api_key', keyId })
    return closed
  }

  /**
   * Session revocation (logout, refresh-token reuse, sign out everywhere): closes the
   * sessions' sockets here with 4001, then tells the other nodes, which deny the sessions
   * until `until` and close theirs. Resolves once Redis took the message. Returns how many
   * were closed on this node.
   */
  async revokeSessions (userId: string, sessionIds: string[], until: number): Promise<number> {
    const closed = this.revokeSessionsLocal(userId, sessionIds)
    await this.send({ type: 'revoke_sessions', userId, sessionIds, until })
    return closed
  }

  /** An account deleted or disabled: its sockets are closed with 4504 here, then on every node. */
  async closeAccount (userId: string): Promise<number> {
    const closed = this.closeAccountLocal(userId)
    await this.send({ type: 'close_account', userId })
    return closed
  }

  /**
   * Live revocation: applies a room change to open subscriptions before the HTTP request that
   * made it answers. Removals and bans act at once on the connections of that user (admins
   * keep their access); a room that became private is re-checked subscriber by subscriber.
   * This node applies it first, then tells the others through the control channel and waits
   * until Redis took the message: anything published after that reaches them after it.
   */
  async applyRoomChange (change: RoomChange): Promise<void> {
    await this.applyRoomChangeLocal(change, true)
    await this.send({ type: 'room_change', change })
  }

  /**
   * Ends a user's subscriptions to a room with `unsubscribed` (reason `server`), here and then
   * on every node; the connections stay open. Returns how many were ended here.
   */
  async unsubscribeUser (userId: string, room: string): Promise<number> {
    const ended = this.unsubscribeUserLocal(userId, room)
    await this.send({ type: 'unsubscribe_user', userId, room })
    return ended
  }

  /**
   * Ends one connection's subscription to a room (`unsubscribed`, reason `server`); the
   * connection stays open. `local` when it was on this node, `not_subscribed` when it is here
   * but not in that room, `forwarded` when it is not here and the other nodes were told (the
   * one holding it applies it; best-effort), null when it is nowhere (a single node).
   */
  async unsubscribeConnection (connectionId: string, room: string): Promise<'local' | 'not_subscribed' | 'forwarded' | null> {
    const here = this.deps.hub.get(connectionId)
    if (here !== undefined) {
      if (!here.subscriptions.has(room)) return 'not_subscribed'
      here.revoke(room, 'server')
      return 'local'
    }
    return await this.send({ type: 'unsubscribe_connection', connectionId, room }) ? 'forwarded' : null
  }

  /** Hears what other nodes send of the messages the control itself does not apply (reports, censuses). */
  listen (listener: (message: ControlMessage) => void): void {
    this.listeners.push(listener)
  }

  /** Stops the account re-check. */
  close (): void {
    clearInterval(this.accountTimer)
  }

  private applyRemote (message: ControlMessage): void {
    if (message.node === this.nodeId) return
    switch (message.type) {
      case 'kick':
        this.kickLocal(message.connectionId)
        return
      case 'kick_user':
        this.kickUserLocal(message.userId)
        return
      case 'kick_api_key':
        this.kickApiKeyLocal(message.keyId)
        return
      case 'room_change':
        this.applyRoomChangeLocal(message.change, false)
          .catch((err: unknown) => this.deps.log.error({ err, room: message.change.room.id }, 'live revocation from another node failed'))
        return
      case 'revoke_sessions':
        // Denied first: a handshake or request after the sockets close is refused here too.
        this.deps.revocation?.sessionsRevoked(message.sessionIds, message.until)
        this.revokeSessionsLocal(message.userId, message.sessionIds)
        return
      case 'close_account':
        this.deps.revocation?.accountClosed(message.userId)
        this.closeAccountLocal(message.userId)
        return
      case 'unsubscribe_user':
        this.unsubscribeUserLocal(message.userId, message.room)
        return
      case 'unsubscribe_connection':
        this.deps.hub.get(message.connectionId)?.revoke(message.room, 'server')
        return
      case 'node_report':
      case 'rooms_query':
      case 'rooms_answer':
      case 'connections_query':
      case 'connections_answer':
        for (const listener of this.listeners) listener(message)
    }
  }

  /**
   * Sends a control message to the other nodes (this one applied it already). Failures are
   * logged, not thrown: what this node could do is done, and the channel is best-effort.
   * False when nothing was sent (a single node, or the channel is down).
   */
  async send (message: DistributiveOmit<ControlMessage, 'node'>): Promise<boolean> {
    const control = this.deps.engine.control
    if (!this.clustered || control === undefined) return false
    try {
      await control.publishControl({ ...message, node: this.nodeId } as ControlMessage)
      return true
    } catch (err) {
      this.deps.log.warn({ err, control: message.type }, 'control message not sent: other nodes do not apply it')
      return false
    }
  }

  private kickLocal (connectionId: string): boolean {
    const connection = this.deps.hub.get(connectionId)
    if (connection === undefined) return false
    connection.close(CloseCodes.KICKED)
    return true
  }

  private unsubscribeUserLocal (userId: string, room: string): number {
    const targets = this.deps.hub.membersOf(room, userId)
    for (const connection of targets) connection.revoke(room, 'server')
    return targets.length
  }

  private kickUserLocal (userId: string): number {
    this.deps.authorizer.principalChanged({ kind: 'user', userId })
    const targets = this.deps.hub.select({ user: userId })
    for (const connection of targets) connection.close(CloseCodes.KICKED)
    return targets.length
  }

  private kickApiKeyLocal (keyId: string): number {
    this.deps.authorizer.principalChanged({ kind: 'apiKey', keyId })
    const targets = this.deps.hub.ofApiKey(keyId)
    for (const connection of targets) connection.close(CloseCodes.KICKED, 'api key revoked')
    return targets.length
  }

  /** Closes this node's sockets of the given sessions of a user with 4001: the client's refresh fails, it signs in again. */
  private revokeSessionsLocal (userId: string, sessionIds: string[]): number {
    const revoked = new Set(sessionIds)
    const targets = this.deps.hub.select({ user: userId }).filter(c => c.principal.kind === 'user' && c.principal.sessionId !== null && revoked.has(c.principal.sessionId))
    for (const connection of targets) connection.close(CloseCodes.TOKEN_EXPIRED, 'session revoked')
    return targets.length
  }

  /** Closes this node's sockets of an account that is gone or disabled with the terminal 4504. */
  private closeAccountLocal (userId: string): number {
    this.deps.authorizer.principalChanged({ kind: 'user', userId })
    const targets = this.deps.hub.select({ user: userId })
    for (const connection of targets) connection.close(CloseCodes.ACCOUNT_CLOSED)
    return targets.length
  }

  private checkAccounts (): void {
    const host = this.deps.revocation
    if (this.accountCheck !== null || host === undefined) return
    const users = this.deps.hub.userIds()
    if (users.length === 0) return
    this.accountCheck = host.closedAccounts(users)
      .then((closed) => { for (const userId of closed) this.closeAccountLocal(userId) })
      .catch((err: unknown) => this.deps.log.warn({ err }, 'account check of connected users failed; retried at the next interval'))
      .finally(() => { this.accountCheck = null })
  }

  /** Applies a room change to this node's subscriptions; the history removal only where `removeHistory` (once per cluster). */
  private async applyRoomChangeLocal (change: RoomChange, removeHistory: boolean): Promise<void> {
    const { hub, authorizer, engine, log } = this.deps
    const roomId = change.room.id
    authorizer.roomChanged(roomId)
    const revoke = (connections: Connection[], reason: UnsubscribeReason): void => {
      for (const connection of connections) connection.revoke(roomId, reason)
    }
    const notAdmin = (c: Connection): boolean => !(c.principal.kind === 'user' && c.principal.role === 'admin')
    switch (change.type) {
      case 'room_deleted':
        revoke(hub.membersOf(roomId, null), 'room_deleted')
        if (removeHistory) await viaEngine(log, () => engine.history.removeHistory(roomId)).catch((err: unknown) => log.warn({ err, room: roomId }, 'history removal failed'))
        return
      case 'banned':
        revoke(hub.membersOf(roomId, change.userId).filter(notAdmin), 'banned')
        return
      case 'member_removed':
        if (change.room.visibility === 'private') revoke(hub.membersOf(roomId, change.userId).filter(notAdmin), 'removed')
        return
      case 'member_role_changed':
        return
      case 'room_updated': {
        const { presenceEvents } = change.room
        if (presenceEvents !== undefined) {
          for (const connection of hub.membersOf(roomId, null)) connection.roomSettingsChanged(roomId, { presenceEvents })
        }
        if (change.room.visibility !== 'private') return
        await Promise.all(hub.membersOf(roomId, null).map(async (connection) => {
          try {
            // A subscription on a room token keeps its basis: the room becoming private takes nothing from it.
            await authorizer.recheck(connection.principal, roomId, 'subscribe', connection.grantBasisOf(roomId))
          } catch (err) {
            if (err instanceof AppError && err.protocolCode === 'unavailable') {
              // The store cannot say: access stays as it was until the client's next subscribe.
              log.warn({ err, room: roomId, connId: connection.id }, 'access re-check after a room update: store unavailable')
              return
            }
            // A refusal, or a bug in the check: fail closed (the client can subscribe again).
            if (!(err instanceof AppError)) log.error({ err, room: roomId, connId: connection.id }, 'access re-check after a room update failed')
            connection.revoke(roomId, 'forbidden')
          }
        }))
      }
    }
  }
}

/** Omit over each member of a union (plain Omit would merge the members). */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
