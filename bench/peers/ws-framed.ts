import { portFromEnv, startHub } from './hub-protocol.js'
import { frameOnceBroadcast, trackSocket } from './frame-once.js'

/** The frame-once `ws` room hub (frame-once.ts): the stack's ceiling on one process. */
startHub('ws-framed', portFromEnv(), frameOnceBroadcast).on('connection', trackSocket)
