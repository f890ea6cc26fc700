// Issue 14: a bulk job survives the death of the front-end running it. Two front-ends on one Redis
// (the queue, results and ledger) and one shared data folder (jobs.sqlite, secret.key, datasets/),
// two worker processes running the items. The front-end that claimed the job is SIGKILLed mid-job;
// the other takes the job over once its claim runs out (--job-lease 2) and completes it: the
// outputs hold every row once, in order, and the cluster's ledger bills exactly one item per row.
// Real processes of the built CLI; CLUSTER_SEED replays the kill point. Needs Redis (see
// cluster-failover.ts).
import { parquetReadObjects } from 'hyparquet'
import { rmSync } from 'node:fs'
import t from 'tap'
import { auth, dataDir, job, post, rowText, status } from './helpers/bulk.js'
import { Cluster, clusterSeed, type FrontEnd } from './helpers/cluster.js'
import { prng } from './helpers/prng.js'
import { REDIS_SKIP, RedisTestSpace, redisReachable } from './helpers/redis.js'
import { until } from './helpers/until.js'

const N = Number(process.env.CLUSTER_BULK_ROWS ?? 4000)
const JOB_LEASE_S = 2

const skip = (await redisReachable()) ? false : REDIS_SKIP
const space = new RedisTestSpace()
if (!skip) t.teardown(() => space.cleanup())
const SEED = clusterSeed(t)

async function outputRows(base: string, name: string): Promise<Record<string, unknown>[]> {
  const info = (await (await fetch(`${base}/api/datasets/${name}`, { headers: auth })).json()) as { siblings: { rfilename: string }[] }
  const rows: Record<string, unknown>[] = []
  for (const f of info.siblings.map((s) => s.rfilename).filter((f) => f.startsWith('data/')).sort()) {
    const buf = await (await fetch(`${base}/datasets/${name}/resolve/main/${f}`, { headers: auth })).arrayBuffer()
    rows.push(...(await parquetReadObjects({ file: buf })))
  }
  return rows
}

/** Nodes that logged "bulk job started" for `id` (info lines, JSON), with the rows they resumed at. */
function starts(p: FrontEnd, id: string): Array<{ node: string; resumedAt?: number }> {
  const out: Array<{ node: string; resumedAt?: number }> = []
  for (const line of p.log.split('\n')) {
    if (!line.includes('"bulk job started"')) continue
    try {
      const o = JSON.parse(line) as { job: string; node: string; resumedAt?: number }
      if (o.job === id) out.push({ node: o.node, resumedAt: o.resumedAt })
    } catch {
      // Not a whole line yet.
    }
  }
  return out
}

t.test('the front-end running a bulk job is SIGKILLed: the other takes it over and completes it, every row once, billed once', { skip, timeout: 180_000 }, async (t) => {
  const rand = prng(SEED)
  const cluster = new Cluster(t, space)
  t.teardown(() => {
    if (!t.passing()) t.comment(`seed ${SEED}\n${cluster.logs()}`)
  })
  const dir = dataDir(N)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // Info logs: the "bulk job started" line names the node that runs the job. The token `t` of the
  // bulk helpers; the tenant secret is the shared folder's (secret.key).
  const args = ['--data-dir', dir, '--job-lease', String(JOB_LEASE_S), '--token', 't', '--log-level', 'info']
  // Started together on the fresh folder: both must make the same tenant secret (secret.key).
  const [a, b] = await Promise.all([cluster.frontEnd(args), cluster.frontEnd(args)])
  await Promise.all([0, 1].map(() => cluster.worker(['--lease', '3', '--workers', '4', '--max-batch', '32'])))

  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 5 } })
  t.equal(r.status, 200, `the job started on A (${JSON.stringify(r.body)})`)
  const id = r.body.jobid as string
  const killAt = Math.floor(N * (0.2 + rand() * 0.5))
  // Read from B: one job store.
  await until(async () => ((await status(b.url, id)).processed as number) >= killAt, `${killAt} rows stored`, 120_000)
  await a.kill()
  const left = await status(b.url, id)
  t.comment(`A killed at ${left.processed}/${N} rows stored`)
  t.ok((left.processed as number) < N, 'A was killed mid-job')
  t.match(left, { state: 'running' })
  const startedOnA = starts(a, id)
  t.equal(startedOnA.length, 1, 'the job ran on A')

  const killed = Date.now()
  let last: Record<string, unknown> = {}
  await until(async () => {
    last = await status(b.url, id)
    return !['queued', 'running'].includes(last.state as string)
  }, 'the job to end on B', 120_000)
  t.comment(`B ended the job ${((Date.now() - killed) / 1000).toFixed(1)} s after A died`)
  t.match(last, { state: 'completed', processed: N, failed: 0, total: N }, 'completed')
  const onB = starts(b, id)
  t.equal(onB.length, 1, 'B took the job over')
  t.not(onB[0]?.node, startedOnA[0]?.node, 'as a node of its own')
  t.ok((onB[0]?.resumedAt ?? 0) > 0, `from the rows A stored (resumed at ${onB[0]?.resumedAt})`)

  const rows = await outputRows(b.url, r.body.bulk_name as string)
  t.equal(rows.length, N, 'one output row per input row')
  t.same(rows.map((x) => Number(x.row)).filter((x, i) => x !== i), [], 'each row once, in order')
  t.equal(rows.filter((x, i) => x.outputs !== JSON.stringify(rowText(i)) || x.error).length, 0, 'each with its own output, none failed')
  t.equal(await b.billed(), N, 'the ledger bills each row once')
})
