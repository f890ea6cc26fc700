import { randomUUID } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { InvalidOptionError } from '../errors.js'
import type { ModelRegistry } from '../models/pipeline.js'
import { BatchWorkers } from './batch-workers.js'
import { ServerMetrics } from './metrics.js'
import { checkBatching, SERVER_DEFAULTS } from './options.js'
import type { Batching } from './queue/length-batching.js'
import { serveMetrics } from './http-util.js'
import type { StateBackend, WorkerInfo } from './state/state-backend.js'

/** How long a worker's announcement lasts unless renewed (every third of it). */
const ANNOUNCE_TTL_MS = 30_000

/** Settings of {@link InferenceWorker}. */
export interface WorkerOptions {
  /** The shared state the front-ends submit to (a `RedisStateBackend`). Closed by the caller. */
  state: StateBackend
  /** The models this process can run. */
  registry: ModelRegistry
  /**
   * Ids of the models this process serves, of those `registry` has; items of other models stay
   * queued for other workers. Default: every model of `registry` (builtins included).
   */
  models?: readonly string[]
  /** Batches run at once. Default 4. */
  workers?: number
  /** Most items per model call. Default 32. */
  maxBatch?: number
  /** How long an idle worker waits for a batch to fill, in ms. Default 0. */
  maxWaitMs?: number
  /**
   * How batches are picked (the server's `batching`): accepted for the same command line on every
   * backend, but a `RedisStateBackend` — the state a worker process shares — leases in line order
   * whatever it says (docs/deploy.md). Default `'length'`.
   */
  batching?: Batching
  /** Longest one model call may run, in ms (its items then fail with `ERR_BATCH_TIMEOUT`). Default 120000. */
  batchTimeoutMs?: number
  /**
   * Times an item is leased before it fails with `ERR_DELIVERY_LIMIT` (a poison item). Default 3,
   * as the front-ends' (`maxDeliveries` of the server): every process takes back expired leases
   * with its own limit, so all of a cluster's should have the same.
   */
  maxDeliveries?: number
  /**
   * How long a lease lasts, in ms, before other workers may take its items back: renewed while
   * the batch runs, so it only runs out for a process that died or hangs. Default: the batch time
   * limit + 30 s.
   */
  leaseMs?: number
  /** How often this process takes back leases that ran out, in ms. Default 5000. */
  reclaimIntervalMs?: number
  /**
   * Most batches one tenant holds at once in the whole cluster: the count is the shared state's
   * (every process's leases of the tenant), not this process's. Default: no cap — fair share still
   * serves the tenants in turn (least recently served first), so another tenant's items get the
   * next batch a worker takes. A cap of this process's `workers` would hold a tenant to that many
   * batches however many worker processes run.
   */
  maxLeasesPerTenant?: number
  /** How long `close()` lets running batches finish before handing them back, in ms. Default 30000. */
  shutdownTimeoutMs?: number
  /** Name of this process in leases. Default a random UUID. */
  nodeId?: string
  /** Bearer token that may read `/metrics` (see `listen`); default: loopback clients only. */
  metricsToken?: string
  logger?: Logger
}

/**
 * A worker process of a cluster (`inference-stream worker`): leases batches of the models it
 * serves from a shared state backend, runs them and finishes them there — the front-ends
 * (`createServer({ state, workers: 0 })`) deliver the results. No listener unless {@link listen}
 * is called, which serves `/health` and `/metrics` only. Create with {@link createWorker}.
 */
export class InferenceWorker {
  /** This process's name in leases. */
  readonly node: string
  readonly metrics: ServerMetrics
  private readonly workers: BatchWorkers
  private readonly timer: NodeJS.Timeout
  private readonly announcer: NodeJS.Timeout
  private readonly info: WorkerInfo
  private readonly options: Required<Pick<WorkerOptions, 'workers' | 'maxBatch' | 'shutdownTimeoutMs' | 'maxDeliveries'>> & WorkerOptions
  private httpServer: http.Server | undefined
  private closing: Promise<void> | undefined

  constructor(options: WorkerOptions) {
    const o = { workers: 4, maxBatch: 32, shutdownTimeoutMs: 30_000, maxDeliveries: SERVER_DEFAULTS.maxDeliveries, batching: SERVER_DEFAULTS.batching, ...stripUndefined(options) }
    checkBatching(o.batching)
    for (const k of ['workers', 'maxBatch', 'maxDeliveries'] as const) {
      if (!Number.isInteger(o[k]) || o[k] < 1) throw new InvalidOptionError(`Option "${k}" must be an integer >= 1, got ${JSON.stringify(o[k])}`)
    }
    if (!o.state) throw new InvalidOptionError('Option "state" is required: the shared state backend the front-ends use')
    if (!o.registry) throw new InvalidOptionError('Option "registry" is required')
    this.options = o
    this.node = o.nodeId ?? randomUUID()
    for (const id of o.models ?? []) {
      if (!o.registry.get(id)) throw new InvalidOptionError(`Model ${id} is not served by this worker's registry (models: ${o.registry.list().join(', ')})`)
    }
    this.metrics = new ServerMetrics(() => o.state.stats(), () => o.state.ledger(), (id) => id)
    this.workers = new BatchWorkers({
      workers: o.workers,
      maxBatch: o.maxBatch,
      maxWaitMs: o.maxWaitMs ?? 0,
      batching: o.batching,
      batchTimeoutMs: o.batchTimeoutMs,
      leaseMs: o.leaseMs,
      // Infinity: no cap (the backends take a non-finite cap as none).
      maxLeasesPerTenant: () => o.maxLeasesPerTenant ?? Infinity,
      state: o.state,
      consumer: this.node,
      registry: o.registry,
      metrics: this.metrics,
      logger: o.logger,
      leaveUnserved: true,
      models: o.models,
    })
    this.workers.start()
    // Any process may take back leases that ran out (a worker that died or hangs): each does, so
    // the cluster does while one of them lives.
    this.timer = setInterval(() => {
      o.state.reclaim(Date.now(), o.maxDeliveries).catch((err: unknown) => o.logger?.error({ err }, 'reclaiming leases failed'))
    }, o.reclaimIntervalMs ?? 5000)
    this.timer.unref()
    // The front-ends tell a stream whose model no worker serves (StateBackend.workersOnline).
    this.info = { node: this.node, models: o.models ?? o.registry.list(), workers: o.workers }
    const announce = (): void => void o.state.announceWorker?.(this.info, ANNOUNCE_TTL_MS).catch((err: unknown) => o.logger?.warn({ err }, 'announcing the worker failed'))
    announce()
    this.announcer = setInterval(announce, ANNOUNCE_TTL_MS / 3)
    this.announcer.unref()
  }

  /** Batches being run now. */
  get busy(): number {
    return this.workers.busy
  }

  /**
   * Serves `GET /health` (this process's state: `ok`, its models and running batches) and
   * `GET /metrics` (Prometheus: this process's batches; the queue and the ledger of the cluster)
   * on `port`. Default host 127.0.0.1. Resolves with the base URL.
   */
  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    const server = http.createServer((req, res) => this.onRequest(req, res))
    this.httpServer = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const a = server.address() as AddressInfo
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    const path = (req.url ?? '/').split('?')[0]
    if (req.method === 'GET' && path === '/health') {
      return json(this.closing ? 503 : 200, {
        status: this.closing ? 'closing' : 'ok',
        role: 'worker',
        node: this.node,
        models: this.options.models ?? this.options.registry.list(),
        busy: this.workers.busy,
        workers: this.options.workers,
        max_batch: this.options.maxBatch,
      })
    }
    if (req.method === 'GET' && path === '/metrics') return serveMetrics(req, res, this.metrics.registry, this.options.metricsToken)
    json(404, { error: `Not found: ${req.method} ${path} (a worker serves /health and /metrics only)` })
  }

  /**
   * Stops taking batches, lets running ones finish (up to `shutdownTimeoutMs`), hands back what is
   * left (but for the items a model reported done), and closes the listener. The state backend
   * and the registry are the caller's to close. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose()
    return this.closing
  }

  private async doClose(): Promise<void> {
    clearInterval(this.timer)
    clearInterval(this.announcer)
    await this.options.state.announceWorker?.(this.info, 0).catch(() => {})
    this.workers.stopPulling()
    const deadline = Date.now() + this.options.shutdownTimeoutMs
    while (this.workers.busy > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    this.workers.abortRunning()
    await this.workers.done()
    const server = this.httpServer
    if (server) {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    }
  }
}

/**
 * Creates a worker process's batch runner over a shared state backend.
 * @example
 * const state = new RedisStateBackend({ url: 'redis://127.0.0.1:6379', maxRetained: 100_000, retentionMs: 3_600_000 })
 * const worker = createWorker({ state, registry: createModelRegistry() })
 */
export function createWorker(options: WorkerOptions): InferenceWorker {
  return new InferenceWorker(options)
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}
