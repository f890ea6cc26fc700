import { Command, Option } from 'commander'
import { join } from 'node:path'
import { createWorker } from '../server/worker.js'
import { intFlag, secondsFlag } from './common.js'
import { createLogger, type LogFormat } from './log.js'
import { addModelFlags, registryFromFlags } from './model-flags.js'
import { addRedisFlags, redisState, redisUrl } from './redis-flags.js'

/** `inference-stream worker`: runs batches from a cluster's Redis until SIGINT/SIGTERM. */
export function workerCommand(): Command {
  return addRedisFlags(addModelFlags(new Command('worker')), true)
    .description('Run batches for a cluster: lease them from Redis, run the models, finish them there (the front-ends deliver the results)')
    .option('-m, --model <id...>', 'serve only these model ids (repeatable; default every model this process has: the builtins and those of --models/--upstream)')
    .option('--workers <n>', 'batches run at once', intFlag('workers', 1), 4)
    .option('--max-batch <n>', 'most items per model call', intFlag('max-batch', 1), 32)
    .option('--max-wait-ms <ms>', 'how long an idle worker waits for a batch to fill', intFlag('max-wait-ms', 0), 0)
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
      const registry = registryFromFlags(o, { audioRoot: o.datasets ?? undefined })
      const state = redisState(url, o.redisPrefix)
      const worker = createWorker({
        state,
        registry,
        models: o.model,
        workers: o.workers,
        maxBatch: o.maxBatch,
        maxWaitMs: o.maxWaitMs,
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
      let stopping = false
      const stop = (signal: string): void => {
        if (stopping) process.exit(1)
        stopping = true
        logger.info({ signal }, 'shutting down')
        worker.close().then(
          async () => {
            await registry.close()
            await state.close()
            process.exit(0)
          },
          (err) => {
            logger.error({ err }, 'shutdown failed')
            process.exit(1)
          },
        )
      }
      process.on('SIGINT', () => stop('SIGINT'))
      process.on('SIGTERM', () => stop('SIGTERM'))
    })
}
