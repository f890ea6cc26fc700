import { Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Prometheus metrics of one server (its own registry, so several servers can share a process). */
export class ServerMetrics {
  readonly registry = new Registry()
  readonly items = new Counter({
    name: 'inference_stream_items_total',
    help: 'Items finished, by outcome',
    labelNames: ['model', 'outcome'] as const,
    registers: [this.registry],
  })
  readonly duplicates = new Counter({
    name: 'inference_stream_duplicate_items_total',
    help: 'Payloads whose id was already pending or finished (not run again)',
    labelNames: ['state'] as const,
    registers: [this.registry],
  })
  readonly rejected = new Counter({
    name: 'inference_stream_rejected_messages_total',
    help: 'Client messages rejected before the queue, by error code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  })
  readonly batchSize = new Histogram({
    name: 'inference_stream_batch_size',
    help: 'Items per model call',
    labelNames: ['model'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  })
  readonly batchSeconds = new Histogram({
    name: 'inference_stream_batch_seconds',
    help: 'Duration of one model call',
    labelNames: ['model'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  })
  readonly connections = new Gauge({
    name: 'inference_stream_open_streams',
    help: 'Open websocket streams',
    registers: [this.registry],
  })
  readonly httpCache = new Counter({
    name: 'inference_stream_http_cache_lookups_total',
    help: 'Classic HTTP requests looked up in the result cache, by result (hit, miss)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly lost = new Counter({
    name: 'inference_stream_results_expired_total',
    help: 'Undelivered results dropped by the retention bound or TTL',
    registers: [this.registry],
  })

  /**
   * `stats` and `ledger` are read at each scrape, from the state backend: the queue depth and the
   * bill are the backend's own numbers (the same as `server.billed()` and a job's bill).
   */
  constructor(
    stats: () => Promise<{ queued: number; processing: number; deadLettered: number }>,
    ledger: () => Promise<Array<{ tenant: string; items: number }>>,
    tenantName: (id: string) => string,
  ) {
    const registry = this.registry
    new Gauge({
      name: 'inference_stream_queue_items',
      help: 'Items in the work queue, by state (dead_lettered: failed by the delivery limit since start)',
      labelNames: ['state'] as const,
      registers: [registry],
      async collect() {
        const s = await stats()
        this.set({ state: 'queued' }, s.queued)
        this.set({ state: 'processing' }, s.processing)
        this.set({ state: 'dead_lettered' }, s.deadLettered)
      },
    })
    // A counter in Prometheus's sense (it only grows), read from the ledger at each scrape.
    new Gauge({
      name: 'inference_stream_billed_items_total',
      help: 'Items run by a model, per tenant (the bill, from the state ledger); a duplicate id is never billed twice',
      labelNames: ['tenant'] as const,
      registers: [registry],
      async collect() {
        const byTenant = new Map<string, number>()
        for (const e of await ledger()) byTenant.set(e.tenant, (byTenant.get(e.tenant) ?? 0) + e.items)
        this.reset()
        for (const [tenant, items] of byTenant) this.set({ tenant: tenantName(tenant) }, items)
      },
    })
  }
}
