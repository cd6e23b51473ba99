import { WebSocket } from 'ws'
import { binaryMsgFrame } from './hub-frames.js'
import { messageFrame, portFromEnv, startHub } from './hub-protocol.js'

/**
 * The naive `ws` room hub, what most people write: serialise the message once, then
 * `ws.send` it to each subscriber, which frames it and writes it to that socket separately
 * (a Buffer as a binary frame, a string as a text frame).
 */
startHub('ws-naive', portFromEnv(), (subscribers, room, data) => {
  const message = Buffer.isBuffer(data) ? binaryMsgFrame(room, data) : messageFrame(room, data)
  for (const ws of subscribers) {
    if (ws.readyState === WebSocket.OPEN) ws.send(message)
  }
})
