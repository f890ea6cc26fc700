#!/usr/bin/env node
/*
 * Question
 *   How close does the whole system come to what a real-sized model can do by itself? Items/s of
 *   a MiniLM-shaped text classifier (a) bare — transformers.js in one process, pre-tokenized,
 *   length-sorted batches of 32, back to back; (b) through our server over InferenceStream; (c)
 *   `inference-stream run` CSV → Parquet end to end. Issue 17's goal: (c) ≥ 0.9 × (a). And where
 *   does the rest go: padding (FIFO batches of mixed lengths), tokenizing, our model wrapper,
 *   the transport, CSV / Parquet?
 *
 * Fixture
 *   The model: test/fixtures/realistic-model.js, a BERT-shaped classifier with seeded random
 *   weights — by default all-MiniLM-L6's shape (hidden 384, 6 layers, 12 heads, FFN 1536, 512
 *   positions; 4000 generated words + TEXT_VOCAB: a ~50 MB fp32 ONNX file), with `--quick` the
 *   small shape (hidden 64, 2 layers, 4 heads, FFN 256). Written once into
 *   `<tmpdir>/inference-stream-bench/models/tiny/minilm-shaped` (kept while its options are the
 *   same; `--models DIR --model ID` runs another text-classification model instead).
 *   The texts: item i is made from i alone (a seeded PRNG): a length of 4 to 250 words drawn
 *   log-uniformly (many short texts, a long tail: median ~32 words, ~1 in 5 over 100), words from the
 *   model's generated vocabulary with TEXT_VOCAB's common words, 1 word in 6 with a suffix piece
 *   (two tokens, as real words split), a comma or full stop now and then: 6 to ~300 tokens.
 *   `--items` of them (default 4096, `--quick` 128), also written as a CSV `id,text` for (c):
 *   twice the CLI's default in-flight rows, so neither (b) nor (c) sees the whole set at once
 *   (with every item in view the server's length-aware batches are a global sort, as (a)'s).
 *   Peers, each its own child process, interleaved over `--runs`:
 *     bare-sorted  (a) transformers.js `pipeline('text-classification', ID, {dtype: 'fp32'})` with one ONNX Runtime thread per core;
 *                  the texts sorted by token count, cut into batches of 32, each tokenized
 *                  (padded to its longest) before the clock; then `pipe.model(batch)` for every
 *                  batch, one after the other. items/s over the model calls alone.
 *     bare-fifo    the same over batches of 32 in input order (what FIFO batching forms): the
 *                  cost of padding, side by side.
 *     model-sorted our TransformersModel (dist/models/transformers-model.js) on the calling
 *                  thread, `run(texts of a batch, {})` for batches of 32 of the texts sorted by
 *                  characters (what length-aware batching sorts by): tokenizer, model and our
 *                  outputs (softmax, labels), no thread hop, no server.
 *     model-fifo   the same for FIFO batches of 32.
 *     server       (b) `inference-stream serve --port 0 --models DIR` (defaults: 4 batch workers,
 *                  --max-batch 32, the model in a thread of its own), warmed up with one
 *                  `wait_for_model` request; a client child sends the texts through
 *                  `new InferenceStream({protocol: 'v1', ordered: true, maxInFlight})` (`--max-in-flight`, default
 *                  2048 as `run`'s) to a
 *                  counting Writable; timed from before it connects to its last result.
 *     cli          (c) `node dist/cli/index.js run --models DIR --model ID --no-progress in.csv
 *                  -o out.parquet` (embedded server in the same process), timed from spawn to
 *                  exit; `cli-fixed` is the same command over the first 32 rows: start-up and
 *                  model load, subtracted for the net rate.
 *   Checks (a loud `!!!` and exit 1 when broken): every item answered exactly once, in order where
 *   the peer keeps order, with a probability distribution over the model's labels (summing to 1
 *   within 1e-4); for bare-* logits finite, [32, labels]; the Parquet file read back with hyparquet
 *   has every row, in order, each with its label and score; the server's bill equals the items.
 *
 * Command
 *   npm run build && node benchmarks/model-efficiency.js --runs 1   # MiniLM-shaped, 4096 texts (~10 min on 2 cores)
 *   node benchmarks/model-efficiency.js                             # 3 interleaved runs
 *   node benchmarks/model-efficiency.js --quick                     # small model, 128 texts, 1 run: smoke test (~30 s)
 *   node benchmarks/model-efficiency.js --only bare-sorted,cli --items 512
 *   node benchmarks/model-efficiency.js --models ~/models --model Xenova/distilbert-base-uncased-finetuned-sst-2-english
 *   Results: benchmarks/results/model-efficiency.json and .md (`-quick` with --quick); the Markdown
 *   is also printed on stdout.
 *
 * How to read the result
 *   items/s: items per second of the peer's timed part (bare-*: the model calls only; model-fifo:
 *   the run() calls; server: the client's wall; cli: the process's wall, "net" without cli-fixed's
 *   wall). "/ a" is over bare-sorted: 100% would mean the peer loses nothing to the model running
 *   alone on ideal batches. The breakdown lines say where the difference goes, each measured here:
 *   padding = padded tokens / real tokens of the batches (FIFO vs sorted) and bare-fifo / bare-sorted;
 *   tokenizing = the tokenizer's time as a share of tokenizer + model for FIFO batches (bare-fifo's
 *   child measures both); our wrapper = model-fifo vs bare-fifo + tokenizer, and model-sorted vs
 *   bare-sorted; the transport, queue, thread hop and the server's own batches = server vs model-sorted; CSV / Parquet and the in-process server = cli net vs server.
 *   CPU s is the peer's process over its timed part (ONNX Runtime's threads included; for server,
 *   client + server; cli net of cli-fixed's CPU): the machine has 2 cores and ONNX Runtime uses
 *   both, so any CPU the pipeline spends outside the model is taken from it. "CPU ms/item" and
 *   "a by CPU" (a's CPU per item over the peer's) say the same as items/s and "/ a" when the
 *   machine is otherwise idle; under other work, which slows peers run at different moments
 *   differently, they are the steadier measure (the breakdown gives both). Compare numbers within
 *   one run only; with --runs R > 1 each row is the peer's median run by items/s.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import {
  CLI, LIB, ROOT, checkBuild, commandLine, countingWritable, exitIfFailed, fmtInt, fmtPct, fmtS,
  int, loadBeforeRuns, machineInfo, medianRun, onlyPeers, parseBenchArgs, pkgVersion, procStats, runChild, runRole, runsArg,
  startServer, stopServer, writeResults,
} from './lib/harness.js'
import { BENCH_DIR, generatedModel, measureServerPeer } from './lib/server-peer.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const REALISTIC_JS = pathToFileURL(path.join(ROOT, 'test', 'fixtures', 'realistic-model.js')).href
const BATCH = 32
const FIXED_ROWS = 32
const PEERS = ['bare-sorted', 'bare-fifo', 'model-sorted', 'model-fifo', 'server', 'cli']

const args = parseBenchArgs({
  items: { type: 'string' },
  models: { type: 'string' },
  model: { type: 'string' },
  // The CLI's default (`run --max-in-flight`), so (b) and (c) keep the same window.
  'max-in-flight': { type: 'string', default: '2048' },
  peer: { type: 'string' },
  base: { type: 'string' },
  dir: { type: 'string' },
  seed: { type: 'string', default: '17' },
})

// ---------------------------------------------------------------------------------------------
// The texts: item i as a pure function of (i, seed, the model's words).
// ---------------------------------------------------------------------------------------------
async function textMaker(seed) {
  const { mixedLengthText, generatedWords, MINILM_SHAPE, SMALL_SHAPE } = await import(REALISTIC_JS)
  // The vocabulary of the shape in use; another model (--models) gets MiniLM's words: WordPiece splits them.
  const shape = args.quick ? SMALL_SHAPE : MINILM_SHAPE
  return mixedLengthText(seed, generatedWords(shape.words, shape.seed))
}

/** Checks one item's outputs: [[{label, score} × labels]] summing to 1; returns a problem or null. */
function checkScores(outputs, labels) {
  const list = Array.isArray(outputs) && Array.isArray(outputs[0]) ? outputs[0] : outputs
  if (!Array.isArray(list) || list.length !== labels.length) return `not ${labels.length} scores: ${JSON.stringify(outputs).slice(0, 200)}`
  if (!list.every((s) => labels.includes(s.label) && s.score >= 0 && s.score <= 1)) return `bad label or score: ${JSON.stringify(list)}`
  const sum = list.reduce((a, s) => a + s.score, 0)
  return Math.abs(sum - 1) > 1e-4 ? `scores sum to ${sum}` : null
}

function report(out) {
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(out.ok ? 0 : 1))
}

// ---------------------------------------------------------------------------------------------
// Role: bare (bare-sorted, bare-fifo) — transformers.js alone, pre-tokenized batches.
// ---------------------------------------------------------------------------------------------
async function runBare() {
  const N = int('items', args.items)
  const sorted = args.peer === 'bare-sorted'
  const text = await textMaker(int('seed', args.seed))
  const { env, pipeline: hfPipeline } = await import('@huggingface/transformers')
  env.localModelPath = args.dir
  env.allowRemoteModels = false
  env.allowLocalModels = true
  const t0 = performance.now()
  // One ONNX Runtime thread per core, said explicitly (left to ONNX Runtime it used fewer here and
  // ran 1.6× slower: benchmarks/model-threads.js): the model alone as fast as it goes.
  const pipe = await hfPipeline('text-classification', args.model, {
    dtype: 'fp32',
    local_files_only: true,
    session_options: { intraOpNumThreads: os.availableParallelism(), interOpNumThreads: 1 },
  })
  const loadMs = performance.now() - t0
  const labels = Object.values(pipe.model.config.id2label)
  const texts = Array.from({ length: N }, (_, i) => text(i))
  // Token counts (with [CLS] and [SEP], truncated as the batches are) to sort by.
  const lengths = texts.map((s) => pipe.tokenizer(s, { truncation: true }).input_ids.dims[1])
  const order = texts.map((_, i) => i)
  if (sorted) order.sort((a, b) => lengths[a] - lengths[b])
  // The padding batches of 32 would carry if sorted by characters instead (what the server and
  // model-sorted sort by: a token estimate), from the same token counts.
  const byChars = texts.map((_, i) => i).sort((a, b) => texts[a].length - texts[b].length)
  let charReal = 0
  let charPadded = 0
  for (let b = 0; b < N; b += BATCH) {
    const ids = byChars.slice(b, b + BATCH)
    const longest = Math.max(...ids.map((i) => lengths[i]))
    for (const i of ids) (charReal += lengths[i]), (charPadded += longest - lengths[i])
  }
  const problems = []
  // Tokenize every batch before the clock (and time it: the tokenizer's share).
  let tokenizeMs = 0
  let realTokens = 0
  let paddedTokens = 0
  const batches = []
  for (let b = 0; b < N; b += BATCH) {
    const ids = order.slice(b, b + BATCH)
    const t = performance.now()
    const enc = pipe.tokenizer(ids.map((i) => texts[i]), { padding: true, truncation: true })
    tokenizeMs += performance.now() - t
    const [rows, cols] = enc.input_ids.dims
    const real = ids.reduce((s, i) => s + lengths[i], 0)
    realTokens += real
    paddedTokens += rows * cols - real
    batches.push(enc)
  }
  await pipe.model(batches[0]) // one warm-up call: ONNX Runtime's first run allocates
  const cpu0 = process.cpuUsage()
  const t1 = performance.now()
  for (const enc of batches) {
    const { logits } = await pipe.model(enc)
    if (logits.dims[0] !== enc.input_ids.dims[0] || logits.dims[1] !== labels.length) problems.push(`logits dims ${logits.dims}`)
    else if (!logits.data.every(Number.isFinite)) problems.push('logits not finite')
  }
  const modelMs = performance.now() - t1
  const cpu = process.cpuUsage(cpu0)
  report({
    ok: problems.length === 0,
    peer: args.peer,
    items: N,
    loadMs,
    modelMs,
    itemsPerSec: (N / modelMs) * 1000,
    tokenizeMs,
    realTokens,
    paddedTokens,
    charSortedPadding: charPadded / charReal,
    maxTokens: Math.max(...lengths),
    medianTokens: [...lengths].sort((a, b) => a - b)[Math.floor(N / 2)],
    cpuSec: (cpu.user + cpu.system) / 1e6,
    firstProblems: problems.slice(0, 5),
  })
}

// ---------------------------------------------------------------------------------------------
// Role: model (model-fifo, model-sorted) — our TransformersModel on the calling thread.
// ---------------------------------------------------------------------------------------------
async function runModel() {
  const N = int('items', args.items)
  const text = await textMaker(int('seed', args.seed))
  const { TransformersModel } = await import(pathToFileURL(path.join(ROOT, 'dist', 'models', 'transformers-model.js')).href)
  const model = new TransformersModel({ id: args.model, dir: path.join(args.dir, ...args.model.split('/')), cacheDir: path.join(BENCH_DIR, 'cache') })
  await model.load()
  const texts = Array.from({ length: N }, (_, i) => text(i))
  const sorted = args.peer === 'model-sorted'
  // Sorted by characters (what the server's length-aware batching sorts by), not tokens.
  if (sorted) texts.sort((x, y) => x.length - y.length)
  await model.run(texts.slice(0, BATCH), {}) // warm-up, as bare-* does
  const labels = await labelsOf(args.dir, args.model)
  const problems = []
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let b = 0; b < N; b += BATCH) {
    const outs = await model.run(texts.slice(b, b + BATCH), {})
    for (const o of outs) {
      const p = checkScores(o, labels)
      if (p && problems.length < 5) problems.push(p)
    }
  }
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  await model.close()
  report({ ok: problems.length === 0, peer: sorted ? 'model-sorted' : 'model-fifo', items: N, wallMs, itemsPerSec: (N / wallMs) * 1000, cpuSec: (cpu.user + cpu.system) / 1e6, firstProblems: problems })
}

async function labelsOf(dir, id) {
  const { readFile } = await import('node:fs/promises')
  const config = JSON.parse(await readFile(path.join(dir, ...id.split('/'), 'config.json'), 'utf8'))
  return Object.values(config.id2label)
}

// ---------------------------------------------------------------------------------------------
// Role: client (server) — InferenceStream through a running server.
// ---------------------------------------------------------------------------------------------
async function runClient() {
  const N = int('items', args.items)
  const text = await textMaker(int('seed', args.seed))
  const labels = await labelsOf(args.dir, args.model)
  const { InferenceStream } = await import(LIB)
  const problems = []
  let answered = 0
  const stream = new InferenceStream({
    url: args.base,
    model: args.model,
    token: args.token,
    protocol: 'v1',
    ordered: true,
    maxInFlight: int('max-in-flight', args['max-in-flight']),
    reconnect: false,
    input: (r) => ({ inputs: r.text }),
  })
  const sink = countingWritable((res) => {
    if (res.record?.i !== answered && problems.length < 5) problems.push(`record ${res.record?.i} at position ${answered}`)
    answered++
    const p = res.error ? JSON.stringify(res.error) : checkScores(res.outputs, labels)
    if (p && problems.length < 5) problems.push(p)
  })
  function* records() {
    for (let i = 0; i < N; i++) yield { i, text: text(i) }
  }
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await pipeline(Readable.from(records()), stream, sink)
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  if (answered !== N) problems.push(`answered ${answered} of ${N}`)
  report({ ok: problems.length === 0, peer: 'server', items: N, wallMs, itemsPerSec: (N / wallMs) * 1000, cpuSec: (cpu.user + cpu.system) / 1e6, firstProblems: problems })
}

// ---------------------------------------------------------------------------------------------
// The orchestrator.
// ---------------------------------------------------------------------------------------------
/** Runs `node CLI run ...` over csv into parquet; resolves {ok, wallMs, cpuSec, stderr}. */
function runCli(modelsDir, model, csv, out) {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const child = spawn(process.execPath, [CLI, 'run', '--models', modelsDir, '--model', model, '--no-progress', '-o', out, csv], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    let last = { cpuSec: null }
    // CPU of the child, read from /proc until it exits (after exit /proc has nothing).
    const timer = setInterval(() => (last = procStats(child.pid)), 100)
    child.stderr.on('data', (d) => (err = (err + d).slice(-4000)))
    child.on('exit', (code) => {
      clearInterval(timer)
      resolve({ ok: code === 0, exitCode: code, wallMs: performance.now() - t0, cpuSec: last.cpuSec, stderr: err.trim() || undefined })
    })
  })
}

/** Reads the Parquet output back: every row, in order, a label of `labels` and a score. */
async function verifyParquet(file, texts, labels) {
  const { asyncBufferFromFile, parquetReadObjects } = await import('hyparquet')
  const rows = await parquetReadObjects({ file: await asyncBufferFromFile(file) })
  const problems = []
  if (rows.length !== texts.length) problems.push(`${rows.length} rows, expected ${texts.length}`)
  rows.forEach((row, i) => {
    if (problems.length >= 5) return
    if (row.text !== texts[i]) problems.push(`row ${i}: text ${JSON.stringify(String(row.text).slice(0, 60))}`)
    else if (!labels.includes(row.label) || !(row.score > 0 && row.score <= 1)) problems.push(`row ${i}: label ${row.label} score ${row.score}`)
  })
  return problems
}

const csvCell = (s) => (/[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s)

async function orchestrate() {
  const quick = args.quick
  const N = args.items !== undefined ? int('items', args.items) : quick ? 128 : 4096
  const seed = int('seed', args.seed)
  const runs = runsArg(args)
  const peers = onlyPeers(args, PEERS)
  checkBuild([CLI, LIB], 'dist/ is missing: run `npm run build` first\n')

  // The model: generated (kept between runs while its options are the same), or --models/--model.
  let modelsDir
  let model
  let generated = null
  if (args.models !== undefined) {
    modelsDir = path.resolve(args.models)
    model = args.model
    if (!model) {
      process.stderr.write('--models needs --model ID (a text-classification model in that folder)\n')
      process.exit(2)
    }
  } else {
    ;({ modelsDir, model, generated } = await generatedModel(quick, args.model))
  }
  const labels = await labelsOf(modelsDir, model)
  const text = await textMaker(seed)
  const texts = Array.from({ length: N }, (_, i) => text(i))
  const work = mkdtempSync(path.join(os.tmpdir(), 'model-efficiency-'))
  const csv = path.join(work, 'texts.csv')
  const csvFixed = path.join(work, 'fixed.csv')
  writeFileSync(csv, `id,text\n${texts.map((t, i) => `t${i},${csvCell(t)}`).join('\n')}\n`)
  writeFileSync(csvFixed, `id,text\n${texts.slice(0, FIXED_ROWS).map((t, i) => `t${i},${csvCell(t)}`).join('\n')}\n`)

  process.stderr.write(`model-efficiency: ${model}, ${N} texts, batches of ${BATCH}, ${runs} run(s) of ${peers.join(', ')}\n`)
  const loadBefore = loadBeforeRuns()
  const common = ['--items', String(N), '--seed', String(seed), '--dir', modelsDir, '--model', model, ...(quick ? ['--quick'] : [])]
  const all = new Map(peers.map((p) => [p, []]))
  const fixed = []
  let failed = false
  for (let r = 0; r < runs; r++) {
    for (const peer of peers) {
      let result
      process.stderr.write(`  run ${r + 1}: ${peer} ...`)
      if (peer === 'bare-sorted' || peer === 'bare-fifo') {
        result = await runChild(THIS_FILE, 'bare', [...common, '--peer', peer])
      } else if (peer === 'model-fifo' || peer === 'model-sorted') {
        result = await runChild(THIS_FILE, 'model', [...common, '--peer', peer])
      } else if (peer === 'server') {
        const token = `bench-${r}`
        const server = await startServer([CLI, 'serve', '--port', '0', '--log-level', 'warn', '--models', modelsDir], 'server')
        try {
          // The bill must grow by exactly the items of the run (the warm-up is billed before).
          result = await measureServerPeer(server, {
            model,
            token,
            warmInputs: texts.slice(0, 4),
            items: N,
            client: () => runChild(THIS_FILE, 'client', [...common, '--base', server.base, '--token', token, '--max-in-flight', String(int('max-in-flight', args['max-in-flight']))]),
          })
        } catch (err) {
          result = { ok: false, error: err.message, stderr: server.stderr().slice(-2000) }
        } finally {
          await stopServer(server.child)
        }
      } else {
        if (r === 0) {
          const f = await runCli(modelsDir, model, csvFixed, path.join(work, 'fixed.parquet'))
          fixed.push(f)
          if (!f.ok) process.stderr.write(`\n!!! cli-fixed failed: ${f.stderr}\n`)
        }
        const out = path.join(work, `out-${r}.parquet`)
        result = await runCli(modelsDir, model, csv, out)
        result.items = N
        result.itemsPerSec = (N / result.wallMs) * 1000
        const f = fixed[0]
        if (f?.ok && result.wallMs > f.wallMs) {
          result.fixedMs = f.wallMs
          result.netItemsPerSec = ((N - FIXED_ROWS) / (result.wallMs - f.wallMs)) * 1000
        }
        if (result.ok) {
          result.firstProblems = await verifyParquet(out, texts, labels)
          result.ok = result.firstProblems.length === 0
        }
        rmSync(out, { force: true })
      }
      const shown = result.netItemsPerSec ?? result.itemsPerSec
      process.stderr.write(result.ok ? ` ${shown?.toFixed(1)} items/s\n` : ` FAILED\n`)
      if (!result.ok) {
        failed = true
        process.stderr.write(`!!! ${peer}: ${result.error ?? ''} ${JSON.stringify(result.firstProblems ?? [])} ${result.stderr ?? ''}\n`)
      }
      all.get(peer).push(result)
    }
  }
  rmSync(work, { recursive: true, force: true })

  // Medians and ratios. cli is ranked by its net rate.
  const med = new Map(peers.map((p) => [p, medianRun(all.get(p), p === 'cli' ? 'netItemsPerSec' : 'itemsPerSec').med]))
  const rate = (p) => (p === 'cli' ? med.get(p)?.netItemsPerSec : med.get(p)?.itemsPerSec) ?? null
  const a = rate('bare-sorted')
  const over = (x, y) => (x != null && y ? x / y : null)
  const fifo = med.get('bare-fifo')
  const sortedRun = med.get('bare-sorted')
  // CPU per item of each peer's timed part (all its processes and threads): under other load the
  // wall-clock rates drift between peers run one after the other; CPU per item much less so.
  const fixedCpu = fixed[0]?.ok ? fixed[0].cpuSec : null
  const cpuPerItem = (p) => {
    const m = med.get(p)
    if (!m || m.cpuSec == null) return null
    if (p === 'server') return m.serverCpuSec == null ? null : (m.cpuSec + m.serverCpuSec) / m.items
    if (p === 'cli') return fixedCpu == null ? null : (m.cpuSec - fixedCpu) / (m.items - FIXED_ROWS)
    return m.cpuSec / m.items
  }
  const cpuA = cpuPerItem('bare-sorted')
  const cpuOver = (x, y) => (x != null && y ? y / x : null) // x's throughput per CPU over y's
  const bareFifoTokCpu = fifo ? (fifo.cpuSec + fifo.tokenizeMs / 1000) / fifo.items : null
  const breakdown = {
    paddingFifo: fifo ? fifo.paddedTokens / fifo.realTokens : null,
    paddingSorted: sortedRun ? sortedRun.paddedTokens / sortedRun.realTokens : null,
    paddingCharSorted: sortedRun?.charSortedPadding ?? null,
    fifoOverSorted: over(rate('bare-fifo'), a),
    tokenizeShareFifo: fifo ? fifo.tokenizeMs / (fifo.tokenizeMs + fifo.modelMs) : null,
    tokenizeMsPerItem: fifo ? fifo.tokenizeMs / fifo.items : null,
    // bare-fifo with its tokenizer time added: what model-fifo would reach with nothing else.
    bareFifoWithTokenizer: fifo ? (fifo.items / (fifo.tokenizeMs + fifo.modelMs)) * 1000 : null,
    modelOverBareFifoTok: null,
    modelSortedOverBare: over(rate('model-sorted'), a),
    serverOverModel: over(rate('server'), rate('model-sorted')),
    cliNetOverServer: over(rate('cli'), rate('server')),
    cpuMsPerItem: Object.fromEntries(peers.map((p) => [p, cpuPerItem(p) == null ? null : cpuPerItem(p) * 1000])),
    byCpu: {
      fifoOverSorted: cpuOver(cpuPerItem('bare-fifo'), cpuA),
      modelOverBareFifoTok: cpuOver(cpuPerItem('model-fifo'), bareFifoTokCpu),
      modelSortedOverBare: cpuOver(cpuPerItem('model-sorted'), cpuA),
      serverOverModel: cpuOver(cpuPerItem('server'), cpuPerItem('model-sorted')),
      cliNetOverServer: cpuOver(cpuPerItem('cli'), cpuPerItem('server')),
      cliOverBareFifo: cpuOver(cpuPerItem('cli'), cpuPerItem('bare-fifo')),
    },
  }
  breakdown.modelOverBareFifoTok = over(rate('model-fifo'), breakdown.bareFifoWithTokenizer)
  const ratios = {
    cliOverBare: over(rate('cli'), a),
    cliGrossOverBare: over(med.get('cli')?.itemsPerSec, a),
    serverOverBare: over(rate('server'), a),
    cliOverBareByCpu: cpuOver(cpuPerItem('cli'), cpuA),
    serverOverBareByCpu: cpuOver(cpuPerItem('server'), cpuA),
    goalCli: 0.9,
  }

  const fmtF = (x, d = 1) => (x == null ? 'n/a' : x.toFixed(d))
  const fmtX = (x) => (x == null ? 'n/a' : `${x.toFixed(2)}×`)
  const fmtPct1 = (r) => (r == null ? 'n/a' : `${(r * 100).toFixed(1)}%`)
  const c = breakdown.byCpu
  const what = {
    'bare-sorted': '(a) transformers.js alone, pre-tokenized, length-sorted batches of 32',
    'bare-fifo': 'transformers.js alone, pre-tokenized, batches of 32 in input order',
    'model-sorted': 'our TransformersModel.run on the calling thread, batches of 32 sorted by characters (tokenizer included)',
    'model-fifo': 'our TransformersModel.run on the calling thread, batches of 32 in input order (tokenizer included)',
    server: `(b) \`serve\` + InferenceStream v1 (${args['max-in-flight']} in flight), client in its own process`,
    cli: '(c) `inference-stream run` CSV → Parquet (net: without start-up and load)',
  }
  const shape = generated ? generated.shape : null
  let md = `# model-efficiency${quick ? ' (quick)' : ''}\n\n`
  md += `\`${commandLine('model-efficiency')}\` — ${model}` + (shape ? ` (generated: hidden ${shape.hidden}, ${shape.layers} layers, ${shape.heads} heads, FFN ${shape.ffn}, ${(generated.bytes / 1e6).toFixed(0)} MB fp32)` : '') +
    `, ${N} texts of ${sortedRun ? `${sortedRun.medianTokens} (median) to ${sortedRun.maxTokens} tokens` : 'mixed lengths'}, ${runs} run(s); load average ${loadBefore} → ${os.loadavg()[0].toFixed(2)}.\n\n`
  md += '| peer | what | items/s | / a | wall s | CPU s | CPU ms/item | a by CPU | notes |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n'
  for (const p of peers) {
    const m = med.get(p)
    if (!m) continue
    const wall = m.modelMs ?? m.wallMs
    const cpu = p === 'server' && m.serverCpuSec != null ? m.cpuSec + m.serverCpuSec : m.cpuSec
    let notes = ''
    if (p.startsWith('bare')) notes = `padding ${fmtPct(m.paddedTokens / m.realTokens)} of real tokens; tokenizer ${fmtS(m.tokenizeMs / 1000)} s (not timed); load ${fmtS(m.loadMs / 1000)} s`
    if (p === 'server') notes = `mean batch ${fmtF(m.meanBatch)}; model calls ${fmtS(m.callSec)} s; client CPU ${fmtS(m.cpuSec)} s, server ${fmtS(m.serverCpuSec)} s`
    if (p === 'cli') notes = `gross ${fmtF(m.itemsPerSec)} items/s over ${fmtS(m.wallMs / 1000)} s; start-up + load + ${FIXED_ROWS} rows ${fmtS((m.fixedMs ?? NaN) / 1000)} s`
    md += `| ${p}${m.ok ? '' : ' **FAILED**'} | ${what[p]} | ${fmtF(p === 'cli' ? m.netItemsPerSec : m.itemsPerSec)} | ${fmtPct(over(rate(p), a))} | ${fmtS(wall / 1000)} | ${fmtS(cpu)} | ${fmtF(breakdown.cpuMsPerItem[p])} | ${fmtPct(cpuOver(cpuPerItem(p), cpuA))} | ${notes} |\n`
  }
  md += `\n**(c) / (a) = ${fmtX(ratios.cliOverBare)}** net (gross, with start-up and model load: ${fmtX(ratios.cliGrossOverBare)}); goal ≥ 0.9: ${ratios.cliOverBare == null ? 'n/a' : ratios.cliOverBare >= 0.9 ? 'met' : '**not met**'}. **(b) / (a) = ${fmtX(ratios.serverOverBare)}**. By CPU per item (a's over the peer's; robust to other load on the machine): (c) ${fmtX(ratios.cliOverBareByCpu)}, (b) ${fmtX(ratios.serverOverBareByCpu)}.\n\n`
  md += 'Where the rest goes, step by step (each a ratio of two peers of this run, items/s and by CPU per item):\n\n'
  md += `- padding: FIFO batches of 32 carry ${fmtPct(breakdown.paddingFifo)} padded tokens over the real ones (sorted: ${fmtPct(breakdown.paddingSorted)}); bare-fifo runs at ${fmtX(breakdown.fifoOverSorted)} bare-sorted (by CPU ${fmtX(c.fifoOverSorted)}).\n`
  md += `- tokenizing: ${fmtPct1(breakdown.tokenizeShareFifo)} of tokenizer + model time on FIFO batches (${fmtF(breakdown.tokenizeMsPerItem, 2)} ms per item, on the model's thread in the server); bare-fifo with its tokenizer would reach ${fmtF(breakdown.bareFifoWithTokenizer)} items/s.\n`
  md += `- our model wrapper (outputs, softmax, labels): model-fifo is ${fmtX(breakdown.modelOverBareFifoTok)} that (by CPU ${fmtX(c.modelOverBareFifoTok)}).\n`
  md += `- our wrapper and tokenizer on sorted batches (by characters, as the server sorts): model-sorted is ${fmtX(breakdown.modelSortedOverBare)} bare-sorted (by CPU ${fmtX(c.modelSortedOverBare)}); batches sorted by characters carry ${fmtPct(breakdown.paddingCharSorted)} padded tokens, by tokens ${fmtPct(breakdown.paddingSorted)}.\n`
  md += `- transport, queue, worker thread hop, client, and the server's batches (length-aware over what is in flight, not one global sort): server is ${fmtX(breakdown.serverOverModel)} model-sorted (by CPU ${fmtX(c.serverOverModel)}; the client's and server's main threads share the 2 cores with ONNX Runtime's threads).\n`
  md += `- CSV read, Parquet write, the embedded server in one process: cli (net) is ${fmtX(breakdown.cliNetOverServer)} server (by CPU ${fmtX(c.cliNetOverServer)}).\n`
  md += `- all but padding: cli (net) by CPU is ${fmtX(c.cliOverBareFifo)} bare-fifo, the model alone on the same FIFO batches.\n`
  process.stdout.write(`\n${md}`)

  if (!args['no-write']) {
    writeResults('model-efficiency', quick, {
      command: commandLine('model-efficiency'),
      model,
      generatedShape: shape,
      modelBytes: generated?.bytes ?? null,
      items: N,
      batch: BATCH,
      runs,
      ratios,
      breakdown,
      medians: Object.fromEntries(med),
      all: Object.fromEntries(all),
      cliFixed: fixed,
      machine: machineInfo(loadBefore, { transformers: pkgVersion('@huggingface/transformers'), onnxruntime: pkgVersion('onnxruntime-node') }),
    }, md)
  }
  exitIfFailed(failed)
}

await runRole(args, { bare: runBare, model: runModel, client: runClient, orchestrator: orchestrate })
