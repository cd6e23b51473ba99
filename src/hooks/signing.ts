import { createHmac } from 'node:crypto'

/** The request headers every hook call carries (docs/integration.md#verifying-a-hook-call). */
export const HOOK_HEADERS = {
  /** Which hook this is: connect, subscribe, publish, published, join, leave or disconnect. */
  hook: 'x-switchboard-hook',
  /** The call's id: the same on every retry of an event, so the backend can drop a duplicate. */
  id: 'x-switchboard-id',
  /** Unix seconds when this attempt was signed: the backend refuses old ones (replays). */
  timestamp: 'x-switchboard-timestamp',
  /** `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>` under HOOKS_SECRET. */
  signature: 'x-switchboard-signature'
} as const

/**
 * The signature of one attempt: HMAC-SHA256 over the timestamp, a dot and the exact body
 * bytes. The timestamp is inside the MAC, so a captured call replayed later carries a stale
 * one the backend refuses, and a changed timestamp breaks the signature.
 */
export function signHook (secret: string, timestampSeconds: number, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestampSeconds}.`).update(body).digest('hex')}`
}
