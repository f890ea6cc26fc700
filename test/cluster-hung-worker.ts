// Issue 14: a worker that hangs (SIGSTOP) past its lease while it runs batches. Its batches are
// taken back when the lease runs out and finished by the other workers; once it is continued
// (SIGCONT) it finishes its old batches late, and that finish changes nothing: no second result
// reaches the still open stream, and the ledger bills each item once. Real processes of the built
// CLI on one Redis; CLUSTER_SEED replays the stop point. Needs Redis (see cluster-failover.ts).
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t from 'tap'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { Cluster, TOKEN, clusterSeed, type Worker } from './helpers/cluster.js'
import { prng } from './helpers/prng.js'
import { REDIS_SKIP, RedisTestSpace, redisReachable } from './helpers/redis.js'
import { until } from './helpers/until.js'

const N = Number(process.env.CLUSTER_HUNG_ITEMS ?? 2000)
const LEASE_S = 2
// Long batches: the hung worker is stopped in the middle of one.
const DELAY_MS = 300

const skip = (await redisReachable()) ? false : REDIS_SKIP
const space = new RedisTestSpace()
if (!skip) t.teardown(() => space.cleanup())
const SEED = clusterSeed(t)

/** Items a worker ran to the end (its /metrics), whether its finish counted or not. */
async function ran(w: Worker): Promise<number> {
  const text = await (await fetch(`${w.health}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
  let n = 0
  for (const m of text.matchAll(/^inference_stream_items_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1])
  return n
}

t.test('a worker stopped past its lease: its batches are run by others, its late finish changes nothing', { skip, timeout: 180_000 }, async (t) => {
  const rand = prng(SEED)
  const t0 = Date.now()
  const phases: string[] = []
  const phase = (what: string): void => void phases.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  t.teardown(() => t.comment(phases.join(', ')))
  const cluster = new Cluster(t, space)
  t.teardown(() => {
    if (!t.passing()) t.comment(`seed ${SEED}\n${cluster.logs()}`)
  })
  // The worker to hang runs alone at first: the others are stopped (SIGSTOP) as soon as they
  // run, before anything is queued, and continued once it hangs.
  const args = ['--lease', String(LEASE_S), '--max-batch', '32']
  const [front, hung, ...others] = await Promise.all([
    cluster.frontEnd(),
    cluster.worker([...args, '--workers', '2']),
    ...[0, 1].map(async () => {
      const w = await cluster.worker([...args, '--workers', '4'])
      w.signal('SIGSTOP')
      return w
    }),
  ])
  t.teardown(() => {
    for (const w of [hung, ...others]) w.signal('SIGCONT')
  })

  const out: InferenceResult<number>[] = []
  // Ended by the test once the hung worker has finished its old batches: results those could
  // still route to this stream would arrive before the end.
  let endInput!: () => void
  const inputDone = new Promise<void>((r) => (endInput = r))
  const stream = new InferenceStream<number>({
    url: front.ws,
    model: 'builtin/echo',
    token: TOKEN,
    parameters: { delay_ms: DELAY_MS },
    input: (n) => ({ inputs: `item-${n}` }),
    runId: 'hung',
    maxInFlight: 1024,
  })
  const done = pipeline(
    Readable.from((async function* () {
      for (let i = 0; i < N; i++) yield i
      await inputDone
    })()),
    stream,
    new Writable({ objectMode: true, write: (r: InferenceResult<number>, _e, cb) => (out.push(r), cb()) }),
  )
  done.catch(() => {})

  // Stopped after 0 to 3 of its batches came back, in the middle of running two others.
  const after = Math.floor(rand() * 4) * 32
  await until(() => out.length >= after, `${after} results`, 60_000)
  await until(async () => ((await hung.busy()) ?? 0) === 2, 'the worker to run two batches', 30_000)
  const beforeStop = await ran(hung)
  hung.signal('SIGSTOP')
  phase('stopped')
  const stoppedAt = Date.now()
  const { leases, items: held } = await cluster.heldBy(hung.node)
  t.ok(leases > 0, `the stopped worker holds leases (${leases}, ${held} items)`)

  // The others go on after the stop.
  for (const w of others) w.signal('SIGCONT')
  await until(() => out.length >= N, `all ${N} results without the hung worker`, 120_000)
  phase('all results')
  t.ok(Date.now() - stoppedAt >= LEASE_S * 1000, 'its leases ran out before the last result came')
  t.equal(await front.billed(), N, 'each item billed once (the taken-back batches by the workers that ran them)')

  // Continued: its old batches end, and it finishes them with leases it no longer holds.
  hung.signal('SIGCONT')
  await until(async () => (await ran(hung)) >= beforeStop + held, 'the hung worker to finish its old batches', 30_000)
  await until(async () => (await hung.busy()) === 0, 'the hung worker to be idle', 30_000)
  phase('old batches finished')
  t.ok(hung.alive, 'the hung worker goes on')
  const total = (await ran(hung)) + (await Promise.all(others.map(ran))).reduce((a, b) => a + b, 0)
  t.ok(total >= N + held, `the items of its old batches ran twice (${total} runs of ${N} items)`)
  // Long enough for a routed result to reach the open stream.
  await new Promise((r) => setTimeout(r, 500))
  endInput()
  await done
  phase('stream ended')
  t.equal(out.length, N, 'no second result reached the stream')
  let wrong = 0
  for (let i = 0; i < out.length; i++) if (out[i].outputs !== `item-${i}` || out[i].error || out[i].id !== `hung-${i}`) wrong++
  t.equal(wrong, 0, 'every result once, in input order, none failed')
  t.equal(await front.billed(), N, 'the late finish billed nothing')
})
