import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { CliError } from '../api.js'

/**
 * A server process seen through Linux /proc (`--server-pid`): CPU time (utime + stime of
 * /proc/PID/stat, in clock ticks) and resident memory (VmRSS of /proc/PID/status).
 */
export interface ProcSample {
  /** utime + stime, in seconds. */
  cpuSeconds: number
  /** VmRSS, in bytes. */
  rssBytes: number
}

let clockTicks: number | undefined

/** `getconf CLK_TCK` (clock ticks per second, 100 on practically every Linux); 100 when getconf is missing. */
export function clkTck (): number {
  if (clockTicks === undefined) {
    try {
      const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim())
      clockTicks = Number.isInteger(value) && value > 0 ? value : 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

/** utime + stime in ticks from the text of /proc/PID/stat (the command name may hold spaces and parentheses). */
export function parseStatTicks (stat: string): number {
  // Fields after "pid (comm) ": state is field 3, utime field 14, stime field 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(fields[14 - 3])
  const stime = Number(fields[15 - 3])
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('unreadable /proc stat line')
  return utime + stime
}

/** VmRSS in bytes from the text of /proc/PID/status. */
export function parseRssBytes (status: string): number {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
  if (match?.[1] === undefined) throw new Error('no VmRSS line')
  return Number(match[1]) * 1024
}

export function sampleProcess (pid: number): ProcSample {
  let stat: string
  let status: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    status = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new CliError(code === 'ENOENT'
      ? `--server-pid ${pid}: no such process (or no /proc: --server-pid needs Linux and the server on this machine)`
      : `--server-pid ${pid}: cannot read /proc/${pid} (${code ?? (err as Error).message})`)
  }
  // A process that exited but was not yet reaped (a zombie) still has /proc/PID, without memory.
  if (!/^VmRSS:/m.test(status)) throw new CliError(`--server-pid ${pid}: the server process has exited`)
  return { cpuSeconds: parseStatTicks(stat) / clkTck(), rssBytes: parseRssBytes(status) }
}
