import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import fastifyStatic from '@fastify/static'

/**
 * Where `scripts/build-web.mjs` puts the bundle: `<root>/dist/web`, whether this module runs
 * compiled (`<root>/dist/plugins/web.js`) or from source through tsx (`<root>/plugins/web.ts`).
 */
export function defaultWebDir (): string {
  const here = dirname(fileURLToPath(import.meta.url))
  const root = basename(dirname(here)) === 'dist' ? dirname(dirname(here)) : dirname(here)
  return join(root, 'dist', 'web')
}

export interface WebOptions {
  /** The built web app (index.html and assets/); defaults to defaultWebDir(). */
  dir?: string
}

const NOT_BUILT = 'The Switchboard web app is not built. Run `npm run build` (or `npm start`, which builds it), then reload.\n' +
  'The API is unaffected: see /docs.\n'

/**
 * The web app (docs/web.md) at `/`: index.html never cached, so a new build is picked up on
 * the next load, and the content-hashed files under /assets/ cached for a year as immutable.
 *
 * Not wrapped in fastify-plugin, like a route folder: the @fastify/static instance stays
 * encapsulated here, so it does not clash with the one @fastify/swagger-ui registers for /docs.
 * A missing bundle is not fatal: the API (and the tests that only use it) work without it.
 */
export default async function webPlugin (app: FastifyInstance, options: WebOptions): Promise<void> {
  const dir = options.dir ?? defaultWebDir()
  const index = join(dir, 'index.html')
  // Read once, like the asset list below: the page and its assets always come from one build
  // (a rebuild is served after a restart, never half of it before).
  const html = existsSync(join(dir, 'assets')) ? await readFile(index, 'utf8').catch(() => null) : null
  if (html === null) app.log.warn({ dir }, 'web app not built: GET / explains how to build it (npm run build)')

  app.get('/', { schema: { hide: true } }, async (_request, reply) => {
    if (html === null) return reply.code(503).type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(NOT_BUILT)
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(html)
  })

  if (html === null) return
  await app.register(fastifyStatic, {
    root: join(dir, 'assets'),
    prefix: '/assets/',
    // Only the files of this build get routes (listed at start): no catch-all that would take
    // unknown paths away from the app's JSON 404 handler.
    wildcard: false,
    decorateReply: false,
    index: false,
    maxAge: '365d',
    immutable: true
  })
}
