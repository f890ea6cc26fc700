#!/usr/bin/env node
/*
 * Question
 *   What does the main job cost end to end — CSV → InferenceStream → Parquet with `builtin/echo` —
 *   against each stage alone, and is memory flat in the input size?
 *
 * Fixture
 *   A generated CSV `id,product,rating,text` (the shape of examples/reviews.csv): id `r0000042`,
 *   one of 15 products (some with a comma or doubled quotes, so quoted), rating 1–5, and a short
 *   review text of about 80 characters made from sentence fragments by a hash of the row number
 *   (about half the texts hold a comma and are quoted, a few hold `""` or non-ASCII letters).
 *   Row i is a pure function of i, so every check below recomputes what row i must be. The CSV is
 *   generated once per size into `<tmpdir>/inference-stream-bench/` and reused by later runs
 *   (`--fresh-fixture` regenerates it): 1 000 000 rows (~100 MB) and 100 000 rows.
 *   Every peer is its own child process (this file re-invoked with `--role client`), so its peak
 *   RSS is its own; the ones that infer get a fresh server process,
 *   `node dist/cli/index.js serve --port 0 --log-level warn`, `builtin/echo` (outputs = inputs).
 *     1 csv-read       `readCsv(path)` into a counting Writable (checks each row's id, and every
 *                      101st row whole).
 *     2 parquet-write  N results shaped exactly like InferenceStream's for this CSV,
 *                      `{id: 'e2e-<i>', outputs: text, record: {id, product, rating, text}}`, made
 *                      lazily by a generator (never an array of N), `Readable.from()` into
 *                      `writeParquet(path)`.
 *     3 stream         N records (the CSV's rows, from a generator) → `InferenceStream` → counting
 *                      Writable (checks order and outputs): the inference stage alone.
 *     4 e2e            `pipeline(readCsv(path), new InferenceStream({url, model: 'builtin/echo',
 *                      token, input: inputFromColumn('text')}), writeParquet(out))` — the product.
 *     5 e2e-small      the same over the small CSV (100 000 rows): peak RSS here vs 4 is the
 *                      memory-flatness check.
 *     2t, 4t, 5t       2, 4 and 5 with `writeParquet(path, {thread: true})`: the row groups are
 *                      encoded on a worker thread (what `inference-stream run` does by default).
 *     4c, 5c           4t and 5t with V8's heap growth set as `inference-stream run` sets it at
 *                      start (`--heap-growing-percent=100`, lib/cli/heap.ts): the job as the CLI
 *                      runs it, and the memory goal of issue 17 (< 200 MiB, flat).
 *   InferenceStream runs with its defaults (maxInFlight 1024, v1, ordered) plus `runId: 'e2e'`, so
 *   the ids are known to the checks. The two Parquet-writing peers' outputs are read back with
 *   hyparquet (an independent reader, in its own child process, after the peer exits): row count,
 *   and every row's id, input columns and outputs, in order. For 3–5 the server's bill (`/metrics`)
 *   must equal N, and the stream must report no failed item, reconnect or resend. Any broken check
 *   is a loud `!!!` and exit 1.
 *
 * Command
 *   npm run build && node benchmarks/pipeline-e2e.js   # 1 000 000 rows (small: 100 000), 3 runs: ~6 min on 2 cores (+ ~3 s for the CSVs, once)
 *   node benchmarks/pipeline-e2e.js --quick            # 100 000 rows (small: 10 000), 1 run: smoke test (~30 s)
 *   node benchmarks/pipeline-e2e.js --runs 1           # one run per peer (~1.5 min)
 *   node benchmarks/pipeline-e2e.js --only e2e --profile   # + CPU profile of the e2e client
 *   Results: benchmarks/results/pipeline-e2e.json and .md (`-quick` with --quick); the Markdown
 *   is also printed on stdout.
 *
 * How to read the result
 *   rows/s: rows through the peer per second of its wall time, from before the first stream is
 *   made (modules already loaded) to the writer's 'finish' (the Parquet file complete and renamed).
 *   "e2e / slowest stage" is 4 over the slowest of 1–3 (and 4t over the slowest of 1, 2t, 3; and
 *   4t over the slowest of 1–3, the bar issue 17 set): 100% would mean the pipeline costs no more
 *   than its worst stage; each e2e is also given as a share of each stage alone. With the writer
 *   on the main thread all three stages share the client's one thread (the server is another
 *   process), so a CPU-bound client cannot beat the sum of the stages' client CPU per row; with
 *   `thread: true` the encoding runs beside it. The verdict gives the sum of the stages' client CPU
 *   per row beside e2e's own: near 100% means the pipeline costs what its stages cost and nothing
 *   more (client CPU counts every thread of the client process, the writer's worker included). It is approximate: CPU s also counts V8's GC helper threads (so a peer's
 *   CPU s can exceed its wall s), and 2 and 3 pay for making their rows with a generator.
 *   Client CPU µs/row is what one row costs the client, whatever the machine's load.
 *   Peak RSS is VmHWM (client: process.resourceUsage().maxRSS at its end; server: /proc just
 *   before it stops); "RSS after start" is the client's RSS once its modules are loaded, before any
 *   row, and "heap used ≤" the most V8 heap in use seen by a 100 ms sampler. Memory is flat in the
 *   input size if 4's peak RSS is within +25% of 5's with ten times the rows; the verdict line says
 *   whether it was in this run (for 4 vs 5 and 4t vs 5t). RSS at 10% / 50% / 100% of the big e2e run (client: by rows, from
 *   its own sampler; server: by time, VmRSS read from /proc by this process every 200 ms) and the
 *   growth over its second half tell "bounded but not yet full at the small size" (levels off, late
 *   growth near 0) from "grows with the input" (keeps growing). The server retains finished results
 *   per token for duplicates and resume (`maxRetained`, 100 000 by default, and a TTL), so its
 *   memory grows until that window is full; the small run ends just as it fills.
 *   With --runs R > 1 each row is the peer's median run by rows/s; compare numbers within a run.
 */
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { once } from 'node:events'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import {
  CLI, LIB, PROFILE_DIR, addServerStats, adoptProfiles, checkBill, checkBuild, commandLine, countingWritable, exitIfFailed,
  fmtInt, fmtMiB, fmtPct, fmtS, int, loadBeforeRuns, machineInfo, medianRun, parseBenchArgs, pkgVersion, procStats,
  profileFlags, profilesBefore, runChild, runRole, runsArg, startServer, stopServer, writeProfileSummaries, writeResults,
} from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const MODEL = 'builtin/echo'
const RUN_ID = 'e2e'
const FIXTURE_VERSION = 1 // bump when row() changes, so cached fixtures are regenerated
const DEFAULTS = { rows: 1_000_000, smallRows: 100_000 }
const QUICK = { rows: 100_000, smallRows: 10_000 }
const FLAT_LIMIT = 1.25

// ---------------------------------------------------------------------------------------------
// The fixture: row i as a pure function of i.
// ---------------------------------------------------------------------------------------------
const PRODUCTS = [
  'travel mug', 'bluetooth speaker', 'hiking backpack', 'mechanical keyboard', 'desk lamp', 'yoga mat',
  'coffee grinder', 'phone case, slim', 'kettle "Pro" 1.7 L', 'running shoes', 'air fryer', 'e-reader',
  'noise-cancelling headphones', 'water bottle, 750 ml', 'office chair',
]
const OPENERS = [
  // [rating, text]; {p} is the product
  [5, 'Great {p}, exactly as described.'],
  [5, 'Wonderful {p}, my whole family enjoys it.'],
  [4, 'This {p} is excellent and works perfectly.'],
  [4, 'Really happy with the {p}.'],
  [3, 'The {p} is okay for the price.'],
  [3, 'Decent {p}, nothing special.'],
  [2, 'Very disappointed with the {p}.'],
  [1, 'The {p} stopped working within a week.'],
  [1, 'This {p} broke after two days.'],
]
const DETAILS = [
  'Shipping was fast.', 'The instructions were confusing.', 'The battery lasts all day.',
  'Customer service was friendly.', 'It smells like burnt plastic.', 'Would buy again, no doubt.',
  'My verdict: "meh", honestly.', 'Looks nice on the desk.', 'Arrived late, but well packed.',
  'Café-quality results at home.', 'Cheap feel.', 'Fits in any bag.', 'Too loud for an office.',
  'Five stars from my daughter.', 'Returned it.', 'Über solid build quality.',
]

/** A 32-bit hash of i (splitmix-like): the fixture's only source of variety. */
function hash(i, salt) {
  let x = Math.imul(i ^ salt, 0x9e3779b1) ^ 0x85ebca6b
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d)
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b)
  return (x ^ (x >>> 16)) >>> 0
}
const idOf = (i) => `r${String(i).padStart(7, '0')}`

/** Row i of the fixture, every field a string (as readCsv gives them). */
function row(i) {
  const h = hash(i, 0x1234)
  const product = PRODUCTS[h % PRODUCTS.length]
  const [rating, opener] = OPENERS[(h >>> 8) % OPENERS.length]
  let text = opener.replace('{p}', product)
  // Details until the text is about 80 characters, like a short review.
  for (let k = 0; text.length < 70 && k < 4; k++) text += ` ${DETAILS[hash(i, k + 7) % DETAILS.length]}`
  return { id: idOf(i), product, rating: String(rating), text }
}

/** The InferenceStream result of row i with builtin/echo (outputs = inputs = text). */
const resultOf = (i) => {
  const r = row(i)
  return { id: `${RUN_ID}-${i}`, outputs: r.text, record: r }
}

const csvField = (s) => (/[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s)

async function generateCsv(file, n) {
  const tmp = `${file}.${process.pid}.tmp`
  const out = createWriteStream(tmp)
  if (!out.write('id,product,rating,text\n')) await once(out, 'drain')
  let buf = ''
  for (let i = 0; i < n; i++) {
    const r = row(i)
    buf += `${r.id},${csvField(r.product)},${r.rating},${csvField(r.text)}\n`
    if (buf.length > 1 << 20 || i === n - 1) {
      if (!out.write(buf)) await once(out, 'drain')
      buf = ''
    }
  }
  out.end()
  await once(out, 'close')
  renameSync(tmp, file)
}

// Besides the common ones (role, quick, runs, only, profile, no-write, token, file: see lib/harness.js).
const args = parseBenchArgs({
  // orchestrator
  rows: { type: 'string' },
  'small-rows': { type: 'string' },
  'fixture-dir': { type: 'string' },
  'fresh-fixture': { type: 'boolean', default: false },
  'keep-output': { type: 'boolean', default: false },
  workers: { type: 'string' },
  'max-batch': { type: 'string' },
  // client / verify
  peer: { type: 'string' },
  input: { type: 'string' },
  output: { type: 'string' },
  base: { type: 'string' },
  'stall-ms': { type: 'string', default: '60000' },
  thread: { type: 'boolean', default: false },
  'cli-heap': { type: 'boolean', default: false },
})

// ---------------------------------------------------------------------------------------------
// Role: client. One peer, N rows, prints one JSON line of results on stdout.
// ---------------------------------------------------------------------------------------------

async function runClient() {
  const peer = args.peer
  const N = int('rows', args.rows)
  const stallMs = int('stall-ms', args['stall-ms'])
  const problems = []
  const problem = (text) => {
    if (problems.length < 10) problems.push(text)
  }
  const extra = {}
  let error = null
  let progress = 0 // rows through the peer so far, for the stall check and the memory samples

  // Modules load before the clock starts: the run measures moving rows, not startup.
  const { InferenceStream, inputFromColumn, readCsv, writeParquet } = await import(LIB)
  // As `inference-stream run` sets it at start (lib/cli/heap.ts): V8's heap growth 2×, not 4×.
  if (args['cli-heap']) (await import(new URL('../dist/cli/heap.js', import.meta.url).href)).tuneHeapGrowth()
  const rssAfterStartKiB = Math.round(process.memoryUsage().rss / 1024)

  // Memory over the run: every 100 ms, RSS and heap in use against the rows done so far.
  const samples = []
  let heapUsedMax = 0
  const sample = () => {
    const m = process.memoryUsage()
    if (m.heapUsed > heapUsedMax) heapUsedMax = m.heapUsed
    samples.push({ rows: progress, rssKiB: Math.round(m.rss / 1024), heapUsedKiB: Math.round(m.heapUsed / 1024) })
  }
  const sampler = setInterval(sample, 100)

  // A peer that stops making progress fails instead of hanging the benchmark.
  let lastProgress = 0
  let lastProgressAt = Date.now()
  let stalled
  const stall = new Promise((_, reject) => {
    stalled = reject
  })
  stall.catch(() => {})
  const stallTimer = setInterval(() => {
    if (progress !== lastProgress) {
      lastProgress = progress
      lastProgressAt = Date.now()
    } else if (Date.now() - lastProgressAt > stallMs) stalled(new Error(`no progress for ${stallMs} ms (${progress}/${N} rows)`))
  }, 1000)

  const streamOptions = () => ({ url: args.base, model: MODEL, token: args.token, input: inputFromColumn('text'), runId: RUN_ID })
  const checkStream = (stream) => {
    const s = stream.stats
    extra.streamStats = s
    extra.peakInFlight = stream.peakInFlight
    if (s.failed > 0 || s.reconnects > 0 || s.resent > 0 || s.ignored > 0) problem(`stream stats: ${JSON.stringify(s)}`)
    if (s.received !== N) problem(`stream received ${s.received} results, expected ${N}`)
  }

  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  try {
    if (peer === 'csv-read') {
      let i = 0
      const reader = readCsv(args.input)
      const sink = countingWritable((r) => {
        if (r.id !== idOf(i)) problem(`row ${i}: id ${JSON.stringify(r.id)}, expected ${idOf(i)}`)
        else if (i % 101 === 0) {
          const want = row(i)
          if (r.product !== want.product || r.rating !== want.rating || r.text !== want.text) problem(`row ${i}: ${JSON.stringify(r)} != ${JSON.stringify(want)}`)
        }
        progress = ++i
      })
      await Promise.race([pipeline(reader, sink), stall])
      if (i !== N) problem(`read ${i} rows, expected ${N}`)
      if (reader.badRecords > 0) problem(`${reader.badRecords} bad records`)
    } else if (peer === 'parquet-write') {
      const writer = writeParquet(args.output, { thread: args.thread })
      function* results() {
        for (let i = 0; i < N; i++) {
          progress = i
          yield resultOf(i)
        }
        progress = N
      }
      await Promise.race([pipeline(Readable.from(results()), writer), stall])
      extra.rowsWritten = writer.rowsWritten
      if (writer.rowsWritten !== N) problem(`writer wrote ${writer.rowsWritten} rows, expected ${N}`)
    } else if (peer === 'stream') {
      function* records() {
        for (let i = 0; i < N; i++) yield row(i)
      }
      const stream = new InferenceStream(streamOptions())
      let i = 0
      const sink = countingWritable((res) => {
        if (res.id !== `${RUN_ID}-${i}` || res.record?.id !== idOf(i)) problem(`position ${i}: result ${res.id} (record ${res.record?.id})`)
        else if (res.outputs !== res.record.text) problem(`row ${i}: outputs ${JSON.stringify(res.outputs).slice(0, 120)}`)
        progress = ++i
      })
      await Promise.race([pipeline(Readable.from(records()), stream, sink), stall])
      if (i !== N) problem(`got ${i} results, expected ${N}`)
      checkStream(stream)
    } else if (peer === 'e2e') {
      const reader = readCsv(args.input)
      const stream = new InferenceStream(streamOptions())
      const writer = writeParquet(args.output, { thread: args.thread })
      const progressTimer = setInterval(() => (progress = writer.rowsWritten), 100)
      try {
        await Promise.race([pipeline(reader, stream, writer), stall])
      } finally {
        clearInterval(progressTimer)
      }
      progress = writer.rowsWritten
      extra.rowsWritten = writer.rowsWritten
      if (reader.recordsRead !== N) problem(`reader read ${reader.recordsRead} rows, expected ${N}`)
      if (reader.badRecords > 0) problem(`${reader.badRecords} bad records`)
      if (writer.rowsWritten !== N) problem(`writer wrote ${writer.rowsWritten} rows, expected ${N}`)
      checkStream(stream)
    } else {
      throw new Error(`unknown --peer ${peer}`)
    }
  } catch (err) {
    error = err?.stack ?? String(err)
  }
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  clearInterval(stallTimer)
  clearInterval(sampler)
  sample()
  // RSS when the run had done 10%, 50% and 100% of its rows (the first sample at or past each).
  const at = (f) => samples.find((s) => s.rows >= f * N)?.rssKiB ?? null
  const out = {
    ok: !error && problems.length === 0,
    error,
    peer,
    rows: N,
    wallMs,
    rowsPerSec: wallMs > 0 ? (N / wallMs) * 1000 : 0,
    cpuSec: (cpu.user + cpu.system) / 1e6,
    peakRssKiB: process.resourceUsage().maxRSS,
    rssAfterStartKiB,
    heapUsedMaxKiB: Math.round(heapUsedMax / 1024),
    rssAtKiB: { '10%': at(0.1), '50%': at(0.5), '100%': at(1) },
    ...extra,
    firstProblems: problems,
  }
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(out.ok ? 0 : 1))
}

// ---------------------------------------------------------------------------------------------
// Role: verify. Reads a written Parquet file back with hyparquet and checks every row.
// ---------------------------------------------------------------------------------------------
async function runVerify() {
  const N = int('rows', args.rows)
  const file = args.output
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } = await import('hyparquet')
  const t0 = performance.now()
  const problems = []
  const problem = (text) => {
    if (problems.length < 10) problems.push(text)
  }
  const buf = await asyncBufferFromFile(file)
  const metadata = await parquetMetadataAsync(buf)
  const columns = metadata.schema.slice(1).map((s) => s.name)
  const numRows = Number(metadata.num_rows)
  if (numRows !== N) problem(`footer says ${numRows} rows, expected ${N}`)
  const want = ['id', 'input_id', 'product', 'rating', 'text', 'outputs', 'error', 'error_code']
  if (JSON.stringify(columns) !== JSON.stringify(want)) problem(`columns ${columns.join(',')}, expected ${want.join(',')}`)
  let i = 0
  let start = 0
  for (const group of metadata.row_groups) {
    const end = start + Number(group.num_rows)
    const rows = await parquetReadObjects({ file: buf, metadata, rowStart: start, rowEnd: end })
    for (const r of rows) {
      const w = row(i)
      if (r.id !== `${RUN_ID}-${i}` || r.input_id !== w.id) {
        problem(`row ${i}: id ${r.id}, input_id ${r.input_id}; expected ${RUN_ID}-${i}, ${w.id}`)
      } else if (r.product !== w.product || r.rating !== w.rating || r.text !== w.text || r.outputs !== JSON.stringify(w.text) || r.error !== null || r.error_code !== null) {
        problem(`row ${i}: ${JSON.stringify(r).slice(0, 300)}`)
      }
      i++
    }
    start = end
  }
  if (i !== N) problem(`read ${i} rows, expected ${N}`)
  const out = {
    ok: problems.length === 0,
    rowsRead: i,
    footerRows: numRows,
    rowGroups: metadata.row_groups.length,
    fileBytes: statSync(file).size,
    verifyMs: performance.now() - t0,
    firstProblems: problems,
  }
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(out.ok ? 0 : 1))
}

// ---------------------------------------------------------------------------------------------
// Orchestrator. Server start/stop, /proc stats and the profile summary: lib/harness.js.
// ---------------------------------------------------------------------------------------------
/**
 * Samples a process's RSS (VmRSS, from /proc) every 200 ms from outside it, so it pays nothing:
 * `at(f)` is the RSS at fraction f of the sampled time, to see whether it still grows late in a run.
 */
function rssSampler(pid) {
  const samples = []
  const timer = setInterval(() => {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (m) samples.push({ t: performance.now(), kib: Number(m[1]) })
    } catch {
      // no /proc, or the process is gone
    }
  }, 200)
  return {
    stop() {
      clearInterval(timer)
      if (samples.length === 0) return null
      const t0 = samples[0].t
      const span = samples[samples.length - 1].t - t0
      const at = (f) => samples.find((s) => s.t - t0 >= f * span)?.kib ?? null
      return { '10%': at(0.1), '50%': at(0.5), '100%': at(1) }
    },
  }
}

const fmtX = (r) => (r == null ? 'n/a' : `${r.toFixed(2)}×`)

async function orchestrate() {
  const sizes = args.quick ? QUICK : DEFAULTS
  const N = args.rows !== undefined ? int('rows', args.rows) : sizes.rows
  const NS = args['small-rows'] !== undefined ? int('small-rows', args['small-rows']) : sizes.smallRows
  const runs = runsArg(args)
  const serverExtra = []
  if (args.workers !== undefined) serverExtra.push('--workers', String(int('workers', args.workers)))
  if (args['max-batch'] !== undefined) serverExtra.push('--max-batch', String(int('max-batch', args['max-batch'])))
  const serve = [CLI, 'serve', '--port', '0', '--log-level', 'warn', ...serverExtra]

  checkBuild([CLI, LIB], 'dist/ is missing: run `npm run build` first\n')

  const peers = [
    { name: 'csv-read', n: '1', what: '`readCsv(path)` → counting Writable', rows: N, csv: 'big' },
    { name: 'parquet-write', n: '2', what: 'generator of results → `writeParquet(path)`', rows: N, parquet: true },
    { name: 'stream', n: '3', what: 'generator of records → `InferenceStream` → counting Writable', rows: N, server: true },
    { name: 'e2e', n: '4', what: '`readCsv` → `InferenceStream` → `writeParquet`', rows: N, csv: 'big', server: true, parquet: true },
    { name: 'e2e-small', n: '5', client: 'e2e', what: 'the same, small CSV', rows: NS, csv: 'small', server: true, parquet: true },
    { name: 'parquet-write-thread', n: '2t', client: 'parquet-write', thread: true, what: '2 with `writeParquet(path, {thread: true})`', rows: N, parquet: true },
    { name: 'e2e-thread', n: '4t', client: 'e2e', thread: true, what: '4 with `writeParquet(path, {thread: true})`', rows: N, csv: 'big', server: true, parquet: true },
    { name: 'e2e-thread-small', n: '5t', client: 'e2e', thread: true, what: 'the same, small CSV', rows: NS, csv: 'small', server: true, parquet: true },
    // V8 grows a heap up to 4× what is alive on a machine with a large default heap limit: a
    // client whose live data is ~36 MiB still grows its heap to ~80 MiB before collecting. The CLI
    // sets the growth to 2× at start (lib/cli/heap.ts); these peers run as it does.
    { name: 'e2e-cli', n: '4c', client: 'e2e', thread: true, cliHeap: true, what: '4t with the CLI\'s heap growth (`--heap-growing-percent=100`, set by `inference-stream run`)', rows: N, csv: 'big', server: true, parquet: true },
    { name: 'e2e-cli-small', n: '5c', client: 'e2e', thread: true, cliHeap: true, what: 'the same, small CSV', rows: NS, csv: 'small', server: true, parquet: true },
  ]
  const only = args.only ? new Set(args.only.split(',')) : null
  const selected = only ? peers.filter((p) => only.has(p.name)) : peers
  if (selected.length === 0) {
    process.stderr.write(`--only matches nothing; peers: ${peers.map((p) => p.name).join(', ')}\n`)
    process.exit(2)
  }

  // Fixtures: generated once per size and version, reused by later runs.
  const fixtureDir = path.resolve(args['fixture-dir'] ?? path.join(os.tmpdir(), 'inference-stream-bench'))
  mkdirSync(fixtureDir, { recursive: true })
  const fixtures = {}
  for (const [kind, n] of [['big', N], ['small', NS]]) {
    if (!selected.some((p) => p.csv === kind)) continue
    const file = path.join(fixtureDir, `pipeline-e2e-v${FIXTURE_VERSION}-${n}.csv`)
    if (args['fresh-fixture'] || !existsSync(file)) {
      const t = performance.now()
      process.stderr.write(`generating ${file} (${n.toLocaleString('en-US')} rows)… `)
      await generateCsv(file, n)
      process.stderr.write(`${((performance.now() - t) / 1000).toFixed(1)} s\n`)
    }
    fixtures[kind] = { file, rows: n, bytes: statSync(file).size }
  }
  const outDir = mkdtempSync(path.join(os.tmpdir(), 'pipeline-e2e-out-'))

  if (args.profile) mkdirSync(PROFILE_DIR, { recursive: true })
  process.stderr.write(`pipeline-e2e: ${N.toLocaleString('en-US')} rows (small: ${NS.toLocaleString('en-US')}), ${runs} run(s) per peer, outputs in ${outDir}\n`)
  const loadBefore = loadBeforeRuns()

  const all = new Map(selected.map((p) => [p.name, []]))
  const profiles = []
  let failed = false
  // Interleaved runs (a b c … a b c …) so a drift of the machine does not favour one peer.
  for (let r = 0; r < runs; r++) {
    for (const peer of selected) {
      const token = `bench-${peer.name}-${r}`
      let server
      if (peer.server) {
        try {
          server = await startServer(serve, peer.name)
        } catch (err) {
          process.stderr.write(`${peer.name}: ${err.message}\n`)
          all.get(peer.name).push({ ok: false, error: err.message })
          failed = true
          continue
        }
      }
      const output = peer.parquet ? path.join(outDir, `${peer.name}.run${r + 1}.parquet`) : null
      const clientArgs = ['--peer', peer.client ?? peer.name, '--rows', String(peer.rows), '--token', token]
      if (peer.csv) clientArgs.push('--input', fixtures[peer.csv].file)
      if (peer.thread) clientArgs.push('--thread')
      if (peer.cliHeap) clientArgs.push('--cli-heap')
      if (output) clientArgs.push('--output', output)
      if (server) clientArgs.push('--base', server.base)
      const before = profilesBefore(args.profile)
      const s0 = server ? procStats(server.child.pid) : null
      const serverRss = server ? rssSampler(server.child.pid) : null
      const result = await runChild(THIS_FILE, 'client', clientArgs, { nodeArgs: [...(peer.nodeArgs ?? []), ...profileFlags(args.profile)] })
      if (server) {
        result.serverRssAtKiB = serverRss.stop()
        addServerStats(result, s0, procStats(server.child.pid))
        await checkBill(result, server.base, peer.rows, peer.name)
        await stopServer(server.child)
      }
      if (output && existsSync(output)) {
        // Read back in its own process: the independent reader's memory is nobody's peak RSS.
        result.verify = await runChild(THIS_FILE, 'verify', ['--output', output, '--rows', String(peer.rows)])
        if (!result.verify.ok) {
          result.ok = false
          result.firstProblems = [...(result.firstProblems ?? []), `read back: ${result.verify.error ?? ''} ${(result.verify.firstProblems ?? []).join('; ')}`]
        }
        if (!args['keep-output']) rmSync(output, { force: true })
      } else if (output) {
        result.ok = false
        result.firstProblems = [...(result.firstProblems ?? []), `no output file ${output}`]
      }
      if (args.profile) {
        for (const file of adoptProfiles(before, `pipeline-e2e.${peer.name}.run${r + 1}`)) profiles.push({ peer: peer.name, run: r, file })
      }
      all.get(peer.name).push(result)
      const line =
        `${peer.name.padEnd(14)} run ${r + 1}/${runs}: ${fmtInt(result.rowsPerSec)} rows/s, ${fmtS(result.wallMs / 1000)} s, ` +
        `client peak RSS ${fmtMiB(result.peakRssKiB)} MiB` +
        (server ? `, server ${fmtMiB(result.serverPeakRssKiB)} MiB` : '') +
        (result.verify ? `, read back ${fmtInt(result.verify.rowsRead)} rows in ${fmtS(result.verify.verifyMs / 1000)} s` : '')
      if (result.ok) {
        process.stderr.write(`${line}\n`)
      } else {
        failed = true
        process.stderr.write(
          `\n!!! ${peer.name} FAILED its checks: ${result.error ?? ''}\n` +
            `!!! ${(result.firstProblems ?? []).join('\n!!! ')}\n` +
            (result.stderr ? `--- client stderr (tail) ---\n${result.stderr}\n` : '') +
            (server ? `--- server stderr (tail) ---\n${server.stderr().slice(-2000)}\n` : '') +
            '\n',
        )
      }
    }
  }
  if (!args['keep-output']) rmSync(outDir, { recursive: true, force: true })

  const median = (name) => medianRun(all.get(name), 'rowsPerSec')
  const rows = selected.map((peer) => ({ peer, ...median(peer.name) }))
  const get = (name) => rows.find((r) => r.peer.name === name)?.med ?? null
  const cpuPerRow = (m, n) => (m?.cpuSec != null ? (m.cpuSec * 1e6) / n : null)

  // The pipeline two ways: its writer on the main thread (as 1–5), or on a worker thread (2t, 4t, 5t).
  // Each e2e is compared with the slowest of ITS stages alone (the writer as it runs there).
  const lateGrowth = (at) => (at?.['50%'] && at?.['100%'] ? at['100%'] / at['50%'] - 1 : null)
  const configSummary = (writerPeer, e2eName, smallName) => {
    const stages = ['csv-read', writerPeer, 'stream'].map((name) => ({ name, m: get(name) })).filter((s) => s.m?.rowsPerSec)
    const slowest = stages.length === 3 ? stages.reduce((a, b) => (b.m.rowsPerSec < a.m.rowsPerSec ? b : a)) : null
    const e2e = get(e2eName)
    const small = get(smallName)
    const sumCpuUs = stages.length === 3 ? stages.reduce((s, x) => s + cpuPerRow(x.m, N), 0) : null
    const c = {
      e2e: e2eName,
      stages: stages.map((x) => x.name),
      slowestStage: slowest?.name ?? null,
      slowestStageRowsPerSec: slowest?.m.rowsPerSec ?? null,
      e2eRowsPerSec: e2e?.rowsPerSec ?? null,
      e2eOverSlowestStage: slowest && e2e?.rowsPerSec ? e2e.rowsPerSec / slowest.m.rowsPerSec : null,
      e2eOverEachStage: e2e?.rowsPerSec ? Object.fromEntries(stages.map((x) => [x.name, e2e.rowsPerSec / x.m.rowsPerSec])) : null,
      stagesClientCpuUsPerRow: sumCpuUs,
      sumOfStagesBoundRowsPerSec: sumCpuUs ? 1e6 / sumCpuUs : null,
      e2eClientCpuUsPerRow: cpuPerRow(e2e, N),
      e2eCpuOverSumOfStages: sumCpuUs && cpuPerRow(e2e, N) ? cpuPerRow(e2e, N) / sumCpuUs : null,
      clientPeakRssKiB: e2e?.peakRssKiB ?? null,
      smallClientPeakRssKiB: small?.peakRssKiB ?? null,
      clientPeakRssRatio: e2e?.peakRssKiB && small?.peakRssKiB ? e2e.peakRssKiB / small.peakRssKiB : null,
      serverPeakRssRatio: e2e?.serverPeakRssKiB && small?.serverPeakRssKiB ? e2e.serverPeakRssKiB / small.serverPeakRssKiB : null,
      clientLateGrowth: lateGrowth(e2e?.rssAtKiB),
      serverLateGrowth: lateGrowth(e2e?.serverRssAtKiB),
    }
    c.clientFlat = c.clientPeakRssRatio == null ? null : c.clientPeakRssRatio <= FLAT_LIMIT
    c.serverFlat = c.serverPeakRssRatio == null ? null : c.serverPeakRssRatio <= FLAT_LIMIT
    return c
  }
  const summary = {
    inThread: configSummary('parquet-write', 'e2e', 'e2e-small'),
    thread: configSummary('parquet-write-thread', 'e2e-thread', 'e2e-thread-small'),
    cli: configSummary('parquet-write-thread', 'e2e-cli', 'e2e-cli-small'),
    flatLimit: FLAT_LIMIT,
  }
  // e2e (thread) against the slowest stage of the in-thread configuration too: the bar the issue set.
  const slowestInThread = summary.inThread.slowestStageRowsPerSec
  for (const c of [summary.thread, summary.cli]) c.e2eOverSlowestInThreadStage = slowestInThread && c.e2eRowsPerSec ? c.e2eRowsPerSec / slowestInThread : null

  let table =
    '| # | peer | what | rows | rows/s | wall s | client peak RSS MiB | RSS after start MiB | heap used ≤ MiB | server peak RSS MiB | client CPU s | server CPU s | client CPU µs/row | checks |\n' +
    '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n'
  for (const r of rows) {
    const m = r.med
    const checks = !r.ok
      ? '**FAILED**'
      : [
          r.peer.csv ? 'ids in order' : null,
          r.peer.server ? 'billed = rows' : null,
          r.peer.name === 'stream' ? 'outputs in order' : null,
          m.verify ? `read back: ${fmtInt(m.verify.rowsRead)} rows, all equal` : null,
        ].filter(Boolean).join('; ')
    table +=
      `| ${r.peer.n} | ${r.peer.name} | ${r.peer.what} | ${fmtInt(r.peer.rows)} | ${fmtInt(m.rowsPerSec)} | ${fmtS(m.wallMs != null ? m.wallMs / 1000 : null)} | ` +
      `${fmtMiB(m.peakRssKiB)} | ${fmtMiB(m.rssAfterStartKiB)} | ${fmtMiB(m.heapUsedMaxKiB)} | ${r.peer.server ? fmtMiB(m.serverPeakRssKiB) : '—'} | ` +
      `${fmtS(m.cpuSec)} | ${r.peer.server ? fmtS(m.serverCpuSec) : '—'} | ${fmtInt(cpuPerRow(m, r.peer.rows))} | ${checks} |\n`
  }
  let verdict = ''
  for (const [label, c] of [
    ['writer on the main thread', summary.inThread],
    ['writer on a worker thread (`thread: true`)', summary.thread],
    ['as `inference-stream run` runs it (writer thread, heap growth 2×)', summary.cli],
  ]) {
    const e2e = get(c.e2e)
    const small = get(`${c.e2e}-small`)
    if (c.e2eOverSlowestStage != null) {
      verdict +=
        `\n**${label}**: ${c.e2e} / slowest stage (${c.slowestStage}, ${fmtInt(c.slowestStageRowsPerSec)} rows/s): **${fmtPct(c.e2eOverSlowestStage)}** ` +
        `(vs each stage: ${Object.entries(c.e2eOverEachStage).map(([k, v]) => `${k} ${fmtPct(v)}`).join(', ')}` +
        (c !== summary.inThread && slowestInThread && c.e2eRowsPerSec ? `; vs the slowest stage of the main-thread writer: ${fmtPct(c.e2eRowsPerSec / slowestInThread)}` : '') +
        `). Client CPU: the stages sum to ${fmtInt(c.stagesClientCpuUsPerRow)} µs/row, ${c.e2e} used ${fmtInt(c.e2eClientCpuUsPerRow)} µs/row (${fmtPct(c.e2eCpuOverSumOfStages)} of the sum).\n`
    }
    if (c.clientPeakRssRatio != null) {
      verdict +=
        `Memory, ${c.e2e} at ${fmtInt(N)} vs ${fmtInt(NS)} rows: client peak RSS ${fmtMiB(e2e.peakRssKiB)} vs ${fmtMiB(small.peakRssKiB)} MiB ` +
        `(**${fmtX(c.clientPeakRssRatio)}**, ${c.clientFlat ? 'flat' : '**NOT flat**'} by the +${Math.round((FLAT_LIMIT - 1) * 100)}% rule); ` +
        `server ${fmtMiB(e2e.serverPeakRssKiB)} vs ${fmtMiB(small.serverPeakRssKiB)} MiB (**${fmtX(c.serverPeakRssRatio)}**, ${c.serverFlat ? 'flat' : '**NOT flat**'}). ` +
        `RSS at 10% / 50% / 100% of the ${fmtInt(N)}-row run: client ${['10%', '50%', '100%'].map((k) => fmtMiB(e2e.rssAtKiB?.[k])).join(' / ')} MiB, ` +
        `server ${['10%', '50%', '100%'].map((k) => fmtMiB(e2e.serverRssAtKiB?.[k])).join(' / ')} MiB (still growing in the second half: ` +
        `client ${fmtPct(c.clientLateGrowth)}, server ${fmtPct(c.serverLateGrowth)}).\n`
    }
  }

  // Issue 17's memory goal, for the job as the CLI runs it.
  const cli = summary.cli
  if (cli.clientPeakRssKiB) {
    const under = cli.clientPeakRssKiB < 200 * 1024
    verdict +=
      `\n**memory goal** (client peak RSS < 200 MiB at ${fmtInt(N)} rows, within +${Math.round((FLAT_LIMIT - 1) * 100)}% of ${fmtInt(NS)}), as the CLI runs the job: ` +
      `${fmtMiB(cli.clientPeakRssKiB)} MiB, ${fmtX(cli.clientPeakRssRatio)} — ${under && cli.clientFlat ? 'met' : '**not met**'}` +
      (summary.thread.clientPeakRssKiB ? ` (with V8's default 4× growth, e2e-thread: ${fmtMiB(summary.thread.clientPeakRssKiB)} MiB)` : '') +
      '.\n'
  }

  const date = new Date().toISOString()
  const machine = machineInfo(loadBefore, {
    ws: pkgVersion('ws'),
    parquetjsLite: pkgVersion('parquetjs-lite'),
    fastCsv: pkgVersion('@fast-csv/parse'),
    hyparquet: pkgVersion('hyparquet'),
  })
  const commit = machine.commit
  const config = {
    rows: N,
    smallRows: NS,
    runs,
    serveArgs: serve,
    streamOptions: { model: MODEL, input: "inputFromColumn('text')", runId: RUN_ID, other: 'defaults (maxInFlight 1024, v1, ordered)' },
    writerOptions: 'defaults (rowGroupSize 10 000, SNAPPY)',
    fixtures: Object.fromEntries(Object.entries(fixtures).map(([k, f]) => [k, { file: f.file, rows: f.rows, bytes: f.bytes }])),
    profile: args.profile,
  }
  const command = commandLine('pipeline-e2e')
  const question =
    'What does the main job cost end to end — CSV → InferenceStream → Parquet with builtin/echo — against each stage alone, and is memory flat in the input size?'
  const fixtureLine = Object.entries(fixtures)
    .map(([k, f]) => `${k === 'big' ? '' : 'small: '}${fmtInt(f.rows)} rows, ${(f.bytes / 2 ** 20).toFixed(1)} MiB`)
    .join('; ')
  const md =
    `# pipeline-e2e\n\n${question}\n\n` +
    `${date} · \`${command}\` · node ${machine.node} · ${machine.cpus}× ${machine.cpuModel} · parquetjs-lite ${machine.parquetjsLite} · @fast-csv/parse ${machine.fastCsv}` +
    (commit ? ` · ${commit}` : '') +
    ` · load ${machine.loadAvgBefore} → ${machine.loadAvgAfter}\n\n` +
    `Fixture CSV \`id,product,rating,text\` (${fixtureLine}); ${runs} run(s) per peer${runs > 1 ? ' (median shown)' : ''}; ` +
    `a fresh \`${serve.slice(1).join(' ')}\` for each peer that infers; InferenceStream with its defaults.\n\n${table}${verdict}`

  process.stdout.write(`\n${table}${verdict}`)
  if (!args['no-write']) {
    const json = {
      question,
      date,
      command,
      machine,
      config,
      ok: !failed,
      summary,
      peers: rows.map((r) => ({
        name: r.peer.name,
        number: r.peer.n,
        what: r.peer.what,
        rows: r.peer.rows,
        rowsPerSec: r.med.rowsPerSec ?? null,
        wallMs: r.med.wallMs ?? null,
        clientPeakRssKiB: r.med.peakRssKiB ?? null,
        clientRssAfterStartKiB: r.med.rssAfterStartKiB ?? null,
        clientHeapUsedMaxKiB: r.med.heapUsedMaxKiB ?? null,
        clientRssAtKiB: r.med.rssAtKiB ?? null,
        serverPeakRssKiB: r.med.serverPeakRssKiB ?? null,
        serverRssAtKiB: r.med.serverRssAtKiB ?? null,
        clientCpuSec: r.med.cpuSec ?? null,
        serverCpuSec: r.med.serverCpuSec ?? null,
        ok: r.ok,
        runs: r.runs,
      })),
    }
    writeResults('pipeline-e2e', args.quick, json, md)
  }
  writeProfileSummaries(profiles)
  exitIfFailed(failed)
}

// `--role summarize-profile --file X.cpuprofile` summarises a profile taken by hand.
await runRole(args, { client: runClient, verify: runVerify, orchestrator: orchestrate })
