import type { Server, Socket } from 'node:net'

export interface ConnectionCapOptions {
  /** Open connections one peer address may hold at once. */
  maxPerAddress: number
  /** Peers the cap does not apply to. */
  exempt: (address: string) => boolean
  /** Ends a connection over the cap; the server never sees it. */
  refuse: (socket: Socket, address: string) => void
}

export interface ConnectionCap {
  /** Stops counting a connection another protocol took over (an upgraded WebSocket, capped on its own). */
  release: (socket: Socket) => void
  /** Connections counted for `address` now. */
  openFrom: (address: string) => number
}

/**
 * Caps the TCP connections each peer address holds open on `server`. The count is taken on
 * 'connection', before the server's own listeners (the HTTP parser, TLS) run: a connection
 * over the cap is handed to `refuse` and never reaches them, so no request on it is parsed or
 * served. Call it once the server exists and before anything else listens for connections.
 */
export function capConnectionsPerAddress (server: Server, options: ConnectionCapOptions): ConnectionCap {
  const open = new Map<string, number>()
  // The address each counted socket was counted under: read once, as a closed socket may no longer tell.
  const counted = new WeakMap<Socket, string>()

  function uncount (socket: Socket): void {
    const address = counted.get(socket)
    if (address === undefined) return
    counted.delete(socket)
    const remaining = (open.get(address) ?? 1) - 1
    if (remaining === 0) open.delete(address)
    else open.set(address, remaining)
  }

  // One listener shared by every socket, not a closure each.
  function onClose (this: Socket): void {
    uncount(this)
  }

  function admit (socket: Socket): boolean {
    const address = socket.remoteAddress
    if (address === undefined) {
      // Reset before it could be accepted: nothing to serve.
      socket.destroy()
      return false
    }
    if (options.exempt(address)) return true
    const held = open.get(address) ?? 0
    if (held >= options.maxPerAddress) {
      options.refuse(socket, address)
      return false
    }
    open.set(address, held + 1)
    counted.set(socket, address)
    socket.once('close', onClose)
    return true
  }

  const serverListeners = server.listeners('connection') as Array<(socket: Socket) => void>
  server.removeAllListeners('connection')
  server.on('connection', (socket: Socket) => {
    if (!admit(socket)) return
    for (const listener of serverListeners) listener.call(server, socket)
  })

  return {
    release (socket) {
      // A TLS socket wraps the TCP socket that was counted; node keeps that one as `_parent`.
      const tcp = counted.has(socket) ? socket : (socket as Socket & { _parent?: Socket | null })._parent
      if (tcp === undefined || tcp === null) return
      tcp.removeListener('close', onClose)
      uncount(tcp)
    },
    openFrom: (address) => open.get(address) ?? 0
  }
}
