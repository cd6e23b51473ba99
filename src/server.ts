import type { AddressInfo } from 'node:net'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { loadEnvFile } from './env-file.js'
import { StoreOpenError } from './store/index.js'
import { SHUTDOWN_SIGNALS, onShutdownSignals } from './shutdown-signals.js'

/** How long before the grace period ends requests still open are cut, so the close can finish in it. */
const CUT_BEFORE_GRACE_ENDS_MS = 1000

/**
 * Process entry: load config (a bad value exits 1 with the variable named), build the app,
 * listen, and close gracefully on SIGTERM/SIGINT (the same one twice within a second is one
 * request; a later one exits 1 at once): readiness turns 503 at once, WebSocket
 * clients drain, in-flight requests finish, the store closes, exit 0 — or exit 1 if the grace
 * period runs out.
 */
async function main (): Promise<void> {
  let config
  let envFile
  try {
    envFile = loadEnvFile()
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchboard: configuration error: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }

  let app
  try {
    app = await buildApp(config)
  } catch (err) {
    if (err instanceof StoreOpenError) cannotStart(err.message)
    throw err
  }
  if (envFile !== null) app.log.info({ file: envFile }, 'settings read from .env (the real environment wins)')

  // SIGINT and SIGTERM are sorted by onShutdownSignals (a repeat within a moment is one
  // request); close-with-grace keeps the other signals, fatal errors and the grace deadline.
  const grace = closeWithGrace({ delay: config.shutdownGraceMs, logger: app.log, skip: [...SHUTDOWN_SIGNALS] }, async ({ signal, err }) => {
    const began = Date.now()
    signals.began()
    if (err !== undefined) app.log.error({ err }, 'fatal error, closing')
    else if (signal !== undefined) app.log.info({ signal }, 'shutting down')
    // Readiness fails and WebSocket clients drain while HTTP still answers; then close.
    await app.lifecycle.shutdown()
    // Node stops enforcing request deadlines once the server closes: a client trickling a body
    // would hold the close until the grace period ran out (exit 1), so a slow client could fail
    // every deploy. Past one request deadline every request still open has outlived its own,
    // and just before the grace ends nothing more can finish in time: cut what is left then.
    const cutInMs = Math.max(0, Math.min(config.http.requestTimeoutMs, config.shutdownGraceMs - (Date.now() - began) - CUT_BEFORE_GRACE_ENDS_MS))
    const cut = setTimeout(() => {
      app.log.warn({ afterMs: cutInMs }, 'requests still open past their deadline: connections cut at shutdown')
      app.server.closeAllConnections()
    }, cutInMs)
    try {
      await app.close()
    } finally {
      clearTimeout(cut)
    }
  })

  const signals = onShutdownSignals({
    shutdown: (signal) => {
      app.log.info({ signal }, 'shutting down')
      grace.close()
    },
    repeated: (signal) => { app.log.info({ signal }, 'the same signal again at once: one shutdown request') },
    force: (signal) => {
      app.log.error({ signal }, `second ${signal}, exiting`)
      process.exit(1)
    }
  })

  try {
    await app.listen({ host: config.host, port: config.port })
  } catch (err) {
    const reason = listenFailure(err, config)
    if (reason !== null) cannotStart(reason)
    throw err
  }
  const url = urlToOpen(config, (app.server.address() as AddressInfo).port)
  app.log.info({ url }, `switchboard is running: open ${url}`)
}

/** The address a person on this machine opens: localhost when every interface listens. */
function urlToOpen (config: Config, port: number): string {
  const host = ['0.0.0.0', '::'].includes(config.host) ? 'localhost' : config.host.includes(':') ? `[${config.host}]` : config.host
  return `${config.tls === null ? 'http' : 'https'}://${host}:${port}/`
}

/** A start that failed for a reason the operator fixes outside the code: one line, no stack. */
function cannotStart (message: string): never {
  process.stderr.write(`switchboard: cannot start: ${message}\n`)
  process.exit(1)
}

/** Why listening failed, naming the variable to change; null for anything else. */
function listenFailure (err: unknown, config: Config): string | null {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE': return `PORT: ${config.port} is already in use on ${config.host} (another server running?); set PORT to a free port, or HOST to another address`
    case 'EACCES': return `PORT: ${config.port} needs privileges on this system; set PORT to 1024 or above`
    case 'EADDRNOTAVAIL': return `HOST: ${config.host} is not an address of this machine; set HOST to one of its addresses, or 0.0.0.0 for all`
    case 'ENOTFOUND':
    case 'EAI_AGAIN': return `HOST: ${config.host} does not resolve to an address; set HOST to an address, or 0.0.0.0 for all`
    default: return null
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`switchboard: failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
