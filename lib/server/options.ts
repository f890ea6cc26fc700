import type { Logger } from 'pino'
import { InvalidOptionError } from '../errors.js'
import { type Batching, BATCHINGS } from './queue/length-batching.js'
import type { ModelRegistry } from '../models/pipeline.js'
import type { OutputDatasets } from './datasets/output-datasets.js'
import type { StateBackend } from './state/state-backend.js'

/** Options of {@link createServer}. Every field is optional; defaults are listed per field. */
export interface ServerOptions {
  /**
   * Accepted bearer tokens, each a tenant of its own. Empty, with no `tenants` (default): any token
   * is accepted (each its own tenant), but only from loopback clients.
   */
  tokens?: string[]
  /**
   * Named tenants: name → its tokens (`[A-Za-z0-9._-]`, 1-64). Tokens of one tenant share its
   * results, ids, bill, jobs and datasets. Default none.
   */
  tenants?: Record<string, string[]>
  /**
   * Key of the tenant ids stored in state (HMAC-SHA256), at least 16 bytes. Default: the data
   * folder's `secret.key` (created 0600 on first start) with `dataDir`, else random per process.
   */
  tenantSecret?: Buffer
  /**
   * Longest a batch may run, in ms. On overrun its items fail with `ERR_BATCH_TIMEOUT` and the
   * worker (and the model's thread) is freed for other work. Default 120000.
   */
  batchTimeoutMs?: number
  /**
   * Most workers (batches) one tenant may hold at once. Default: `max(1, workers - 1)` on a server
   * of several tenants — two or more configured, or an open server once a second token was seen —
   * so a tenant that comes next finds a free worker however long the first one's batches run;
   * `workers` on a server of one tenant (the embedded default). On a `state` given by the caller
   * (shared with other servers or worker processes) the state counts the tenant's batches in all
   * of them, so there is no default cap: only one given here applies, to the whole cluster.
   */
  maxWorkersPerTenant?: number
  /**
   * Bytes of inputs (as JSON) a tenant may have queued or running. Over it the server stops
   * reading the tenant's sockets and answers its HTTP requests 503. Default 32 MiB.
   */
  maxQueuedBytesPerTenant?: number
  /**
   * Bytes of finished results a tenant may have waiting for a stream (undelivered). Over it the
   * server stops reading the tenant's sockets until its streams take results. Default 32 MiB.
   */
  maxUndeliveredBytesPerTenant?: number
  /**
   * Bytes of finished results retained in all (for duplicates, resume and absent clients). Over
   * it the oldest are evicted, delivered ones first. Default 128 MiB.
   */
  maxRetainedBytes?: number
  /**
   * Bearer token that may read `/metrics` (they show every tenant's bill, so tenants' tokens do
   * not). Default none: `/metrics` answers loopback clients only (a local Prometheus scraper).
   */
  metricsToken?: string
  /** Open websocket streams and HTTP connections in all; more are refused (503). Default 1024. */
  maxConnections?: number
  /** Open websocket streams of one tenant; more are refused (status then close 1008). Default 64. */
  maxStreamsPerTenant?: number
  /**
   * Batch workers pulling from the queue concurrently. Default 4. 0 (only with a shared `state`):
   * a front-end that runs no model — its registry is the catalogue (ids and tasks), worker
   * processes (`createWorker`, `inference-stream worker`) run the items.
   */
  workers?: number
  /** Most items per model call. Default 32. */
  maxBatch?: number
  /**
   * How long an idle worker waits for a batch to fill, in ms. Default 0: a free worker takes what
   * is queued at once; under load items gather while every worker is busy, so batches fill anyway
   * without adding latency when the server is idle. Raise it for models whose cost is per batch.
   */
  maxWaitMs?: number
  /**
   * How a worker picks a batch from the items queued for one model and parameters. `'length'`
   * (default): items of similar length (characters of their texts: a token estimate, see `inputLength`), so a model that pads a batch to
   * its longest input (transformers) wastes little — among a tenant's next `maxBatch × 8` items,
   * its oldest and those nearest its length; the oldest is in every batch, so no item waits more
   * of its tenant's batches than there are items before it. `'fifo'`: in the order they came.
   * Results return per item either way; a client that wants input order restores it
   * (`InferenceStream`'s `ordered`). A `RedisStateBackend` accepts either and leases in order
   * (docs/deploy.md).
   */
  batching?: Batching
  /** Items a token may have queued or undelivered before its sockets stop being read. Default 4096. */
  maxQueuedPerToken?: number
  /** Finished results retained per token, for reconnects and duplicates. Default 100000. */
  maxRetained?: number
  /** How long a finished result is retained, in ms. Default 15 minutes. */
  retentionMs?: number
  /** Largest frame answered with an error and skipped, in bytes. Default 8 MiB. Frames over 4× this close the socket (1009). */
  maxFrameBytes?: number
  /** Most messages in one v1 frame. Default 1024. */
  maxItemsPerFrame?: number
  /** Largest `inputs` of one payload, as JSON bytes. Default 1 MiB. */
  maxInputsBytes?: number
  /** Interval of status messages while a token has work pending, in ms. Default 1000. */
  statusIntervalMs?: number
  /** How long a connection may take to send its Bearer frame, in ms. Default 10000. */
  authTimeoutMs?: number
  /**
   * How long `close()` waits for running batches before handing them back (all but the items a model
   * reported done: those are finished), in ms. Default 10000.
   */
  shutdownTimeoutMs?: number
  /**
   * Most results kept by the classic HTTP endpoint's cache (`POST /models/{model}` with
   * `options.use_cache`, keyed by model, parameters and inputs; least recently used evicted first).
   * 0 disables it. Default 10000.
   */
  httpCacheSize?: number
  /** Most bytes of response bodies the HTTP cache keeps in all. 0 disables it. Default 64 MiB. */
  httpCacheMaxBytes?: number
  /** Models served. Default: the built-in registry (`builtin/echo`, `builtin/sentiment`, `builtin/ner`). */
  registry?: ModelRegistry
  /**
   * The state layer: queue, results, dedupe, ledger (state/state-backend.ts). Default: with
   * `dataDir`, a {@link SqliteStateBackend} in `<dataDir>/state.sqlite` (streams, HTTP dedupe and
   * the ledger survive a crash; one server per folder), else an in-process
   * {@link MemoryStateBackend}; either with `maxRetained`, `retentionMs` and `maxRetainedBytes`,
   * closed with the server (a given one is not closed).
   */
  state?: StateBackend
  /**
   * This server's name in result routes (several front-ends on one backend) and in bulk job claims
   * (several servers sharing a `dataDir`'s jobs — each with its own `state` — need distinct names;
   * a server restarted under its old name takes its jobs back at once). Default: a random id; with
   * `dataDir` and no `state`, `data-dir` (one server per state file, the same name across restarts).
   */
  nodeId?: string
  /**
   * Times an item may be leased without being finished (its worker died or hung each time); past
   * it the item fails with `ERR_DELIVERY_LIMIT` instead of running again. Default 3.
   */
  maxDeliveries?: number
  /** pino logger. Default: silent. */
  logger?: Logger
  /**
   * Output datasets served read-only at the Hub-style routes (`/api/datasets/{name}`,
   * `/datasets/{name}/resolve/{revision}/{path}`, `git clone` of `/datasets/{name}`).
   * Default undefined: those routes answer 404.
   */
  outputs?: OutputDatasets
  /**
   * Folder of the server's durable data: `state.sqlite` (the state layer: queue, stream results,
   * dedupe, ledger — unless `state` is given), `jobs.sqlite` (jobs and their stored results),
   * `datasets/` (input datasets, unless `datasetsDir`) and `outputs/` (output dataset git
   * repositories, unless `outputs`). Default none: the `/bulk/run` routes answer 404.
   */
  dataDir?: string
  /** Input datasets folder (`{name}/{config}/{split}.{ext}`, docs/bulk.md). Default `<dataDir>/datasets`. */
  datasetsDir?: string
  /** Rows per output Parquet shard of a bulk job. Default 100000. */
  shardRows?: number
  /** Bulk jobs run at once; others wait queued. Default 2. */
  maxConcurrentJobs?: number
  /** Items of one bulk job queued or running at once (the fairness bound). Default workers × maxBatch. */
  jobMaxInFlight?: number
  /**
   * How long the claim of the server running a bulk job lasts unless renewed, in ms (renewed every
   * third of it). A server that dies loses its jobs to another after this; a cancel sent to another
   * server stops a job within a third of it. Default 30000.
   */
  jobLeaseMs?: number
  /** Largest uploaded dataset file, in bytes. Default 1 GiB. */
  maxUploadBytes?: number
}

/** Options after defaults and checks. */
export type ResolvedServerOptions = Required<Omit<ServerOptions, 'registry' | 'state' | 'nodeId' | 'logger' | 'outputs' | 'dataDir' | 'datasetsDir' | 'jobMaxInFlight' | 'tenantSecret' | 'metricsToken' | 'maxWorkersPerTenant'>> &
  Pick<ServerOptions, 'registry' | 'state' | 'nodeId' | 'logger' | 'outputs' | 'dataDir' | 'datasetsDir' | 'jobMaxInFlight' | 'tenantSecret' | 'metricsToken' | 'maxWorkersPerTenant'>

/** Defaults of {@link ServerOptions}. */
export const SERVER_DEFAULTS = {
  tokens: [] as string[],
  tenants: {} as Record<string, string[]>,
  batchTimeoutMs: 120_000,
  maxQueuedBytesPerTenant: 32 * 1024 * 1024,
  maxUndeliveredBytesPerTenant: 32 * 1024 * 1024,
  maxRetainedBytes: 128 * 1024 * 1024,
  maxConnections: 1024,
  maxStreamsPerTenant: 64,
  workers: 4,
  maxBatch: 32,
  maxWaitMs: 0,
  batching: 'length' as Batching,
  maxQueuedPerToken: 4096,
  maxRetained: 100_000,
  retentionMs: 15 * 60_000,
  maxFrameBytes: 8 * 1024 * 1024,
  maxItemsPerFrame: 1024,
  maxInputsBytes: 1024 * 1024,
  statusIntervalMs: 1000,
  authTimeoutMs: 10_000,
  shutdownTimeoutMs: 10_000,
  httpCacheSize: 10_000,
  httpCacheMaxBytes: 64 * 1024 * 1024,
  shardRows: 100_000,
  maxConcurrentJobs: 2,
  jobLeaseMs: 30_000,
  maxUploadBytes: 1024 * 1024 * 1024,
  maxDeliveries: 3,
}

function positiveInt(opts: Record<string, unknown>, name: string, min = 1): void {
  const v = opts[name]
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new InvalidOptionError(`Option "${name}" must be an integer >= ${min}, got ${JSON.stringify(v)}`)
  }
}

/** Checks a `batching` option (server or worker): one of {@link BATCHINGS}. */
export function checkBatching(v: unknown): void {
  if (!BATCHINGS.includes(v as Batching)) throw new InvalidOptionError(`Option "batching" must be one of ${BATCHINGS.map((b) => `"${b}"`).join(', ')}, got ${JSON.stringify(v)}`)
}

/** Applies defaults and checks every option, naming the one that is wrong. */
export function resolveServerOptions(options: ServerOptions = {}): ResolvedServerOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionError('Server options must be an object')
  }
  // An option given as undefined takes its default (the CLI passes unset flags that way).
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined))
  const o = { ...SERVER_DEFAULTS, ...given } as ResolvedServerOptions
  positiveInt(o as unknown as Record<string, unknown>, 'workers', 0)
  if (o.workers === 0 && options.state === undefined) {
    throw new InvalidOptionError('Option "workers" is 0: this server would run no model. A front-end without workers needs a shared "state" (a RedisStateBackend, as serve --redis) that worker processes serve')
  }
  for (const k of ['maxBatch', 'maxQueuedPerToken', 'maxRetained', 'retentionMs', 'maxFrameBytes',
    'maxItemsPerFrame', 'maxInputsBytes', 'statusIntervalMs', 'authTimeoutMs', 'batchTimeoutMs', 'maxQueuedBytesPerTenant',
    'maxUndeliveredBytesPerTenant', 'maxRetainedBytes', 'maxConnections', 'maxStreamsPerTenant', 'maxDeliveries'] as const) {
    positiveInt(o as unknown as Record<string, unknown>, k)
  }
  positiveInt(o as unknown as Record<string, unknown>, 'maxWaitMs', 0)
  checkBatching(o.batching)
  positiveInt(o as unknown as Record<string, unknown>, 'shutdownTimeoutMs', 0)
  positiveInt(o as unknown as Record<string, unknown>, 'httpCacheSize', 0)
  positiveInt(o as unknown as Record<string, unknown>, 'httpCacheMaxBytes', 0)
  for (const k of ['shardRows', 'maxConcurrentJobs', 'maxUploadBytes'] as const) positiveInt(o as unknown as Record<string, unknown>, k)
  if (o.maxWorkersPerTenant !== undefined) positiveInt(o as unknown as Record<string, unknown>, 'maxWorkersPerTenant')
  if (o.jobMaxInFlight !== undefined) positiveInt(o as unknown as Record<string, unknown>, 'jobMaxInFlight')
  positiveInt(o as unknown as Record<string, unknown>, 'jobLeaseMs', 100)
  if (o.nodeId !== undefined && (typeof o.nodeId !== 'string' || o.nodeId === '')) throw new InvalidOptionError(`Option "nodeId" must be a non-empty string, got ${JSON.stringify(o.nodeId)}`)
  for (const k of ['dataDir', 'datasetsDir'] as const) {
    if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === '')) throw new InvalidOptionError(`Option "${k}" must be a folder path`)
  }
  if (!Array.isArray(o.tokens) || !o.tokens.every((t) => typeof t === 'string' && /^\S+$/.test(t))) {
    throw new InvalidOptionError('Option "tokens" must be an array of non-empty strings without spaces')
  }
  // Bulk jobs keep their state (jobs, uploads, outputs) in dataDir: a datasets folder alone would
  // start a server whose documented /bulk routes answer 404.
  if (o.datasetsDir !== undefined && o.dataDir === undefined) {
    throw new InvalidOptionError('Option "datasetsDir" (--datasets) needs "dataDir" (--data-dir): the folder where bulk jobs, uploads and output datasets are kept')
  }
  if (typeof o.tenants !== 'object' || o.tenants === null || Array.isArray(o.tenants)) {
    throw new InvalidOptionError('Option "tenants" must be an object: tenant name -> array of tokens')
  }
  if (o.metricsToken !== undefined && (typeof o.metricsToken !== 'string' || !/^\S+$/.test(o.metricsToken))) {
    throw new InvalidOptionError('Option "metricsToken" must be a non-empty string without spaces')
  }
  if (o.tenantSecret !== undefined && (!Buffer.isBuffer(o.tenantSecret) || o.tenantSecret.length < 16)) {
    throw new InvalidOptionError('Option "tenantSecret" must be a Buffer of at least 16 bytes')
  }
  if (o.outputs !== undefined && typeof (o.outputs as Partial<OutputDatasets> | null)?.openFile !== 'function') {
    throw new InvalidOptionError('Option "outputs" must be an OutputDatasets')
  }
  return o
}
