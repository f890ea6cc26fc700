import t from 'tap'
import { inputLength, lengthRun } from '../lib/server/queue/length-batching.js'
import { MemoryWorkQueue } from '../lib/server/queue/memory-queue.js'
import type { WorkItem } from '../lib/server/queue/work-queue.js'
import { prng } from './helpers/prng.js'

function item(id: string, group = 'g', enqueuedAt = Date.now()): WorkItem {
  return { tenant: 't', owner: 't\nm', id, model: 'm', compute: 'cpu', inputs: id, parameters: undefined, group, enqueuedAt }
}

t.test('a full group is taken at once, up to maxBatch, in order', async (t) => {
  const q = new MemoryWorkQueue()
  await q.push([...Array(70).keys()].map((i) => item(`i${i}`)))
  const a = await q.pull({ maxBatch: 32, maxWaitMs: 10_000 })
  t.same(a?.items.map((i) => i.id), [...Array(32).keys()].map((i) => `i${i}`))
  t.same(q.stats(), { queued: 38, processing: 32 })
  await q.ack(a!)
  t.same(q.stats(), { queued: 38, processing: 0 })
})

t.test('a partial batch waits up to maxWaitMs for more', async (t) => {
  const q = new MemoryWorkQueue()
  await q.push([item('a')])
  const started = Date.now()
  const pulling = q.pull({ maxBatch: 4, maxWaitMs: 50 })
  setTimeout(() => void q.push([item('b')]), 10)
  const lease = await pulling
  t.same(lease?.items.map((i) => i.id), ['a', 'b'])
  t.ok(Date.now() - started >= 45, 'waited for the batch to fill')
})

t.test('groups never mix; the oldest group goes first; a full younger group need not wait', async (t) => {
  const q = new MemoryWorkQueue()
  const now = Date.now()
  await q.push([item('x1', 'x', now - 100), item('y1', 'y', now - 50), item('x2', 'x', now - 10)])
  const a = await q.pull({ maxBatch: 8, maxWaitMs: 0 })
  t.same(a?.items.map((i) => i.id), ['x1', 'x2'])
  const b = await q.pull({ maxBatch: 8, maxWaitMs: 0 })
  t.same(b?.items.map((i) => i.id), ['y1'])
  await q.push([item('old', 'o'), item('f1', 'f'), item('f2', 'f')])
  const c = await q.pull({ maxBatch: 2, maxWaitMs: 10_000 })
  t.same(c?.items.map((i) => i.id), ['f1', 'f2'])
})

t.test('release hands a batch back to the front, in order', async (t) => {
  const q = new MemoryWorkQueue()
  await q.push(['a', 'b', 'c', 'd'].map((id) => item(id)))
  const a = await q.pull({ maxBatch: 2, maxWaitMs: 0 })
  await q.release(a!)
  t.same(q.stats(), { queued: 4, processing: 0 })
  const b = await q.pull({ maxBatch: 4, maxWaitMs: 0 })
  t.same(b?.items.map((i) => i.id), ['a', 'b', 'c', 'd'])
})

t.test('close and abort end waiting pulls with null; push after close rejects', async (t) => {
  const q = new MemoryWorkQueue()
  const ac = new AbortController()
  const p1 = q.pull({ maxBatch: 1, maxWaitMs: 0, signal: ac.signal })
  ac.abort()
  t.equal(await p1, null)
  const p2 = q.pull({ maxBatch: 1, maxWaitMs: 0 })
  await q.close()
  t.equal(await p2, null)
  await t.rejects(q.push([item('z')]), { code: 'ERR_SHUTTING_DOWN' })
})

t.test('the deque survives growth and wrap-around', async (t) => {
  const q = new MemoryWorkQueue()
  let next = 0
  let expect = 0
  for (let round = 0; round < 50; round++) {
    await q.push([...Array(37).keys()].map(() => item(`n${next++}`)))
    const l = await q.pull({ maxBatch: 30, maxWaitMs: 0 })
    for (const i of l!.items) t.equal(i.id, `n${expect++}`)
    await q.ack(l!)
  }
  t.equal(q.stats().queued, next - expect)
})

t.test('accept: a refused group stays queued in order while others are served; notify() makes a pull ask again', async (t) => {
  const q = new MemoryWorkQueue()
  const now = Date.now()
  await q.push([item('l1', 'loading', now - 10), item('l2', 'loading', now - 9), item('o1', 'other', now)])
  let open = false
  const asked: string[] = []
  const accept = (head: WorkItem): boolean => {
    asked.push(head.id)
    return head.group !== 'loading' || open
  }
  const first = await q.pull({ maxBatch: 8, maxWaitMs: 0, accept })
  t.same(first?.items.map((i) => i.id), ['o1'], 'the older refused group was passed over')
  t.same(asked, ['l1', 'o1'], 'asked once per group, oldest first, about its head item')
  // Only the refused group is left: the pull waits until notify(), then asks again.
  const pulling = q.pull({ maxBatch: 8, maxWaitMs: 0, accept })
  let done = false
  void pulling.then(() => (done = true))
  await new Promise((r) => setTimeout(r, 30))
  t.notOk(done, 'waits while the only group is refused')
  open = true
  q.notify()
  t.same((await pulling)?.items.map((i) => i.id), ['l1', 'l2'], 'then takes it, in order')
  t.same(q.stats(), { queued: 0, processing: 3 })
})

// Length-aware batching (PullOptions.batching 'length', ./length-batching.ts): batch composition.
const text = (id: string, len: number, tenant = 't', enqueuedAt = Date.now()): WorkItem => ({ ...item(id, 'g', enqueuedAt), tenant, inputs: `${id}:`.padEnd(len, 'x') })
const lengths = (l: { items: WorkItem[] } | null) => l?.items.map((i) => (i.inputs as string).length)

t.test('lengthRun: the run of nearest lengths that pads least, holding `must`', async (t) => {
  t.same(lengthRun([50, 10, 300, 12, 11, 290], 3, 0), [0, 3, 4], 'holds index 0: 50 with 11 and 12 (pads 77), not 10 and 11 or 290')
  t.same(lengthRun([10, 300, 12, 290, 11, 310], 3, 1), [1, 3, 5], 'the long ones together')
  t.same(lengthRun([10, 300, 12, 290, 11, 310], 3), [0, 2, 4], 'no must: the run that pads least')
  t.same(lengthRun([5, 6], 4, 0), [0, 1], 'take ≥ n: all')
  t.same(lengthRun([100, 10, 11, 99], 2, -1, { count: 2, sum: 200, max: 100 }), [0, 3], 'riders: the ones that pad the batch so far least')
  t.same(lengthRun([7, 7, 7, 7], 2, 2), [1, 2], 'equal lengths: the oldest run holding must')
})

t.test('lengthRun: the window holding `must` picked without sorting it all is the run a full sort gives (seeded random windows)', async (t) => {
  // The reference: every key sorted, every run of `take` holding `must` scanned.
  function reference(lengths: number[], take: number, must: number, base = { count: 0, sum: 0, max: 0 }): number[] {
    const order = lengths.map((_, i) => i).sort((a, b) => Math.floor(lengths[a]) - Math.floor(lengths[b]) || a - b)
    const at = order.indexOf(must)
    let best = -1
    let bestPad = Infinity
    for (let s = Math.max(0, at - take + 1); s <= Math.min(at, lengths.length - take); s++) {
      const run = order.slice(s, s + take)
      const longest = Math.max(base.max, ...run.map((i) => lengths[i]))
      const pad = (base.count + take) * longest - base.sum - run.reduce((a, i) => a + lengths[i], 0)
      if (pad < bestPad) {
        bestPad = pad
        best = s
      }
    }
    return order.slice(best, best + take).sort((a, b) => a - b)
  }
  for (let seed = 1; seed <= 300; seed++) {
    const rand = prng(seed)
    const n = 2 + Math.floor(rand() * 1100)
    const take = 1 + Math.floor(rand() * 40)
    // Few distinct lengths in some windows (many ties), a wide spread in others.
    const spread = rand() < 0.3 ? 4 : 2000
    const lengths = Array.from({ length: n }, () => Math.floor(rand() * spread))
    const must = rand() < 0.5 ? 0 : Math.floor(rand() * n)
    const base = rand() < 0.3 ? { count: 3, sum: 90, max: Math.floor(rand() * spread) } : undefined
    const got = lengthRun(lengths, take, must, base)
    const want = take >= n ? lengths.map((_, i) => i) : reference(lengths, take, must, base)
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      t.same(got, want, `seed ${seed}: n ${n}, take ${take}, must ${must}`)
      return
    }
  }
  t.pass('300 windows: the same run as a full sort')
})

t.test('inputLength: characters of the texts, a token estimate', async (t) => {
  t.equal(inputLength('hello'), 5)
  t.equal(inputLength(['ab', 'cde']), 5, 'a batch of texts: their sum')
  t.equal(inputLength({ text: 'abc', text_pair: 'de' }), 5, 'an object: its strings')
  t.equal(inputLength([[1, 2, 3], 4]), 4, 'a nested list counts its length, anything else 1')
  t.equal(inputLength(null), 0)
  t.equal(inputLength(42), 0)
})

t.test('length: a batch of similar lengths that always holds the first in line', async (t) => {
  const q = new MemoryWorkQueue()
  const now = Date.now()
  // Alternating short and long texts: FIFO would mix them in every batch.
  await q.push(Array.from({ length: 32 }, (_, i) => text(`i${i}`, i % 2 ? 10 : 300 + i, 't', now + i)))
  const a = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.equal(a?.items[0].id, 'i0', 'the first in line leads its batch')
  t.ok(lengths(a)!.every((n) => n >= 300), `long with long: ${lengths(a)}`)
  t.same(a?.items.map((i) => i.id), [...a!.items.map((i) => i.id)].sort((x, y) => Number(x.slice(1)) - Number(y.slice(1))), 'in line order within the batch')
  const b = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.equal(b?.items[0].id, 'i1', 'the next first in line (a short one) is in the next batch')
  t.same(lengths(b), [10, 10, 10, 10], 'short with short')
  // Handed back: to the front, in their order; the next batch holds the first in line again.
  await q.release(a!)
  const c = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.equal(c?.items[0].id, 'i0')
  // Drained: every item leased exactly once.
  const seen = new Set([...b!.items, ...c!.items].map((i) => i.id))
  for (let l = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' }); l; l = q.stats().queued > 0 ? await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' }) : null) {
    for (const i of l.items) {
      t.notOk(seen.has(i.id), `${i.id} once`)
      seen.add(i.id)
    }
  }
  t.equal(seen.size, 32)
})

t.test('length: alike lengths and FIFO give the same batches; fifo is the default', async (t) => {
  for (const batching of ['length', 'fifo', undefined] as const) {
    const q = new MemoryWorkQueue()
    // 30 to 40 characters: within the slack, as alike as sorting would make them.
    await q.push(Array.from({ length: 20 }, (_, i) => text(`i${i}`, 30 + (i % 11))))
    const a = await q.pull({ maxBatch: 8, maxWaitMs: 0, batching })
    t.same(a?.items.map((i) => i.id), ['i0', 'i1', 'i2', 'i3', 'i4', 'i5', 'i6', 'i7'], `${batching}: in order`)
  }
  const q = new MemoryWorkQueue()
  await q.push(Array.from({ length: 8 }, (_, i) => text(`i${i}`, i % 2 ? 10 : 300)))
  t.same((await q.pull({ maxBatch: 2, maxWaitMs: 0 }))?.items.map((i) => i.id), ['i0', 'i1'], 'no batching option: FIFO')
})

t.test('length: the chosen tenant\'s items first; riders that pad least; a suspect item still runs alone', async (t) => {
  const q = new MemoryWorkQueue()
  const now = Date.now()
  await q.push([text('a0', 300, 'A', now), text('a1', 10, 'A', now + 1)])
  await q.push([text('b0', 10, 'B', now + 2), text('b1', 290, 'B', now + 3), text('b2', 11, 'B', now + 4), text('b3', 305, 'B', now + 5)])
  const a = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.equal(a?.tenant, 'A')
  t.same(a?.items.map((i) => i.id), ['a0', 'a1', 'b1', 'b3'], 'all of A, then the long riders (A holds a long one already)')
  const b = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.same(b?.items.map((i) => i.id), ['b0', 'b2'], 'B\'s turn: its first in line and the rest')
  const s = new MemoryWorkQueue()
  await s.push([text('s0', 10), text('s1', 300), text('s2', 12), text('s3', 310)])
  const alone = (i: WorkItem): boolean => i.id === 's0' || i.id === 's2'
  t.same((await s.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length', alone }))?.items.map((i) => i.id), ['s0'], 'a suspect first in line runs alone')
  t.same((await s.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length', alone }))?.items.map((i) => i.id), ['s1'], 'one behind is left out of others\' batches (all fit: in order, as FIFO)')
  t.same((await s.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length', alone }))?.items.map((i) => i.id), ['s2'], 'then runs alone')
  t.same((await s.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length', alone }))?.items.map((i) => i.id), ['s3'])
})

t.test('length: the queue measures items as it is told (a model counting tokens), not in characters', async (t) => {
  // Every text has the same characters: counted so, the batches would be FIFO (x0 x1 x2 x3).
  const tokens = (item: WorkItem): number => (String(item.inputs).startsWith('dense') ? 100 : 5)
  const q = new MemoryWorkQueue({ inputLength: tokens })
  const now = Date.now()
  const items: WorkItem[] = []
  for (let i = 0; i < 16; i++) items.push({ ...item(`x${i}`, 'g', now + i), inputs: `${i % 4 < 2 ? 'plain' : 'dense'}-${String(i).padStart(2, '0')}` })
  await q.push(items)
  const a = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.equal(a?.items[0].id, 'x0')
  t.same(a?.items.map((i) => tokens(i)), [5, 5, 5, 5], `batched by the given measure: ${a?.items.map((i) => i.id)}`)
  t.same(a?.items.map((i) => i.lengthHint), [5, 5, 5, 5], 'and cached on the items')
  const b = await q.pull({ maxBatch: 4, maxWaitMs: 0, batching: 'length' })
  t.same(b?.items.map((i) => tokens(i)), [100, 100, 100, 100])
})
