// A rolling deploy must not be held hostage by a slow client. Node stops enforcing its request
// deadlines once the server starts closing, so a client trickling a request body kept the
// process in its graceful close until the grace period ran out, and it exited 1: every
// deploy of that node counted as a failed shutdown.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { tempDir } from '../helper.js'
import { baseEnv, startServer, waitForLog, waitUntilReady, withTimeout } from '../process.js'

const GRACE_MS = 8000
const REQUEST_TIMEOUT_MS = 2000

describe('hostile: shutdown', () => {
  it('a client trickling a request body does not hold a SIGTERM past its request deadline: exit 0', async (t) => {
    const server = await startServer(t, {
      ...baseEnv(tempDir(t)),
      SHUTDOWN_GRACE_MS: String(GRACE_MS),
      WS_DRAIN_MS: '500',
      HTTP_HEADERS_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS)
    })
    await waitUntilReady(server)

    const socket = net.connect(server.port, '127.0.0.1')
    t.after(() => socket.destroy())
    socket.on('error', () => {})
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    // A first, complete request on the connection: its answer proves the server holds the
    // connection before the slow one starts.
    socket.write('GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await new Promise<void>((resolve) => socket.once('data', () => resolve()))
    socket.write('POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{')
    const trickle = setInterval(() => socket.write(' '), 200)
    t.after(() => clearInterval(trickle))

    server.child.kill('SIGTERM')
    await waitForLog(server, /"signal":"SIGTERM"/)
    const { code, signal } = await withTimeout(server.exited, GRACE_MS + 10_000, 'exit after SIGTERM')
    assert.equal(signal, null)
    // close-with-grace exits 1 when the grace period runs out: 0 means the slow request was cut.
    assert.equal(code, 0, server.stdout() + server.stderr())
    await withTimeout(closed, 5000, 'the trickling connection closed')
    assert.match(server.stdout(), /cut at shutdown/)
  })
})
