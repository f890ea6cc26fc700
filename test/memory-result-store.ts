import t from 'tap'
import { MemoryResultStore } from '../lib/server/store/memory-result-store.js'

t.test('admit, run, complete, duplicates', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 10, retentionMs: 60_000 })
  t.equal(s.admit('t', 'a'), 'new')
  t.equal(s.admit('t', 'a'), 'pending')
  t.equal(s.admit('u', 'a'), 'new', 'ids are per token')
  s.markRunning('t', 'a')
  t.match(s.counts('t'), { queued: 0, processing: 1 })
  s.complete('t', 'a', JSON.stringify({ out: 1 }))
  t.equal(s.admit('t', 'a'), 'done')
  t.same(s.lookup('t', 'a'), { state: 'done', outputs: '{"out":1}' })
  t.same(s.lookup('t', 'zz'), { state: 'unknown' })
  t.match(s.counts('t'), { queued: 0, processing: 0, done: 1, undelivered: 1 })
  t.same(s.busyOwners().sort(), ['t', 'u'])
})

t.test('undelivered: take, claim, return', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 100, retentionMs: 60_000 })
  for (const id of ['a', 'b', 'c']) {
    s.admit('t', id)
    s.complete('t', id, JSON.stringify(id))
  }
  t.ok(s.claim('t', 'b'))
  t.notOk(s.claim('t', 'b'))
  t.same(s.takeUndelivered('t', 10), [['a', '"a"'], ['c', '"c"']])
  t.same(s.takeUndelivered('t', 10), [])
  s.returnUndelivered('t', ['c', 'unknown'])
  t.same(s.takeUndelivered('t', 10), [['c', '"c"']])
})

t.test('count bound evicts the oldest and counts undelivered losses', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 3, retentionMs: 60_000 })
  for (let i = 0; i < 5; i++) {
    s.admit('t', `i${i}`)
    s.complete('t', `i${i}`, JSON.stringify(i))
  }
  t.equal(s.lookup('t', 'i0').state, 'unknown')
  t.equal(s.lookup('t', 'i4').state, 'done')
  t.equal(s.lost, 2)
  t.equal(s.admit('t', 'i0'), 'new', 'an evicted id is unknown again')
})

t.test('TTL sweep drops old results and idle owners', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 100, retentionMs: 1000 })
  s.admit('t', 'a')
  s.complete('t', 'a', JSON.stringify(1))
  s.admit('t', 'b')
  t.equal(s.sweep(Date.now() + 500), 0)
  t.equal(s.sweep(Date.now() + 1500), 1, 'an undelivered result expired')
  t.equal(s.lookup('t', 'a').state, 'unknown')
  t.equal(s.lookup('t', 'b').state, 'pending', 'pending ids never expire')
  t.equal(s.lost, 1)
})

t.test('drop forgets a pending id; a second complete keeps the first result', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 100, retentionMs: 1000 })
  s.admit('t', 'a')
  s.markRunning('t', 'a')
  s.drop('t', 'a')
  t.match(s.counts('t'), { queued: 0, processing: 0 })
  t.equal(s.admit('t', 'a'), 'new')
  s.complete('t', 'a', JSON.stringify(1))
  s.complete('t', 'a', JSON.stringify(2))
  t.same(s.lookup('t', 'a'), { state: 'done', outputs: '1' })
  t.equal(s.counts('t').done, 1)
})

t.test('forget drops an id wholly: pending, running, retained and undelivered', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 100, retentionMs: 60_000 })
  s.admit('t', 'q')
  s.admit('t', 'r')
  s.markRunning('t', 'r')
  t.match(s.counts('t'), { queued: 1, processing: 1, done: 0 })
  s.forget('t', 'q')
  s.forget('t', 'r')
  t.match(s.counts('t'), { queued: 0, processing: 0, done: 2, undelivered: 0 }, 'a forgotten pending id counts as done')
  t.equal(s.lookup('t', 'r').state, 'unknown')
  s.admit('t', 'd')
  s.complete('t', 'd', JSON.stringify(1))
  s.forget('t', 'd')
  t.same(s.lookup('t', 'd'), { state: 'unknown' })
  t.same(s.takeUndelivered('t', 10), [])
  t.same(s.busyOwners(), [])
  t.equal(s.lost, 0, 'forgetting is not losing')
  s.forget('t', 'never')
  s.forget('nobody', 'x')
  t.match(s.counts('t'), { queued: 0, processing: 0, done: 3, undelivered: 0 })
  t.equal(s.admit('t', 'r'), 'new', 'a forgotten id is unknown again')
})
