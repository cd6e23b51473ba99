import os from 'node:os'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { Decoder, Encoder } from '@msgpack/msgpack'
import { isNativeAccelerationEnabled, Packr, Unpackr } from 'msgpackr'

/**
 * The two maintained MessagePack libraries on the paths issue 20's codec takes (docs/performance.md,
 * "MessagePack codec libraries"): msgpackr and @msgpack/msgpack, each set up to write and read
 * standard MessagePack only (no records, no extensions of their own).
 *
 * - encode: the server's `message` frame of one publication, what the fan-out encodes once per
 *   publication for every subscriber on the codec; its data 1 KiB of bytes (msgpack `bin`), or a
 *   small JSON object;
 * - decode: a client's `publish` command, what the server decodes once per publish.
 *
 * Each case runs for a fixed time per round, the libraries alternating within a round so that
 * a slow stretch of the machine hits both; the median of the rounds is reported. JSON (bytes as
 * base64, the `switchboard.v1` codec) is measured beside them as the reference. Then a probe
 * counts calls of the `Function` constructor during each library's work: the web app runs under
 * a CSP without 'unsafe-eval'.
 *
 *   node --import tsx bench/msgpack-codecs.ts [--rounds 7] [--ms 300]
 *
 * MSGPACKR_NATIVE_ACCELERATION_DISABLED=true measures msgpackr without its optional native
 * string reader (msgpackr-extract), as in a browser.
 */

const USAGE = `bench/msgpack-codecs.ts — msgpackr against @msgpack/msgpack on the fan-out path
  --rounds N   rounds per case (default 7); the median is reported
  --ms N       milliseconds per library per round (default 300)`

interface Codec {
  name: string
  encode (value: unknown): Uint8Array
  decode (bytes: Uint8Array): unknown
}

/** What the server would use on the `switchboard.v1.msgpack` subprotocol with each library. */
function codecs (): Codec[] {
  const packr = new Packr({ useRecords: false, variableMapSize: true })
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: 'bigint' })
  // encode() copies the written bytes out of the encoder's reused buffer: the fan-out keeps a
  // frame while sockets drain, so a view into a buffer the next encode overwrites will not do.
  const encoder = new Encoder({ useBigInt64: true })
  const decoder = new Decoder({ useBigInt64: true })
  return [
    { name: 'msgpackr', encode: v => packr.pack(v), decode: b => unpackr.unpack(b) },
    { name: '@msgpack/msgpack', encode: v => encoder.encode(v), decode: b => decoder.decode(b) }
  ]
}

/** The JSON codec of `switchboard.v1`: bytes travel as standard base64 beside `"encoding":"base64"`. */
const json: Codec = {
  name: 'JSON (bytes as base64)',
  encode: (v) => Buffer.from(JSON.stringify(v, (_key, value: unknown) => value instanceof Uint8Array ? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') : value)),
  decode: (b) => {
    const frame = JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8')) as { data?: unknown, encoding?: unknown }
    if (frame.encoding === 'base64' && typeof frame.data === 'string') frame.data = Buffer.from(frame.data, 'base64')
    return frame
  }
}

/** JSON has no bytes: the frame JSON would carry for the same publication. */
function asJson (frame: Record<string, unknown>): Record<string, unknown> {
  return frame.data instanceof Uint8Array ? { ...frame, encoding: 'base64' } : frame
}

interface Case {
  name: string
  kind: 'encode' | 'decode'
  /** The frame as an object (encode), from which the bytes to decode are made (decode). */
  frame: Record<string, unknown>
}

const KIB = new Uint8Array(randomBytes(1024))
const CHAT = { text: 'hello world', n: 3 }

const CASES: Case[] = [
  { name: 'encode `message`, data 1 KiB bin', kind: 'encode', frame: { type: 'message', room: 'bench', epoch: 'abcdEFGH123', offset: 1, data: KIB, from: { id: 'u1' }, ts: Date.now() } },
  { name: 'encode `message`, data {text, n}', kind: 'encode', frame: { type: 'message', room: 'bench', epoch: 'abcdEFGH123', offset: 1, data: CHAT, from: { id: 'u1' }, ts: Date.now() } },
  { name: 'decode `publish`, data 1 KiB bin', kind: 'decode', frame: { type: 'publish', id: 7, room: 'bench', data: KIB } },
  { name: 'decode `publish`, data {text, n}', kind: 'decode', frame: { type: 'publish', id: 7, room: 'bench', data: CHAT } }
]

/** Keeps results alive so that no engine drops the work as dead code. */
let sink = 0

/**
 * One timed stretch: ops per second of `op` over about `ms` milliseconds. The message frame
 * is encoded with a new offset each time, as the fan-out does.
 */
function timed (op: (i: number) => number, ms: number): number {
  let ops = 0
  let batch = 64
  const start = performance.now()
  let elapsed = 0
  while (elapsed < ms) {
    for (let i = 0; i < batch; i++) sink += op(ops + i)
    ops += batch
    elapsed = performance.now() - start
    if (elapsed < ms / 10) batch *= 2
  }
  return ops / (elapsed / 1000)
}

/** The operation a case times with `codec`, over bytes made by `maker` (for decode cases). */
function operation (c: Case, codec: Codec, maker: Codec): (i: number) => number {
  if (c.kind === 'encode') {
    const frame = codec === json ? asJson(c.frame) : { ...c.frame }
    return (i) => {
      frame.offset = i
      return codec.encode(frame).byteLength
    }
  }
  const bytes = codec === json ? json.encode(asJson(c.frame)) : maker.encode(c.frame)
  return () => {
    const out = codec.decode(bytes)
    return out === undefined ? 0 : 1
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/**
 * The two libraries must read each other's bytes as the same frame: the comparison is of two
 * implementations of one format. Fails loudly rather than timing a codec that is wrong.
 */
function checkInterop (list: Codec[]): void {
  for (const c of CASES) {
    for (const writer of list) {
      for (const reader of list) {
        const back = reader.decode(writer.encode(c.frame))
        const data = back instanceof Map ? back.get('data') as unknown : (back as { data?: unknown }).data
        const ok = c.frame.data instanceof Uint8Array
          ? data instanceof Uint8Array && Buffer.compare(Buffer.from(data), Buffer.from(c.frame.data)) === 0
          : JSON.stringify(data instanceof Map ? Object.fromEntries(data) : data) === JSON.stringify(c.frame.data)
        if (!ok) throw new Error(`${reader.name} did not read back what ${writer.name} wrote (${c.name})`)
      }
    }
  }
}

/**
 * Counts calls of the Function constructor (`new Function`, `Function(...)`) while `work` runs.
 * eval would need a separate probe; neither library's dist calls it (docs/performance.md).
 */
function functionCalls (work: () => void): number {
  const original = globalThis.Function
  let calls = 0
  const probe = new Proxy(original, {
    construct (target, args: unknown[]) { calls++; return Reflect.construct(target, args) as object },
    apply (target, self, args: unknown[]) { calls++; return Reflect.apply(target, self, args) as unknown }
  })
  globalThis.Function = probe
  try {
    work()
  } finally {
    globalThis.Function = original
  }
  return calls
}

/**
 * A frame written with msgpackr's records (ext 0x72 definitions and record ids): what a client
 * could send. The probe decodes it with the server's settings (useRecords: false) too.
 */
function recordFrame (): Uint8Array {
  const rows = Array.from({ length: 8 }, (_, i) => ({ a: i, b: 'x' }))
  return new Packr({ useRecords: true }).pack({ type: 'publish', id: 1, room: 'bench', data: rows })
}

function main (): void {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '7' },
      ms: { type: 'string', default: '300' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  const rounds = Number(values.rounds)
  const ms = Number(values.ms)
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 101) throw new Error('--rounds: a whole number from 1 to 101')
  if (!Number.isFinite(ms) || ms < 10 || ms > 10_000) throw new Error('--ms: milliseconds from 10 to 10000')

  const list = codecs()
  checkInterop(list)
  const all = [...list, json]
  const cpu = os.cpus()[0]?.model ?? 'unknown'
  process.stdout.write(`${new Date().toISOString()} ${os.cpus().length} × ${cpu}, Node ${process.version}, load average ${os.loadavg().map(n => n.toFixed(2)).join(' / ')}\n`)
  process.stdout.write(`msgpackr native string reader (msgpackr-extract): ${isNativeAccelerationEnabled ? 'on' : 'off'}; ${rounds} rounds of ${ms} ms per library per case\n\n`)

  const [msgpackr, msgpack] = [list[0]!, list[1]!]
  const header = `| Case | ${all.map(c => `${c.name}, ops/s`).join(' | ')} | msgpackr ÷ @msgpack/msgpack, round by round | frame bytes (msgpack / JSON) |`
  const lines = [header, `|---|${all.map(() => '---:').join('|')}|---:|---:|`]
  for (const c of CASES) {
    const ops = all.map(codec => ({ codec, op: operation(c, codec, msgpackr), samples: [] as number[] }))
    // Warm-up: V8 optimises each path before it is timed.
    for (const o of ops) timed(o.op, ms / 2)
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? ops : [...ops].reverse()
      for (const o of order) o.samples.push(timed(o.op, ms))
    }
    const medians = ops.map(o => median(o.samples))
    const spread = (i: number): string => {
      const s = ops[i]!.samples
      return `${fmt(medians[i]!)} (${fmt(Math.min(...s))}–${fmt(Math.max(...s))})`
    }
    // The ratio round by round: a slow stretch that covers one round moves both libraries.
    const ratios = ops[0]!.samples.map((s, i) => s / ops[1]!.samples[i]!)
    const packed = msgpack.encode(c.frame).byteLength
    const text = json.encode(asJson(c.frame)).byteLength
    lines.push(`| ${c.name} | ${all.map((_, i) => spread(i)).join(' | ')} | ${median(ratios).toFixed(2)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) | ${packed} / ${text} |`)
    process.stderr.write(`done: ${c.name}\n`)
  }
  process.stdout.write(lines.join('\n') + '\n\n')

  // Runtime code generation: each library's round trips with the settings above, then (msgpackr)
  // a frame with records, which its decoder reads whatever useRecords says.
  const frames = CASES.map(c => c.frame)
  for (const codec of list) {
    const calls = functionCalls(() => {
      for (let i = 0; i < 100; i++) for (const f of frames) codec.decode(codec.encode(f))
    })
    process.stdout.write(`${codec.name}: ${calls} Function constructor call${calls === 1 ? '' : 's'} in 400 round trips of standard frames\n`)
  }
  const records = recordFrame()
  for (const codec of list) {
    let outcome = 'decoded'
    const calls = functionCalls(() => {
      try {
        const value = codec.decode(records)
        outcome = `decoded as ${value instanceof Map ? 'a Map' : typeof value}`
      } catch (err) {
        outcome = `refused (${(err as Error).message.slice(0, 80)})`
      }
    })
    process.stdout.write(`${codec.name}: a frame with msgpackr records (ext 0x72): ${outcome}, ${calls} Function constructor call${calls === 1 ? '' : 's'}\n`)
  }
  if (sink === -1) process.stdout.write('\n')
}

function fmt (n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`
  if (n >= 1e3) return `${Math.round(n / 1e3)} k`
  return String(Math.round(n))
}

main()
