/*
 * Frame-size rules of the wire contract, shared by the server (which enforces them) and the
 * SDK (which refuses an oversize command before sending it rather than be closed with 1009).
 */

/**
 * Room in one frame for a command's envelope beside its payload: ids, room name, idempotency
 * key and keys, with margin (the schemas bound each of them far below this).
 */
export const ENVELOPE_BYTES = 1024

/**
 * The largest WebSocket frame a client may send: a payload of `maxMessageBytes` as base64
 * (4 characters per 3 bytes) plus its envelope. A larger frame closes the socket (1009); a
 * payload over `maxMessageBytes` in a smaller frame is refused with an error and the socket
 * stays open.
 */
export function maxFrameBytes (maxMessageBytes: number): number {
  return 4 * Math.ceil(maxMessageBytes / 3) + ENVELOPE_BYTES
}
