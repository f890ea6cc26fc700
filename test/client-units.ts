import t from 'tap'
import { backoffDelay, RECONNECT_DEFAULTS } from '../lib/client/backoff.js'
import { defaultInput, resolveStreamOptions, streamUrlOf } from '../lib/client/options.js'
import { ReorderBuffer } from '../lib/client/reorder-buffer.js'

t.test('ReorderBuffer restores order and holds only what waits', async (t) => {
  const b = new ReorderBuffer<string>()
  t.same(b.add(2, 'c'), [])
  t.same(b.add(1, 'b'), [])
  t.equal(b.size, 2)
  t.same(b.add(0, 'a'), ['a', 'b', 'c'])
  t.equal(b.size, 0)
  t.equal(b.nextSeq, 3)
  t.same(b.add(3, 'd'), ['d'])
  t.throws(() => b.add(1, 'again'), RangeError)
  b.add(5, 'f')
  t.throws(() => b.add(5, 'f'), RangeError)
})

t.test('ReorderBuffer under a random permutation', async (t) => {
  const n = 5000
  const perm = [...Array(n).keys()].sort(() => Math.random() - 0.5)
  const b = new ReorderBuffer<number>()
  const out: number[] = []
  let peak = 0
  for (const i of perm) {
    out.push(...b.add(i, i))
    peak = Math.max(peak, b.size)
  }
  t.same(out, [...Array(n).keys()])
  t.ok(peak < n)
})

t.test('backoff grows, is capped, and jitters within [base/2, base]', async (t) => {
  const p = { ...RECONNECT_DEFAULTS, minDelayMs: 100, maxDelayMs: 1000, factor: 2 }
  t.equal(backoffDelay(1, p, () => 0), 50)
  t.equal(backoffDelay(1, p, () => 1), 100)
  t.equal(backoffDelay(3, p, () => 1), 400)
  t.equal(backoffDelay(10, p, () => 1), 1000)
  t.equal(backoffDelay(10, p, () => 0), 500)
})

t.test('streamUrlOf', async (t) => {
  t.equal(streamUrlOf('http://h:1', 'org/m'), 'ws://h:1/bulk/stream/cpu/org/m')
  t.equal(streamUrlOf('https://h/base/', 'm', 'gpu'), 'wss://h/base/bulk/stream/gpu/m')
  t.equal(streamUrlOf('ws://h:1/bulk/stream/cpu/a/b'), 'ws://h:1/bulk/stream/cpu/a/b')
  t.throws(() => streamUrlOf('h:1'), { code: 'ERR_INVALID_OPTION' })
  t.throws(() => streamUrlOf('ftp://h'), { code: 'ERR_INVALID_OPTION', message: /ws:, wss:, http: or https:/ })
  t.throws(() => streamUrlOf('http://h'), { code: 'ERR_INVALID_OPTION', message: /"model" is required/ })
})

t.test('defaultInput', async (t) => {
  t.same(defaultInput('hi'), { inputs: 'hi' })
  t.same(defaultInput({ inputs: [1], parameters: { k: 1 }, other: 2 }), { inputs: [1], parameters: { k: 1 } })
  t.throws(() => defaultInput({ text: 'x' }), { code: 'ERR_INVALID_PAYLOAD', message: /pass the `input` option/ })
})

t.test('options are checked, naming the option', async (t) => {
  const base = { url: 'ws://h/bulk/stream/cpu/m', token: 't' }
  t.throws(() => resolveStreamOptions({ token: 't' } as never), { message: /"url" is required/ })
  t.throws(() => resolveStreamOptions({ ...base, token: '' }), { message: /"token"/ })
  t.throws(() => resolveStreamOptions({ ...base, maxInFlight: 0 }), { message: /"maxInFlight" must be an integer >= 1/ })
  t.throws(() => resolveStreamOptions({ ...base, ordered: 'yes' as never }), { message: /"ordered"/ })
  t.throws(() => resolveStreamOptions({ ...base, onError: 'ignore' as never }), { message: /"onError"/ })
  t.throws(() => resolveStreamOptions({ ...base, protocol: 'v2' as never }), { message: /"protocol"/ })
  t.throws(() => resolveStreamOptions({ ...base, input: 5 as never }), { message: /"input" must be a function/ })
  t.throws(() => resolveStreamOptions({ ...base, reconnect: { maxAttempts: -1 } }), { message: /"reconnect.maxAttempts"/ })
  t.throws(() => resolveStreamOptions({ ...base, parameters: [] as never }), { message: /"parameters" must be an object/ })
  const r = resolveStreamOptions({ ...base, runId: 'run1' })
  t.equal(r.id('x', 7), 'run1-7')
  t.equal(r.maxInFlight, 1024)
  t.equal(r.ordered, true)
  t.equal(r.v1, true)
})

t.test('LatencyStats percentiles in bounded memory', async (t) => {
  const { LatencyStats } = await import('../lib/client/latency-stats.js')
  const l = new LatencyStats(1000)
  t.equal(l.percentile(50), 0)
  for (let i = 1; i <= 100_000; i++) l.add(i % 100)
  t.equal(l.count, 100_000)
  t.ok(Math.abs(l.percentile(50) - 50) <= 5, `p50 ${l.percentile(50)}`)
  t.ok(Math.abs(l.percentile(95) - 95) <= 3, `p95 ${l.percentile(95)}`)
  t.equal(l.max, 99)
  t.ok(Math.abs(l.mean - 49.5) < 0.01)
})
