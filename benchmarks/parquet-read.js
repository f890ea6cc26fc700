// Question: does readParquet stream a Parquet file in bounded memory when the file is ONE row group
// (pandas' to_parquet under 1 Mi rows), and at what speed? Side by side in one run: readParquet
// (page by page, rows in slices of 1024) and hyparquet's parquetReadObjects of the whole file (how
// readParquet read a row group before: decoded whole, then given row by row), the peer.
//   npm run build && node benchmarks/parquet-read.js        (about 2 minutes on 2 cores)
// Fixture: test/fixtures/io/hyparquet-writer-fixtures.mjs `big`: {id INT32, text ~100 bytes}, one
// row group, 1 MiB pages, SNAPPY, no page index; 100k and 1M rows (13 MB on disk, 100 MB of text).
// Each read is a child process (Node's default heap) that consumes every record; 3 runs per peer and
// file, alternating; median rows/s, and the worst peak RSS (ru_maxrss) over the runs.
// Results: benchmarks/results/parquet-read.{json,md}. test/io-parquet-memory.ts holds the bound.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const FIXTURES = fileURLToPath(new URL('../test/fixtures/io/hyparquet-writer-fixtures.mjs', import.meta.url))
const LIB = new URL('../dist/io/read-parquet.js', import.meta.url).href
const RUNS = 3

// One read, in a child: `node --input-type=module -e READ <peer> <file>`.
const READ = `
const [peer, file] = process.argv.slice(1)
const { readParquet } = await import(${JSON.stringify(LIB)})
const { asyncBufferFromFile, parquetReadObjects } = await import('hyparquet')
async function* whole() { yield* await parquetReadObjects({ file: await asyncBufferFromFile(file) }) }
const t0 = performance.now()
let rows = 0
let chars = 0
for await (const r of peer === 'readParquet' ? readParquet(file) : whole()) { rows++; chars += r.text.length }
const ms = performance.now() - t0
process.stdout.write(JSON.stringify({ rows, chars, ms, rss: process.resourceUsage().maxRSS * 1024 }))
`

const dir = mkdtempSync(path.join(tmpdir(), 'parquet-read-'))
const results = []
try {
  const files = {}
  for (const n of [100_000, 1_000_000]) {
    files[n] = path.join(dir, `${n}.parquet`)
    const g = spawnSync(process.execPath, [FIXTURES, 'big', files[n], String(n)], { encoding: 'utf8' })
    if (g.status !== 0) throw new Error(g.stderr)
  }
  for (const n of Object.keys(files)) {
    const runs = { readParquet: [], 'hyparquet whole group': [] }
    for (let r = 0; r < RUNS; r++) {
      for (const peer of Object.keys(runs)) {
        const c = spawnSync(process.execPath, ['--input-type=module', '-e', READ, peer, files[n]], { encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) })
        if (c.status !== 0) throw new Error(`${peer}: ${c.stderr}`)
        const m = JSON.parse(c.stdout)
        if (m.rows !== Number(n)) throw new Error(`${peer} read ${m.rows} rows of ${n}`)
        runs[peer].push(m)
      }
    }
    for (const [peer, ms] of Object.entries(runs)) {
      const sorted = ms.map((m) => m.ms).sort((a, b) => a - b)
      const row = { peer, rows: Number(n), 'rows/s': Math.round((Number(n) / sorted[RUNS >> 1]) * 1000), 'peak RSS MiB': Math.round(Math.max(...ms.map((m) => m.rss)) / 2 ** 20) }
      results.push(row)
      console.log(JSON.stringify(row))
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const cols = Object.keys(results[0])
const md = [`| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`, ...results.map((r) => `| ${cols.map((c) => r[c]).join(' | ')} |`)].join('\n')
writeFileSync(new URL('./results/parquet-read.json', import.meta.url), `${JSON.stringify({ node: process.version, runs: RUNS, rows: results }, null, 2)}\n`)
writeFileSync(new URL('./results/parquet-read.md', import.meta.url), `# parquet-read\n\n\`node benchmarks/parquet-read.js\` (Node ${process.version}, 2 shared cores; one row group per file)\n\n${md}\n`)
