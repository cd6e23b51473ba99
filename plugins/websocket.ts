import fp from 'fastify-plugin'
import websocket from '@fastify/websocket'
import { PROTOCOL_VERSION } from '../src/realtime/protocol.js'

/**
 * @fastify/websocket with the server's ws options. Compression is off (it costs memory per
 * socket and fragments the heap); frames over WS_MAX_MESSAGE_BYTES close the socket with 1009.
 * On close, the drain (plugins/realtime.ts, through the lifecycle) has already sent every
 * client `reconnect` and 1012; this only stops the ws server.
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
}, { name: 'websocket', dependencies: ['config', 'shutdown'] })
