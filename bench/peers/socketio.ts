import { createServer } from 'node:http'
import { Server } from 'socket.io'
import { portFromEnv } from './hub-protocol.js'

/**
 * Socket.IO 4 rooms with default options, websocket transport only (what a team picking
 * Socket.IO for this job would run). `sub` joins a room; `pub` emits to the room through the
 * in-memory adapter, which encodes the packet once and writes it to every socket. Both take an
 * acknowledgement callback, the counterpart of Switchboard's reply. Like Switchboard,
 * `io.to(room)` includes the publisher when it is subscribed. No authentication.
 */
const httpServer = createServer()
const io = new Server(httpServer, { transports: ['websocket'] })
io.on('connection', (socket) => {
  socket.on('sub', (room: unknown, ack: unknown) => {
    if (typeof room !== 'string') return
    void socket.join(room)
    if (typeof ack === 'function') ack()
  })
  socket.on('pub', (room: unknown, data: unknown, ack: unknown) => {
    if (typeof room !== 'string') return
    io.to(room).emit('msg', room, data)
    if (typeof ack === 'function') ack()
  })
})
const port = portFromEnv()
httpServer.listen(port, '127.0.0.1', () => {
  const address = httpServer.address()
  process.stdout.write(`ready ${typeof address === 'object' && address !== null ? address.port : port} socketio\n`)
})
process.on('SIGTERM', () => { void io.close(); process.exit(0) })
