import { performance } from 'node:perf_hooks'
import { constants, deflateRawSync, type ZlibOptions } from 'node:zlib'
import * as wsModule from 'ws'
import type { PerMessageDeflateOptions, WebSocket } from 'ws'
import { frameWithHeader, headerBytes, type WsFrame } from './ws-frames.js'

/*
 * permessage-deflate (RFC 7692) for frames the server writes itself. ws negotiates the
 * extension and inflates what clients send, but our frames bypass ws's `send` (they are
 * pre-built once and written to every subscriber's socket, src/realtime/ws-transport.ts), so
 * ws's per-socket deflate never sees them: the compressed variant of a frame is built here,
 * once per prepared frame, and shared by every socket that negotiated compression, as the
 * plain frame is. docs/protocol.md ("Compression") and docs/performance.md ("Compression")
 * give the terms and the costs.
 */

/** The extension's name in Sec-WebSocket-Extensions and in ws's `extensions`. */
const EXTENSION = 'permessage-deflate'

/**
 * The server's LZ77 window, log2 bytes, announced as `server_max_window_bits`. A message is
 * deflated once for every client, so one window must suit them all: a client that asks for a
 * smaller one is not granted compression (`declineNarrowOffers`) and gets plain frames. 4 KiB
 * compresses chat-sized JSON as well as 32 KiB does and history pages almost as well, while a
 * client inflating our frames needs only a 4 KiB window.
 */
export const SERVER_WINDOW_BITS = 12

/**
 * Payloads larger than this go uncompressed even to compressing sockets. Deflate runs
 * synchronously on the event loop (an asynchronous one would have to hold back every later
 * frame of every socket the frame goes to, to keep their order), so its cost per frame must
 * stay small: this covers any chat publication, but not the largest history pages
 * (HISTORY_PAGE_BYTES), which a client could otherwise ask for again and again to spend the
 * server's CPU.
 */
export const MAX_DEFLATE_BYTES = 65_536

/**
 * A fresh deflate per message (no context takeover): the window above, zlib's default memory
 * level, and level 1, which compresses chat JSON within a percent of the default level for
 * less CPU (docs/performance.md). Z_SYNC_FLUSH ends the output with the empty stored block
 * RFC 7692 §7.2.1 asks to remove.
 */
const DEFLATE_OPTIONS: ZlibOptions = { windowBits: SERVER_WINDOW_BITS, level: 1, memLevel: 8, finishFlush: constants.Z_SYNC_FLUSH }
/** 0x00 0x00 0xff 0xff, the end of a sync flush, removed from every compressed payload. */
const SYNC_FLUSH_TRAILER = 4
/** RSV1 in a frame's first byte: "this message is compressed" (RFC 7692 §6). */
const RSV1 = 0x40

/**
 * What ws negotiates (plugins/websocket.ts). No context takeover either way: each message is
 * deflated on its own (ours once for every socket, which a per-socket context would forbid),
 * and no client's compression state outlives a message. The client's window is left to the
 * client (ws would refuse compression to a client whose offer has no `client_max_window_bits`
 * if we asked for one); its inflater is released after each message instead
 * (`releaseInflaterBetweenMessages`).
 * `threshold` matches ours, for anything ws itself would send; `concurrencyLimit` bounds the
 * inflations in progress at once, process-wide, and with them the memory they hold.
 */
export function perMessageDeflateOptions (threshold: number): PerMessageDeflateOptions {
  return {
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    serverMaxWindowBits: SERVER_WINDOW_BITS,
    threshold,
    concurrencyLimit: 10
  }
}

/** Running totals for the metrics (src/metrics.ts reads them at scrape time). */
export interface CompressionTotals {
  /** Payloads deflated: once per prepared frame that a compressing socket was handed, whatever the number of sockets. */
  deflates: number
  /** Event-loop seconds spent in those deflates. */
  deflateSeconds: number
  /** Frames written compressed, one per socket. */
  framesCompressed: number
  /** For those frames, uncompressed frame bytes minus the compressed frame bytes written. */
  bytesSaved: number
}

/**
 * The compression of one server: which frames go compressed to sockets that negotiated it,
 * and what that cost and saved.
 */
export class WsDeflate {
  readonly totals: CompressionTotals = { deflates: 0, deflateSeconds: 0, framesCompressed: 0, bytesSaved: 0 }

  /** `threshold`: payloads of fewer bytes go uncompressed (WS_COMPRESSION_THRESHOLD). */
  constructor (readonly threshold: number) {}

  /** The bytes to write of `frame` to a socket that negotiated permessage-deflate. */
  bytesFor (frame: WsFrame): Buffer {
    let deflated = frame.deflated
    if (deflated === undefined) frame.deflated = deflated = this.deflate(frame)
    if (deflated === null) return frame.bytes
    this.totals.framesCompressed++
    this.totals.bytesSaved += frame.bytes.length - deflated.length
    return deflated
  }

  /** The frame's compressed variant, or null when it goes uncompressed. */
  private deflate (frame: WsFrame): Buffer | null {
    const payload = frame.payload
    if (payload.length < this.threshold || payload.length > MAX_DEFLATE_BYTES) return null
    const started = performance.now()
    const compressed = deflatedFrame(frame.bytes[0]!, payload)
    this.totals.deflates++
    this.totals.deflateSeconds += (performance.now() - started) / 1000
    // Incompressible payloads (random bytes) would cost every client an inflate for nothing.
    return compressed.length < frame.bytes.length ? compressed : null
  }
}

/**
 * One compressed frame (RFC 7692 §7.2.1): `payload` raw-deflated on its own, the sync flush's
 * trailing 0x00 0x00 0xff 0xff removed, RSV1 set in `first` (FIN and the opcode of the
 * uncompressed frame, 0x81 or 0x82).
 */
export function deflatedFrame (first: number, payload: Uint8Array): Buffer {
  const deflated = deflateRawSync(payload, DEFLATE_OPTIONS)
  const length = deflated.length - SYNC_FLUSH_TRAILER
  const frame = frameWithHeader(first | RSV1, length)
  deflated.copy(frame, headerBytes(length), 0, length)
  return frame
}

/** Offers of a Sec-WebSocket-Extensions header: extension name → offers → parameter → values. */
type Offers = Record<string, Array<Record<string, Array<string | true>>>>
// ws's header parser and formatter: exported by ws, left out of its type definitions.
const { extension } = wsModule as unknown as { extension: { parse(header: string): Offers, format(offers: Offers): string } }

/**
 * The Sec-WebSocket-Extensions header without the permessage-deflate offers that ask for a
 * server window smaller than ours (undefined when nothing is left). ws refuses the whole
 * handshake (400) when no offer suits it; such a client is declined compression instead and
 * connects with plain frames, as RFC 7692 §5 lets a server decline. A header ws cannot parse
 * is returned as it is: ws answers it with 400.
 */
export function declineNarrowOffers (header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  let offers: Offers
  try {
    offers = extension.parse(header)
  } catch {
    return header
  }
  const deflate = offers[EXTENSION]
  if (deflate === undefined) return header
  const kept = deflate.filter(offer => offer.server_max_window_bits === undefined || Number(offer.server_max_window_bits[0]) >= SERVER_WINDOW_BITS)
  if (kept.length === deflate.length) return header
  if (kept.length === 0) delete offers[EXTENSION]
  else offers[EXTENSION] = kept
  const rest = extension.format(offers)
  return rest === '' ? undefined : rest
}

/** Whether this connection's handshake agreed on permessage-deflate. */
export function negotiatedDeflate (ws: WebSocket): boolean {
  return ws.extensions === EXTENSION
}

/** What this module needs of ws's PerMessageDeflate (lib/permessage-deflate.js), which ws keeps private. */
interface PerMessageDeflate {
  _inflate: { close(): void } | null
  decompress(data: Buffer, fin: boolean, callback: (err: Error | null, result?: Buffer) => void): void
}

function extensionOf (ws: WebSocket): PerMessageDeflate | undefined {
  return (ws as unknown as { _extensions: Record<string, PerMessageDeflate | undefined> })._extensions[EXTENSION]
}

/**
 * ws creates a connection's inflater on its first compressed message and, without context
 * takeover, only resets it after each message: the zlib stream and its window (up to 32 KiB,
 * the client's choice) then stay with the connection for its whole life, idle or not. Here
 * the inflater is closed once each message is whole, so an idle connection holds none; the
 * next compressed message makes a new one. Call it right after the upgrade.
 */
export function releaseInflaterBetweenMessages (ws: WebSocket): void {
  const extension = extensionOf(ws)
  // An own property shadowing the prototype's method, the same function for every socket.
  if (extension !== undefined) extension.decompress = decompressThenRelease
}

function decompressThenRelease (this: PerMessageDeflate, data: Buffer, fin: boolean, callback: (err: Error | null, result?: Buffer) => void): void {
  (Object.getPrototypeOf(this) as PerMessageDeflate).decompress.call(this, data, fin, (err, result) => {
    // ws is done with the inflater for this message (after an error it has dropped it already).
    if (fin && this._inflate !== null) {
      this._inflate.close()
      this._inflate = null
    }
    callback(err, result)
  })
}
