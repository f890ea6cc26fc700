// Issue 14: a poison item — one that kills the worker process running it, every time. The workers
// run the drill INFERENCE_STREAM_DRILL_EXIT_ON=<text> (lib/cli/worker.ts: SIGKILL of the worker on a
// batch holding that input) and are restarted when they die, as a supervisor would. The item's
// lease is taken back after each death until it was leased --max-deliveries (2) times; then it ends
// as a failed result, ERR_DELIVERY_LIMIT, unbilled, and the rest of the stream completes.
//
// Each worker process runs one batch at a time (--workers 1) of up to 16 items: the batch-mates of
// the poison item die with it once, then run alone (an item whose lease ran out is leased alone) and
// complete; only the poison item reaches the limit. (Items that share a *process* with it — other
// batches of a worker with --workers > 1 — each die with it once too, so a limit of 2 could catch one
// that was unlucky twice: operators keep --max-deliveries at 3 or more.) Real processes of the built
// CLI on one Redis; CLUSTER_SEED replays where the poison item is. Needs Redis (see cluster-failover.ts).
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { Cluster, TOKEN, clusterSeed, type Worker } from './helpers/cluster.js'
import { prng } from './helpers/prng.js'
import { REDIS_SKIP, RedisTestSpace, redisReachable } from './helpers/redis.js'

const N = Number(process.env.CLUSTER_POISON_ITEMS ?? 1000)
const MAX_DELIVERIES = 2
const POISON = 'poison pill'

const skip = (await redisReachable()) ? false : REDIS_SKIP
const space = new RedisTestSpace()
if (!skip) t.teardown(() => space.cleanup())
const SEED = clusterSeed(t)

t.test(`a poison item kills its worker on each delivery: it fails with ERR_DELIVERY_LIMIT after ${MAX_DELIVERIES}, the rest completes`, { skip, timeout: 180_000 }, async (t) => {
  const rand = prng(SEED)
  const cluster = new Cluster(t, space)
  t.teardown(() => {
    if (!t.passing()) t.comment(`seed ${SEED}\n${cluster.logs()}`)
  })
  const deliveries = ['--max-deliveries', String(MAX_DELIVERIES)]
  const front = await cluster.frontEnd(deliveries)
  const args = ['--lease', '2', '--workers', '1', '--max-batch', '16', ...deliveries]
  const env = { INFERENCE_STREAM_DRILL_EXIT_ON: POISON }

  // Two worker slots, each restarted when its worker dies.
  const deaths: Array<{ name: string; at: number; signal: string | null; drill: boolean }> = []
  let started = Date.now()
  let stopping = false
  const supervise = async (): Promise<void> => {
    while (!stopping) {
      let w: Worker
      try {
        w = await cluster.worker(args, env)
      } catch (err) {
        if (stopping) return
        throw err
      }
      const exit = await w.exited
      if (stopping) return
      deaths.push({ name: w.name, at: Math.round((Date.now() - started) / 100) / 10, signal: exit.signal, drill: w.log.includes('INFERENCE_STREAM_DRILL_EXIT_ON: a batch of builtin/echo holds the poison input') })
    }
  }
  const slots = [supervise(), supervise()]
  // (The cluster's teardown kills the last workers, which ends the slots.)
  t.teardown(() => void (stopping = true))
  for (const slot of slots) slot.catch((err: unknown) => t.fail(`a worker slot failed: ${(err as Error).message}`))

  const poisonAt = Math.floor(N * (0.05 + rand() * 0.9))
  const out: InferenceResult<number>[] = []
  started = Date.now()
  let progress = ''
  const ticker = setInterval(() => (progress += ` ${out.length}`), 1000)
  await pipeline(
    Readable.from((function* () { for (let i = 0; i < N; i++) yield i })()),
    new InferenceStream<number>({
      url: front.ws,
      model: 'builtin/echo',
      token: TOKEN,
      input: (n) => ({ inputs: n === poisonAt ? POISON : `item-${n}` }),
      runId: 'poison',
      maxInFlight: 512,
    }),
    new Writable({ objectMode: true, write: (r: InferenceResult<number>, _e, cb) => (out.push(r), cb()) }),
  )
  stopping = true
  clearInterval(ticker)
  t.comment(`results each second:${progress}`)
  t.comment(`${N} items, the poison at ${poisonAt}, in ${((Date.now() - started) / 1000).toFixed(1)} s; deaths ${JSON.stringify(deaths)}`)
  t.equal(out.length, N, 'one result per item')
  t.match(out[poisonAt], { id: `poison-${poisonAt}`, outputs: { code: 'ERR_DELIVERY_LIMIT' }, error: { code: 'ERR_ITEM_FAILED', remoteCode: 'ERR_DELIVERY_LIMIT' } }, 'the poison item failed with ERR_DELIVERY_LIMIT')
  t.match(out[poisonAt]?.outputs, { error: new RegExp(`leased ${MAX_DELIVERIES} times`) }, `after ${MAX_DELIVERIES} deliveries`)
  let wrong = 0
  for (let i = 0; i < out.length; i++) if (i !== poisonAt && (out[i].outputs !== `item-${i}` || out[i].error || out[i].id !== `poison-${i}`)) wrong++
  t.equal(wrong, 0, 'every other item completed, in input order')
  t.equal(deaths.length, MAX_DELIVERIES, `a worker died on each delivery (${deaths.length})`)
  t.ok(deaths.every((d) => d.signal === 'SIGKILL' && d.drill), 'each killed by the drill')
  t.equal(await front.billed(), N - 1, 'every other item billed once; the dead letter is not billed')
})
