import { fileURLToPath } from 'node:url'
import t from 'tap'
import { recommend, parseBatchCounters, type BenchRow } from '../lib/cli/bench.js'
import { cliProcess } from './helpers/cli.js'
import { startServer } from './helpers/server.js'

const reviews = fileURLToPath(new URL('../examples/reviews.csv', import.meta.url))

interface BenchJson {
  model: string
  endpoint: string | null
  workers: number
  maxBatch: number
  items: number
  levels: BenchRow[]
  recommendation: string[]
}

t.test('bench on the user\'s own file: progress during a level, workers, batch size, mean batch and a recommendation', async (t) => {
  const p = cliProcess(['bench', '-m', 'builtin/sentiment', '--input', reviews, '--column', 'text', '-n', '1500', '--in-flight', '1,8', '--workers', '2', '--max-batch', '4', '--progress-interval', '100'])
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  const out = p.out()
  t.match(out, /builtin\/sentiment @ embedded server, 2 workers, max batch 4; 1500 items per level, 300 inputs from .*reviews\.csv/)
  const rows = [...out.matchAll(/^\| (\d+) \| (\d+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) \| (\d+) \|$/gm)]
  t.same(rows.map((r) => Number(r[1])), [1, 8], 'one table row per level')
  for (const r of rows) {
    t.ok(Number(r[3]) >= 1 && Number(r[3]) <= 4, `mean batch ${r[3]} within 1..max-batch`)
    t.equal(r[4], '0', 'nothing failed')
  }
  t.equal(Number(rows[0][3]), 1, 'in-flight 1 can only make batches of one')
  t.match(out, /^Use --max-in-flight (1|8): /m, 'a recommendation')
  const err = p.err()
  t.match(err, /in-flight 1: \d+\/1500 items, [\d.]+ items\/s/, 'progress while the level runs')
  t.match(err, /in-flight 8: 1500 items in [\d.]+ s, \d+ items\/s, p95 [\d.]+ ms, mean batch [\d.]+, 0 failed/, 'a line per finished level')
})

t.test('bench --json against a running server reads its workers and batch size', async (t) => {
  const server = await startServer(t, { workers: 3, maxBatch: 5 })
  const p = cliProcess(['bench', '-m', 'builtin/echo', '--endpoint', server.url, '--text', 'a', 'b', '-n', '400', '--in-flight', '2,64', '--json', '--no-progress'])
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  t.equal(p.err(), '', 'no progress with --no-progress')
  const r = JSON.parse(p.out()) as BenchJson
  t.match(r, { model: 'builtin/echo', endpoint: server.url, workers: 3, maxBatch: 5, items: 400 })
  t.same(r.levels.map((l) => l.inFlight), [2, 64])
  for (const l of r.levels) {
    t.equal(l.items, 400)
    t.equal(l.failed, 0)
    t.ok(l.meanBatch !== null && l.meanBatch >= 1 && l.meanBatch <= 5, `mean batch ${l.meanBatch}`)
  }
  t.ok(r.recommendation.length >= 1)
})

t.test('bench: bad inputs are one clear line and exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['bench', '-m', 'builtin/echo', '--input', reviews, '--column', 'nope'], /--input .*reviews\.csv has no column "nope" \(columns: "id", "product", "rating", "text"\)/],
    [['bench', '-m', 'builtin/echo', '--input', reviews, '--text', 'x'], /--input and --text both give the inputs/],
    [['bench', '-m', 'builtin/echo', '--input', '/nonexistent/x.csv'], /Cannot read input file "\/nonexistent\/x\.csv": no such file/],
  ]
  const runs = cases.map(([args]) => cliProcess(args))
  // A server nobody runs: the bench failed (1), not a usage error.
  const down = await cliProcess(['bench', '-m', 'builtin/echo', '--endpoint', 'http://127.0.0.1:9', '-n', '5', '--in-flight', '1']).exited
  t.equal(down.code, 1, 'an unreachable endpoint exits 1')
  for (let i = 0; i < cases.length; i++) {
    const { code } = await runs[i].exited
    t.equal(code, 2, cases[i][0].join(' '))
    t.match(runs[i].err(), cases[i][1])
    t.notMatch(runs[i].err(), /\n\s+at /, 'no stack trace')
  }
})

t.test('recommend: smallest in-flight within 10% of the best, rising throughput, batch advice', async (t) => {
  const row = (inFlight: number, itemsPerSecond: number, p95: number, meanBatch: number | null): BenchRow => ({ inFlight, items: 100, seconds: 1, itemsPerSecond, p50: p95 / 2, p95, p99: p95, failed: 0, meanBatch })
  const plateau = recommend([row(1, 100, 1, 1), row(16, 950, 5, 8), row(256, 1000, 80, 30)], { workers: 4, maxBatch: 32 })
  t.match(plateau[0], /^Use --max-in-flight 16: 950 items\/s, within 10% of the best \(1000 items\/s at 256\) with p95 5\.0 ms instead of 80\.0 ms/)
  t.notOk(plateau.some((l) => /still rising/.test(l)))
  t.ok(plateau.some((l) => /workers × max-batch \(4 × 32 = 128\)/.test(l)), 'explains why batches did not fill')
  const rising = recommend([row(1, 100, 1, 1), row(16, 500, 5, 16), row(64, 1000, 20, 31)], { workers: 4, maxBatch: 32 })
  t.match(rising[0], /^Use --max-in-flight 64: the best throughput/)
  t.ok(rising.some((l) => /still rising at in-flight 64: measure higher levels too \(--in-flight 16,64,256\)/.test(l)))
  t.ok(rising.some((l) => /Batches were full \(mean 31\.0 of --max-batch 32\)/.test(l)))
  const small = recommend([row(1, 100, 1, 1), row(64, 1000, 20, 1.2)], { workers: 8, maxBatch: 32 })
  t.ok(small.some((l) => /Batches stayed small \(mean 1\.2\) with 8 workers/.test(l)))
  const unknown = recommend([row(1, 100, 1, null)], {})
  t.equal(unknown.length, 1, 'no batch advice without metrics')
  const failed = recommend([{ ...row(1, 100, 1, 1), failed: 100 }], {})
  t.match(failed[0], /Every item failed/)
})

t.test('parseBatchCounters reads one model\'s histogram from /metrics text', async (t) => {
  const text = [
    '# TYPE inference_stream_batch_size histogram',
    'inference_stream_batch_size_bucket{le="1",model="a/b"} 3',
    'inference_stream_batch_size_sum{model="a/b"} 40',
    'inference_stream_batch_size_count{model="a/b"} 5',
    'inference_stream_batch_size_sum{model="c"} 7',
    'inference_stream_batch_size_count{model="c"} 7',
  ].join('\n')
  t.same(parseBatchCounters(text, 'a/b'), { sum: 40, count: 5 })
  t.same(parseBatchCounters(text, 'c'), { sum: 7, count: 7 })
  t.same(parseBatchCounters(text, 'never/ran'), { sum: 0, count: 0 }, 'a model with no batch yet')
  t.equal(parseBatchCounters('# nothing', 'a/b'), undefined, 'not our server')
})
