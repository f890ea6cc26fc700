// The CLI sets V8's heap growth at start (lib/cli/heap.ts): a process whose live data is small
// collects before its heap is many times that size. Measured in a child node (its own heap), with
// a known live set and a steady stream of garbage: the peak heap over what is alive.
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { tuneHeapGrowth } from '../lib/cli/heap.js'

const HEAP_JS = new URL('../dist/cli/heap.js', import.meta.url).href

// ~40 MB alive, then ~1.5 GB of short-lived garbage; prints peak heapUsed / live (after a full GC).
const CHILD = `
import { tuneHeapGrowth } from ${JSON.stringify(HEAP_JS)}
const mode = process.argv.at(-1)
const set = mode === 'tuned' ? tuneHeapGrowth([]) : mode === 'auto' ? tuneHeapGrowth() : undefined
const live = []
for (let i = 0; i < 400_000; i++) live.push({ i, s: 'row-' + i, n: [i, i + 1] })
globalThis.gc()
const alive = process.memoryUsage().heapUsed
let peak = 0
let keep = []
for (let r = 0; r < 300; r++) {
  for (let i = 0; i < 20_000; i++) keep.push({ r, i, s: 'g-' + i, n: [r, i] })
  if (keep.length > 40_000) keep = []
  peak = Math.max(peak, process.memoryUsage().heapUsed)
}
console.log(JSON.stringify({ set, ratio: peak / alive, alive, peak, live: live.length }))
`

function run(mode: string, execArgv: string[] = []): { set?: number; ratio: number; alive: number; peak: number } {
  const r = spawnSync(process.execPath, ['--expose-gc', ...execArgv, '--input-type=module', '-e', CHILD, mode], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

t.test('tuneHeapGrowth: the heap grows to about 2× what is alive, not to 4×', async (t) => {
  const tuned = run('tuned')
  const plain = run('plain')
  t.equal(tuned.set, 100)
  t.comment(`peak heap / alive: tuned ${tuned.ratio.toFixed(2)}, node's default ${plain.ratio.toFixed(2)} (alive ${(tuned.alive / 2 ** 20).toFixed(0)} MiB)`)
  t.ok(tuned.ratio < 3.5, `tuned: peak heap ${tuned.ratio.toFixed(2)}× what is alive (< 3.5; the young generation comes on top of the 2×)`)
})

t.test('tuneHeapGrowth: a value node was started with stands', async (t) => {
  t.equal(tuneHeapGrowth(['--heap-growing-percent=50']), 50)
  t.equal(tuneHeapGrowth(['--heap_growing_percent=30']), 30)
  t.equal(tuneHeapGrowth(['--heap-growing-percent=0']), undefined, '0: V8 decides')
  const started = run('auto', ['--heap-growing-percent=300'])
  t.equal(started.set, 300, 'node started with --heap-growing-percent=300: left as given')
})
