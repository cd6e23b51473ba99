import { Packr, Unpackr } from 'msgpackr'

/*
 * The MessagePack settings of `switchboard.v1.msgpack`, shared by the server and the SDK so
 * both write the same standard MessagePack: no msgpackr records (a msgpackr extension other
 * decoders do not read), maps sized to their keys. msgpackr was measured against
 * @msgpack/msgpack on the fan-out path (docs/performance.md, "MessagePack codec libraries").
 *
 * Part of the wire contract (src/protocol/): the SDK imports it, so it holds nothing of the
 * server. The server reads client frames more strictly (src/realtime/command-parser.ts).
 */

const packr = new Packr({ useRecords: false, variableMapSize: true })

/** One value as MessagePack: objects become maps, Uint8Arrays `bin`, other numbers float64 or int. */
export function encodeMsgpack (value: unknown): Uint8Array {
  return packr.pack(value)
}

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

/** One MessagePack value (the whole input, nothing after it), maps as plain objects. Throws when it does not decode. */
export function decodeMsgpack (bytes: Uint8Array): unknown {
  return unpackr.unpack(bytes)
}
