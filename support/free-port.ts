import net from 'node:net'

/**
 * A TCP port on 127.0.0.1 that was free a moment ago: for a server process started on a port
 * chosen up front (and, in some tests, restarted on the same one).
 */
export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => {
        if (address === null || typeof address === 'string') reject(new Error('no port'))
        else resolve(address.port)
      })
    })
  })
}
