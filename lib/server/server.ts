import { randomUUID } from 'node:crypto'
import http from 'node:http'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import { SUBPROTOCOL_V1, errorStatus } from '../protocol.js'
import { BulkDisabledError, ShuttingDownError, toWireError } from '../errors.js'
import { httpStatusOf } from './http-status.js'
import { catalogueOf, createModelRegistry } from '../models/registry.js'
import { resolvePipeline, type Compute, type ModelRegistry, type Pipeline } from '../models/pipeline.js'
import { BatchWorkers } from './batch-workers.js'
import { BulkJobs } from './bulk/bulk-jobs.js'
import { handleBulkRoutes, type BulkRoutesContext } from './bulk/bulk-routes.js'
import { InputDatasets } from './datasets/input-datasets.js'
import type { OutputDatasets } from './datasets/output-datasets.js'
import { handleHubRoutes } from './datasets/hub-routes.js'
import { TenantSpaces, migrateLegacyOutputs, type DatasetLocation } from './datasets/tenant-spaces.js'
import { JobStore } from './store/job-store.js'
import { HttpInference } from './http-inference.js'
import { ServerMetrics } from './metrics.js'
import { resolveServerOptions, type ResolvedServerOptions, type ServerOptions } from './options.js'
import { MemoryStateBackend } from './state/memory-backend.js'
import { SqliteStateBackend } from './state/sqlite-backend.js'
import type { StateBackend } from './state/state-backend.js'
import { ownerKey, type OwnerCounts } from './store/result-store.js'
import { StreamConnection } from './stream-connection.js'
import { StreamHub } from './stream-hub.js'
import { leaseCap } from './queue/fair-share.js'
import { inputLength as charCount } from './queue/length-batching.js'
import type { WorkItem } from './queue/work-queue.js'
import { Tenants, dataDirSecret, type Tenant } from './tenants.js'
import { isLoopback, serveMetrics } from './http-util.js'

const STREAM_PATH = /^\/bulk\/stream\/(cpu|gpu)\/(.+)$/

export { isLoopback }

/**
 * The inference server: websocket streams at `/bulk/stream/{cpu|gpu}/{model}`, the classic HTTP
 * endpoint `POST /models/{model}`, `/health` and `/metrics`, a work queue and batch workers behind
 * them. Create with {@link createServer}.
 */
export class InferenceServer {
  /** The underlying HTTP server. */
  readonly http: http.Server
  /** Options in force, after defaults. */
  readonly options: ResolvedServerOptions
  /** Models served. */
  readonly registry: ModelRegistry
  /** Prometheus metrics. */
  readonly metrics: ServerMetrics
  /** The state layer: queue, results, dedupe, ledger. */
  readonly state: StateBackend
  /** This server's name in result routes. */
  readonly node: string
  private readonly hub: StreamHub
  private readonly wss: WebSocketServer
  private readonly workers: BatchWorkers
  private readonly httpInference: HttpInference
  /** Operator-provided output datasets (option `outputs`): read-only, readable by every tenant. */
  readonly outputs: OutputDatasets | undefined
  /**
   * Bulk jobs, when `dataDir` is set: the runner, its durable store, the operator's input datasets,
   * each tenant's dataset roots and the routes' context.
   */
  readonly bulk: { jobs: BulkJobs; store: JobStore; inputs: InputDatasets; spaces: TenantSpaces; routes: BulkRoutesContext } | undefined
  /** The tenants and their tokens. */
  readonly tenants: Tenants
  private readonly timers: NodeJS.Timeout[] = []
  /** Settles once a v1 data folder's output datasets are under their tenants (and jobs resumed). */
  readonly legacyMigrated: Promise<void> = Promise.resolve()
  private closing: Promise<void> | undefined

  constructor(options: ServerOptions = {}) {
    this.options = resolveServerOptions(options)
    const o = this.options
    this.tenants = new Tenants({
      tokens: o.tokens,
      tenants: o.tenants,
      secret: o.tenantSecret ?? (o.dataDir ? dataDirSecret(o.dataDir) : undefined),
      logger: o.logger,
    })
    if (options.state && !(options.state instanceof MemoryStateBackend) && !o.tenantSecret && !o.dataDir) {
      o.logger?.warn('A shared state without "tenantSecret": tenant ids are made with this process\'s own random secret, so front-ends sharing the state do not see each other\'s tenants (pass the same tenantSecret to every one)')
    }
    // A front-end without workers knows the models (ids, tasks, errors) but never loads one.
    const registry = o.registry ?? createModelRegistry()
    this.registry = o.workers === 0 ? catalogueOf(registry) : registry
    // Length-aware batching measures an item in its model's tokens where the model can count them
    // (a local WordPiece model: `Pipeline.inputLength`), else in characters. One measure per model
    // and compute the registry has, found on its first item (so at most one per served model).
    const measures = { cpu: new Map<string, (inputs: unknown) => number>(), gpu: new Map<string, (inputs: unknown) => number>() }
    const inputLength = (item: WorkItem): number => {
      const byModel = measures[item.compute === 'gpu' ? 'gpu' : 'cpu']
      let measure = byModel.get(item.model)
      if (!measure) {
        let pipeline: Pipeline | undefined
        try {
          pipeline = this.registry.get(item.model, item.compute)
        } catch {
          // A model that cannot be had is failed by the worker; its items are counted in characters.
        }
        if (!pipeline) return charCount(item.inputs)
        measure = pipeline.inputLength ? pipeline.inputLength.bind(pipeline) : charCount
        byModel.set(item.model, measure)
      }
      return measure(item.inputs)
    }
    const retention = { maxRetained: o.maxRetained, retentionMs: o.retentionMs, maxRetainedBytes: o.maxRetainedBytes, inputLength }
    // A data folder holds the state too: what a stream sent survives a crash of the server.
    this.state = options.state ?? (o.dataDir ? new SqliteStateBackend({ path: join(o.dataDir, 'state.sqlite'), ...retention }) : new MemoryStateBackend(retention))
    // Leases in a state file this server just opened (it holds the file's lock) are those of a
    // previous server that died: its items go back to the queue now, not when the leases expire.
    if (!options.state && o.dataDir) this.state.reclaim(Number.MAX_SAFE_INTEGER, o.maxDeliveries).catch((err: unknown) => o.logger?.error({ err }, 'reclaiming leases failed'))
    // One server per state file (it holds the file's lock): its name in routes stays the same across
    // restarts, so results of items a previous process took are delivered to this one's streams.
    this.node = options.nodeId ?? (o.dataDir && !options.state ? 'data-dir' : randomUUID())
    this.metrics = new ServerMetrics(() => this.state.stats(), () => this.state.ledger(), (id) => this.tenants.nameOf(id))
    this.hub = new StreamHub(
      o,
      this.state,
      this.node,
      this.metrics,
      o.logger,
      (token, remote, route) => {
        const tenant = this.tenants.authenticate(token)
        if (!tenant) this.tenants.refused('Invalid token', remote, route)
        return tenant
      },
      (model, compute) => resolvePipeline(this.registry, model, compute),
    )
    this.workers = new BatchWorkers({
      workers: o.workers,
      maxBatch: o.maxBatch,
      maxWaitMs: o.maxWaitMs,
      batching: o.batching,
      batchTimeoutMs: o.batchTimeoutMs,
      // A server of one tenant (the embedded default, a local open server used by one client)
      // keeps every worker busy; with several, one worker is always left for a tenant that comes
      // next (queue/fair-share.ts). A state given by the caller may be shared (a cluster): it
      // counts a tenant's leases over every process, so a cap made of this server's workers would
      // hold the tenant to one process's batches in the whole cluster; no default cap there.
      maxLeasesPerTenant: () => o.maxWorkersPerTenant ?? (options.state ? Infinity : this.tenants.several ? leaseCap(o.workers) : o.workers),
      state: this.state,
      consumer: this.node,
      registry: this.registry,
      metrics: this.metrics,
      logger: o.logger,
    })
    this.httpInference = new HttpInference({
      options: o,
      hub: this.hub,
      registry: this.registry,
      metrics: this.metrics,
      tenants: this.tenants,
    })
    this.wss = new WebSocketServer({
      noServer: true,
      // Frames between maxFrameBytes and this hard cap are answered and skipped; above it, ws closes with 1009.
      maxPayload: o.maxFrameBytes * 4,
      handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL_V1) ? SUBPROTOCOL_V1 : false),
    })
    // What one connection may hold sent and unanswered: over it, the server stops reading the
    // socket while the results it holds wait for acks it would not read (docs/protocol.md).
    this.wss.on('headers', (headers) => headers.push(`X-Max-In-Flight: ${o.maxQueuedPerToken}`))
    this.outputs = o.outputs
    if (o.dataDir) {
      const dataDir = o.dataDir
      // A v1 store names raw tokens; each becomes its tenant's id (then the tokens are wiped).
      const store = new JobStore(join(dataDir, 'jobs.sqlite'), {
        tenantOfToken: (token) => this.tenantOfToken(token),
      })
      // The operator's folder: read-only input of every tenant, under each tenant's own uploads.
      const inputs = new InputDatasets(o.datasetsDir ?? join(dataDir, 'datasets'))
      const spaces = new TenantSpaces(dataDir, inputs, o.outputs)
      const jobs = new BulkJobs({
        store,
        inputs: (tenant) => spaces.inputs(tenant),
        outputs: (tenant) => spaces.outputs(tenant),
        hub: this.hub,
        registry: this.registry,
        // A front-end without workers: as many as a default server's workers would take.
        maxInFlight: o.jobMaxInFlight ?? (o.workers || 4) * o.maxBatch,
        shardRows: o.shardRows,
        maxConcurrentJobs: o.maxConcurrentJobs,
        maxInputsBytes: o.maxInputsBytes,
        node: this.node,
        leaseMs: o.jobLeaseMs,
        logger: o.logger,
      })
      const routes: BulkRoutesContext = {
        jobs,
        store,
        inputs: (tenant) => spaces.inputs(tenant),
        registry: this.registry,
        tenants: this.tenants,
        maxBodyBytes: o.maxFrameBytes,
        maxUploadBytes: o.maxUploadBytes,
        closing: () => this.closing !== undefined,
        logger: o.logger,
      }
      this.bulk = { jobs, store, inputs, spaces, routes }
      // Output datasets of a v1 folder (<dataDir>/outputs, shared by all) go under their owners
      // before any job runs; until then a tenant simply does not see them.
      const owners = new Map<string, Set<string>>()
      for (const job of store.list()) {
        if (!owners.has(job.bulkName)) owners.set(job.bulkName, new Set())
        owners.get(job.bulkName)!.add(job.tenant)
      }
      this.legacyMigrated = migrateLegacyOutputs(spaces, owners, o.logger)
        .catch((err: unknown) => o.logger?.error({ err }, 'Moving output datasets of a v1 data folder under their tenants failed'))
        // Jobs a previous server left queued or running go on from their stored results.
        .then(() => void (this.closing ? undefined : jobs.resumeUnfinished()))
    }
    this.http = http.createServer((req, res) => this.onRequest(req, res))
    this.http.on('connection', (socket) => this.onConnection(socket))
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head))
    this.workers.start()
    this.timers.push(setInterval(() => this.sendStatus(), o.statusIntervalMs))
    this.timers.push(
      setInterval(() => {
        this.state.sweep(Date.now()).then(
          (lost) => lost > 0 && this.metrics.lost.inc(lost),
          (err: unknown) => o.logger?.error({ err }, 'sweeping results failed'),
        )
      }, Math.min(60_000, o.retentionMs)),
    )
    // Leases of workers that died or hung past their lease go back to the queue (or fail, past the delivery limit).
    this.timers.push(
      setInterval(() => {
        this.state.reclaim(Date.now(), o.maxDeliveries).catch((err: unknown) => o.logger?.error({ err }, 'reclaiming leases failed'))
      }, 5000),
    )
    // Dead peers (no pong for a whole interval) are terminated so their results go back to the store.
    this.timers.push(setInterval(() => this.heartbeat(), 30_000))
    for (const t of this.timers) t.unref()
  }

  /** Whether the server accepts anyone (no token configured) — only from loopback then. */
  get open(): boolean {
    return this.tenants.open
  }

  /**
   * Starts listening. Defaults: port 0 (any free port), host 127.0.0.1.
   * @returns the base URL, e.g. `http://127.0.0.1:8080`.
   */
  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject)
      this.http.listen(port, host, () => {
        this.http.off('error', reject)
        resolve()
      })
    })
    if (this.open && !isLoopback(host) && host !== 'localhost') {
      this.options.logger?.warn('No token configured: only loopback clients are accepted')
    }
    return this.url
  }

  /** Base URL (`http://host:port`) once listening. */
  get url(): string {
    const a = this.http.address() as AddressInfo | null
    if (!a) throw new Error('Server is not listening')
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address
    return `http://${host}:${a.port}`
  }

  /** Websocket URL of a model's stream. */
  streamUrl(model: string, compute: 'cpu' | 'gpu' = 'cpu'): string {
    return `${this.url.replace(/^http/, 'ws')}/bulk/stream/${compute}/${model}`
  }

  /** The tenant of a token: its configured one, else (open server) its own. */
  private tenantOfToken(token: string): string {
    return (this.tenants.authenticate(token) ?? this.tenants.defaultTenant(token)).id
  }

  /** Items billed to a token's tenant so far (one per item run by a model), from the state ledger. */
  async billed(token: string): Promise<number> {
    let n = 0
    for (const e of await this.state.ledger(this.tenantOfToken(token))) n += e.items
    return n
  }

  /** Counters of a token's tenant's items on one model: queued, processing, done, undelivered. */
  counts(token: string, model: string): Promise<OwnerCounts> {
    return this.state.counts(ownerKey(this.tenantOfToken(token), model))
  }

  /**
   * Cuts every open stream abruptly (TCP reset, no close frame), as a network failure would.
   * Their unacked results go back to the store. For failure drills and tests.
   * @returns how many streams were cut.
   */
  terminateStreams(): number {
    let n = 0
    for (const ws of this.wss.clients) {
      ws.terminate()
      n++
    }
    return n
  }

  // Open TCP connections (HTTP and websocket): over maxConnections a newcomer gets a 503 and is
  // closed, so a flood of idle sockets cannot exhaust file descriptors or memory.
  private connections = 0
  private onConnection(socket: import('node:net').Socket): void {
    this.connections++
    socket.once('close', () => this.connections--)
    if (this.connections > this.options.maxConnections) {
      this.metrics.rejected.inc({ code: 'ERR_OVERLOADED' })
      const body = JSON.stringify({ error: `Too many open connections (limit ${this.options.maxConnections}); retry later`, code: 'ERR_OVERLOADED' })
      socket.end(`HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    }
  }

  private allowed(req: http.IncomingMessage): boolean {
    return !this.open || isLoopback(req.socket.remoteAddress)
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    if (!this.allowed(req)) return json(403, { error: 'No token is configured: only loopback clients are accepted' })
    const path = (req.url ?? '/').split('?')[0]
    if (req.method === 'GET' && path === '/health') {
      Promise.all([this.state.stats(), this.state.workersOnline?.()]).then(
        ([q, online]) =>
          json(this.closing ? 503 : 200, {
            status: this.closing ? 'closing' : 'ok',
            models: this.registry.list(),
            queued: q.queued,
            processing: q.processing,
            streams: [...this.hub.sockets.all()].length,
            workers: this.options.workers,
            max_batch: this.options.maxBatch,
            // A cluster's worker processes (a shared state that knows them).
            ...(online ? { workers_online: online.map((w) => ({ node: w.node, models: w.models, workers: w.workers })) } : {}),
          }),
        (err: Error) => json(500, { error: err.message }),
      )
      return
    }
    if (req.method === 'GET' && path === '/metrics') return serveMetrics(req, res, this.metrics.registry, this.options.metricsToken)
    if (this.httpInference.handle(req, res, path)) return
    if (this.bulk && handleBulkRoutes(req, res, path, this.bulk.routes)) return
    // A documented route this server is not set up for says so (never a bare 404).
    if (!this.bulk && path.startsWith('/bulk/') && !path.startsWith('/bulk/stream/')) {
      const err = new BulkDisabledError('This server runs no bulk jobs: it was started without a data folder; start it with `inference-stream serve --data-dir DIR` (in code: createServer({ dataDir }))')
      return json(httpStatusOf(err.code), toWireError(err))
    }
    // A tenant reads its own output datasets (over the operator's `outputs`), or only the operator's without dataDir.
    const spaces = this.bulk?.spaces
    const operator = this.outputs
    if (spaces || operator) {
      const locate = (tenant: Tenant, id: string): Promise<DatasetLocation> =>
        spaces ? spaces.locate(tenant, id) : Promise.resolve({ outputs: operator as OutputDatasets, name: id, id })
      if (handleHubRoutes(req, res, path, { tenants: this.tenants, locate, logger: this.options.logger })) return
    }
    json(404, { error: `Not found: ${req.method} ${path}` })
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = (req.url ?? '/').split('?')[0]
    const m = STREAM_PATH.exec(path)
    const refuse = (status: number, text: string): void => {
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ error: text })}`)
    }
    if (!m) return refuse(404, `No websocket endpoint at ${path}; use /bulk/stream/{cpu|gpu}/{model_id}`)
    if (this.closing) return refuse(503, 'Server is shutting down')
    if (!this.allowed(req)) return refuse(403, 'No token is configured: only loopback clients are accepted')
    let model: string
    try {
      model = decodeURIComponent(m[2])
    } catch {
      return refuse(400, 'Model id is not valid URL encoding')
    }
    const compute = m[1] as Compute
    this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const conn = new StreamConnection(ws, this.hub, model, compute, ws.protocol === SUBPROTOCOL_V1, socket as import('node:net').Socket)
      ;(ws as WebSocket & { isAlive?: boolean }).isAlive = true
      ws.on('pong', () => ((ws as WebSocket & { isAlive?: boolean }).isAlive = true))
      void conn
    })
  }

  private heartbeat(): void {
    for (const ws of this.wss.clients as Set<WebSocket & { isAlive?: boolean }>) {
      if (ws.isAlive === false) {
        ws.terminate()
        continue
      }
      ws.isAlive = false
      ws.ping()
    }
  }

  private sendStatus(): void {
    // Streams of a model that is still loading hear how long it should take.
    for (const s of this.hub.sockets.all()) {
      const status = s.loadingStatus()
      if (status) s.send(status)
    }
    for (const owner of [...this.hub.sockets.owners()]) {
      this.state.counts(owner).then(
        (c) => {
          if (c.queued + c.processing === 0) return
          for (const s of this.hub.sockets.of(owner)) {
            s.send({ type: 'status', message: `${c.queued} queued, ${c.processing} processing`, queued: c.queued, processing: c.processing, done: c.done })
          }
        },
        () => {},
      )
    }
  }

  /**
   * Graceful shutdown: refuses new streams and payloads, lets queued and running work finish
   * (up to `shutdownTimeoutMs`, results go to open streams), hands back what is left (but for
   * the items of a stopped batch the model reported done: those are finished), closes
   * every socket with 1001 and releases the models. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose()
    return this.closing
  }

  private async doClose(): Promise<void> {
    this.hub.closing = true
    // Running jobs stop taking rows and stay `running` in the store: the next server resumes them.
    const jobsClosed = this.bulk?.jobs.close()
    const httpClosed = new Promise<void>((r) => this.http.close(() => r()))
    const status = errorStatus(new ShuttingDownError())
    for (const s of this.hub.sockets.all()) s.send(status)
    const deadline = Date.now() + this.options.shutdownTimeoutMs
    if (this.options.state) {
      // A shared state: its queue is the cluster's, other processes go on with it. Batches running
      // here finish (up to the timeout), nothing new is taken.
      this.workers.stopPulling()
      while (this.workers.busy > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    }
    while (!this.options.state && Date.now() < deadline) {
      const q = await this.state.stats()
      if (q.queued === 0 && q.processing === 0) break
      await new Promise((r) => setTimeout(r, 10))
    }
    this.workers.stopPulling()
    this.workers.abortRunning()
    await this.workers.done()
    // HTTP requests whose items were handed back to the queue will not be answered here (those of
    // items finished when their batch stopped were answered by that finish).
    this.hub.failSinks(toWireError(new ShuttingDownError()))
    // Let results written in the last tick reach their sockets before closing them.
    await new Promise((r) => setImmediate(r))
    for (const ws of this.wss.clients) ws.close(1001, 'Server shutting down')
    const waitSockets = Date.now() + 1000
    while (this.wss.clients.size > 0 && Date.now() < waitSockets) await new Promise((r) => setTimeout(r, 10))
    for (const ws of this.wss.clients) ws.terminate()
    for (const t of this.timers) clearInterval(t)
    this.http.closeAllConnections()
    await httpClosed
    await jobsClosed
    this.bulk?.store.close()
    this.hub.detach()
    // A backend given by the caller may serve others (several front-ends): theirs to close.
    if (!this.options.state) await this.state.close()
    if (!this.options.registry) await this.registry.close()
  }
}

/**
 * Creates an inference server (not yet listening: call `listen()`).
 * @example
 * const server = createServer({ tokens: ['secret'] })
 * const url = await server.listen(8080)
 */
export function createServer(options?: ServerOptions): InferenceServer {
  return new InferenceServer(options)
}
