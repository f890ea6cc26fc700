// Bulk jobs on several nodes sharing one data folder's jobs (one jobs.sqlite): a job runs on the
// node that holds its claim; a node that dies loses it when the claim expires and another node
// goes on without running a stored row again; a cancel sent to any node stops the job where it
// runs; a stale node can neither store rows nor end the job. A server with `dataDir` holds the
// folder's state file (state.sqlite, one server per file): the nodes here bring their own state.
import { once } from 'node:events'
import { join } from 'node:path'
import { parquetReadObjects } from 'hyparquet'
import t, { type Test } from 'tap'
import { JobStore } from '../lib/server/store/job-store.js'
import { createServer, type InferenceServer } from '../lib/server/server.js'
import type { ServerOptions } from '../lib/server/options.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { InvalidOptionError } from '../lib/errors.js'
import { auth, countingEcho, dataDir, job, post, rowText, serverProcess, status, waitState } from './helpers/bulk.js'
import { until } from './helpers/until.js'

async function outputRows(base: string, name: string): Promise<Record<string, unknown>[]> {
  const info = (await (await fetch(`${base}/api/datasets/${name}`, { headers: auth })).json()) as { siblings: { rfilename: string }[] }
  const rows: Record<string, unknown>[] = []
  for (const f of info.siblings.map((s) => s.rfilename).filter((f) => f.startsWith('data/'))) {
    const buf = await (await fetch(`${base}/datasets/${name}/resolve/main/${f}`, { headers: auth })).arrayBuffer()
    rows.push(...(await parquetReadObjects({ file: buf })))
  }
  return rows
}

async function commits(base: string, name: string): Promise<unknown[]> {
  return (await (await fetch(`${base}/api/datasets/${name}/commits/main`, { headers: auth })).json()) as unknown[]
}

function openStore(t: Test, dir: string): JobStore {
  const store = new JobStore(join(dir, 'jobs.sqlite'))
  t.teardown(() => store.close())
  return store
}

// Rows a node ran for a job that stopped at `stored` rows: each row not stored, once, and none of the stored ones.
function checkRanOnce(t: Test, ran: number[], stored: Set<number>, n: number): void {
  t.equal(new Set(ran).size, ran.length, 'no row ran twice on the node that took over')
  t.same(ran.filter((i) => stored.has(i)), [], 'no stored row ran again')
  t.equal(ran.length, n - stored.size, 'every row not stored ran there, once')
}

// A node on the data folder `dir` with a state of its own (closed after the server), on port 0.
async function startNode(t: Test, dir: string, nodeId: string, options: ServerOptions = {}): Promise<InferenceServer> {
  const state = new MemoryStateBackend({ maxRetained: 100_000, retentionMs: 60_000 })
  const server = createServer({ tokens: ['t'], dataDir: dir, nodeId, state, ...options })
  await server.listen(0)
  t.teardown(async () => {
    await server.close()
    await state.close()
  })
  return server
}

const processed = async (base: string, id: string): Promise<number> => (await status(base, id)).processed as number

t.test('a node dies mid-job (SIGKILL): another node takes the job over once its claim expires, running only the rows not stored', async (t) => {
  const N = 2000
  const dir = dataDir(N)
  // Node A in a process of its own, to be killed (with the folder's state file, as `serve
  // --data-dir`); a lease of 1 s, renewed every 333 ms.
  const a = await serverProcess({ tokens: ['t'], dataDir: dir, nodeId: 'node-a', jobLeaseMs: 1000, workers: 2, maxBatch: 8 })
  t.teardown(() => a.child.kill('SIGKILL'))
  const counting = countingEcho()
  const b = await startNode(t, dir, 'node-b', { jobLeaseMs: 1000, registry: counting.registry })
  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 20 } })
  t.equal(r.status, 200)
  const id = r.body.jobid as string
  // Node B sees the job (one store) and leaves it to A, which holds its claim.
  await until(async () => (await processed(b.url, id)) >= 200, 'node A storing rows', 60_000)
  const store = openStore(t, dir)
  t.match(store.get(id), { state: 'running', claimedBy: 'node-a' })
  t.same(counting.ran, [], 'node B ran nothing while node A held the claim')

  a.child.kill('SIGKILL')
  if (a.child.exitCode === null && a.child.signalCode === null) await once(a.child, 'exit')
  // A is dead, B cannot claim before A's last renewal expires: what is stored now is what A left.
  const stored = new Set(store.doneIndexes(id))
  t.equal(store.get(id)?.claimedBy, 'node-a', 'the claim outlives its node until it expires')
  t.ok(stored.size > 0 && stored.size < N, `killed mid-job (${stored.size}/${N} rows stored)`)

  const seen = await waitState(b.url, id, ['completed', 'failed', 'cancelled'])
  t.match(seen[seen.length - 1], { state: 'completed', processed: N, failed: 0, total: N })
  t.match(store.get(id), { claimedBy: null, claimUntil: null }, 'an ended job has no claim')
  checkRanOnce(t, counting.ran, stored, N)
  const rows = await outputRows(b.url, r.body.bulk_name as string)
  t.same(rows.map((x) => x.row), [...Array(N).keys()], 'each row once in the outputs, in order')
  t.ok(rows.every((x, i) => x.outputs === JSON.stringify(rowText(i))), 'each with its own output')
  // Nodes here have states of their own (a real deployment shares one: Redis): B's ledger bills
  // exactly the rows B ran.
  t.equal(await b.state.billedTo(`job\n${id}`), N - stored.size, 'B billed each row it ran, once')
})

t.test('a cancel sent to node B stops the job running on node A within one renewal; nothing is written after', async (t) => {
  const dir = dataDir(3000)
  const lease = 1200
  const onA = countingEcho()
  const onB = countingEcho()
  const a = await startNode(t, dir, 'node-a', { jobLeaseMs: lease, registry: onA.registry, workers: 2, maxBatch: 8 })
  const b = await startNode(t, dir, 'node-b', { jobLeaseMs: lease, registry: onB.registry })
  // Batches of 3 s: no result comes (so nothing is stored, and no write can see the cancel) before
  // A's next renewal, which alone must stop the job.
  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 3000 } })
  const id = r.body.jobid as string
  await until(() => onA.ran.length > 0, 'node A running a batch of the job')
  t.ok(a.bulk!.jobs.runs(id), 'the job runs on A')
  t.match(await status(b.url, id), { state: 'running', processed: 0 })

  const sent = Date.now()
  const c = await post(b.url, `/bulk/cancel/${id}`, {})
  t.equal(c.status, 200)
  t.match(c.body, { status: { state: 'cancelled', active: 0, error: 'Cancelled' } }, 'cancelled in the store at once')
  await until(() => !a.bulk!.jobs.runs(id), 'node A stopping the job', 10_000)
  const took = Date.now() - sent
  t.ok(took < lease, `A stopped ${took} ms after the cancel (renewals every ${lease / 3} ms)`)
  t.equal(onA.done.length, 0, 'before any result of the job came')
  // The results of the batches that were running come, and are dropped.
  await until(() => onA.done.length > 0, 'the running batches ending', 10_000)
  // Longer than results wait to be stored together (100 ms): asserting that nothing comes.
  await new Promise((res) => setTimeout(res, 250))
  t.match(await status(a.url, id), { state: 'cancelled', processed: 0, error: 'Cancelled', revision: null }, 'A wrote nothing after the cancel')
  t.same(onB.ran, [], 'B never ran the job')
  t.equal((await fetch(`${a.url}/api/datasets/${r.body.bulk_name}`, { headers: auth })).status, 404, 'no output dataset was written')
})

t.test('a cancel sent to the node running the job stops it there at once, not at a renewal', async (t) => {
  // Renewals every 20 s: a stop within the wait below is the cancel's own.
  const a = await startNode(t, dataDir(3000), 'node-a', { jobLeaseMs: 60_000, workers: 2, maxBatch: 8 })
  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 20 } })
  const id = r.body.jobid as string
  await until(async () => (await processed(a.url, id)) >= 20, 'node A storing rows')
  t.equal((await post(a.url, `/bulk/cancel/${id}`, {})).status, 200)
  await until(() => !a.bulk!.jobs.runs(id), 'node A stopping the job', 5000)
  t.match(await status(a.url, id), { state: 'cancelled' })
})

t.test('a stale node cannot go on: once another node holds the claim, it stores nothing more and never ends the job', async (t) => {
  const N = 1500
  const dir = dataDir(N)
  const onA = countingEcho()
  // A long lease: A renews every 20 s, so within this test only the guards in SQL can stop it.
  const a = await startNode(t, dir, 'node-a', { jobLeaseMs: 60_000, registry: onA.registry, workers: 2, maxBatch: 8 })
  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 20 } })
  const id = r.body.jobid as string
  await until(async () => (await processed(a.url, id)) >= 100, 'node A storing rows')
  const store = openStore(t, dir)
  // Node B takes the job as if A's claim had expired (A frozen past its lease: a long GC pause, a suspended VM).
  t.equal(store.claim(id, 'node-b', 60_000, Date.now() + 60_000), true)
  const taken = store.get(id)!
  t.ok(taken.processed < N, 'taken over mid-job')
  await until(() => !a.bulk!.jobs.runs(id), 'node A stopping at its next write', 10_000)
  t.match(store.get(id), { state: 'running', claimedBy: 'node-b', processed: taken.processed, revision: null, endTime: null }, 'A wrote nothing after the takeover')

  // Node B (started now under the name that holds the claim) goes on at once, and ends the job.
  const stored = new Set(store.doneIndexes(id))
  const onB = countingEcho()
  const b = await startNode(t, dir, 'node-b', { jobLeaseMs: 60_000, registry: onB.registry })
  const seen = await waitState(b.url, id, ['completed', 'failed', 'cancelled'])
  t.match(seen[seen.length - 1], { state: 'completed', processed: N, failed: 0 })
  checkRanOnce(t, onB.ran, stored, N)
  t.equal((await commits(b.url, r.body.bulk_name as string)).length, 1, 'one commit: the stale node made none')
  t.equal(await b.state.billedTo(`job\n${id}`), N - stored.size, 'B billed each row it ran, once')
})

t.test('a node closed gracefully hands its job back at once: another node goes on without waiting for the lease', async (t) => {
  const N = 1500
  const dir = dataDir(N)
  const onB = countingEcho()
  // A's claim would last a minute; B looks for jobs every 200 ms.
  const a = await startNode(t, dir, 'node-a', { jobLeaseMs: 60_000, workers: 2, maxBatch: 8 })
  const b = await startNode(t, dir, 'node-b', { jobLeaseMs: 600, registry: onB.registry })
  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 20 } })
  const id = r.body.jobid as string
  await until(async () => (await processed(b.url, id)) >= 100, 'node A storing rows')
  t.same(onB.ran, [], 'B leaves a claimed job alone')
  const store = openStore(t, dir)
  await a.close()
  t.not(store.get(id)?.claimedBy, 'node-a', 'A released its claim')
  // Within 30 s: half of A's lease.
  const seen = await waitState(b.url, id, ['completed', 'failed', 'cancelled'], 30_000)
  t.match(seen[seen.length - 1], { state: 'completed', processed: N })
  t.equal(new Set(onB.ran).size, onB.ran.length, 'no row ran twice on B')
})

t.test('options: jobLeaseMs and nodeId are checked, naming the option', async (t) => {
  for (const bad of [0, 99, 1.5, '30000']) {
    t.throws(() => createServer({ jobLeaseMs: bad as number }), { constructor: InvalidOptionError, message: /Option "jobLeaseMs" must be an integer >= 100/ })
  }
  t.throws(() => createServer({ nodeId: '' }), { constructor: InvalidOptionError, message: /Option "nodeId" must be a non-empty string/ })
})
