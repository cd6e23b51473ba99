import { WebSocket } from 'ws'
import { messageFrame, portFromEnv, startHub } from './hub-protocol.js'

/**
 * The naive `ws` room hub, what most people write: serialise the message once, then
 * `ws.send` it to each subscriber, which frames it and writes it to that socket separately.
 */
startHub('ws-naive', portFromEnv(), (subscribers, room, data) => {
  const text = messageFrame(room, data)
  for (const ws of subscribers) {
    if (ws.readyState === WebSocket.OPEN) ws.send(text)
  }
})
