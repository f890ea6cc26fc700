import { readFileSync } from 'node:fs'
import { Command, Option } from 'commander'
import { InvalidOptionError } from '../errors.js'
import { join } from 'node:path'
import { addModelFlags, registryFromFlags } from './model-flags.js'
import { createServer } from '../server/server.js'
import { parseTokenFile } from '../server/tenants.js'
import { batchingOption, bytesFlag, secondsFlag } from './common.js'
import { createLogger, stopOnSignals, type LogFormat } from './log.js'
import { addRedisFlags, checkRedis, readSecretFile, redisState, redisUrl } from './redis-flags.js'

function int(name: string) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < 0) throw new InvalidOptionError(`--${name} must be a non-negative integer, got "${value}"`)
    return n
  }
}

/**
 * Reads tokens from flags, `INFERENCE_STREAM_TOKENS` (comma separated) and a token file (one entry
 * a line: `TOKEN` — a tenant of its own — or `TENANT: TOKEN`; `#` comments).
 */
export function collectTokens(flags: string[], file: string | undefined, env = process.env): { tokens: string[]; tenants: Record<string, string[]> } {
  const tokens = [...flags]
  let tenants: Record<string, string[]> = {}
  if (env.INFERENCE_STREAM_TOKENS) tokens.push(...env.INFERENCE_STREAM_TOKENS.split(','))
  if (file) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      throw new InvalidOptionError(`Cannot read --token-file ${file}: ${(err as Error).message}`)
    }
    const parsed = parseTokenFile(text, `--token-file ${file}`)
    tokens.push(...parsed.tokens)
    tenants = parsed.tenants
  }
  const all = [...new Set(tokens.map((t) => t.trim()).filter((t) => t.length > 0))]
  const spaced = all.find((t) => /\s/.test(t))
  if (spaced !== undefined) throw new InvalidOptionError(`A token cannot contain spaces (--token, --token-file, INFERENCE_STREAM_TOKENS), got one of ${spaced.length} characters with a space`)
  return { tokens: all, tenants }
}

/** `inference-stream serve`: runs the server until SIGINT/SIGTERM, then shuts down gracefully. */
export function serveCommand(): Command {
  return addRedisFlags(addModelFlags(new Command('serve')), false)
    .description('Run the inference server (websocket streams, /health, /metrics)')
    .option('-p, --port <port>', 'port to listen on (0: any free port)', int('port'), 8080)
    .option('-H, --host <host>', 'address to bind', '127.0.0.1')
    .option('-t, --token <token...>', 'accepted bearer token (repeatable); also INFERENCE_STREAM_TOKENS', [])
    .option('--token-file <path>', 'file of accepted tokens: one a line, "TOKEN" (a tenant of its own) or "TENANT: TOKEN" (tokens sharing a tenant)')
    .option('--metrics-token <token>', 'bearer token that may read /metrics (default: /metrics answers loopback clients only)')
    .option('--workers <n>', 'batch workers pulling from the queue (0 with --redis: a front-end that runs no model; worker processes do)', int('workers'), 4)
    .option('--tenant-secret-file <path>', 'file of the secret tenant ids are made with (16+ bytes): the same on every front-end of a cluster (default: <data-dir>/secret.key, else with --redis one kept in Redis)')
    .option('--max-deliveries <n>', 'times an item is leased before it fails with ERR_DELIVERY_LIMIT (a worker died on it each time)', int('max-deliveries'))
    .option('--max-batch <n>', 'most items per model call', int('max-batch'), 32)
    .option('--max-wait-ms <ms>', 'how long an idle worker waits for a batch to fill', int('max-wait-ms'), 0)
    .addOption(batchingOption())
    .option('--threads <n>', 'worker threads for CPU-bound built-in models', int('threads'), 1)
    .option('--max-queued-per-token <n>', 'items queued per tenant before its sockets are paused', int('max-queued-per-token'), 4096)
    .option('--max-queued-bytes <size>', 'bytes of inputs a tenant may have queued or running (e.g. 32MiB)', bytesFlag('max-queued-bytes'))
    .option('--max-undelivered-bytes <size>', 'bytes of results a tenant may have waiting for its streams', bytesFlag('max-undelivered-bytes'))
    .option('--max-retained-bytes <size>', 'bytes of finished results kept in all, for duplicates and reconnects', bytesFlag('max-retained-bytes'))
    .option('--batch-timeout <seconds>', 'longest a batch may run; its items then fail with ERR_BATCH_TIMEOUT (default 120)', secondsFlag('batch-timeout'))
    .option('--max-workers-per-tenant <n>', 'most workers one tenant holds at once (default: workers-1 with several tenants; with --redis no default, a cap given counts the whole cluster\'s batches)', int('max-workers-per-tenant'))
    .option('--max-connections <n>', 'open connections in all (default 1024)', int('max-connections'))
    .option('--max-streams-per-tenant <n>', 'open websocket streams per tenant (default 64)', int('max-streams-per-tenant'))
    .option('--data-dir <dir>', 'durable state and bulk jobs: folder of state.sqlite (queue, stream results, ledger: they survive a crash), jobs.sqlite, secret.key, datasets/ (the operator\'s inputs, read-only) and tenants/ (each tenant\'s uploads and outputs); enables /bulk/run')
    .option('--datasets <dir>', 'input datasets folder (default <data-dir>/datasets)')
    .option('--job-lease <seconds>', 'how long a bulk job stays claimed by a front-end that stopped renewing it (died) before another takes it over (default 30)', secondsFlag('job-lease'))
    .option('--shard-rows <n>', 'rows per output Parquet shard of a bulk job', int('shard-rows'), 100000)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addOption(new Option('--log-format <format>', 'log lines: readable on a terminal, JSON otherwise (auto), or always one of them').choices(['auto', 'pretty', 'json']).default('auto'))
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream serve                       # loopback only, any token, port 8080
  $ inference-stream serve --port 0 --token hf_s3cret --host 0.0.0.0
  $ INFERENCE_STREAM_TOKENS=a,b inference-stream serve --workers 8 --max-batch 64
  $ inference-stream serve --token hf_s3cret --data-dir ./data   # bulk jobs over ./data/datasets
  $ inference-stream serve --models ./models     # also serves ./models/{org}/{name} (transformers.js, offline)
  $ inference-stream serve --allow-download      # any Hub model, downloaded on first use
  $ inference-stream serve --upstream my/model=https://host/models/my/model --upstream-token $HF_TOKEN
  $ inference-stream serve --redis redis://127.0.0.1:6379 --workers 0 --token hf_s3cret   # a cluster's front-end (docs/deploy.md)

Clients connect to ws://HOST:PORT/bulk/stream/cpu/MODEL_ID and send "Bearer TOKEN" first.`,
    )
    .action(async (o) => {
      const logger = createLogger(o.logLevel as string, o.logFormat as LogFormat)
      const { tokens, tenants } = collectTokens(o.token, o.tokenFile)
      const redis = redisUrl(o, false)
      if (o.datasets !== undefined && o.dataDir === undefined) {
        throw new InvalidOptionError(`--datasets needs --data-dir DIR: bulk jobs keep their jobs, uploads and output datasets there (e.g. --data-dir ./data --datasets ${o.datasets})`)
      }
      if (o.workers === 0 && redis === undefined) throw new InvalidOptionError('--workers 0 runs no model: it is for a front-end of a cluster, with --redis URL (worker processes run the items)')
      const state = redis === undefined ? undefined : redisState(redis, o.redisPrefix, o.maxRetainedBytes)
      if (state) await checkRedis(state, redis as string)
      // Front-ends of one cluster make the same tenant ids: a secret file, the shared data folder's, or the one kept in Redis.
      let tenantSecret: Buffer | undefined = o.tenantSecretFile ? readSecretFile(o.tenantSecretFile) : undefined
      if (state && !tenantSecret && !o.dataDir) {
        tenantSecret = await state.sharedSecret().catch((err: Error) => {
          throw new InvalidOptionError(`Cannot reach Redis at ${(redis as string).replace(/\/\/[^@/]*@/, '//')}: ${err.message}`)
        })
        logger.info('tenant ids are made with the secret kept in Redis (give --tenant-secret-file to keep it out)')
      }
      const server = createServer({
        state,
        tenantSecret,
        maxDeliveries: o.maxDeliveries,
        tokens,
        tenants,
        metricsToken: o.metricsToken,
        maxQueuedBytesPerTenant: o.maxQueuedBytes,
        maxUndeliveredBytesPerTenant: o.maxUndeliveredBytes,
        maxRetainedBytes: o.maxRetainedBytes,
        batchTimeoutMs: o.batchTimeout,
        maxConnections: o.maxConnections,
        maxWorkersPerTenant: o.maxWorkersPerTenant || undefined,
        maxStreamsPerTenant: o.maxStreamsPerTenant,
        workers: o.workers,
        maxBatch: o.maxBatch,
        maxWaitMs: o.maxWaitMs,
        batching: o.batching,
        maxQueuedPerToken: o.maxQueuedPerToken,
        registry: registryFromFlags(o, { audioRoot: o.datasets ?? (o.dataDir ? join(o.dataDir, 'datasets') : undefined) }),
        dataDir: o.dataDir,
        datasetsDir: o.datasets,
        shardRows: o.shardRows,
        jobLeaseMs: o.jobLease,
        logger,
      })
      const url = await server.listen(o.port, o.host)
      // One line on stdout, so scripts can read the address (with --port 0 especially).
      process.stdout.write(`listening on ${url}\n`)
      logger.info({ url, models: server.registry.list(), state: redis ? `redis (${o.workers} workers here)` : o.dataDir ? 'sqlite' : 'memory', auth: server.open ? 'none' : `${tokens.length + Object.values(tenants).flat().length} token(s), ${Object.keys(tenants).length} named tenant(s)` }, 'server started')
      if (server.open) logger.warn('No token configured: any token is accepted, from loopback clients only')
      stopOnSignals(logger, async () => {
        await server.close()
        await server.registry.close()
        await state?.close()
      })
    })
}
