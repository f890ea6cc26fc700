/**
 * The contract of a state backend (lib/server/state/state-backend.ts), run against every
 * implementation: `stateContract(t, factory)` from one test file per backend (as undici tests its
 * cache stores). Examples for each rule, then the invariants as properties over seeded random
 * schedules of submit / lease / finish / release / reclaim / deliver / acknowledge.
 */
import type { Test } from 'tap'
import type { LeasedItem, Routed, StateBackend, StateLease, SubmitItem } from '../../lib/server/state/state-backend.js'
import { groupKey } from '../../lib/server/queue/work-queue.js'
import type { Batching } from '../../lib/server/queue/length-batching.js'
import { ownerKey } from '../../lib/server/store/result-store.js'
import { prng } from './prng.js'

/** Limits a factory must apply. */
export interface ContractLimits {
  maxRetained: number
  retentionMs: number
  maxRetainedBytes?: number
}

/** Makes a fresh, empty backend with these limits. */
export type BackendFactory = (limits: ContractLimits) => Promise<StateBackend>

/** What a backend under test offers beyond the seam; each ability turns on a section of the suite. */
export interface ContractOptions {
  /**
   * A durable backend: closes `backend` and opens a new one on the same storage with `limits`, as a
   * restarted server would. Given, the durability section runs (what survives a restart).
   */
  reopen?: (backend: StateBackend, limits: ContractLimits) => Promise<StateBackend>
}

const BIG: ContractLimits = { maxRetained: 1_000_000, retentionMs: 3_600_000 }
const NODE = 'node-a'

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
    route: { node: NODE },
    ...over,
  }
}

const quick = { maxBatch: 8, maxWaitMs: 0, leaseMs: 60_000 }

async function leaseNow(b: StateBackend, consumer = 'w1', opts: Partial<typeof quick> & { maxLeasesPerTenant?: number; batching?: Batching } = {}): Promise<StateLease | null> {
  if ((await b.stats()).queued === 0) return null
  // An empty queue would wait: give up after a short while.
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), 50)
  try {
    return await b.lease(consumer, { ...quick, ...opts, signal: ac.signal })
  } finally {
    clearTimeout(timer)
  }
}

function all(lease: StateLease, billable = true) {
  return lease.items.map((it, index) => ({ index, outputs: JSON.stringify(it.inputs), billable }))
}

async function billed(b: StateBackend, tenant?: string): Promise<number> {
  return (await b.ledger(tenant)).reduce((n, e) => n + e.items, 0)
}

/** Runs the contract suite against backends made by `make` (and its durability section when `options.reopen` is given). */
export function stateContract(t: Test, make: BackendFactory, options: ContractOptions = {}): void {
  const fresh = async (t: Test, limits: ContractLimits = BIG): Promise<StateBackend> => {
    const b = await make(limits)
    t.teardown(() => b.close())
    return b
  }

  t.test('an id submitted N times runs once and is billed once; a finished one answers its result', async (t) => {
    const b = await fresh(t)
    const outs = await b.submit([item('A', '1'), item('A', '1'), item('A', '2')])
    t.same(outs.map((o) => o.status), ['queued', 'pending', 'queued'])
    t.same((await b.submit([item('A', '1')]))[0], { status: 'pending' })
    const lease = (await leaseNow(b)) as StateLease
    t.same(lease.items.map((i) => i.id), ['1', '2'])
    t.same((await b.counts(ownerKey('A', 'builtin/echo'))), { queued: 0, processing: 2, done: 0, undelivered: 0 })
    t.match(await b.finish(lease, all(lease)), { finished: 2, billed: 2 })
    t.same(await b.submit([item('A', '1')]), [{ status: 'done', outputs: '"in-1"' }])
    t.equal(await leaseNow(b), null, 'nothing queued again')
    t.equal(await billed(b, 'A'), 2)
    t.same(await b.ledger(), [{ tenant: 'A', model: 'builtin/echo', items: 2 }])
    t.equal(await b.billedTo(ownerKey('A', 'builtin/echo')), 2)
  })

  t.test('the same id with other inputs is a conflict, pending or done, and changes nothing', async (t) => {
    const b = await fresh(t)
    await b.submit([item('A', 'x')])
    t.same(await b.submit([item('A', 'x', { inputs: 'other', fingerprint: '"other"' })]), [{ status: 'conflict' }])
    const lease = (await leaseNow(b)) as StateLease
    await b.finish(lease, all(lease))
    t.same(await b.submit([item('A', 'x', { inputs: 'other', fingerprint: '"other"' })]), [{ status: 'conflict' }])
    t.same(await b.lookup(ownerKey('A', 'builtin/echo'), ['x']), [{ state: 'done', outputs: '"in-x"' }])
  })

  t.test('ids are per owner: tenants and models do not see each other', async (t) => {
    const b = await fresh(t)
    await b.submit([item('A', '1'), item('B', '1'), item('A', '1', { model: 'builtin/other', owner: ownerKey('A', 'builtin/other'), group: groupKey('builtin/other', 'cpu', undefined) })])
    let leased = 0
    for (let lease = await leaseNow(b); lease; lease = await leaseNow(b)) {
      leased += lease.items.length
      await b.finish(lease, all(lease))
    }
    t.equal(leased, 3, 'three distinct items ran')
    t.same(await b.lookup(ownerKey('B', 'builtin/echo'), ['1', '2']), [{ state: 'done', outputs: '"in-1"' }, { state: 'unknown' }])
    const a = await b.takeUndelivered(ownerKey('A', 'builtin/echo'), 10)
    t.same(a, [['1', '"in-1"']], "A's stream owner gets A's result only")
    t.same(await b.takeUndelivered(ownerKey('C', 'builtin/echo'), 10), [], 'an unknown tenant gets nothing')
    t.equal(await billed(b, 'A'), 2)
    t.equal(await billed(b, 'B'), 1)
  })

  t.test('finish is idempotent; items left out of a finish go back to the queue', async (t) => {
    const b = await fresh(t)
    await b.submit([item('A', '1'), item('A', '2'), item('A', '3')])
    const lease = (await leaseNow(b)) as StateLease
    t.match(await b.finish(lease, [{ index: 0, outputs: '"r1"', billable: true }, { index: 2, outputs: '"r3"', billable: false }]), { finished: 2, billed: 1 })
    t.match(await b.finish(lease, all(lease)), { finished: 0, billed: 0 }, 'a second finish changes nothing')
    const again = (await leaseNow(b)) as StateLease
    t.same(again.items.map((i) => [i.id, i.deliveries]), [['2', 2]], 'the left-out item is leased again')
    await b.finish(again, all(again))
    t.equal(await billed(b), 2)
    t.same(await b.lookup(ownerKey('A', 'builtin/echo'), ['1', '3']), [{ state: 'done', outputs: '"r1"' }, { state: 'done', outputs: '"r3"' }])
  })

  t.test('a partial finish: the listed items finish and bill once, the others wait first in line, unbilled', async (t) => {
    // What a worker does when a batch is stopped at shutdown with some items done (an upstream's
    // answered requests): finish those; the rest run again later, once.
    const b = await fresh(t)
    const owner = ownerKey('A', 'builtin/echo')
    const routed: Routed[] = []
    b.subscribe(NODE, (r) => routed.push(...r))
    await b.submit(['1', '2', '3', '4'].map((id) => item('A', id)))
    await b.submit([item('A', '5')])
    const lease = (await leaseNow(b, 'w1', { maxBatch: 4 })) as StateLease
    t.same(lease.items.map((i) => [i.id, i.deliveries]), [['1', 1], ['2', 1], ['3', 1], ['4', 1]])
    const queuedBytes = (await b.tenantBytes('A')).queued
    t.same(
      await b.finish(lease, [
        { index: 1, outputs: '"r2"', billable: true },
        { index: 3, outputs: '{"error":"bad","code":"ERR_MODEL"}', billable: true, failed: true },
      ]),
      { finished: 2, billed: 2, lost: 0 },
    )
    t.same(routed.map((r) => r.id), ['2', '4'], 'the finished items are routed, the others not')
    t.equal(await billed(b), 2, 'billed: the finished items only')
    t.same(await b.counts(owner), { queued: 3, processing: 0, done: 2, undelivered: 2 })
    t.equal((await b.tenantBytes('A')).queued, queuedBytes - item('A', '2').bytes - item('A', '4').bytes, 'their queued bytes are released, the others\' kept')
    t.same(await b.lookup(owner, ['1', '2', '3', '4']), [{ state: 'pending' }, { state: 'done', outputs: '"r2"' }, { state: 'pending' }, { state: 'done', outputs: '{"error":"bad","code":"ERR_MODEL"}' }])
    t.same(await b.submit([item('A', '1'), item('A', '2')]), [{ status: 'pending' }, { status: 'done', outputs: '"r2"' }], 'dedupe: the handed-back one is still pending')
    t.same(await b.reclaim(Date.now() + 120_000, 3), { requeued: 0, deadLettered: 0 }, 'the lease is over: nothing left to reclaim')
    t.match(await b.finish(lease, all(lease)), { finished: 0, billed: 0 }, 'a second finish of the lease changes nothing')
    const again = (await leaseNow(b, 'w2')) as StateLease
    t.same(again.items.map((i) => [i.id, i.deliveries]), [['1', 2], ['3', 2], ['5', 1]], 'handed back first in line, in order, delivery count kept')
    t.match(await b.finish(again, all(again)), { finished: 3, billed: 3 })
    t.equal(await leaseNow(b), null, 'nothing runs a third time')
    t.equal(await billed(b), 5, 'each item billed exactly once')
    t.same(routed.map((r) => r.id).sort(), ['1', '2', '3', '4', '5'], 'each item routed exactly once')
    t.same(await b.lookup(owner, ['1', '2', '3']), [{ state: 'done', outputs: '"in-1"' }, { state: 'done', outputs: '"r2"' }, { state: 'done', outputs: '"in-3"' }])
    t.same(await b.counts(owner), { queued: 0, processing: 0, done: 5, undelivered: 5 })
    t.equal((await b.tenantBytes('A')).queued, 0)
  })

  t.test('release hands a batch back first in line and unbilled', async (t) => {
    const b = await fresh(t)
    await b.submit([item('A', '1'), item('A', '2')])
    const lease = (await leaseNow(b, 'w1', { maxBatch: 1 })) as StateLease
    await b.release(lease)
    t.match(await b.finish(lease, all(lease)), { finished: 0 }, 'a released lease cannot finish')
    const next = (await leaseNow(b)) as StateLease
    t.same(next.items.map((i) => i.id), ['1', '2'], 'order kept')
    t.equal(await billed(b), 0)
    t.equal((await b.counts(ownerKey('A', 'builtin/echo'))).queued, 0)
  })

  t.test('an expired lease is reclaimed and finished once; past the delivery limit an item fails', async (t) => {
    const b = await fresh(t)
    const routed: Routed[] = []
    b.subscribe(NODE, (r) => routed.push(...r))
    await b.submit([item('A', '1')])
    const first = (await leaseNow(b, 'w1', { leaseMs: 1000 })) as StateLease
    t.ok(await b.extend(first, 1000), 'extend while held')
    t.same(await b.reclaim(Date.now(), 3), { requeued: 0, deadLettered: 0 }, 'not expired yet')
    t.same(await b.reclaim(Date.now() + 5000, 3), { requeued: 1, deadLettered: 0 })
    t.notOk(await b.extend(first, 1000), 'a reclaimed lease cannot be extended')
    const second = (await leaseNow(b, 'w2')) as StateLease
    t.equal(second.items[0].deliveries, 2)
    t.match(await b.finish(first, all(first)), { finished: 0 }, 'the late finish of the reclaimed lease changes nothing')
    t.match(await b.finish(second, all(second)), { finished: 1, billed: 1 })
    t.equal(routed.length, 1, 'routed once')
    t.equal(await billed(b), 1)

    await b.submit([item('A', 'poison')])
    for (let i = 1; i <= 3; i++) {
      const l = (await leaseNow(b, `w${i}`, { leaseMs: 1 })) as StateLease
      t.equal(l.items[0].deliveries, i)
      t.same(await b.reclaim(Date.now() + 10, 3), i < 3 ? { requeued: 1, deadLettered: 0 } : { requeued: 0, deadLettered: 1 })
    }
    t.equal(await leaseNow(b), null, 'not leased a fourth time')
    const [state] = await b.lookup(ownerKey('A', 'builtin/echo'), ['poison'])
    t.match(JSON.parse(state.outputs as string), { code: 'ERR_DELIVERY_LIMIT', error: /leased 3 times/ })
    t.equal(await billed(b), 1, 'a dead letter is not billed')
    t.equal((await b.stats()).deadLettered, 1)
    t.equal(routed.length, 2, 'the dead letter is routed like a result')
  })

  t.test('items whose lease ran out run alone: a poison item fails by itself, its batch-mates complete', async (t) => {
    const b = await fresh(t)
    await b.submit(['1', '2', '3', 'p', '4'].map((id) => item('A', id)))
    const first = (await leaseNow(b, 'w1', { maxBatch: 4, leaseMs: 1000 })) as StateLease
    t.same(first.items.map((i) => i.id), ['1', '2', '3', 'p'], 'a batch of four')
    // Its worker died on it: the lease runs out.
    t.same(await b.reclaim(Date.now() + 5000, 2), { requeued: 4, deadLettered: 0 })
    const batches: string[][] = []
    for (;;) {
      const lease = await leaseNow(b, 'w2', { maxBatch: 4, leaseMs: 1000 })
      if (!lease) break
      batches.push(lease.items.map((i) => i.id))
      // The poison item kills its worker again; the others finish.
      if (lease.items.some((i) => i.id === 'p')) t.same(await b.reclaim(Date.now() + 5000, 2), { requeued: 0, deadLettered: 1 })
      else await b.finish(lease, all(lease))
    }
    t.same(batches, [['1'], ['2'], ['3'], ['p'], ['4']], 'each suspect alone, in order; the item never leased rides with none of them')
    const owner = ownerKey('A', 'builtin/echo')
    const states = await b.lookup(owner, ['1', '2', '3', '4', 'p'])
    t.same(states.slice(0, 4), ['1', '2', '3', '4'].map((id) => ({ state: 'done', outputs: `"in-${id}"` })), 'batch-mates complete')
    t.match(states[4], { state: 'done', outputs: /ERR_DELIVERY_LIMIT/ }, 'the poison item fails by itself')
    t.equal(await billed(b), 4)
    t.equal((await b.stats()).deadLettered, 1)
  })

  t.test('a stream result is delivered until acknowledged', async (t) => {
    const b = await fresh(t)
    const owner = ownerKey('A', 'builtin/echo')
    await b.submit([item('A', '1'), item('A', '2')])
    const lease = (await leaseNow(b)) as StateLease
    await b.finish(lease, all(lease))
    t.equal((await b.counts(owner)).undelivered, 2)
    t.equal(await b.claim(owner, '1'), '"in-1"')
    t.equal(await b.claim(owner, '1'), undefined, 'claimed once')
    t.same(await b.takeUndelivered(owner, 10), [['2', '"in-2"']])
    await b.returnUndelivered(owner, ['1', '2'])
    t.same((await b.takeUndelivered(owner, 10)).map(([id]) => id).sort(), ['1', '2'], 'returned results come again')
    await b.acknowledge(owner, ['1', '2'])
    await b.returnUndelivered(owner, ['1'])
    t.same(await b.takeUndelivered(owner, 10), [], 'acknowledged ones never again')
    t.same(await b.tenantBytes('A'), { queued: 0, undelivered: 0 })
  })

  t.test('sink routes: handed to their node once, forgotten unless retained', async (t) => {
    const b = await fresh(t)
    const a: Routed[] = []
    const other: Routed[] = []
    b.subscribe(NODE, (r) => a.push(...r))
    b.subscribe('node-b', (r) => other.push(...r))
    const owner = 'A http\nbuiltin/echo'
    await b.submit([
      item('A', 'h1', { owner, route: { node: NODE, sink: 'http:1' } }),
      item('A', 'h2', { owner, route: { node: 'node-b', sink: 'http:7' }, retain: true }),
    ])
    const lease = (await leaseNow(b)) as StateLease
    await b.finish(lease, all(lease))
    t.same(a, [{ owner, id: 'h1', sink: 'http:1', outputs: '"in-h1"' }])
    t.same(other, [{ owner, id: 'h2', sink: 'http:7', outputs: '"in-h2"' }])
    t.same(await b.lookup(owner, ['h1', 'h2']), [{ state: 'unknown' }, { state: 'done', outputs: '"in-h2"' }])
    t.same(await b.takeUndelivered(owner, 10), [], 'a sink result never waits for a stream')
    t.equal(await billed(b), 2)
  })

  t.test('stream results also reach the nodes attached to their owner; sink results only their node', async (t) => {
    const b = await fresh(t)
    const got = new Map<string, string[]>([[NODE, []], ['node-b', []]])
    for (const node of got.keys()) b.subscribe(node, (rs) => got.get(node)!.push(...rs.map((r) => `${r.owner.split(/[ \n]/)[0]}/${r.id}${r.sink ? '@' + r.sink : ''}`)))
    const ownerA = ownerKey('A', 'builtin/echo')
    const run = async (items: SubmitItem[]): Promise<void> => {
      await b.submit(items)
      const lease = (await leaseNow(b)) as StateLease
      await b.finish(lease, all(lease))
      // A backend that notifies through a store of its own (Redis) may call listeners later: let it.
      await new Promise((r) => setTimeout(r, 200))
    }
    await b.attach('node-b', ownerA, true)
    await run([item('A', '1'), item('B', '2'), item('A', 'h', { owner: 'A http\nbuiltin/echo', route: { node: NODE, sink: 'http:1' } })])
    t.same(got.get(NODE)!.sort(), ['A/1', 'A/h@http:1', 'B/2'], 'the submitting node hears of all')
    t.same(got.get('node-b'), ['A/1'], 'the attached node hears of its owner\'s stream results only, once')
    t.same((await b.takeUndelivered(ownerA, 10)).map(([id]) => id), ['1'], 'the result itself waits in the store for whichever node takes it')
    await b.attach('node-b', ownerA, false)
    await run([item('A', '3')])
    t.same(got.get('node-b'), ['A/1'], 'a detached node hears of nothing more')
    t.same(got.get(NODE)!.filter((x) => x === 'A/3'), ['A/3'])
  })

  t.test('byte budget: a tenant over its queued bytes is refused, another is not', async (t) => {
    const b = await fresh(t)
    const big = 'x'.repeat(100)
    t.same((await b.submit([item('A', '1', { inputs: big, bytes: 102 })], { maxQueuedBytes: 150 })).map((o) => o.status), ['queued'])
    t.same((await b.submit([item('A', '2', { inputs: big, bytes: 102 })], { maxQueuedBytes: 150 })).map((o) => o.status), ['overloaded'])
    t.same((await b.submit([item('B', '1', { inputs: big, bytes: 102 })], { maxQueuedBytes: 150 })).map((o) => o.status), ['queued'])
    t.equal((await b.tenantBytes('A')).queued, 102)
    t.same(await b.lookup(ownerKey('A', 'builtin/echo'), ['2']), [{ state: 'unknown' }], 'the refused item left nothing')
  })

  t.test('retained bytes stay within the budget, delivered results evicted first', async (t) => {
    const b = await fresh(t, { ...BIG, maxRetainedBytes: 1000 })
    const owner = ownerKey('A', 'builtin/echo')
    for (let i = 0; i < 30; i++) {
      await b.submit([item('A', `i${i}`)])
      const lease = (await leaseNow(b)) as StateLease
      await b.finish(lease, [{ index: 0, outputs: JSON.stringify('y'.repeat(98)), billable: true }])
      if (i < 20) await b.acknowledge(owner, [`i${i}`])
      t.ok((await b.stats()).retainedBytes <= 1000, 'within the budget')
    }
    const states = await b.lookup(owner, Array.from({ length: 30 }, (_, i) => `i${i}`))
    t.ok(states.slice(20).every((s) => s.state === 'done'), 'the undelivered ones are kept')
    t.ok(states.slice(0, 10).every((s) => s.state === 'unknown'), 'the oldest delivered ones went first')
  })

  t.test('fair share: tenants alternate, none above its lease cap', async (t) => {
    const b = await fresh(t)
    await b.submit(Array.from({ length: 40 }, (_, i) => item('A', `a${i}`)))
    await b.submit(Array.from({ length: 4 }, (_, i) => item('B', `b${i}`)))
    const first = (await leaseNow(b, 'w1', { maxBatch: 4, maxLeasesPerTenant: 1 })) as StateLease
    const second = (await leaseNow(b, 'w2', { maxBatch: 4, maxLeasesPerTenant: 1 })) as StateLease
    t.same([first.tenant, second.tenant], ['A', 'B'], 'B is served second, not after all of A')
    t.equal(await leaseNow(b, 'w3', { maxBatch: 4, maxLeasesPerTenant: 1 }), null, 'A is at its cap, B has nothing left')
    await b.finish(first, all(first))
    t.equal(((await leaseNow(b, 'w3', { maxBatch: 4, maxLeasesPerTenant: 1 })) as StateLease).tenant, 'A')
  })

  t.test('properties over random schedules', async (t) => {
    const seeds = Number(process.env.STATE_CONTRACT_SEEDS ?? 60)
    for (let seed = 1; seed <= seeds; seed++) {
      const rnd = prng(seed * 2654435761)
      const b = await make(BIG)
      const fail = (msg: string): never => {
        throw new Error(`seed ${seed}: ${msg}`)
      }
      const tenants = ['A', 'B', 'C']
      const routedCount = new Map<string, number>()
      b.subscribe(NODE, (rs) => {
        for (const r of rs) {
          const key = `${r.owner}\0${r.id}`
          routedCount.set(key, (routedCount.get(key) ?? 0) + 1)
        }
      })
      const submitted = new Set<string>()
      const held: StateLease[] = []
      const stale: StateLease[] = []
      let now = Date.now()
      let billedExpected = 0
      const finishedBillable = new Set<string>()
      for (let step = 0; step < 150; step++) {
        const r = rnd()
        if (r < 0.35) {
          const tenant = tenants[Math.floor(rnd() * tenants.length)]
          const batch = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => item(tenant, `i${Math.floor(rnd() * 25)}`))
          const outs = await b.submit(batch)
          outs.forEach((o, i) => {
            const key = `${batch[i].owner}\0${batch[i].id}`
            if (o.status === 'queued') {
              if (submitted.has(key) && !finishedBillable.has(key) && routedCount.get(key) === undefined) fail(`${key} queued twice`)
              submitted.add(key)
            } else if (o.status === 'conflict' || o.status === 'overloaded') fail(`unexpected ${o.status}`)
          })
        } else if (r < 0.6) {
          const lease = await leaseNow(b, `w${step}`, { maxBatch: 1 + Math.floor(rnd() * 6), leaseMs: 1 + Math.floor(rnd() * 100), maxLeasesPerTenant: 2 })
          if (lease) {
            const perTenant = held.filter((l) => l.tenant === lease.tenant).length
            if (perTenant >= 2) fail(`tenant ${lease.tenant} holds ${perTenant + 1} leases over the cap of 2`)
            held.push(lease)
          }
        } else if (r < 0.8 && held.length > 0) {
          const lease = held.splice(Math.floor(rnd() * held.length), 1)[0]
          const results = lease.items.map((it: LeasedItem, index) => ({ index, outputs: JSON.stringify(it.inputs), billable: true })).filter(() => rnd() < 0.8)
          const out = await b.finish(lease, results)
          if (out.finished !== results.length) fail(`finish of a held lease finished ${out.finished} of ${results.length}`)
          for (const res of results) finishedBillable.add(`${lease.items[res.index].owner}\0${lease.items[res.index].id}`)
          billedExpected += out.billed
          stale.push(lease)
        } else if (r < 0.85 && held.length > 0) {
          const lease = held.splice(Math.floor(rnd() * held.length), 1)[0]
          await b.release(lease)
          stale.push(lease)
        } else if (r < 0.9 && stale.length > 0) {
          const lease = stale[Math.floor(rnd() * stale.length)]
          const out = await b.finish(lease, all(lease))
          if (out.finished !== 0 || out.billed !== 0) fail('a stale finish changed something')
        } else if (r < 0.95) {
          now += 50
          await b.reclaim(now, 1000)
          for (let i = held.length - 1; i >= 0; i--) if (held[i].expiresAt <= now) stale.push(...held.splice(i, 1))
        } else {
          const tenant = tenants[Math.floor(rnd() * tenants.length)]
          const owner = ownerKey(tenant, 'builtin/echo')
          const taken = await b.takeUndelivered(owner, 1 + Math.floor(rnd() * 4))
          if (rnd() < 0.5) await b.acknowledge(owner, taken.map(([id]) => id))
          else await b.returnUndelivered(owner, taken.map(([id]) => id))
        }
        for (const tenant of tenants) {
          const c = await b.counts(ownerKey(tenant, 'builtin/echo'))
          if (Object.values(c).some((v) => v < 0)) fail(`negative counts for ${tenant}: ${JSON.stringify(c)}`)
          const bytes = await b.tenantBytes(tenant)
          if (bytes.queued < 0 || bytes.undelivered < 0) fail(`negative bytes for ${tenant}`)
        }
      }
      // Drain: every item submitted finishes exactly once.
      for (const lease of held) await b.release(lease)
      for (let lease = await leaseNow(b); lease; lease = await leaseNow(b)) {
        const out = await b.finish(lease, all(lease))
        billedExpected += out.billed
      }
      for (const key of submitted) if (routedCount.get(key) !== 1) fail(`${JSON.stringify(key)} routed ${routedCount.get(key) ?? 0} times`)
      if (routedCount.size !== submitted.size) fail(`${routedCount.size} routed, ${submitted.size} submitted`)
      const total = await billed(b)
      if (total !== submitted.size || total !== billedExpected) fail(`billed ${total}, expected ${submitted.size} (finish said ${billedExpected})`)
      for (const tenant of tenants) {
        const c = await b.counts(ownerKey(tenant, 'builtin/echo'))
        if (c.queued !== 0 || c.processing !== 0) fail(`${tenant} left ${JSON.stringify(c)}`)
        if ((await b.tenantBytes(tenant)).queued !== 0) fail(`${tenant} left queued bytes`)
      }
      const stats = await b.stats()
      if (stats.queued !== 0 || stats.processing !== 0) fail(`left ${JSON.stringify(stats)}`)
      await b.close()
    }
    t.pass(`${seeds} seeds`)
  })

  t.test('length-aware batching: each lease holds its tenant\'s first in line; every result reaches its own item (random schedules)', async (t) => {
    // LeaseOptions.batching 'length' picks items of similar bytes out of line order. Whatever a
    // backend does with it (Redis leases in order), two things must hold, checked after every step
    // against a model of each tenant's line per group: (1) no starvation — a lease chosen for tenant
    // T holds T's first-in-line item of the lease's group, so an item waits at most as many of T's
    // batches of the group as there are items before it in line; (2) each result is stored under
    // the item it was computed from (a model's output here is its input, of a length of its own).
    const seeds = Number(process.env.STATE_CONTRACT_SEEDS ?? 60)
    const models = ['builtin/echo', 'tiny/other']
    for (let seed = 1; seed <= seeds; seed++) {
      const rnd = prng(seed * 40503 + 17)
      const b = await make(BIG)
      const fail = (msg: string): never => {
        throw new Error(`seed ${seed}: ${msg}`)
      }
      const tenants = ['A', 'B', 'C']
      // `${tenant}\0${group}` → keys in line order; a key is `${owner}\0${id}`.
      const lines = new Map<string, string[]>()
      const lineOf = (tenant: string, group: string): string[] => {
        let l = lines.get(`${tenant}\0${group}`)
        if (!l) lines.set(`${tenant}\0${group}`, (l = []))
        return l
      }
      const inputsOf = new Map<string, string>()
      const keyOf = (it: { owner: string; id: string }): string => `${it.owner}\0${it.id}`
      const held: StateLease[] = []
      let next = 0
      let leased = 0
      const backToFront = (items: readonly LeasedItem[]): void => {
        // Handed back first in line, in lease order, each to its tenant's line.
        for (let i = items.length - 1; i >= 0; i--) lineOf(items[i].tenant, items[i].group).unshift(keyOf(items[i]))
      }
      for (let step = 0; step < 200; step++) {
        const r = rnd()
        if (r < 0.4) {
          const tenant = tenants[Math.floor(rnd() * tenants.length)]
          const model = models[rnd() < 0.8 ? 0 : 1]
          const batch = Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => {
            const id = `i${next++}`
            // Lengths from 1 to ~400 bytes, many short, a long tail (as texts are).
            const inputs = `${id}:${'x'.repeat(Math.floor(Math.exp(rnd() * Math.log(400))))}`
            return item(tenant, id, { model, inputs, group: groupKey(model, 'cpu', undefined) })
          })
          const outs = await b.submit(batch)
          outs.forEach((o, i) => {
            if (o.status !== 'queued') fail(`${batch[i].id}: ${o.status}`)
            inputsOf.set(keyOf(batch[i]), batch[i].inputs as string)
            lineOf(tenant, batch[i].group).push(keyOf(batch[i]))
          })
        } else if (r < 0.75) {
          const lease = await leaseNow(b, `w${step}`, { maxBatch: 1 + Math.floor(rnd() * 8), batching: 'length' })
          if (!lease) continue
          leased++
          const group = lease.items[0].group
          if (lease.items.some((it) => it.group !== group)) fail('a lease mixes groups')
          const first = lineOf(lease.tenant, group)[0]
          const keys = new Set(lease.items.map(keyOf))
          if (first === undefined) fail(`lease for ${lease.tenant}, which has nothing of the group in line`)
          if (!keys.has(first)) fail(`lease for ${lease.tenant} (${[...keys].join(', ')}) lacks its first in line ${first}`)
          if (keys.size !== lease.items.length) fail('an item twice in one lease')
          for (const it of lease.items) {
            const line = lineOf(it.tenant, it.group)
            const at = line.indexOf(keyOf(it))
            if (at === -1) fail(`${keyOf(it)} leased but not in line (leased twice?)`)
            line.splice(at, 1)
          }
          held.push(lease)
        } else if (r < 0.92 && held.length > 0) {
          const lease = held.splice(Math.floor(rnd() * held.length), 1)[0]
          // Outputs computed from each item's own inputs; now and then a partial finish.
          const results = lease.items.map((it, index) => ({ index, outputs: JSON.stringify(it.inputs), billable: true })).filter(() => rnd() < 0.85)
          await b.finish(lease, results)
          const done = new Set(results.map((x) => x.index))
          backToFront(lease.items.filter((_, i) => !done.has(i)))
        } else if (held.length > 0) {
          const lease = held.splice(Math.floor(rnd() * held.length), 1)[0]
          await b.release(lease)
          backToFront(lease.items)
        }
      }
      for (const lease of held) {
        await b.release(lease)
        backToFront(lease.items)
      }
      for (let lease = await leaseNow(b, 'drain', { batching: 'length' }); lease; lease = await leaseNow(b, 'drain', { batching: 'length' })) {
        const first = lineOf(lease.tenant, lease.items[0].group)[0]
        if (!lease.items.some((it) => keyOf(it) === first)) fail(`drain: lease for ${lease.tenant} lacks its first in line ${first}`)
        for (const it of lease.items) {
          const line = lineOf(it.tenant, it.group)
          line.splice(line.indexOf(keyOf(it)), 1)
        }
        await b.finish(lease, all(lease))
      }
      for (const [k, line] of lines) if (line.length > 0) fail(`${line.length} items of ${k} never leased`)
      // Every result is its own item's: outputs === that item's inputs.
      for (const tenant of tenants) {
        for (const model of models) {
          const owner = ownerKey(tenant, model)
          const ids = [...inputsOf.keys()].filter((k) => k.startsWith(`${owner}\0`)).map((k) => k.slice(owner.length + 1))
          const states = await b.lookup(owner, ids)
          states.forEach((st, i) => {
            const want = JSON.stringify(inputsOf.get(`${owner}\0${ids[i]}`))
            if (st.state !== 'done' || st.outputs !== want) fail(`${owner} ${ids[i]}: ${st.state} ${st.outputs?.slice(0, 40)}, expected ${want.slice(0, 40)}`)
          })
        }
      }
      if ((await billed(b)) !== inputsOf.size) fail(`billed ${await billed(b)} of ${inputsOf.size}`)
      if (leased === 0) fail('no lease in the schedule')
      await b.close()
    }
    t.pass(`${seeds} seeds`)
  })

  if (options.reopen) durability(t, fresh, options.reopen)

  t.test('close wakes a waiting lease with null and refuses submits', async (t) => {
    const b = await make(BIG)
    const waiting = b.lease('w1', quick)
    await b.close()
    t.equal(await waiting, null)
    await t.rejects(b.submit([item('A', '1')]), { code: 'ERR_SHUTTING_DOWN' })
  })
}

// What a restart must keep (durable backends): queued items and their order, dedupe, leases (an
// expired one is reclaimed and runs again, finished and billed once), delivery counts, undelivered
// results until acknowledged, and the ledger.
function durability(
  t: Test,
  fresh: (t: Test, limits?: ContractLimits) => Promise<StateBackend>,
  reopen: (backend: StateBackend, limits: ContractLimits) => Promise<StateBackend>,
): void {
  const restart = async (t: Test, b: StateBackend, limits: ContractLimits = BIG): Promise<StateBackend> => {
    const next = await reopen(b, limits)
    t.teardown(() => next.close())
    return next
  }
  const owner = ownerKey('A', 'builtin/echo')

  t.test('durable: queued items, their order, their bytes and dedupe survive a restart', async (t) => {
    let b = await fresh(t)
    const structured = { text: 'a', n: [1, 2] }
    await b.submit([item('A', '1'), item('A', '2', { inputs: structured, fingerprint: JSON.stringify(structured), bytes: 22 }), item('A', '3')])
    await b.submit([item('B', '1')])
    // Handed back first in line before the restart: still first after it.
    await b.release((await leaseNow(b, 'w1', { maxBatch: 1 })) as StateLease)
    const bytesA = await b.tenantBytes('A')
    b = await restart(t, b)
    t.match(await b.stats(), { queued: 4, processing: 0 })
    t.same(await b.counts(owner), { queued: 3, processing: 0, done: 0, undelivered: 0 })
    t.same(await b.tenantBytes('A'), bytesA, 'queued bytes counted again')
    t.same(await b.submit([item('A', '1')]), [{ status: 'pending' }], 'a queued id is still deduped')
    t.same(await b.submit([item('A', '3', { inputs: 'other', fingerprint: '"other"' })]), [{ status: 'conflict' }], 'and still conflicts with other inputs')
    const lease = (await leaseNow(b)) as StateLease
    // Each tenant's order is kept; which tenant's turn comes first after a restart is not part of
    // the contract (SQLite rebuilds the fair-share round from the file in submit order, Redis keeps
    // the round, in which A was served last): compared tenant by tenant (a stable sort).
    const byTenant = lease.items.map((i) => [i.tenant, i.id, i.inputs, i.deliveries]).sort((a, b) => (a[0] === b[0] ? 0 : (a[0] as string) < (b[0] as string) ? -1 : 1))
    t.same(byTenant, [['A', '1', 'in-1', 2], ['A', '2', structured, 1], ['A', '3', 'in-3', 1], ['B', '1', 'in-1', 1]], 'in order, inputs intact')
    t.match(await b.finish(lease, all(lease)), { finished: 4, billed: 4 })
    t.equal(await leaseNow(b), null, 'nothing queued twice')
    t.equal((await b.tenantBytes('A')).queued, 0)
  })

  t.test('durable: a lease survives a restart; once expired it is reclaimed and finished once', async (t) => {
    let b = await fresh(t)
    await b.submit([item('A', '1'), item('A', '2')])
    const first = (await leaseNow(b, 'w1', { leaseMs: 1000 })) as StateLease
    b = await restart(t, b)
    t.match(await b.stats(), { queued: 0, processing: 2 }, 'still leased')
    t.same(await b.counts(owner), { queued: 0, processing: 2, done: 0, undelivered: 0 })
    t.same(await b.submit([item('A', '1')]), [{ status: 'pending' }], 'a leased id is still deduped')
    t.same(await b.reclaim(Date.now(), 3), { requeued: 0, deadLettered: 0 }, 'not expired yet')
    t.same(await b.reclaim(Date.now() + 5000, 3), { requeued: 2, deadLettered: 0 })
    t.match(await b.finish(first, all(first)), { finished: 0, billed: 0 }, 'the lease of before the restart was reclaimed: its finish changes nothing')
    // Reclaimed: each runs alone (a worker died on their batch).
    for (const id of ['1', '2']) {
      const second = (await leaseNow(b, 'w2')) as StateLease
      t.same(second.items.map((i) => [i.id, i.deliveries]), [[id, 2]], 'the delivery before the restart counts')
      t.match(await b.finish(second, all(second)), { finished: 1, billed: 1 })
    }
    b = await restart(t, b)
    t.same(await b.submit([item('A', '1')]), [{ status: 'done', outputs: '"in-1"' }], 'a finished id answers its result after a restart')
    t.equal(await leaseNow(b), null, 'and does not run again')
    t.equal(await billed(b), 2, 'billed once')

    await b.submit([item('A', '3'), item('A', '4')])
    const held = (await leaseNow(b, 'w3', { leaseMs: 60_000, maxBatch: 1 })) as StateLease
    b = await restart(t, b)
    t.equal(await leaseNow(b, 'w4', { maxLeasesPerTenant: 1 }), null, 'a lease held across the restart still counts against its tenant\'s cap')
    t.match(await b.finish(held, all(held)), { finished: 1, billed: 1 }, 'a lease still held finishes after a restart')
    t.same(((await leaseNow(b, 'w4', { maxLeasesPerTenant: 1 })) as StateLease).items.map((i) => i.id), ['4'])
    t.equal(await billed(b), 3)
  })

  t.test('durable: a partial finish survives a restart: finished items stay billed once, the others run once', async (t) => {
    let b = await fresh(t)
    await b.submit(['1', '2', '3'].map((id) => item('A', id)))
    const lease = (await leaseNow(b)) as StateLease
    t.match(await b.finish(lease, [{ index: 0, outputs: '"r1"', billable: true }]), { finished: 1, billed: 1 })
    b = await restart(t, b)
    t.same(await b.counts(owner), { queued: 2, processing: 0, done: 1, undelivered: 1 })
    t.equal(await billed(b), 1)
    t.same(await b.submit([item('A', '1'), item('A', '2')]), [{ status: 'done', outputs: '"r1"' }, { status: 'pending' }])
    const again = (await leaseNow(b)) as StateLease
    t.same(again.items.map((i) => [i.id, i.deliveries]), [['2', 2], ['3', 2]], 'the handed-back items, with their delivery count')
    t.match(await b.finish(again, all(again)), { finished: 2, billed: 2 })
    t.equal(await leaseNow(b), null)
    b = await restart(t, b)
    t.equal(await billed(b), 3, 'each billed once')
    t.same((await b.takeUndelivered(owner, 10)).map(([id, out]) => [id, out]).sort(), [['1', '"r1"'], ['2', '"in-2"'], ['3', '"in-3"']])
    t.equal((await b.tenantBytes('A')).queued, 0)
  })

  t.test('durable: the delivery count survives restarts, so a crash loop ends in a dead letter', async (t) => {
    let b = await fresh(t)
    await b.submit([item('A', 'poison')])
    for (let i = 1; i <= 3; i++) {
      const l = (await leaseNow(b, `w${i}`, { leaseMs: 1 })) as StateLease
      t.equal(l.items[0].deliveries, i)
      b = await restart(t, b)
      t.same(await b.reclaim(Date.now() + 10, 3), i < 3 ? { requeued: 1, deadLettered: 0 } : { requeued: 0, deadLettered: 1 })
    }
    t.equal(await leaseNow(b), null)
    const [state] = await b.lookup(owner, ['poison'])
    t.match(JSON.parse(state.outputs as string), { code: 'ERR_DELIVERY_LIMIT' })
    t.equal(await billed(b), 0)
  })

  t.test('durable: undelivered results survive until acknowledged, and the ledger survives', async (t) => {
    let b = await fresh(t)
    await b.submit(['1', '2', '3', '4'].map((id) => item('A', id)))
    const lease = (await leaseNow(b)) as StateLease
    await b.finish(lease, lease.items.map((it, index) => ({ index, outputs: JSON.stringify(it.inputs), billable: it.id !== '4' })))
    t.same((await b.takeUndelivered(owner, 2)).map(([id]) => id), ['1', '2'])
    await b.acknowledge(owner, ['1'])
    const before = { ledger: await b.ledger(), owner: await b.billedTo(owner), retained: (await b.stats()).retainedBytes }
    b = await restart(t, b)
    t.same(await b.ledger(), before.ledger, 'the ledger')
    t.same(before.ledger, [{ tenant: 'A', model: 'builtin/echo', items: 3 }])
    t.equal(await b.billedTo(owner), before.owner)
    t.equal((await b.stats()).retainedBytes, before.retained, 'retained bytes')
    t.same(await b.counts(owner), { queued: 0, processing: 0, done: 4, undelivered: 3 }, 'in flight before the restart is undelivered again')
    t.ok((await b.tenantBytes('A')).undelivered > 0)
    t.same((await b.takeUndelivered(owner, 10)).map(([id]) => id).sort(), ['2', '3', '4'], 'the acknowledged one is not delivered again')
    t.same(await b.lookup(owner, ['1']), [{ state: 'done', outputs: '"in-1"' }], 'but still answers a duplicate')
    await b.acknowledge(owner, ['2', '3', '4'])
    b = await restart(t, b)
    t.same(await b.takeUndelivered(owner, 10), [], 'acknowledged before the restart: never again')
    t.same(await b.tenantBytes('A'), { queued: 0, undelivered: 0 })
    t.equal(await billed(b), 3)
  })
}
