// readParquet must not hold a row group: pandas writes a DataFrame of up to 1 Mi rows as ONE row
// group. A child process reads a 1M-row single-group file (hyparquet-writer-fixtures.mjs big: ids
// and ~100-byte texts, 1 MiB pages, no page index) with a V8 heap capped at 32 MB old generation and
// 1 MB semi-spaces: the former reader (hyparquet's parquetRead of the whole group) needed ~300 MB of
// heap for it and dies there (the control), so finishing is the proof; RSS growth is measured too,
// against a 100k-row file read the same way. Rows are checked complete and in order (ids, checksum).
import { spawn } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const FIXTURES = fileURLToPath(new URL('./fixtures/io/hyparquet-writer-fixtures.mjs', import.meta.url))
const CHILD = fileURLToPath(new URL('./fixtures/io/read-parquet-child.mjs', import.meta.url))
const MB = 1e6
// The child reads dist/ (plain node); a dist/ older than the reader's sources would test old code.
const BUILT = ['read-parquet', 'parquet-row-slices', 'parquet-column-pages', 'hyparquet-pages'].map((name) => ({
  lib: fileURLToPath(new URL(`../lib/io/${name}.ts`, import.meta.url)),
  dist: fileURLToPath(new URL(`../dist/io/${name}.js`, import.meta.url)),
}))
const HEAP = ['--max-old-space-size=32', '--max-semi-space-size=1']
/** Peak RSS growth allowed reading the 1M-row file, above the child's RSS before reading. */
const BOUND = 64 * MB

interface Measure {
  count: number
  checksum: number
  rssBefore: number
  rssPeak: number
  heapPeak: number
  ms: number
}

/** Runs node with `args`; resolves to its exit status and output. */
function run(args: string[], env = process.env): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stdout, stderr }))
  })
}

/** Writes the `big` file of n rows (plain node: see hyparquet-writer-fixtures.mjs) and returns its checksum. */
async function generate(path: string, n: number): Promise<{ rows: number; checksum: number }> {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const r = await run([FIXTURES, 'big', path, String(n)], env)
  if (r.status !== 0) throw new Error(`hyparquet-writer-fixtures.mjs big failed: ${r.stderr}`)
  return JSON.parse(r.stdout) as { rows: number; checksum: number }
}

async function read(path: string, mode = 'stream'): Promise<{ status: number | null; stderr: string; m?: Measure }> {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const r = await run([...HEAP, CHILD, path, mode], env)
  return { status: r.status, stderr: r.stderr, m: r.status === 0 ? (JSON.parse(r.stdout) as Measure) : undefined }
}

t.test('readParquet reads a 1M-row single-row-group file in bounded memory, rows complete and in order', async (t) => {
  const stale = BUILT.filter((f) => !existsSync(f.dist) || statSync(f.dist).mtimeMs < statSync(f.lib).mtimeMs)
  if (stale.length > 0) {
    t.fail(`dist/ is not built or older than lib/ (${stale.map((f) => f.dist).join(', ')}): run \`npm run build\` first (npm test does)`)
    return
  }
  const dir = t.testdir()
  const big = join(dir, '1m.parquet')
  const small = join(dir, '100k.parquet')
  // In parallel, to keep the test short: each child's RSS is its own.
  const [bigSum, smallSum] = await Promise.all([generate(big, 1_000_000), generate(small, 100_000)])
  const expected = { big: bigSum, small: smallSum }
  t.ok(statSync(big).size > 10 * MB, `the 1M-row file is ${(statSync(big).size / MB).toFixed(1)} MB (${1_000_000 * 100 / MB} MB of text decoded)`)

  // The control: the whole row group decoded at once (the former reader) does not fit the same heap.
  const [s, b, whole] = await Promise.all([read(small), read(big), read(big, 'whole')])
  t.not(whole.status, 0, 'hyparquet reading the whole row group dies under the same heap limit')
  t.match(whole.stderr, /heap out of memory/)
  t.equal(s.status, 0, s.stderr.slice(-2000))
  t.equal(b.status, 0, b.stderr.slice(-2000))
  if (!s.m || !b.m) return
  t.same([s.m.count, s.m.checksum], [expected.small.rows, expected.small.checksum], '100k: every row, in order (ids 0..n-1 and the checksum)')
  t.same([b.m.count, b.m.checksum], [expected.big.rows, expected.big.checksum], '1M: every row, in order (ids 0..n-1 and the checksum)')

  const growth = (m: Measure) => m.rssPeak - m.rssBefore
  const mb = (n: number) => `${(n / MB).toFixed(1)} MB`
  t.ok(growth(b.m) < BOUND, `1M rows: RSS grew ${mb(growth(b.m))} (peak ${mb(b.m.rssPeak)}, heap peak ${mb(b.m.heapPeak)}), under ${mb(BOUND)}`)
  t.ok(
    b.m.rssPeak <= 1.25 * s.m.rssPeak,
    `1M rows: peak RSS ${mb(b.m.rssPeak)} within +25% of 100k rows' ${mb(s.m.rssPeak)} (${((b.m.rssPeak / s.m.rssPeak - 1) * 100).toFixed(0)}%)`,
  )
})
