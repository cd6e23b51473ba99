/**
 * What the real-time core needs from a socket, and nothing more, so the core runs without
 * Fastify or even ws (tests can drive it with a fake). routes/ws adapts a ws WebSocket to it.
 */

/** A server frame serialised (and, for ws, framed) once, writable to any number of sockets. */
export interface PreparedFrame {
  /** Bytes this frame adds to a socket's outbound buffer. */
  readonly byteLength: number
}

/**
 * Frames a message once, for every transport of one kind: text (JSON) as a text frame, bytes
 * (MessagePack) as a binary frame.
 */
export type PrepareFrame = (message: string | Uint8Array) => PreparedFrame

export interface Transport {
  /**
   * Queues a prepared frame; writes within one event-loop tick leave in one syscall. An
   * `answer` (a reply, an error, the welcome: what this client is waiting for) makes this
   * socket flush before the sockets that only carry fan-out in the same tick.
   */
  write(frame: PreparedFrame, answer?: boolean): void
  /** Bytes queued but not yet handed to the kernel. */
  readonly bufferedAmount: number
  /** Starts the close handshake. */
  close(code: number, reason: string): void
  /** Destroys the socket at once (no handshake). */
  terminate(): void
  /** Sends a WebSocket ping; `onPong` fires when the answer comes. */
  ping(): void
}

/** Events a transport feeds into the core's connection (Connection implements it). */
export interface TransportSink {
  handleText(text: string): void
  handleBinary(bytes: Uint8Array): void
  handlePong(): void
  handleClose(code: number): void
  handleError(err: Error): void
}
