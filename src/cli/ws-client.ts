import { SwitchboardClient, type CodecName, type ReconnectOptions } from '@switchboard/client'
import { WebSocket } from 'ws'
import { CliError, type Api } from './api.js'

/** `--codec json|msgpack` (json when absent): the WebSocket codec of `sub`, `pub --file` and `connect`. */
export function parseCodec (value: string | undefined): CodecName {
  if (value === undefined || value === 'json' || value === 'msgpack') return value ?? 'json'
  throw new CliError(`--codec must be json or msgpack, got "${value}"`, 2)
}

/**
 * An SDK client signed in as the stored session: the stored access token first; afterwards
 * (expiry, a 4001 close) a refreshed one, which is saved for the next run.
 */
export function sessionClient (api: Api, options: { codec: CodecName, reconnect?: ReconnectOptions }): SwitchboardClient {
  if (api.accessToken === undefined) throw new CliError('not logged in: run `switchboard login`')
  let fresh = true
  return new SwitchboardClient({
    url: api.url,
    codec: options.codec,
    // Given, not left to the SDK's lookup of `ws` at run time: the installed command is one
    // bundle with ws inside, and nothing to look it up in (Node 20 has no global WebSocket).
    WebSocket,
    ...(options.reconnect === undefined ? {} : { reconnect: options.reconnect }),
    getToken: async () => {
      if (fresh) {
        fresh = false
        return api.accessToken!
      }
      if (!(await api.refresh())) throw new CliError('session expired: run `switchboard login` again')
      return api.accessToken!
    }
  })
}
