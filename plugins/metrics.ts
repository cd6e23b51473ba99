import fp from 'fastify-plugin'
import { createMetrics, type Metrics } from '../src/metrics.js'
import type { RealtimeMetrics } from '../src/realtime/metrics.js'
import type { CompressionTotals } from '../src/realtime/ws-deflate.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
    realtimeMetrics: RealtimeMetrics
  }
}

/**
 * Prometheus metrics (src/metrics.ts): `app.metrics` for GET /metrics, `app.realtimeMetrics`
 * for the real-time core. Nothing here runs a timer per app; the process-wide monitors are shared.
 */
export default fp(async (app) => {
  const { poolStats } = app.store
  // The engine comes later (the realtime plugin depends on this one): read at scrape time.
  const historyBytes = (): number | undefined => app.hasDecorator('realtimeEngine') ? app.realtimeEngine.history.bytesHeld?.() : undefined
  // Compression is set up by the websocket plugin, later still.
  const compression = (): CompressionTotals | undefined => app.hasDecorator('wsDeflate') ? app.wsDeflate?.totals : undefined
  // The hooks come later too (they report into these metrics).
  const hookQueueBytes = app.config.hooks === null ? {} : { hookQueueBytes: (): number | undefined => app.hasDecorator('backendHooks') ? app.backendHooks.queuedBytes() : undefined }
  const archivePending = (): number | undefined => app.hasDecorator('realtimeEngine') ? app.realtimeEngine.archivePending?.() : undefined
  const metrics = createMetrics(poolStats === undefined ? { historyBytes, compression, archivePending, ...hookQueueBytes } : { databasePool: poolStats, historyBytes, compression, archivePending, ...hookQueueBytes })
  app.decorate('metrics', metrics)
  app.decorate('realtimeMetrics', metrics.realtime)
  // Every response, the refusals of hooks and the 404s included. routeOptions.url is the
  // pattern the router matched (undefined for none), so the label set stays bounded.
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpRequest(request.method, request.routeOptions.url, reply.statusCode, reply.elapsedTime / 1000)
  })
  app.addHook('onClose', async () => { metrics.close() })
}, { name: 'metrics', dependencies: ['config', 'store'] })
