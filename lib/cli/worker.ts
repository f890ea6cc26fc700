import { Command, Option } from 'commander'
import { writeSync } from 'node:fs'
import type { ModelRegistry, Pipeline } from '../models/pipeline.js'
import { createWorker } from '../server/worker.js'
import { batchingOption, intFlag, secondsFlag } from './common.js'
import { createLogger, stopOnSignals, type LogFormat } from './log.js'
import { addModelFlags, registryFromFlags } from './model-flags.js'
import { addRedisFlags, checkRedis, redisState, redisUrl } from './redis-flags.js'

/** `inference-stream worker`: runs batches from a cluster's Redis until SIGINT/SIGTERM. */
export function workerCommand(): Command {
  return addRedisFlags(addModelFlags(new Command('worker')), true)
    .description('Run batches for a cluster: lease them from Redis, run the models, finish them there (the front-ends deliver the results)')
    .option('-m, --model <id...>', 'serve only these model ids (repeatable; default every model this process has: the builtins and those of --models/--upstream)')
    .option('--workers <n>', 'batches run at once', intFlag('workers', 1), 4)
    .option('--max-batch <n>', 'most items per model call', intFlag('max-batch', 1), 32)
    .option('--max-wait-ms <ms>', 'how long an idle worker waits for a batch to fill', intFlag('max-wait-ms', 0), 0)
    .addOption(batchingOption())
    .option('--threads <n>', 'worker threads for CPU-bound built-in models', intFlag('threads', 1), 1)
    .option('--batch-timeout <seconds>', 'longest a batch may run; its items then fail with ERR_BATCH_TIMEOUT (default 120)', secondsFlag('batch-timeout'))
    .option('--lease <seconds>', 'how long a batch is this process\'s before others may take it back if it stops renewing it (died or hung; default batch timeout + 30)', secondsFlag('lease'))
    .option('--max-deliveries <n>', 'times an item is leased before it fails with ERR_DELIVERY_LIMIT (a worker died on it each time)', intFlag('max-deliveries', 1), 3)
    .option('--datasets <dir>', 'folder audio paths of bulk jobs are read from (the front-ends\' <data-dir>/datasets, shared)')
    .option('-p, --port <port>', 'serve /health and /metrics on this port (default: no listener)', intFlag('port', 0))
    .option('-H, --host <host>', 'address of the /health and /metrics listener', '127.0.0.1')
    .option('--metrics-token <token>', 'bearer token that may read /metrics (default: loopback clients only)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addOption(new Option('--log-format <format>', 'log lines: readable on a terminal, JSON otherwise (auto), or always one of them').choices(['auto', 'pretty', 'json']).default('auto'))
    .addHelpText(
      'after',
      `
Examples:
  $ inference-stream worker --redis redis://127.0.0.1:6379
  $ inference-stream worker --redis redis://10.0.0.5:6379 --model builtin/sentiment --workers 2 --port 9101
  $ inference-stream worker --redis redis://127.0.0.1:6379 --models ./models --model org/classifier

Front-ends: inference-stream serve --redis URL --workers 0 (docs/deploy.md).`,
    )
    .action(async (o) => {
      const logger = createLogger(o.logLevel as string, o.logFormat as LogFormat)
      const url = redisUrl(o, true) as string
      const registry = drillRegistry(registryFromFlags(o, { audioRoot: o.datasets ?? undefined }), process.env[DRILL_EXIT_ON] || undefined)
      const state = redisState(url, o.redisPrefix)
      await checkRedis(state, url)
      const worker = createWorker({
        state,
        registry,
        models: o.model,
        workers: o.workers,
        maxBatch: o.maxBatch,
        maxWaitMs: o.maxWaitMs,
        batching: o.batching,
        batchTimeoutMs: o.batchTimeout,
        leaseMs: o.lease,
        maxDeliveries: o.maxDeliveries,
        metricsToken: o.metricsToken,
        logger,
      })
      let listening: string | undefined
      if (o.port !== undefined) listening = await worker.listen(o.port, o.host)
      // One line on stdout, so scripts know it runs (and where its /health is).
      process.stdout.write(`worker ${worker.node} on ${url.replace(/\/\/[^@/]*@/, '//')}${listening ? `, health on ${listening}` : ''}\n`)
      logger.info({ node: worker.node, models: o.model ?? registry.list(), workers: o.workers, health: listening }, 'worker started')
      if (process.env[DRILL_EXIT_ON]) logger.warn({ drill: DRILL_EXIT_ON }, 'drill: this worker kills itself (SIGKILL) on a batch holding the poison input')
      stopOnSignals(logger, async () => {
        await worker.close()
        await registry.close()
        await state.close()
      })
    })
}

/**
 * The poison-item drill of the worker command (an environment variable, never a flag, and nothing
 * a front-end or a client can turn on): `INFERENCE_STREAM_DRILL_EXIT_ON=<text>` makes the worker
 * process kill itself with SIGKILL as soon as a batch it runs holds an item whose inputs are
 * exactly `<text>` — as a model that crashes its process on one input would. The operator watches
 * the cluster take the dead worker's leases back and, after `--max-deliveries` deliveries, fail the
 * item with `ERR_DELIVERY_LIMIT` (restart the worker each time it dies). test/cluster-*.ts uses it.
 */
export const DRILL_EXIT_ON = 'INFERENCE_STREAM_DRILL_EXIT_ON'

/** `registry` with every pipeline wrapped by the {@link DRILL_EXIT_ON} drill; `registry` itself when `exitOn` is undefined. */
export function drillRegistry(registry: ModelRegistry, exitOn: string | undefined): ModelRegistry {
  if (exitOn === undefined) return registry
  const wrapped = new WeakMap<Pipeline, Pipeline>()
  const wrap = (p: Pipeline): Pipeline => {
    let w = wrapped.get(p)
    if (!w) {
      w = {
        id: p.id,
        task: p.task,
        run: (inputs, parameters, signal, options) => {
          if (inputs.some((x) => x === exitOn)) {
            // Synchronous, so the line is out before the process is.
            writeSync(2, `${DRILL_EXIT_ON}: a batch of ${p.id} holds the poison input; killing this worker (SIGKILL)\n`)
            process.kill(process.pid, 'SIGKILL')
          }
          return p.run(inputs, parameters, signal, options)
        },
        close: p.close ? () => p.close!() : undefined,
        load: p.load ? () => p.load!() : undefined,
        loadState: p.loadState ? () => p.loadState!() : undefined,
      }
      wrapped.set(p, w)
    }
    return w
  }
  return {
    get: (id, compute) => {
      const p = registry.get(id, compute)
      return p === undefined ? undefined : wrap(p)
    },
    unavailable: registry.unavailable ? (id, compute) => registry.unavailable!(id, compute) : undefined,
    list: () => registry.list(),
    close: () => registry.close(),
  }
}
