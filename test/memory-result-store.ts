import t from 'tap'
import { prng } from './helpers/prng.js'
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


t.test('byte budget: retained bytes after every complete are at most maxRetainedBytes; delivered evicted first', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 1000, retentionMs: 60_000, maxRetainedBytes: 1000 })
  const body = (n: number): string => JSON.stringify('x'.repeat(n - 2))
  for (let i = 0; i < 5; i++) {
    s.admit('t', `d${i}`)
    s.complete('t', `d${i}`, body(100))
  }
  s.acknowledge('t', ['d0', 'd1', 'd2', 'd3', 'd4'].map((id) => (s.claim('t', id), id)))
  for (let i = 0; i < 5; i++) {
    s.admit('t', `u${i}`)
    s.complete('t', `u${i}`, body(100))
  }
  t.equal(s.retainedBytes(), 1000)
  t.same(s.tenantBytes('t'), { queued: 0, undelivered: 500 })
  s.admit('t', 'u5')
  const r = s.complete('t', 'u5', body(100))
  t.ok(s.retainedBytes() <= 1000, `retained ${s.retainedBytes()}`)
  t.equal(r.lost, 0, 'delivered results went first')
  t.equal(s.lookup('t', 'd0').state, 'unknown')
  t.equal(s.lookup('t', 'u0').state, 'done')
  // Only undelivered ones left to evict: they are lost.
  for (let i = 6; i < 12; i++) {
    s.admit('t', `u${i}`)
    s.complete('t', `u${i}`, body(100))
    t.ok(s.retainedBytes() <= 1000)
  }
  t.ok(s.lost > 0, 'undelivered evicted are counted lost')
  t.equal(s.lookup('t', 'u0').state, 'unknown')
})

t.test('a result alone over the retained budget is replaced by an ERR_LIMIT_EXCEEDED body', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 10, retentionMs: 60_000, maxRetainedBytes: 300 })
  s.admit('t', 'big')
  const r = s.complete('t', 'big', JSON.stringify('y'.repeat(500)))
  t.equal(r.oversize, true)
  const found = s.lookup('t', 'big')
  t.equal(found.state, 'done')
  t.match(JSON.parse(found.outputs as string), { code: 'ERR_LIMIT_EXCEEDED', error: /502 bytes is over the retained budget \(300 bytes\)/ })
  t.ok(s.retainedBytes() <= 300)
})

t.test('admit: fingerprints and the queued-bytes budget', async (t) => {
  const s = new MemoryResultStore({ maxRetained: 10, retentionMs: 60_000 })
  t.equal(s.admit('T\nm', 'a', { fingerprint: 'f1', bytes: 10 }), 'new')
  t.equal(s.admit('T\nm', 'a', { fingerprint: 'f1', bytes: 10 }), 'pending')
  t.equal(s.admit('T\nm', 'a', { fingerprint: 'f2', bytes: 10 }), 'conflict')
  t.equal(s.admit('T\nm', 'a', { bytes: 10 }), 'pending', 'no fingerprint: unchecked')
  t.same(s.tenantBytes('T'), { queued: 10, undelivered: 0 }, 'only the admitted one counts')
  t.equal(s.admit('T http\nm', 'h', { bytes: 95, maxQueuedBytes: 100 }), 'overloaded', 'HTTP owner shares the tenant budget')
  t.equal(s.admit('T http\nm', 'h', { bytes: 90, maxQueuedBytes: 100 }), 'new')
  t.same(s.tenantBytes('T'), { queued: 100, undelivered: 0 })
  t.equal(s.admit('U\nm', 'x', { bytes: 500, maxQueuedBytes: 100 }), 'new', 'alone over the budget with nothing queued: admitted')
  s.complete('T\nm', 'a', '"out"')
  t.equal(s.admit('T\nm', 'a', { fingerprint: 'f1' }), 'done')
  t.equal(s.admit('T\nm', 'a', { fingerprint: 'f2' }), 'conflict')
  t.same(s.tenantBytes('T'), { queued: 90, undelivered: 5 })
  s.forget('T http\nm', 'h')
  t.same(s.tenantBytes('T'), { queued: 0, undelivered: 5 })
})

t.test('property: random operation sequences keep every invariant', async (t) => {
  const SEEDS = 300
  let checked = 0
  for (let seed = 1; seed <= SEEDS; seed++) {
    const rnd = prng(seed)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]
    const maxRetainedBytes = 200 + Math.floor(rnd() * 2000)
    const s = new MemoryResultStore({ maxRetained: 5 + Math.floor(rnd() * 40), retentionMs: 1000, maxRetainedBytes })
    const owners = ['A\nm1', 'A\nm2', 'A http\nm1', 'B\nm1']
    const ids = Array.from({ length: 12 }, (_, i) => `id${i}`)
    const fps = ['f1', 'f2']
    // Model of what the store should know: fingerprint per (owner, id) while pending or retained.
    let now = Date.now()
    const fail = (msg: string): void => {
      t.fail(`seed ${seed}: ${msg}`)
    }
    for (let step = 0; step < 300; step++) {
      const owner = pick(owners)
      const id = pick(ids)
      const op = rnd()
      if (op < 0.35) {
        const fp = pick(fps)
        const before = s.lookup(owner, id).state
        const fpKnown = known.get(`${owner}\0${id}`)
        const r = s.admit(owner, id, { fingerprint: fp, bytes: 1 + Math.floor(rnd() * 50), maxQueuedBytes: rnd() < 0.5 ? 300 : undefined })
        if (before === 'unknown' && r !== 'new' && r !== 'overloaded') fail(`unknown id admitted as ${r}`)
        if (before !== 'unknown' && (r === 'new' || r === 'overloaded')) fail(`known id (${before}) admitted as ${r}`)
        if (before !== 'unknown' && fpKnown !== undefined && (fpKnown === fp) !== (r !== 'conflict')) fail(`fingerprint ${fp} vs known ${fpKnown} gave ${r}`)
        if (r === 'new') known.set(`${owner}\0${id}`, fp)
      } else if (op < 0.45) s.markRunning(owner, id)
      else if (op < 0.65) {
        if (s.lookup(owner, id).state === 'pending') s.complete(owner, id, JSON.stringify('r'.repeat(Math.floor(rnd() * 400))))
      } else if (op < 0.72) s.drop(owner, id)
      else if (op < 0.76) s.forget(owner, id)
      else if (op < 0.82) s.takeUndelivered(owner, 1 + Math.floor(rnd() * 4))
      else if (op < 0.88) s.acknowledge(owner, [id, pick(ids)])
      else if (op < 0.93) s.returnUndelivered(owner, [id])
      else if (op < 0.96) s.claim(owner, id)
      else {
        now += Math.floor(rnd() * 800)
        s.sweep(now)
      }
      // Forget the model's fingerprints of ids the store no longer knows.
      for (const o of owners) for (const i of ids) if (s.lookup(o, i).state === 'unknown') known.delete(`${o}\0${i}`)
      if (s.retainedBytes() > maxRetainedBytes) fail(`retained ${s.retainedBytes()} > ${maxRetainedBytes}`)
      if (s.retainedBytes() < 0) fail('retained bytes negative')
      for (const tn of ['A', 'B']) {
        const b = s.tenantBytes(tn)
        if (b.queued < 0 || b.undelivered < 0) fail(`tenant ${tn} bytes negative: ${JSON.stringify(b)}`)
      }
      for (const o of owners) {
        const c = s.counts(o)
        if (c.queued < 0 || c.processing < 0 || c.undelivered < 0 || c.done < 0) fail(`counts negative: ${JSON.stringify(c)}`)
      }
      checked++
    }
    // Drain: every pending item finishes and everything is acknowledged: no undelivered bytes left;
    // nothing queued.
    for (const o of owners) for (const i of ids) if (s.lookup(o, i).state === 'pending') s.complete(o, i, '1')
    for (const o of owners) s.acknowledge(o, ids)
    for (const tn of ['A', 'B']) if (s.tenantBytes(tn).queued !== 0 || s.tenantBytes(tn).undelivered !== 0) fail(`tenant ${tn} not drained: ${JSON.stringify(s.tenantBytes(tn))}`)
    s.sweep(now + 10_000)
    if (s.retainedBytes() !== 0) fail(`retained ${s.retainedBytes()} after expiry`)
    known.clear()
  }
  t.equal(checked, SEEDS * 300)
})
const known = new Map<string, string>()

t.test('property: an id admitted N times with one fingerprint is new once; another fingerprint conflicts while known', async (t) => {
  for (let seed = 1; seed <= 200; seed++) {
    const rnd = prng(seed * 7919)
    const s = new MemoryResultStore({ maxRetained: 100, retentionMs: 60_000, maxRetainedBytes: 1 << 20 })
    const n = 2 + Math.floor(rnd() * 20)
    const results: string[] = []
    for (let i = 0; i < n; i++) {
      results.push(s.admit('T\nm', 'x', { fingerprint: 'same', bytes: 3 }))
      if (rnd() < 0.3 && s.lookup('T\nm', 'x').state === 'pending') s.complete('T\nm', 'x', '"ok"')
      if (rnd() < 0.3) t.equal(s.admit('T\nm', 'x', { fingerprint: 'other' }), 'conflict', `seed ${seed}`)
    }
    t.equal(results.filter((r) => r === 'new').length, 1, `seed ${seed}: new exactly once`)
    t.equal(results[0], 'new')
  }
})
