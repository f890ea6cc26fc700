#!/usr/bin/env node
/*
 * Question
 *   How should a real-sized model use the machine's cores: one model thread whose ONNX Runtime
 *   session spreads each batch over every core (intra-op threads), or several model threads (each
 *   its own copy of the model) running batches side by side with one ONNX Runtime thread each?
 *   Issue 17: "measure and choose the default that gives the most items/s on this machine for the
 *   realistic model".
 *
 * Fixture
 *   The generated MiniLM-shaped classifier (test/fixtures/realistic-model.js: hidden 384, 6
 *   layers, 12 heads, FFN 1536; `--quick`: the small shape), kept in
 *   `<tmpdir>/inference-stream-bench/models` as benchmarks/model-efficiency.js keeps it. The texts:
 *   `mixedLengthText` (4–250 words), `--items` of them (default 512, `--quick` 128), sorted by
 *   length and cut into batches of 32 (what length-aware batching forms), shuffled by a seeded
 *   PRNG so long and short batches alternate.
 *   Peers, each in a child process of its own, interleaved over `--runs`: our TransformersPipeline
 *   (dist/models/transformers-pipeline.js, the model in worker threads as `serve` runs it) with
 *     MxT   M model threads (`modelThreads`, `--model-threads`), T ONNX Runtime intra-op threads
 *           each (`threads`, `--onnx-threads`; 0: the default, the cores divided among the M
 *           threads): 1x0 (the default), 1x1, 1x2, 2x0, 2x1, 2x2 (`--configs` picks).
 *   (Before this benchmark, 0 left the number to ONNX Runtime, which ran 1.6× slower than 1x2 on
 *   this 2-core machine: 51.3 vs 82.6 items/s, load 2.0; now 0 names the cores explicitly.)
 *   The batches are run by 4 concurrent callers (the server's default batch workers), so a pool
 *   of M threads always has work. Every thread is warmed up (it loads its copy of the model and
 *   runs one batch) before the clock.
 *   Checks (a loud `!!!`, exit 1): every item answered with a distribution over the model's labels.
 *
 * Command
 *   npm run build && node benchmarks/model-threads.js          # 512 texts, 3 runs (~5 min on 2 cores)
 *   node benchmarks/model-threads.js --quick                   # small model, 128 texts, 1 run
 *   node benchmarks/model-threads.js --configs 1x0,2x1 --runs 5
 *   Results: benchmarks/results/model-threads.json and .md; the Markdown is also printed on stdout.
 *
 * How to read the result
 *   items/s over the timed batches (median run); "× 1x0" each run over the 1x0 run of the same
 *   round, median over rounds. CPU s: the child process (model threads and ONNX Runtime's) over the
 *   timed part; RSS: its peak (each model thread holds a copy of the weights). Machine load changes
 *   wall-time numbers: the load average is recorded; compare within one run.
 */
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { LIB, ROOT, checkBuild, commandLine, exitIfFailed, fmtInt, int, loadBeforeRuns, machineInfo, medianRun, parseBenchArgs, perRound, runChild, runRole, runsArg, writeResults } from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const REALISTIC_JS = pathToFileURL(path.join(ROOT, 'test', 'fixtures', 'realistic-model.js')).href
const PIPELINE_JS = pathToFileURL(path.join(ROOT, 'dist', 'models', 'transformers-pipeline.js')).href
const BENCH_DIR = path.join(os.tmpdir(), 'inference-stream-bench')
const BATCH = 32
const CALLERS = 4
const CONFIGS = ['1x0', '1x1', '1x2', '2x0', '2x1', '2x2']

const args = parseBenchArgs({
  items: { type: 'string' },
  configs: { type: 'string' },
  config: { type: 'string' },
  dir: { type: 'string' },
  seed: { type: 'string', default: '17' },
})

const parseConfig = (c) => {
  const m = /^(\d+)x(\d+)$/.exec(c)
  if (!m || Number(m[1]) < 1) throw new Error(`--configs: "${c}" is not MxT (M model threads ≥ 1, T ONNX Runtime threads, 0: its choice)`)
  return { modelThreads: Number(m[1]), threads: Number(m[2]) }
}

async function texts(N, seed, shape) {
  const { mixedLengthText, generatedWords, prng } = await import(REALISTIC_JS)
  const text = mixedLengthText(seed, generatedWords(shape.words, shape.seed))
  const all = Array.from({ length: N }, (_, i) => text(i)).sort((a, b) => a.length - b.length)
  const batches = []
  for (let b = 0; b < N; b += BATCH) batches.push(all.slice(b, b + BATCH))
  // Shuffled (seeded): long and short batches alternate, as they arrive in a real stream.
  const r = prng(seed)
  for (let i = batches.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1))
    ;[batches[i], batches[j]] = [batches[j], batches[i]]
  }
  return batches
}

// ---------------------------------------------------------------------------------------------
// Role: one configuration in this child process.
// ---------------------------------------------------------------------------------------------
async function runConfig() {
  const { modelThreads, threads } = parseConfig(args.config)
  const { MINILM_SHAPE, SMALL_SHAPE, REALISTIC_MODEL_ID, REALISTIC_LABELS } = await import(REALISTIC_JS)
  const batches = await texts(int('items', args.items), int('seed', args.seed), args.quick ? SMALL_SHAPE : MINILM_SHAPE)
  const { TransformersPipeline } = await import(PIPELINE_JS)
  const pipe = new TransformersPipeline({
    id: REALISTIC_MODEL_ID,
    dir: path.join(args.dir, ...REALISTIC_MODEL_ID.split('/')),
    task: 'text-classification',
    cacheDir: path.join(BENCH_DIR, 'cache'),
    threads,
    modelThreads,
  })
  const t0 = performance.now()
  await pipe.load()
  const loadMs = performance.now() - t0
  // Every thread loads its copy and runs once before the clock.
  await Promise.all(Array.from({ length: modelThreads }, () => pipe.run(batches[0], {})))
  const problems = []
  let next = 0
  let items = 0
  const cpu0 = process.cpuUsage()
  const t1 = performance.now()
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (next < batches.length) {
        const batch = batches[next++]
        const out = await pipe.run(batch, {})
        for (const o of out) {
          const list = Array.isArray(o) && Array.isArray(o[0]) ? o[0] : o
          const sum = Array.isArray(list) ? list.reduce((s, x) => s + x.score, 0) : NaN
          if (!Array.isArray(list) || !list.every((x) => REALISTIC_LABELS.includes(x.label)) || Math.abs(sum - 1) > 1e-4) problems.push(JSON.stringify(o).slice(0, 200))
        }
        items += batch.length
      }
    }),
  )
  const ms = performance.now() - t1
  const cpu = process.cpuUsage(cpu0)
  await pipe.close()
  process.stdout.write(
    `${JSON.stringify({ ok: problems.length === 0, config: args.config, items, loadMs, ms, itemsPerSec: (items / ms) * 1000, cpuSec: (cpu.user + cpu.system) / 1e6, peakRssMiB: process.resourceUsage().maxRSS / 1024, firstProblems: problems.slice(0, 3) })}\n`,
    () => process.exit(problems.length === 0 ? 0 : 1),
  )
}

// ---------------------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------------------
async function orchestrate() {
  const quick = args.quick
  const N = args.items !== undefined ? int('items', args.items) : quick ? 128 : 512
  const runs = runsArg(args)
  const configs = args.configs ? args.configs.split(',') : CONFIGS
  configs.forEach(parseConfig)
  checkBuild([LIB], 'dist/ is missing: run `npm run build` first\n')
  const { makeRealisticModel, MINILM_SHAPE, SMALL_SHAPE, REALISTIC_MODEL_ID } = await import(REALISTIC_JS)
  const dir = path.join(BENCH_DIR, quick ? 'models-small' : 'models')
  const generated = await makeRealisticModel(dir, { ...(quick ? SMALL_SHAPE : MINILM_SHAPE), id: REALISTIC_MODEL_ID })
  process.stderr.write(`model ${REALISTIC_MODEL_ID}: ${(generated.bytes / 1e6).toFixed(1)} MB${generated.reused ? ' (kept)' : ''}; ${N} texts, batches of ${BATCH}, ${CALLERS} callers; ${runs} run(s) of ${configs.join(', ')}\n`)
  const loadBefore = loadBeforeRuns()
  const all = new Map(configs.map((c) => [c, []]))
  let failed = false
  for (let r = 0; r < runs; r++) {
    for (const config of configs) {
      const res = await runChild(THIS_FILE, 'config', ['--config', config, '--items', String(N), '--seed', args.seed, '--dir', dir, ...(quick ? ['--quick'] : [])])
      if (!res.ok) {
        failed = true
        process.stderr.write(`!!! ${config} run ${r + 1}: ${res.error ?? JSON.stringify(res.firstProblems)}\n`)
      } else process.stderr.write(`  ${config} run ${r + 1}: ${res.itemsPerSec.toFixed(1)} items/s, CPU ${res.cpuSec.toFixed(1)} s\n`)
      all.get(config).push(res)
    }
  }
  const base = configs[0]
  const rows = configs.map((c) => {
    const { med, ok } = medianRun(all.get(c), 'itemsPerSec')
    const ratio = c === base ? 1 : (perRound(all, c, base)?.median ?? null)
    return { config: c, ...parseConfig(c), ...med, ok, ratio, runs: all.get(c).map((x) => (x.ok ? x.itemsPerSec : null)) }
  })
  const best = rows.filter((x) => x.ok).sort((a, b) => b.itemsPerSec - a.itemsPerSec)[0]
  const md = `# model-threads

\`${commandLine('model-threads')}\` — ${REALISTIC_MODEL_ID} (generated, ${(generated.bytes / 1e6).toFixed(0)} MB fp32), ${N} mixed-length texts in length-sorted batches of ${BATCH} (shuffled), ${CALLERS} concurrent callers, ${runs} interleaved run(s); ${os.cpus().length} cores; load average ${loadBefore} before.

| model threads × ONNX Runtime threads | items/s | × ${base} | CPU s | peak RSS MiB | runs (items/s) |
|---|--:|--:|--:|--:|---|
${rows.map((x) => `| ${x.modelThreads} × ${x.threads === 0 ? 'auto (cores / M)' : x.threads} | ${x.itemsPerSec?.toFixed(1) ?? 'n/a'} | ${x.ratio == null ? 'n/a' : x.ratio.toFixed(2)} | ${x.cpuSec?.toFixed(1) ?? 'n/a'} | ${x.peakRssMiB == null ? 'n/a' : fmtInt(x.peakRssMiB)} | ${x.runs.map((v) => (v == null ? 'failed' : v.toFixed(1))).join(', ')} |`).join('\n')}

Most items/s here: **${best ? `${best.modelThreads} × ${best.threads === 0 ? 'auto' : best.threads}` : 'n/a'}**.
`
  process.stdout.write(md)
  if (!args['no-write']) writeResults('model-threads', quick, { command: commandLine('model-threads'), items: N, batch: BATCH, callers: CALLERS, runs, rows, best: best?.config ?? null, machine: machineInfo(loadBefore, {}) }, md)
  exitIfFailed(failed)
}

await runRole(args, { config: runConfig, orchestrator: orchestrate })
