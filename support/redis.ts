import { Redis } from 'ioredis'

/** Deletes every key under `prefix` (a test's or a lab run's private key prefix) from the Redis at `url`. */
export async function deleteRedisKeys (url: string, prefix: string): Promise<void> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 3000, disconnectTimeout: 100, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await client.unlink(...keys)
    } while (cursor !== '0')
    // QUIT rather than disconnect(): it leaves no close timer behind (some tests count timers).
    await client.quit()
  } catch (err) {
    client.disconnect()
    throw err
  }
}
