/**
 * How the server reads a request URL's query: pairs split and names and values decoded exactly
 * as URLSearchParams does, without building one. The WebSocket handshake reads its credentials
 * with it (src/auth/credentials.ts) and the logs redact with it (src/logger.ts), so a parameter
 * the handshake accepts is always one the logs censor, however its name is spelled.
 */

/**
 * A query name or value decoded as URLSearchParams decodes it: `+` a space, %XX escapes, bad
 * escapes kept as they are; never throws. Text without `%` or `+` is returned as it is.
 */
export function decodeQueryComponent (raw: string): string {
  if (!raw.includes('%') && !raw.includes('+')) return raw
  // An empty name keeps the whole text as the value, `=` included.
  return new URLSearchParams(`=${raw}`).values().next().value ?? raw
}

/**
 * Visits each parameter of `url`'s query (what follows its first `?`), in order, as
 * URLSearchParams splits it: one more leading `?` dropped, pairs split on `&`, empty pairs
 * skipped, the name ending at the pair's first `=`. `visit` gets the decoded name and the raw
 * value's bounds in `url` (`valueStart` is -1 when the pair has no `=`: URLSearchParams reads
 * an empty value); returning `false` stops the walk.
 */
export function walkQuery (url: string, visit: (name: string, valueStart: number, end: number) => boolean | undefined): void {
  let at = url.indexOf('?')
  if (at === -1) return
  at++
  if (url.charCodeAt(at) === 0x3f /* ? */) at++
  while (at <= url.length) {
    let end = url.indexOf('&', at)
    if (end === -1) end = url.length
    if (end > at) {
      let equals = url.indexOf('=', at)
      if (equals === -1 || equals > end) equals = end
      const name = decodeQueryComponent(url.slice(at, equals))
      if (visit(name, equals === end ? -1 : equals + 1, end) === false) return
    }
    at = end + 1
  }
}

/** What `queryParam` found: no such parameter, or more than one (which was meant is anyone's guess). */
export const ABSENT = 0
export const REPEATED = 1

/** The decoded value of the parameter `name` in `url`'s query: `ABSENT`, `REPEATED` or the one value. */
export function queryParam (url: string, name: string): string | typeof ABSENT | typeof REPEATED {
  let found: string | typeof ABSENT | typeof REPEATED = ABSENT
  walkQuery(url, (candidate, valueStart, end) => {
    if (candidate !== name) return undefined
    if (found !== ABSENT) {
      found = REPEATED
      return false
    }
    found = valueStart === -1 ? '' : decodeQueryComponent(url.slice(valueStart, end))
    return undefined
  })
  return found
}
