// Fair share across tenants. Part 1: properties of the queue over seeded random schedules (pushes
// from several tenants, W workers pulling, acking and releasing), checked against a model of the
// queue. Part 2: a real server where one tenant parks the workers and floods, and another tenant is
// still answered. Part 3: the time limit per batch.
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { prng } from './helpers/prng.js'
import { MAX_ECHO_DELAY_MS } from '../lib/models/builtin-echo.js'
import type { Pipeline } from '../lib/models/pipeline.js'
import { PooledPipeline } from '../lib/models/pooled-pipeline.js'
import { createModelRegistry } from '../lib/models/registry.js'
import { WorkerPool } from '../lib/models/worker-pool.js'
import type { InferenceServer } from '../lib/server/server.js'
import { FairShare, leaseCap } from '../lib/server/queue/fair-share.js'
import { MemoryWorkQueue } from '../lib/server/queue/memory-queue.js'
import type { Lease, WorkItem } from '../lib/server/queue/work-queue.js'
import { startServer } from './helpers/server.js'
import { connect, countResults } from './helpers/ws-client.js'


t.test('leaseCap leaves one worker for another tenant', async (t) => {
  t.same([1, 2, 3, 4, 8].map(leaseCap), [1, 1, 2, 3, 7])
})

t.test('FairShare: least recently served (or arrived) first; a newcomer joins at the back', async (t) => {
  const f = new FairShare()
  for (const x of ['b', 'a', 'c']) f.arrived(x)
  t.same(f.order(['a', 'b', 'c']), ['b', 'a', 'c'], 'in arrival order')
  f.served('b')
  t.same(f.order(['a', 'b', 'c']), ['a', 'c', 'b'])
  f.served('c')
  f.served('a')
  t.same(f.order(['a', 'b', 'c']), ['b', 'c', 'a'])
  f.arrived('b')
  t.same(f.order(['a', 'b', 'c']), ['b', 'c', 'a'], 'arrived again while in the round: no change')
  f.forget('b')
  f.arrived('b')
  t.same(f.order(['a', 'b', 'c']), ['c', 'a', 'b'], 'a tenant that left and came back is at the back')
})

interface Outcome {
  failures: string[]
  pulls: number
  pairWindows: number
}

/**
 * One random schedule. The model mirrors what the queue must hold: per (tenant, group) the FIFO
 * of queued sequence numbers, and the leases each tenant holds.
 */
async function schedule(seed: number): Promise<Outcome> {
  const rnd = prng(seed)
  const pick = (n: number): number => Math.floor(rnd() * n)
  const W = 2 + pick(4)
  const T = 2 + pick(3)
  const G = 1 + pick(3)
  const maxBatch = 1 + pick(4)
  const cap = leaseCap(W)
  const tenants = [...Array(T).keys()].map((i) => `t${i}`)
  const q = new MemoryWorkQueue()
  const fifo = new Map<string, number[]>() // `${tenant} ${group}` → queued seqs, send order
  const queuedOf = new Map<string, number>(tenants.map((x) => [x, 0]))
  const held = new Map<string, number>(tenants.map((x) => [x, 0]))
  const sent = new Map<string, number>() // seq counter per tenant+group
  const acked = new Map<string, number>() // `${tenant} ${group} ${seq}` → times acked
  const pushed = new Set<string>()
  const workers: (Lease | undefined)[] = new Array(W).fill(undefined)
  const failures: string[] = []
  const fail = (msg: string): void => {
    if (failures.length < 5) failures.push(`seed ${seed} (W=${W} T=${T} G=${G} maxBatch=${maxBatch}): ${msg}`)
  }
  // Round-robin windows per pair of tenants: pulls at which both were eligible (queued work, under
  // the cap) before the pull; the difference of batches given to each in a window.
  const diff = new Map<string, number>()
  let pairWindows = 0
  let clock = 0
  let pulls = 0
  const eligible = (x: string): boolean => (queuedOf.get(x) as number) > 0 && (held.get(x) as number) < cap

  const push = async (): Promise<void> => {
    const tenant = tenants[pick(T)]
    const n = 1 + pick(rnd() < 0.2 ? 40 : 4) // now and then a flood
    const items: WorkItem[] = []
    for (let i = 0; i < n; i++) {
      const group = `g${pick(G)}`
      const key = `${tenant} ${group}`
      const seq = sent.get(key) ?? 0
      sent.set(key, seq + 1)
      const id = `${group}.${seq}`
      items.push({ tenant, owner: tenant, id, model: 'm', compute: 'cpu', inputs: seq, parameters: undefined, group, enqueuedAt: ++clock })
      fifo.set(key, [...(fifo.get(key) ?? []), seq])
      pushed.add(`${key} ${seq}`)
    }
    queuedOf.set(tenant, (queuedOf.get(tenant) as number) + n)
    await q.push(items)
  }

  const pull = async (w: number): Promise<void> => {
    const before = new Map(tenants.map((x) => [x, eligible(x)]))
    const anyEligible = tenants.some((x) => before.get(x))
    const ac = new AbortController()
    const pulling = q.pull({ maxBatch, maxWaitMs: 0, signal: ac.signal, maxLeasesPerTenant: cap })
    await new Promise((r) => setImmediate(r))
    ac.abort()
    const lease = await pulling
    if (!lease) {
      if (anyEligible) fail(`worker ${w} got nothing while a tenant under the cap had queued work`)
      return
    }
    pulls++
    workers[w] = lease
    if (!before.get(lease.tenant)) fail(`lease for ${lease.tenant}, which was not eligible`)
    held.set(lease.tenant, (held.get(lease.tenant) as number) + 1)
    const group = lease.items[0].group
    if (lease.items.length === 0 || lease.items.length > maxBatch) fail(`batch of ${lease.items.length}`)
    if (lease.items[0].tenant !== lease.tenant) fail('the chosen tenant\'s items do not come first')
    const groupQueued = [...fifo].filter(([k]) => k.endsWith(` ${group}`)).reduce((n, [, v]) => n + v.length, 0)
    if (lease.items.length < Math.min(maxBatch, groupQueued)) fail(`batch of ${lease.items.length} while ${groupQueued} of its group were queued`)
    for (const item of lease.items) {
      if (item.group !== group) fail('a batch mixes groups')
      const key = `${item.tenant} ${item.group}`
      const head = fifo.get(key)?.[0]
      // (b) each tenant's send order within a group: the item is the oldest of its tenant and group.
      if (head !== item.inputs) fail(`${key}: leased seq ${String(item.inputs)}, expected ${String(head)}`)
      fifo.get(key)?.shift()
      queuedOf.set(item.tenant, (queuedOf.get(item.tenant) as number) - 1)
    }
    // (c) fairness: while two tenants are both eligible, they take turns.
    for (let i = 0; i < T; i++) {
      for (let j = i + 1; j < T; j++) {
        const [x, y] = [tenants[i], tenants[j]]
        const k = `${x} ${y}`
        if (!before.get(x) || !before.get(y)) {
          diff.delete(k)
          continue
        }
        // Batches chosen for each (riding along in another's batch is not a turn).
        const d = (diff.get(k) ?? 0) + (lease.tenant === x ? 1 : lease.tenant === y ? -1 : 0)
        diff.set(k, d)
        pairWindows++
        // Strict turns give 1; a release can hand a rider's items back after the rider left the
        // round (it re-joins at the back), which costs one turn more.
        if (Math.abs(d) > 2) fail(`${x} and ${y} both eligible, yet one got ${Math.abs(d)} batches more`)
      }
    }
    // (d) no tenant holds every worker while another has queued items.
    for (const x of tenants) {
      if ((held.get(x) as number) >= W && tenants.some((y) => y !== x && (queuedOf.get(y) as number) > 0)) {
        fail(`${x} holds all ${W} leases while another tenant has queued work`)
      }
    }
  }

  const finish = async (w: number, release: boolean): Promise<void> => {
    const lease = workers[w] as Lease
    workers[w] = undefined
    held.set(lease.tenant, (held.get(lease.tenant) as number) - 1)
    if (release) {
      for (let i = lease.items.length - 1; i >= 0; i--) {
        const item = lease.items[i]
        const key = `${item.tenant} ${item.group}`
        fifo.set(key, [item.inputs as number, ...(fifo.get(key) ?? [])])
        queuedOf.set(item.tenant, (queuedOf.get(item.tenant) as number) + 1)
      }
      await q.release(lease)
    } else {
      for (const item of lease.items) {
        const k = `${item.tenant} ${item.group} ${String(item.inputs)}`
        acked.set(k, (acked.get(k) ?? 0) + 1)
      }
      await q.ack(lease)
    }
  }

  for (let step = 0; step < 400; step++) {
    const r = rnd()
    const w = pick(W)
    if (r < 0.3) await push()
    else if (workers[w] === undefined) await pull(w)
    else await finish(w, rnd() < 0.05)
  }
  // Drain: every worker finishes and pulls until nothing is left.
  for (let guard = 0; guard < 100_000 && (q.stats().queued > 0 || workers.some((l) => l)); guard++) {
    const w = guard % W
    if (workers[w]) await finish(w, false)
    else await pull(w)
  }
  // (a) nothing lost or duplicated.
  for (const k of pushed) if (acked.get(k) !== 1) fail(`${k} acked ${acked.get(k) ?? 0} times`)
  if (acked.size !== pushed.size) fail(`${acked.size} acked, ${pushed.size} pushed`)
  if (q.stats().queued !== 0 || q.stats().processing !== 0) fail(`left ${JSON.stringify(q.stats())}`)
  await q.close()
  return { failures, pulls, pairWindows }
}

t.test('queue properties over 300 seeded random schedules', async (t) => {
  let pulls = 0
  let pairWindows = 0
  const failures: string[] = []
  for (let seed = 1; seed <= 300; seed++) {
    const o = await schedule(seed)
    failures.push(...o.failures)
    pulls += o.pulls
    pairWindows += o.pairWindows
  }
  t.same(failures.slice(0, 10), [], 'no item lost or doubled, order kept, turns taken, no tenant holds every worker')
  t.ok(pulls > 10_000, `the schedules exercised the queue (${pulls} batches)`)
  t.ok(pairWindows > 1000, `two tenants were often eligible at once (${pairWindows} pulls)`)
})

// ---- Part 2 and 3: a real server -------------------------------------------------------------

const post = (server: InferenceServer, model: string, token: string, body: unknown): Promise<Response> =>
  fetch(`${server.url}/models/${model}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })

t.test('one tenant parks the workers and floods; another tenant is still answered', async (t) => {
  const server = await startServer(t, { tokens: ['A', 'B'] })
  const workers = server.options.workers
  // B's model loaded first: its cold start (worker threads loading TypeScript under the test
  // loader, seconds on a loaded machine) is not what this measures.
  t.equal((await post(server, 'builtin/sentiment', 'B', { inputs: 'warm' })).status, 200)
  const a = await connect(server.streamUrl('builtin/echo'), { token: 'A' })
  // Distinct parameters: one group each, so each takes a worker for the whole delay.
  for (let k = 0; k < workers + 4; k++) a.send({ id: `park${k}`, inputs: k, parameters: { delay_ms: MAX_ECHO_DELAY_MS, k } })
  for (let i = 0; i < 3000; i++) a.send({ id: `flood${i}`, inputs: i })
  await new Promise((r) => setTimeout(r, 200)) // the parking batches are running
  await a.close()
  const started = Date.now()
  const b = await connect(server.streamUrl('builtin/sentiment'), { token: 'B' })
  b.send({ id: 'b1', inputs: 'What a lovely day' })
  const http = post(server, 'builtin/sentiment', 'B', { inputs: 'This is terrible' })
  await b.waitFor(() => b.results().has('b1'), 'B\'s websocket item', 5000)
  t.match(b.results().get('b1'), [[{ label: 'POSITIVE' }, { label: 'NEGATIVE' }]], 'a real answer')
  const res = await http
  t.equal(res.status, 200)
  t.match(await res.json(), [[{ label: 'NEGATIVE' }, { label: 'POSITIVE' }]])
  const elapsed = Date.now() - started
  t.ok(elapsed < 5000, `answered in ${elapsed} ms while A parks ${workers + 4} batches of ${MAX_ECHO_DELAY_MS} ms`)
  t.ok(elapsed < MAX_ECHO_DELAY_MS - 2000, 'not after a parking batch ended')
  await b.close()
})

/** A model that never answers and ignores its signal (the worst case). */
const stuckModel: Pipeline = { id: 'test/stuck', task: 'echo', run: () => new Promise<unknown[]>(() => {}) }

/** A model that answers after `ms`, ignoring its signal. */
function lateModel(ms: number): Pipeline & { answered: number } {
  const m = {
    id: 'test/late',
    task: 'echo',
    answered: 0,
    async run(inputs: unknown[]): Promise<unknown[]> {
      await new Promise((r) => setTimeout(r, ms))
      m.answered++
      return inputs
    },
  }
  return m
}

t.test('a batch over batchTimeoutMs fails each item with ERR_BATCH_TIMEOUT, once, and frees the worker', async (t) => {
  const late = lateModel(1200)
  const registry = createModelRegistry({ models: [stuckModel, late] })
  t.teardown(() => registry.close())
  // One worker: the echo item below can only run if the timed-out batch gave it back.
  const server = await startServer(t, { tokens: ['A', 'B'], registry, workers: 1, batchTimeoutMs: 400 })
  const b = await connect(server.streamUrl('test/stuck'), { token: 'B' })
  b.send({ id: 's1', inputs: 1 })
  b.send({ id: 's2', inputs: 2 })
  await b.waitFor(() => b.results().size === 2, 'both stuck items', 5000)
  for (const id of ['s1', 's2']) {
    t.match(b.results().get(id), { code: 'ERR_BATCH_TIMEOUT', error: /^Model test\/stuck ran longer than 400 ms on a batch of \d; the batch was stopped$/ }, id)
  }
  t.equal(await server.billed('B'), 2, 'billed once per item, as a failure')
  const res = await post(server, 'test/stuck', 'A', { inputs: 'x' })
  t.equal(res.status, 504, 'HTTP answers 504')
  t.match(await res.json(), { code: 'ERR_BATCH_TIMEOUT' })
  t.equal(await server.billed('A'), 1)
  // The worker serves other work afterwards.
  const echo = await post(server, 'builtin/echo', 'A', { inputs: 'after' })
  t.equal(echo.status, 200)
  t.same(await echo.json(), 'after')
  // A late answer from an overrunning model is ignored: the timeout is the final result.
  const c = await connect(server.streamUrl('test/late'), { token: 'B' })
  c.send({ id: 'l1', inputs: 'late' })
  await c.waitFor(() => c.results().has('l1'), 'the late item', 5000)
  t.match(c.results().get('l1'), { code: 'ERR_BATCH_TIMEOUT' })
  await new Promise((r) => setTimeout(r, 1200))
  t.equal(late.answered, 1, 'the model did answer, late')
  t.equal(countResults(c, 'l1'), 1, 'one result only')
  t.match(c.results().get('l1'), { code: 'ERR_BATCH_TIMEOUT' }, 'still the timeout')
  t.equal(await server.billed('B'), 3, 'billed once')
  await b.close()
  await c.close()
})

t.test('a model stuck in its worker thread: the thread is terminated and replaced', async (t) => {
  const protocolUrl = new URL('../lib/models/worker-protocol.js', import.meta.url).href
  const dir = t.testdir({
    'worker.mjs': `
import { threadId } from 'node:worker_threads'
import { serveTasks } from ${JSON.stringify(protocolUrl)}
serveTasks({ 'test/hang': () => { for (;;); }, 'test/thread': (inputs) => inputs.map(() => threadId) })
`,
  })
  const pool = new WorkerPool({ file: pathToFileURL(join(dir, 'worker.mjs')), threads: 1 })
  t.teardown(() => pool.close())
  const registry = createModelRegistry({ models: [new PooledPipeline('test/hang', 'echo', pool), new PooledPipeline('test/thread', 'echo', pool)] })
  t.teardown(() => registry.close())
  // Long enough for a new thread to start (it loads TypeScript under the test loader: over 3 s on a
  // loaded CI machine), short enough to wait out.
  const server = await startServer(t, { tokens: ['A'], registry, workers: 1, batchTimeoutMs: 10_000 })
  const first = await post(server, 'test/thread', 'A', { inputs: 0 })
  const before = await first.json()
  const stuck = await post(server, 'test/hang', 'A', { inputs: 1 })
  t.equal(stuck.status, 504)
  t.match(await stuck.json(), { code: 'ERR_BATCH_TIMEOUT' })
  t.equal(pool.running, 0, `the stuck thread no longer counts as running (${pool.running}, ${pool.threads} threads)`)
  const after = await post(server, 'test/thread', 'A', { inputs: 2, options: { use_cache: false } })
  const answer = await after.json()
  t.equal(after.status, 200, JSON.stringify(answer))
  t.not(answer, before, 'a new thread answers')
  t.equal(pool.threads, 1, 'the stuck thread is gone')
})
