import t from 'tap'
import { InvalidOptionError } from '../lib/errors.js'
import { Limiter } from '../lib/limiter.js'
import { prng } from './helpers/prng.js'

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

t.test('acquire takes a free slot at once, waits while all are taken, in call order', async (t) => {
  const l = new Limiter(2)
  await l.acquire()
  await l.acquire()
  t.equal(l.active, 2)
  const order: string[] = []
  const a = l.acquire().then(() => order.push('a'))
  const b = l.acquire().then(() => order.push('b'))
  await tick()
  t.same(order, [], 'both wait while every slot is taken')
  t.equal(l.pending, 2)
  l.release()
  await a
  await tick()
  t.same(order, ['a'], 'one release lets exactly one waiter in, the oldest')
  t.equal(l.active, 2, 'the slot passed straight to the waiter')
  l.release()
  await b
  t.same(order, ['a', 'b'])
  l.release()
  l.release()
  t.equal(l.active, 0)
  t.throws(() => l.release(), /release\(\) without a slot taken/)
})

t.test('a newcomer does not pass a waiter when a slot frees', async (t) => {
  const l = new Limiter(1)
  await l.acquire()
  const order: string[] = []
  const first = l.acquire().then(() => order.push('first'))
  l.release()
  // The slot went to `first`: a new acquire waits behind it.
  const late = l.acquire().then(() => order.push('late'))
  await first
  await tick()
  t.same(order, ['first'])
  l.release()
  await late
  t.same(order, ['first', 'late'])
  l.release()
})

t.test('idle resolves once no slot is taken; at once when none is', async (t) => {
  const l = new Limiter(3)
  await l.idle()
  await l.acquire()
  await l.acquire()
  let idle = false
  const p = l.idle().then(() => (idle = true))
  l.release()
  await tick()
  t.notOk(idle, 'one slot still taken')
  l.release()
  await p
  t.ok(idle)
})

t.test('abort: a waiting acquire or idle rejects with the reason and takes nothing', async (t) => {
  const l = new Limiter(1)
  await l.acquire()
  const ac = new AbortController()
  const waiting = l.acquire(ac.signal)
  const idle = l.idle(ac.signal)
  const other = l.acquire()
  const reason = new Error('stop')
  ac.abort(reason)
  await t.rejects(waiting, reason)
  await t.rejects(idle, reason)
  t.equal(l.pending, 1, 'the aborted waiter left the queue')
  l.release()
  await other
  t.equal(l.active, 1, 'the slot went to the waiter still there')
  await t.rejects(l.acquire(ac.signal), reason, 'an aborted signal rejects at once')
  await t.rejects(l.idle(ac.signal), reason)
  l.release()
  t.equal(l.active, 0)
})

t.test('bad limits are refused naming the option', async (t) => {
  for (const bad of [0, -1, 1.5, NaN, '2' as unknown as number]) {
    t.throws(() => new Limiter(bad), { constructor: InvalidOptionError, message: /"limit" must be an integer >= 1/ })
  }
})

t.test('invariant under random timing: never more than limit at once, every task runs once', async (t) => {
  for (const seed of [1, 2, 3]) {
    const rand = prng(seed)
    const limit = 1 + Math.floor(rand() * 8)
    const l = new Limiter(limit)
    let running = 0
    let peak = 0
    const ran: number[] = []
    const ac = new AbortController()
    for (let i = 0; i < 300; i++) {
      await l.acquire(ac.signal)
      running++
      peak = Math.max(peak, running)
      const delay = Math.floor(rand() * 3)
      setTimeout(() => {
        running--
        ran.push(i)
        l.release()
      }, delay)
    }
    await l.idle()
    t.equal(running, 0, `seed ${seed}: all done`)
    t.equal(peak, limit, `seed ${seed}: the bound was reached, never passed`)
    t.same([...ran].sort((a, b) => a - b), [...Array(300).keys()], `seed ${seed}: each task once`)
  }
})
