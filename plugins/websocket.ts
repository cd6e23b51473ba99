import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import { PROTOCOL_VERSION } from '../src/realtime/protocol.js'

/** Takes over one upgrade request: the socket is the handler's from here on (it must answer or destroy it). */
export type UpgradeHandler = (request: IncomingMessage, socket: Duplex, head: Buffer) => void

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Serves WebSocket upgrades of `GET path` (the exact path, any query) with `handler`
     * instead of routing them through Fastify's request lifecycle. Every other upgrade is
     * routed as before (@fastify/websocket routes, 404 for unknown paths).
     */
    directUpgrade(path: string, handler: UpgradeHandler): void
  }
}

/**
 * @fastify/websocket with the server's ws options. Compression is off (it costs memory per
 * socket and fragments the heap); frames over WS_MAX_MESSAGE_BYTES close the socket with 1009.
 * On close, the drain (plugins/realtime.ts, through the lifecycle) has already sent every
 * client `reconnect` and 1012; this only stops the ws server.
 *
 * The upgrade listener @fastify/websocket installs routes every upgrade through Fastify: a
 * ServerResponse, a request and reply, the hooks, a child logger. For the one endpoint whose
 * handshake rate matters (/ws: reconnect storms after a deploy), that machinery was about a
 * seventh of a handshake's CPU (docs/performance.md), so `directUpgrade` lets a route take
 * its upgrades before Fastify sees them; the route then does its own checks (routes/ws).
 */
export default fp(async (app) => {
  await app.register(websocket, {
    options: {
      maxPayload: app.config.ws.maxMessageBytes,
      perMessageDeflate: false,
      // Select our protocol when offered; the `bearer.<jwt>` entry is never echoed back.
      handleProtocols: (protocols: Set<string>) => protocols.has(PROTOCOL_VERSION) ? PROTOCOL_VERSION : false
    },
    preClose: async function () {
      await app.lifecycle.shutdown()
      for (const client of app.websocketServer.clients) client.terminate()
      await new Promise<void>(resolve => app.websocketServer.close(() => resolve()))
    },
    errorHandler: (err, socket) => {
      app.log.debug({ err }, 'websocket error')
      socket.terminate()
    }
  })

  // One 'upgrade' listener in front of @fastify/websocket's: direct paths first, the rest routed.
  const server = app.server
  const routed = server.listeners('upgrade') as UpgradeHandler[]
  server.removeAllListeners('upgrade')
  const direct = new Map<string, UpgradeHandler>()
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const handler = request.method === 'GET' ? direct.get(pathOf(request.url)) : undefined
    if (handler !== undefined) handler(request, socket, head)
    else for (const listener of routed) listener.call(server, request, socket, head)
  })
  app.decorate('directUpgrade', (path: string, handler: UpgradeHandler) => { direct.set(path, handler) })
}, { name: 'websocket', dependencies: ['config', 'shutdown'] })

function pathOf (url: string | undefined): string {
  if (url === undefined) return ''
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}
