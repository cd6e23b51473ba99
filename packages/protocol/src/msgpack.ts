import { Packr, Unpackr } from 'msgpackr'

/*
 * The MessagePack settings of `switchboard.v1.msgpack`, shared by the server and the SDK so
 * both write the same standard MessagePack: no msgpackr records (a msgpackr extension other
 * decoders do not read), maps sized to their keys. msgpackr was measured against
 * @msgpack/msgpack on the fan-out path (docs/performance.md, "MessagePack codec libraries").
 *
 * Part of the wire contract (packages/protocol/): the SDK imports it, so it holds nothing of the
 * server. The server reads client frames with a stricter decoder of its own
 * (src/realtime/command-parser.ts): msgpackr's reader also accepts msgpackr's extensions,
 * which a client reading its server can allow and a server reading strangers cannot.
 */

const packr = new Packr({ useRecords: false, variableMapSize: true })

/** One value as MessagePack: objects become maps, Uint8Arrays `bin`, other numbers float64 or int. */
export function encodeMsgpack (value: unknown): Uint8Array {
  return packr.pack(value)
}

/*
 * Maps are read as Map and turned into objects here, not by msgpackr: its own conversion
 * renames a `__proto__` key (to keep it from setting a prototype), and such a key is data a
 * JSON client receives as it was published. Object.fromEntries defines own properties, as
 * JSON.parse does, so no prototype is ever set.
 */
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false })

/** One MessagePack value (the whole input, nothing after it), maps as plain objects. Throws when it does not decode. */
export function decodeMsgpack (bytes: Uint8Array): unknown {
  return plain(unpackr.unpack(bytes))
}

function plain (value: unknown): unknown {
  if (value instanceof Map) return Object.fromEntries([...value].map(([key, item]) => [String(key), plain(item)]))
  if (Array.isArray(value)) return value.map(plain)
  return value
}
