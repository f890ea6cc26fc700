import t from 'tap'
import { MemoryWorkQueue } from '../lib/server/queue/memory-queue.js'
import type { WorkItem } from '../lib/server/queue/work-queue.js'

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
