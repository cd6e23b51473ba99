import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig } from './config.js'

/**
 * Process entry: load config (a bad value exits 1 with the variable named), build the app,
 * listen, and close gracefully on SIGTERM/SIGINT: readiness turns 503 at once, WebSocket
 * clients drain, in-flight requests finish, the store closes, exit 0 — or exit 1 if the grace
 * period runs out.
 */
async function main (): Promise<void> {
  let config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`switchboard: configuration error: ${err.message}\n`)
      process.exit(1)
    }
    throw err
  }

  const app = await buildApp(config)

  closeWithGrace({ delay: config.shutdownGraceMs, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'fatal error, closing')
    else app.log.info({ signal }, 'shutting down')
    // Readiness fails and WebSocket clients drain while HTTP still answers; then close.
    await app.lifecycle.shutdown()
    await app.close()
  })

  await app.listen({ host: config.host, port: config.port })
}

main().catch((err: unknown) => {
  process.stderr.write(`switchboard: failed to start: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
