import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import { selectProtocol } from '../src/realtime/frame-codec.js'
import { maxFrameBytes } from '@switchboard/protocol/limits'
import { Errors, httpAnswer } from '../src/errors.js'
import { writeRefusal } from '../src/http-refusal.js'
import { clientAddress, trustProxyFunction } from '../src/client-address.js'
import { redactUrl } from '../src/logger.js'
import { perMessageDeflateOptions, WsDeflate } from '../src/realtime/ws-deflate.js'

/** Takes over one upgrade request: the socket is the handler's from here on (it must answer or destroy it). */
export type UpgradeHandler = (request: IncomingMessage, socket: Duplex, head: Buffer) => void

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Serves WebSocket upgrades of `GET path` (the exact path, any query) with `handler`,
     * outside Fastify's request lifecycle. Every other upgrade is refused (404) before any
     * upgrade and its socket ended.
     */
    directUpgrade(path: string, handler: UpgradeHandler): void
    /** Compression of server frames (WS_COMPRESSION=on) for sockets that negotiated it; null when off. */
    wsDeflate: WsDeflate | null
  }
}

/**
 * @fastify/websocket with the server's ws options. Compression is off unless WS_COMPRESSION=on:
 * then ws negotiates permessage-deflate with clients that offer it, without context takeover
 * (src/realtime/ws-deflate.ts), and `wsDeflate` compresses our pre-built frames for them. A
 * frame over the frame limit (maxFrameBytes: room for a payload of WS_MAX_MESSAGE_BYTES as
 * base64, and its envelope) closes the socket with 1009; so does a compressed one that
 * inflates past it (ws counts the inflated bytes against maxPayload and stops inflating).
 * On close, the drain (plugins/realtime.ts, through the lifecycle) has already sent every
 * client `reconnect` and 1012; this only stops the ws server.
 *
 * The upgrade listener @fastify/websocket installs routes every upgrade through Fastify, and
 * there any route takes it: an upgrade of GET /health/live got a 101 and a socket no handler
 * served, held until ws's close timer ran out, past the handshake budget, the Origin check
 * and the connection caps of /ws. That listener is removed: only the paths given to
 * `directUpgrade` upgrade, each doing its own checks (routes/ws), and every other upgrade is
 * answered 404 before Fastify or ws see it. (Routing /ws's handshakes through Fastify was
 * also about a seventh of their CPU, docs/performance.md.)
 */
export default fp(async (app) => {
  const server = app.server
  const othersUpgradeListeners = new Set(server.listeners('upgrade'))
  const { compression } = app.config.ws
  app.decorate('wsDeflate', compression === null ? null : new WsDeflate(compression.threshold))
  await app.register(websocket, {
    options: {
      maxPayload: maxFrameBytes(app.config.ws.maxMessageBytes),
      perMessageDeflate: compression === null ? false : perMessageDeflateOptions(compression.threshold),
      // Select a protocol of ours when offered, MessagePack first (it chooses the connection's
      // codec, routes/ws); the `bearer.<jwt>` entry is never echoed back.
      handleProtocols: (protocols: Set<string>) => selectProtocol(protocols)
    },
    preClose: async function () {
      await app.lifecycle.shutdown()
      for (const client of app.websocketServer.clients) client.terminate()
      await new Promise<void>(resolve => app.websocketServer.close(() => resolve()))
    }
    // No errorHandler: it serves the sockets of routes @fastify/websocket upgrades, and it upgrades none.
  })

  // @fastify/websocket's own listener goes; those installed before it (the connection cap's) stay.
  for (const listener of server.listeners('upgrade')) {
    if (!othersUpgradeListeners.has(listener)) server.removeListener('upgrade', listener as UpgradeHandler)
  }
  const trust = trustProxyFunction(app.config.trustProxy)
  const direct = new Map<string, UpgradeHandler>()
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = pathOf(request.url)
    const handler = request.method === 'GET' ? direct.get(path) : undefined
    if (handler !== undefined) {
      handler(request, socket, head)
      return
    }
    // Logged as Fastify logs a request it answers, the URL's credentials censored.
    app.log.info({ method: request.method, url: redactUrl(request.url ?? ''), ip: clientAddress(request, trust), statusCode: 404 }, 'upgrade refused: no WebSocket endpoint')
    writeRefusal(socket, httpAnswer(new Errors.NoWebSocketEndpoint(request.method ?? '', path)))
  })
  app.decorate('directUpgrade', (path: string, handler: UpgradeHandler) => { direct.set(path, handler) })
}, { name: 'websocket', dependencies: ['config', 'shutdown'] })

function pathOf (url: string | undefined): string {
  if (url === undefined) return ''
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}
