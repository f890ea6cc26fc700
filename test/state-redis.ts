import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { groupKey } from '../lib/server/queue/work-queue.js'
import { RedisStateBackend } from '../lib/server/state/redis-backend.js'
import { REDIS_LAYOUT } from '../lib/server/state/redis-scripts.js'
import type { Routed, StateBackend, StateLease, SubmitItem } from '../lib/server/state/state-backend.js'
import { ownerKey } from '../lib/server/store/result-store.js'
import { prng } from './helpers/prng.js'
import { REDIS_SKIP, REDIS_URL, redisReachable, RedisTestSpace } from './helpers/redis.js'
import { stateContract } from './helpers/state-contract.js'

const space = new RedisTestSpace()
const LIMITS = { maxRetained: 1_000_000, retentionMs: 3_600_000 }

function item(tenant: string, id: string, over: Partial<SubmitItem> = {}): SubmitItem {
  const model = over.model ?? 'builtin/echo'
  const inputs = over.inputs ?? `in-${id}`
  return {
    tenant,
    owner: ownerKey(tenant, model),
    id,
    model,
    compute: 'cpu',
    inputs,
    group: groupKey(model, 'cpu', undefined),
    fingerprint: JSON.stringify(inputs),
    bytes: JSON.stringify(inputs).length,
    route: { node: 'node-a' },
    ...over,
  }
}

const all = (lease: StateLease) => lease.items.map((it, index) => ({ index, outputs: JSON.stringify(it.inputs), billable: true }))

async function leaseNow(b: StateBackend, consumer = 'w1', over: { maxBatch?: number; maxWaitMs?: number; leaseMs?: number; accept?: (head: StateLease['items'][number]) => boolean; models?: readonly string[] } = {}): Promise<StateLease | null> {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), 100)
  try {
    return await b.lease(consumer, { maxBatch: 8, maxWaitMs: 0, leaseMs: 60_000, ...over, signal: ac.signal })
  } finally {
    clearTimeout(timer)
  }
}

// Backends on one prefix: processes of one deployment (each has its own connections).
function deployment(t: Test, n: number, limits = LIMITS): RedisStateBackend[] {
  const prefix = space.prefix()
  const out = Array.from({ length: n }, () => space.backend({ ...limits, prefix }))
  t.teardown(() => Promise.all(out.map((b) => b.close())))
  return out
}


// Without Redis too: the built backend, copied where no ioredis can be found, says what to install.
t.test('without ioredis: the backend says what to install', async (t) => {
  const dist = fileURLToPath(new URL('../dist', import.meta.url))
  if (!existsSync(join(dist, 'server', 'state', 'redis-backend.js'))) {
    t.fail('dist/ is not built: run `npx tsc -p tsconfig.build.json` first (npm test does)')
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'is-no-ioredis-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(dist, join(dir, 'dist'), { recursive: true })
  const script = `import { RedisStateBackend } from './dist/server/state/redis-backend.js'
try { new RedisStateBackend({ url: 'redis://127.0.0.1:1', maxRetained: 1, retentionMs: 1 }) } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })) }`
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: dir })
  t.same(JSON.parse(stdout), {
    code: 'ERR_MISSING_DEPENDENCY',
    message: 'The Redis state backend needs the optional package ioredis (state shared by several processes on Redis), which is not installed: run `npm install ioredis@^6.0.0`',
  })
})

if (!(await redisReachable())) {
  t.comment(REDIS_SKIP)
  t.pass(`skipped: ${REDIS_SKIP}`)
} else {
  t.teardown(() => space.cleanup())

  // The state layer's contract on the Redis backend: a fresh key prefix per backend; a restart
  // closes the backend and opens a new one on the same prefix (the state lives in Redis).
  stateContract(t, async (limits) => space.backend(limits), {
    reopen: async (b, limits) => {
      await b.close()
      return space.backend({ ...limits, prefix: (b as RedisStateBackend).prefix })
    },
  })

  t.test('two processes, one queue: a lease waiting in one wakes on a submit in the other at once', async (t) => {
    const [a, b] = deployment(t, 2)
    const waiting = a.lease('wa', { maxBatch: 8, maxWaitMs: 0, leaseMs: 60_000 })
    await delay(300)
    const started = performance.now()
    await b.submit([item('A', '1'), item('A', '2')])
    const lease = (await waiting) as StateLease
    const ms = performance.now() - started
    t.ok(ms < 1000, `woken by the other process's submit in ${ms.toFixed(0)} ms (not by the ${5000} ms re-check)`)
    t.same(lease.items.map((i) => i.id), ['1', '2'])
    t.same(await b.submit([item('A', '1')]), [{ status: 'pending' }], 'the other process dedupes against it')
    t.match(await b.finish(lease, all(lease)), { finished: 2, billed: 2 }, 'a lease taken in one process is finished in another')
    t.same(await a.ledger(), [{ tenant: 'A', model: 'builtin/echo', items: 2 }], 'one ledger')
  })

  t.test('a Redis that lost its scripts (restarted, failed over, SCRIPT FLUSH) gets them again on the next call', async (t) => {
    const [a] = deployment(t, 1)
    t.same(await a.submit([item('A', '1')]), [{ status: 'queued' }])
    const admin = new Redis(REDIS_URL)
    t.teardown(() => admin.quit())
    await admin.script('FLUSH')
    t.same(await a.submit([item('A', '2'), item('A', '1')]), [{ status: 'queued' }, { status: 'pending' }], 'submit after the flush')
    const lease = (await leaseNow(a)) as StateLease
    t.same(lease.items.map((i) => i.id), ['1', '2'], 'lease after the flush')
    await admin.script('FLUSH')
    t.match(await a.finish(lease, all(lease)), { finished: 2, billed: 2 }, 'finish after another flush')
  })

  t.test('routing across processes: the node that submitted gets its results once, sinks with their outputs', async (t) => {
    const [front, worker] = deployment(t, 2)
    const got: Routed[] = []
    front.subscribe('node-f', (r) => got.push(...r))
    const other: Routed[] = []
    worker.subscribe('node-w', (r) => other.push(...r))
    const owner = ownerKey('A', 'builtin/echo')
    const http = 'A http\nbuiltin/echo'
    await front.submit([
      item('A', '1', { route: { node: 'node-f' } }),
      item('A', 'h', { owner: http, route: { node: 'node-f', sink: 'http:3' } }),
    ])
    const lease = (await leaseNow(worker)) as StateLease
    await worker.finish(lease, [
      { index: 0, outputs: '"r1"', billable: true },
      { index: 1, outputs: '{"error":"x","code":"ERR_MODEL"}', billable: true, failed: true, computeSeconds: 0.25 },
    ])
    await t.resolves(waitFor(() => got.length >= 2), 'routed to the front-end')
    await delay(200)
    t.same(got, [{ owner, id: '1' }, { owner: http, id: 'h', sink: 'http:3', outputs: '{"error":"x","code":"ERR_MODEL"}', failed: true, computeSeconds: 0.25 }], 'each once')
    t.same(other, [], 'nothing to the worker node')
    t.same(await front.takeUndelivered(owner, 10), [['1', '"r1"']], 'the stream result waits in the store')
    t.same(await front.lookup(http, ['h']), [{ state: 'unknown' }], 'a sink result is not retained')
  })

  t.test('a lost notification loses nothing: the reader resumes from its cursor after its connection is cut', async (t) => {
    const [front, worker] = deployment(t, 2)
    const got: string[] = []
    front.subscribe('node-f', (r) => got.push(...r.map((x) => x.id)))
    await delay(100)
    const killer = new Redis(REDIS_URL)
    t.teardown(() => killer.disconnect())
    const ids = Array.from({ length: 30 }, (_, i) => `${i}`)
    await front.submit(ids.map((id) => item('A', id, { route: { node: 'node-f' } })))
    for (let round = 0; round < 3; round++) {
      // Cut the reader's connection (as a network fault would), then route ten results.
      const readerId = (front as unknown as { readerId?: number }).readerId
      if (readerId !== undefined) await killer.call('CLIENT', 'KILL', 'ID', String(readerId))
      const lease = (await leaseNow(worker, 'w', { maxBatch: 10 })) as StateLease
      await worker.finish(lease, all(lease))
    }
    await t.resolves(waitFor(() => got.length >= 30, 10_000), 'all 30 routed')
    await delay(300)
    t.same([...got].sort((x, y) => Number(x) - Number(y)), ids, 'each exactly once')

    // No one listening: a stream result still waits in the store for its owner.
    const [late] = await front.submit([item('A', 'late', { route: { node: 'node-gone' } })]).then(() => leaseNow(worker)).then((l) => [l as StateLease])
    await worker.finish(late, all(late))
    t.same(await front.takeUndelivered(ownerKey('A', 'builtin/echo'), 100).then((r) => r.filter(([id]) => id === 'late')), [['late', '"in-late"']])
  })

  t.test('deployments with other prefixes share a Redis and see nothing of each other', async (t) => {
    const [a] = deployment(t, 1)
    const [b] = deployment(t, 1)
    await a.submit([item('A', '1')])
    t.match(await b.stats(), { queued: 0 })
    t.equal(await leaseNow(b), null, 'the other deployment leases nothing')
    t.same(await b.submit([item('A', '1')]), [{ status: 'queued' }], 'nor dedupes against it')
    t.match(await a.stats(), { queued: 1 })
  })

  t.test('accept: a refused group stays queued in order, uncounted, and another group is served', async (t) => {
    const [b] = deployment(t, 1)
    const slow = groupKey('org/slow', 'cpu', undefined)
    await b.submit([item('A', 's1', { model: 'org/slow', owner: ownerKey('A', 'org/slow'), group: slow }), item('A', 's2', { model: 'org/slow', owner: ownerKey('A', 'org/slow'), group: slow })])
    await b.submit([item('B', 'e1')])
    const asked: string[] = []
    const lease = (await leaseNow(b, 'w1', { accept: (head) => (asked.push(head.id), head.model !== 'org/slow') })) as StateLease
    t.same(asked, ['s1', 'e1'], 'asked about each group\'s oldest item')
    t.same(lease.items.map((i) => i.id), ['e1'], 'the other group is served')
    const next = (await leaseNow(b, 'w2')) as StateLease
    t.same(next.items.map((i) => [i.id, i.deliveries]), [['s1', 1], ['s2', 1]], 'the refused group: in order, its refusal not counted as a delivery')
  })

  t.test('models: groups of models the consumer does not serve are skipped without being taken', async (t) => {
    const [b] = deployment(t, 1)
    const slow = groupKey('org/slow', 'cpu', undefined)
    await b.submit([item('A', 's1', { model: 'org/slow', owner: ownerKey('A', 'org/slow'), group: slow })])
    await b.submit([item('B', 'e1')])
    const asked: string[] = []
    const lease = (await leaseNow(b, 'w1', { models: ['builtin/echo'], accept: (head) => (asked.push(head.id), true) })) as StateLease
    t.same(asked, ['e1'], 'the other model\'s group was never offered')
    t.same(lease.items.map((i) => i.id), ['e1'])
    t.equal(await leaseNow(b, 'w1', { models: ['builtin/echo'] }), null, 'nothing for it')
    t.same(((await leaseNow(b, 'w2', { models: ['org/slow', 'x'] })) as StateLease).items.map((i) => [i.id, i.deliveries]), [['s1', 1]], 'a consumer that serves it gets it, first delivery')
  })

  t.test('maxWaitMs: a group short of maxBatch waits for it, a full group goes at once', async (t) => {
    const [b] = deployment(t, 1)
    await b.submit([item('A', '1'), item('A', '2')])
    let started = performance.now()
    const lease = (await b.lease('w', { maxBatch: 4, maxWaitMs: 400, leaseMs: 60_000 })) as StateLease
    const waited = performance.now() - started
    t.ok(waited >= 300 && waited < 2000, `waited ${waited.toFixed(0)} ms for the batch to fill`)
    t.equal(lease.items.length, 2)
    await b.submit(['3', '4', '5', '6'].map((id) => item('A', id)))
    started = performance.now()
    const full = (await b.lease('w', { maxBatch: 4, maxWaitMs: 10_000, leaseMs: 60_000 })) as StateLease
    t.ok(performance.now() - started < 1000, 'a full group is taken at once')
    t.same(full.items.map((i) => i.id), ['3', '4', '5', '6'])
    // Filling: another process's submit that fills the group wakes the waiting lease.
    const [other] = [space.backend({ ...LIMITS, prefix: b.prefix })]
    t.teardown(() => other.close())
    await b.submit([item('A', '7')])
    const waiting = b.lease('w', { maxBatch: 2, maxWaitMs: 60_000, leaseMs: 60_000 })
    await delay(200)
    started = performance.now()
    await other.submit([item('A', '8')])
    t.same(((await waiting) as StateLease).items.map((i) => i.id), ['7', '8'], 'filled by the other process')
    t.ok(performance.now() - started < 1000, 'at once')
  })

  t.test('in flight on a process that went silent: undelivered again at the next sweep of any process', async (t) => {
    const [a, b] = deployment(t, 2)
    const owner = ownerKey('A', 'builtin/echo')
    await a.submit([item('A', '1'), item('A', '2')])
    const lease = (await leaseNow(a)) as StateLease
    await a.finish(lease, all(lease))
    t.same((await a.takeUndelivered(owner, 10)).map(([id]) => id), ['1', '2'], 'a hands them to its streams')
    t.same(await b.takeUndelivered(owner, 10), [], 'in flight: not handed out twice')
    t.equal(await b.sweep(Date.now()), 0)
    t.same(await b.takeUndelivered(owner, 10), [], 'a is alive: still in flight')
    // a stops beating (as a process killed with SIGKILL would): make its last beat old.
    const c = new Redis(REDIS_URL)
    t.teardown(() => c.disconnect())
    await c.zadd(`${a.prefix}instances`, 0, a.instance)
    await b.sweep(Date.now())
    t.same((await b.takeUndelivered(owner, 10)).map(([id]) => id), ['1', '2'], 'undelivered again, for another process')
    t.same(await b.counts(owner), { queued: 0, processing: 0, done: 2, undelivered: 0 })
  })

  t.test("an owner's lists stay within twice their live entries: stale ones (forgotten, claimed) are rewritten away", async (t) => {
    const [b] = deployment(t, 1)
    const owner = ownerKey('A', 'builtin/echo')
    const c = new Redis(REDIS_URL)
    t.teardown(() => c.disconnect())
    const live: string[] = []
    let maxDone = 0
    let maxUndelivered = 0
    for (let round = 0; round < 30; round++) {
      const ids = Array.from({ length: 100 }, (_, i) => `${round}-${i}`)
      await b.submit(ids.map((id) => item('A', id)))
      const lease = (await leaseNow(b, 'w', { maxBatch: 100 })) as StateLease
      t.equal(lease.items.length, 100)
      await b.finish(lease, all(lease))
      // Checked where the lists grow (an append rewrites a list past the bound).
      const [done, undelivered, retained] = await Promise.all([c.llen(`${b.prefix}done:${owner}`), c.llen(`${b.prefix}undelivered:${owner}`), c.hlen(`${b.prefix}results:${owner}`)])
      t.equal(retained, 10 * round + 100, 'retained: the acknowledged, the undelivered and this round')
      maxDone = Math.max(maxDone, done - 2 * retained)
      maxUndelivered = Math.max(maxUndelivered, undelivered - 2 * (live.length + 100))
      // 90 of each 100 forgotten (stale in both lists), 5 claimed and acknowledged (stale in the
      // undelivered list), 5 left undelivered.
      for (const id of ids.slice(0, 90)) await b.forget(owner, id)
      for (const id of ids.slice(90, 95)) t.ok(await b.claim(owner, id), `claimed ${id}`)
      await b.acknowledge(owner, ids.slice(90, 95))
      live.push(...ids.slice(95))
    }
    t.ok(maxDone <= 256, `done list at most 2 × retained + 256 (saw + ${maxDone})`)
    t.ok(maxUndelivered <= 256, `undelivered list at most 2 × undelivered + 256 (saw + ${maxUndelivered})`)
    t.same((await b.takeUndelivered(owner, 1000)).map(([id]) => id), live, 'the live ones, in order, each once')
    t.same(await b.counts(owner), { queued: 0, processing: 0, done: 300, undelivered: 0 })
  })

  t.test('layout: a fresh prefix is stamped with this version\'s; keys of another layout are refused, by the backend and by the CLI', async (t) => {
    const [fresh] = deployment(t, 1)
    await fresh.checkLayout()
    await fresh.checkLayout()
    const c = new Redis(REDIS_URL)
    t.teardown(() => c.disconnect())
    t.equal(await c.get(`${fresh.prefix}layout`), String(REDIS_LAYOUT), 'stamped')
    // A Redis that lost its keys (restarted without data) under running processes: their next
    // transition stamps the prefix again, so a process started then is not refused.
    const [running, later] = deployment(t, 2)
    await running.checkLayout()
    for (const k of await space.keys(running.prefix)) await c.del(k)
    await running.submit([item('A', '1')])
    t.equal(await c.get(`${running.prefix}layout`), String(REDIS_LAYOUT), 'stamped again by a transition')
    await later.checkLayout()
    // A deployment from before the stamp: its counters exist, no layout key.
    const [old] = deployment(t, 1)
    await c.hset(`${old.prefix}stats`, 'q', '3')
    await t.rejects(old.checkLayout(), { code: 'ERR_STATE_STORE', message: new RegExp(`have layout 1, and this version of inference-stream uses layout ${REDIS_LAYOUT}`) })
    t.equal(await c.get(`${old.prefix}layout`), null, 'not stamped over')
    const [newer] = deployment(t, 1)
    await c.set(`${newer.prefix}layout`, String(REDIS_LAYOUT + 1))
    await t.rejects(newer.checkLayout(), { code: 'ERR_STATE_STORE' })
    // The CLI's worker refuses to start on it, with that line, and exits 2.
    const cli = fileURLToPath(new URL('../dist/cli/index.js', import.meta.url))
    const run = await promisify(execFile)(process.execPath, [cli, 'worker', '--redis', REDIS_URL, '--redis-prefix', old.prefix], { timeout: 30_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
    )
    t.equal(run.code, 2, run.stderr)
    t.match(run.stderr, /^inference-stream: The Redis keys under prefix .* have layout 1, .*another --redis-prefix \(ERR_STATE_STORE\)$/m)
  })

  t.test('nothing is left behind: the keys of a drained deployment are its ledger and counters', async (t) => {
    const [b] = deployment(t, 1, { ...LIMITS, retentionMs: 1000 })
    const routed: Routed[] = []
    b.subscribe('node-a', (r) => routed.push(...r))
    for (const tenant of ['A', 'B']) await b.submit(Array.from({ length: 20 }, (_, i) => item(tenant, `${i}`)))
    await b.submit([item('A', 'h', { owner: 'A http\nbuiltin/echo', route: { node: 'node-a', sink: 'http:1' } })])
    let first = true
    for (let lease = await leaseNow(b, 'w', { maxBatch: 7 }); lease; lease = await leaseNow(b, 'w', { maxBatch: 7 })) {
      if (first) {
        first = false
        await b.release(lease)
        continue
      }
      await b.finish(lease, all(lease).filter((r) => r.index !== 2 || lease.items[2].deliveries > 1))
    }
    for (const tenant of ['A', 'B']) {
      const owner = ownerKey(tenant, 'builtin/echo')
      const taken = await b.takeUndelivered(owner, 100)
      t.equal(taken.length, 20)
      await b.acknowledge(owner, taken.map(([id]) => id))
    }
    await waitFor(() => routed.length >= 41)
    t.equal(await b.sweep(Date.now() + 5000), 0, 'past retention: dropped, none lost (all delivered)')
    await delay(100)
    const keys = (await space.keys(b.prefix)).map((k) => k.slice(b.prefix.length).replace(/:.*/s, '')).sort()
    // The round keeps a tenant emptied by riding along in another's batch (as the memory queue does).
    t.same([...new Set(keys)], ['billed', 'instances', 'layout', 'ledger', 'round', 'stats'], `left: ${keys.join(', ')}`)
    t.match(await b.stats(), { queued: 0, processing: 0, retainedBytes: 0 })
  })

  t.test('many processes at once: every item queued once, leased by one, finished and billed once', async (t) => {
    const procs = deployment(t, 3, { maxRetained: 1_000_000, retentionMs: 3_600_000 })
    const routed = new Map<string, number>()
    procs[0].subscribe('node-a', (rs) => {
      for (const r of rs) routed.set(`${r.owner}\0${r.id}`, (routed.get(`${r.owner}\0${r.id}`) ?? 0) + 1)
    })
    // A node reads its stream from where it stood when it subscribed (what was routed before went to
    // an earlier process); the other processes route to node-a here, so they start only once that
    // read is done: a round trip on procs[0]'s connection, which runs its commands in order.
    await procs[0].stats()
    const N = 600
    const tenants = ['A', 'B', 'C']
    const ids = Array.from({ length: N }, (_, i) => ({ tenant: tenants[i % 3], id: `${Math.floor(i / 3)}` }))
    let queued = 0
    // Each process submits every item (in its own order, in chunks): each id must be queued once.
    const submitters = procs.map(async (p, k) => {
      const rnd = prng(k + 1)
      const order = [...ids].sort(() => rnd() - 0.5)
      for (let i = 0; i < order.length; i += 25) {
        const outs = await p.submit(order.slice(i, i + 25).map((x) => item(x.tenant, x.id)))
        queued += outs.filter((o) => o.status === 'queued').length
        await delay(rnd() * 5)
      }
    })
    let billed = 0
    let stop = false
    const workers = procs.flatMap((p, k) =>
      [0, 1].map(async (w) => {
        const rnd = prng(100 + k * 10 + w)
        while (!stop) {
          const lease = await p.lease(`p${k}w${w}`, { maxBatch: 1 + Math.floor(rnd() * 12), maxWaitMs: 5, leaseMs: 200, maxLeasesPerTenant: 2, signal: AbortSignal.timeout(300) })
          if (!lease) continue
          const r = rnd()
          if (r < 0.1) await p.release(lease)
          else if (r < 0.15) continue // abandoned: its lease expires and is reclaimed
          else {
            // Finished by this process or another one, some items left out (they run again).
            const by = procs[Math.floor(rnd() * procs.length)]
            const out = await by.finish(lease, all(lease).filter(() => rnd() < 0.9))
            billed += out.billed
          }
        }
      }),
    )
    const reclaimer = (async () => {
      while (!stop) {
        await delay(50)
        await procs[2].reclaim(Date.now(), 1000)
      }
    })()
    await Promise.all(submitters)
    t.equal(queued, N, 'each id queued by exactly one of the submits')
    await waitFor(async () => (await procs[1].ledger()).reduce((n, e) => n + e.items, 0) === N, 60_000)
    stop = true
    await Promise.all([...workers, reclaimer])
    await waitFor(() => routed.size === N)
    await delay(300)
    t.equal(routed.size, N, 'every item routed')
    t.ok([...routed.values()].every((n) => n === 1), 'each exactly once')
    t.equal(billed, N, 'finish billed each once')
    t.same((await procs[0].ledger()).map((e) => [e.tenant, e.items]), [['A', 200], ['B', 200], ['C', 200]])
    t.match(await procs[1].stats(), { queued: 0, processing: 0 })
  })
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out')
    await delay(20)
  }
}
