import { outageLogThrottle } from '../redis.js'

/** The slice of pino the limits use. */
export interface FallbackLog {
  warn(obj: object, msg: string): void
}

/**
 * Wraps a cluster-wide limiter (in Redis) so that each call that fails — Redis unreachable,
 * a timeout — is answered by a per-process limiter instead. A limit must neither lock
 * everyone out nor vanish while Redis is away: it degrades to one node's view and returns
 * to the cluster's as soon as Redis answers again.
 */
export function withLocalFallback<T extends object> (clustered: T, local: T, log: FallbackLog, what: string): T {
  const throttle = outageLogThrottle()
  const wrapped = {} as Record<string, unknown>
  for (const name of Object.keys(clustered) as Array<keyof T & string>) {
    const call = clustered[name]
    const fallback = local[name]
    if (typeof call !== 'function' || typeof fallback !== 'function') continue
    wrapped[name] = async (...args: unknown[]) => {
      try {
        return await (call as (...a: unknown[]) => Promise<unknown>).apply(clustered, args)
      } catch (err) {
        const due = throttle()
        if (due !== null) log.warn({ err, suppressed: due.suppressed }, `${what}: Redis unavailable, enforcing this node's own count`)
        return await (fallback as (...a: unknown[]) => Promise<unknown>).apply(local, args)
      }
    }
  }
  return wrapped as T
}
