import { readFileSync } from 'node:fs'
import type { Command } from 'commander'
import { InvalidOptionError, StateStoreError } from '../errors.js'
import { SERVER_DEFAULTS } from '../server/options.js'
import { RedisStateBackend } from '../server/state/redis-backend.js'

/** Flags of a process on a shared Redis (`serve --redis`, `worker`). */
export interface RedisFlags {
  redis?: string
  redisPrefix?: string
}

/** Adds `--redis` (or INFERENCE_STREAM_REDIS) and `--redis-prefix`; `required` for `worker`. */
export function addRedisFlags(cmd: Command, required: boolean): Command {
  return cmd
    .option(
      '--redis <url>',
      required
        ? 'the Redis the front-ends use (redis://[:password@]host[:port][/db]); also INFERENCE_STREAM_REDIS'
        : 'share the queue, results and ledger with other processes on this Redis (redis://[:password@]host[:port][/db]): a front-end of a cluster; also INFERENCE_STREAM_REDIS',
    )
    .option('--redis-prefix <prefix>', 'prefix of every key: deployments sharing one Redis use different ones (default "inference-stream:")')
}

/** The Redis URL of the flags or environment, or undefined; a worker without one is refused. */
export function redisUrl(o: RedisFlags, required: boolean, env = process.env): string | undefined {
  const url = o.redis ?? (env.INFERENCE_STREAM_REDIS || undefined)
  if (url === undefined && required) throw new InvalidOptionError('A worker needs --redis URL (or INFERENCE_STREAM_REDIS): the Redis its front-ends use')
  if (url !== undefined && !/^rediss?:\/\//.test(url)) throw new InvalidOptionError(`--redis must be a redis:// or rediss:// URL, got "${url}"`)
  return url
}

/** The state backend of a cluster process, with the server's retention defaults. */
export function redisState(url: string, prefix: string | undefined, maxRetainedBytes?: number): RedisStateBackend {
  return new RedisStateBackend({
    url,
    prefix,
    maxRetained: SERVER_DEFAULTS.maxRetained,
    retentionMs: SERVER_DEFAULTS.retentionMs,
    maxRetainedBytes: maxRetainedBytes ?? SERVER_DEFAULTS.maxRetainedBytes,
    // A Redis that is down fails calls after a few tries rather than queueing them for ever.
    redisOptions: { maxRetriesPerRequest: 3 },
  })
}

/** Before a cluster process starts: Redis answers, and its keys under the prefix have this version's layout. */
export async function checkRedis(state: RedisStateBackend, url: string): Promise<void> {
  try {
    await state.checkLayout()
  } catch (err) {
    await state.close().catch(() => {})
    if (err instanceof StateStoreError) throw err
    throw new InvalidOptionError(`Cannot reach Redis at ${url.replace(/\/\/[^@/]*@/, '//')}: ${(err as Error).message}`)
  }
}

/** Reads a tenant secret file: its bytes as they are (at least 16), e.g. a data folder's secret.key. */
export function readSecretFile(path: string): Buffer {
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
  } catch (err) {
    throw new InvalidOptionError(`Cannot read --tenant-secret-file ${path}: ${(err as Error).message}`)
  }
  if (bytes.length < 16) throw new InvalidOptionError(`--tenant-secret-file ${path} holds ${bytes.length} bytes; a secret needs at least 16 (e.g. head -c 32 /dev/urandom > ${path})`)
  return bytes
}
