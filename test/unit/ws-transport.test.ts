import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { describe, it } from 'node:test'
import { WebSocket, WebSocketServer } from 'ws'
import { wsTransport } from '../../src/realtime/ws-transport.js'
import type { Transport } from '../../src/realtime/transport.js'

/** An HTTP server with an inactivity timeout on its sockets (as Fastify's connectionTimeout arms), upgrading to ws. */
async function serverWithTimeout (t: { after: (fn: () => Promise<void>) => void }): Promise<{ url: string, upgraded: Promise<{ ws: WebSocket, socket: Socket }> }> {
  const http: Server = createServer()
  http.setTimeout(60_000)
  const wss = new WebSocketServer({ server: http })
  const upgraded = new Promise<{ ws: WebSocket, socket: Socket }>(resolve => {
    wss.on('connection', (ws) => { resolve({ ws, socket: (ws as unknown as { _socket: Socket })._socket }) })
  })
  await new Promise<void>(resolve => http.listen(0, '127.0.0.1', resolve))
  t.after(async () => {
    for (const client of wss.clients) client.terminate()
    await new Promise<void>(resolve => { wss.close(() => http.close(() => resolve())) })
  })
  return { url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}`, upgraded }
}

const timeoutSlot = (socket: Socket): unknown => {
  const key = Object.getOwnPropertySymbols(socket).find(s => s.description === 'timeout')
  return key === undefined ? undefined : (socket as unknown as Record<symbol, unknown>)[key]
}

describe('wsTransport', () => {
  it('lets go of the inactivity timer the upgrade cleared, and its pings reach the client, which answers', async (t) => {
    const { url, upgraded } = await serverWithTimeout(t)
    const client = new WebSocket(url)
    t.after(() => client.terminate())
    await new Promise(resolve => client.once('open', resolve))
    const { ws, socket } = await upgraded
    assert.notEqual(timeoutSlot(socket), null, 'the HTTP server armed a timer and ws cleared it, leaving it on the socket')
    const transport: Transport = wsTransport(ws)
    assert.equal(timeoutSlot(socket), null)

    let pings = 0
    client.on('ping', () => { pings++ })
    const pongs = new Promise<void>(resolve => {
      let n = 0
      ws.on('pong', () => { if (++n === 3) resolve() })
    })
    transport.ping()
    transport.ping()
    transport.ping()
    await pongs
    assert.equal(pings, 3)
    assert.equal(client.readyState, WebSocket.OPEN)
  })

  it('keeps an inactivity timer that is still armed', async (t) => {
    const { url, upgraded } = await serverWithTimeout(t)
    const client = new WebSocket(url)
    t.after(() => client.terminate())
    await new Promise(resolve => client.once('open', resolve))
    const { ws, socket } = await upgraded
    socket.setTimeout(30_000)
    wsTransport(ws)
    assert.equal((timeoutSlot(socket) as { _idleTimeout: number })._idleTimeout, 30_000)
  })
})
