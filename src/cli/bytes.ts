import { readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs'
import { basename, join, relative, resolve, isAbsolute } from 'node:path'
import { CliError } from './api.js'

/*
 * Raw-byte payloads on the command line: read from a file or stdin, shown as base64 in JSON
 * lines (as JSON frames and the REST API carry them), written to files with `sub --out`.
 */

/** The bytes of `path`; a CliError that names the file and the reason when it cannot be read. */
export function readBytesFile (path: string): Uint8Array {
  try {
    return readFileSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new CliError(`cannot read ${path}${code === undefined ? '' : ` (${code})`}`, code === 'ENOENT' || code === 'EISDIR' ? 2 : 1)
  }
}

/** Everything on stdin, as bytes (no newline trimmed: the bytes are the payload). */
export async function readBytesStdin (): Promise<Uint8Array> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Standard base64 of bytes. */
export function base64 (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')
}

/**
 * A value for a JSON line: every object whose `data` is bytes gets them as standard base64,
 * with `"encoding":"base64"` right after (the shape of JSON frames and of REST history).
 */
export function withBase64 (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withBase64)
  if (typeof value !== 'object' || value === null) return value
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(value)) {
    if (key === 'data' && item instanceof Uint8Array) {
      out.data = base64(item)
      out.encoding = 'base64'
    } else {
      out[key] = withBase64(item)
    }
  }
  return out
}

/** Room names as the server accepts them (and so safe as part of a file name: no separator, no leading dot). */
const SAFE_ROOM = /^[a-z0-9][a-z0-9_.:-]{0,63}$/

/** Refuses, before subscribing, a room whose name could not be part of a file name in `--out`. */
export function checkOutRoom (room: string): void {
  if (!SAFE_ROOM.test(room)) throw new CliError(`--out: "${room}" is not a room name (lowercase letters, digits, _ . : -)`, 2)
}

/**
 * Writes one binary publication to `<dir>/<room>-<offset>.bin` and returns the path. Never
 * outside `dir`: the name has no separator, and the file is written under a temporary name
 * created exclusively (which fails on an existing file or symlink instead of following it),
 * then renamed over the final name (a rename replaces a symlink, never writes through it), so a
 * reader never sees half a file either. An existing file of that name is replaced.
 */
export function writePublication (dir: string, room: string, offset: number, bytes: Uint8Array): string {
  const name = `${room}-${offset}.bin`
  const file = join(dir, name)
  const inside = relative(resolve(dir), resolve(file))
  if (!SAFE_ROOM.test(room) || basename(name) !== name || inside !== name || isAbsolute(inside)) {
    throw new CliError(`refusing to write ${file}: not a plain file name inside ${dir}`)
  }
  const temporary = join(dir, `.${name}.${process.pid}.tmp`)
  try {
    try {
      writeFileSync(temporary, bytes, { flag: 'wx' })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      // Left by an earlier run of this pid number: removing it removes a symlink itself, not its target.
      unlinkSync(temporary)
      writeFileSync(temporary, bytes, { flag: 'wx' })
    }
    renameSync(temporary, file)
  } catch (err) {
    throw new CliError(`cannot write ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  return file
}
