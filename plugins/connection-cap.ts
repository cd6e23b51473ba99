import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import fp from 'fastify-plugin'
import { Errors, httpAnswer } from '../src/errors.js'
import { destroyOnError, writeRefusal } from '../src/http-refusal.js'
import { trustProxyFunction } from '../src/client-address.js'
import { capConnectionsPerAddress } from '../src/limits/connection-cap.js'
import { outageLogThrottle } from '../src/redis.js'

/**
 * HTTP_MAX_CONNECTIONS_PER_IP: open connections per peer address on this node, so one client
 * cannot hold every socket the process can open (the HTTP deadlines bound how long each lives,
 * this bounds how many). Past the cap a plain-HTTP connection gets a 429 with the API's error
 * body and is closed before a request on it is read; with TLS nothing can be said before the
 * handshake, so it is only closed.
 *
 * The count is of TCP peers, so peers that TRUST_PROXY trusts are not capped: behind a proxy
 * every connection comes from the proxy and carries many clients, and capping it would refuse
 * everyone at once. Per-client limits there are the proxy's job (and the per-address rate
 * limits still see the client through X-Forwarded-For). WebSockets stop counting once upgraded:
 * WS_MAX_CONNECTIONS_PER_IP caps them, by client address.
 */
export default fp(async (app) => {
  const max = app.config.http.maxConnectionsPerIp
  if (max === null) return
  const trust = trustProxyFunction(app.config.trustProxy)
  const plaintext = app.config.tls === null
  const logThrottle = outageLogThrottle()
  const cap = capConnectionsPerAddress(app.server, {
    maxPerAddress: max,
    exempt: trust === false ? () => false : (address) => trust(address, 0),
    refuse (socket, address) {
      // One line per interval: a flood of refusals must not become a flood of log lines.
      const due = logThrottle()
      if (due !== null) app.log.warn({ ip: address, max, suppressed: due.suppressed }, 'HTTP connection refused: too many open from this address')
      if (!plaintext) {
        socket.on('error', destroyOnError)
        socket.destroy()
        return
      }
      // What the client sends is read and dropped: closing with unread input would reset the
      // connection and could discard the answer before the client reads it.
      socket.resume()
      writeRefusal(socket, httpAnswer(new Errors.TooManyConnections('Too many open HTTP connections from this address')))
    }
  })
  app.server.on('upgrade', (_request: IncomingMessage, socket: Duplex) => { cap.release(socket as Socket) })
}, { name: 'connection-cap', dependencies: ['config'] })
