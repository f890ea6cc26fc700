#!/usr/bin/env node
/*
 * Question
 *   Is transformers.js's tokenizer a bottleneck, and would Hugging Face's native one (the Rust
 *   `tokenizers` bindings published on npm) serve better? Issue 17: "measure transformers.js's
 *   tokenizer against a native one on the same texts; adopt the faster where it is exact (same
 *   ids) and installs on a fresh machine without downloads."
 *
 * Fixture
 *   The tokenizer of the generated MiniLM-shaped model (test/fixtures/realistic-model.js: an
 *   uncased BERT WordPiece tokenizer, tokenizer.json as the Hub writes it, 4000 generated words +
 *   the fixtures' vocabulary), written into a temporary folder. The texts: the benchmarks'
 *   mixed-length texts (`mixedLengthText`, 4–250 words, 6 to ~300 tokens), `--items` of them
 *   (default 4096), in batches of 32 in input order, as our model wrapper tokenizes a batch
 *   (padding to the longest, truncation at 512).
 *   Peers, in this one process, interleaved over `--runs` (each run tokenizes every batch once):
 *     transformers  `AutoTokenizer.from_pretrained(dir)` then `tokenizer(batch, {padding: true,
 *                   truncation: true})` — what lib/models/transformers-tasks.ts calls.
 *     native        `tokenizers` (npm, HF's Rust bindings): `Tokenizer.fromFile(tokenizer.json)`,
 *                   padding and truncation set as above, `await encodeBatch(batch)`, then the ids,
 *                   attention mask and type ids copied into BigInt64Arrays (the tensors the
 *                   model takes), so both peers end where the model call starts.
 *   Exactness: every batch's input_ids, attention_mask and token_type_ids of the two peers are
 *   compared element by element; a difference is reported loudly (`!!!`, exit 1).
 *   `tokenizers` is not a dependency of this project (see How to read): the script loads it from
 *   `--native-from DIR` (a folder whose node_modules holds it; default: this project), e.g.
 *   `mkdir /tmp/tok && npm install --prefix /tmp/tok tokenizers@0.23.2`.
 *
 * Command
 *   mkdir -p /tmp/tok && npm install --prefix /tmp/tok tokenizers@0.23.2
 *   node benchmarks/tokenizers.js --native-from /tmp/tok            # 4096 texts, 5 runs (~1 min)
 *   node benchmarks/tokenizers.js --native-from /tmp/tok --items 1024 --runs 3
 *   Results: benchmarks/results/tokenizers.json and .md; the Markdown is also printed on stdout.
 *
 * How to read the result
 *   items/s: texts tokenized per second of wall time (median run); CPU ms/item: this process's
 *   user+system CPU per text (the native tokenizer may use more than one thread: its CPU can
 *   exceed its wall). "of the model" puts the tokenizer's wall per item beside the model's, from
 *   benchmarks/results/model-efficiency.json when present (bare-sorted: the MiniLM-shaped model
 *   alone, ms per item): the share of an item's time a tokenizer takes on a real-sized model.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { RESULTS_DIR, ROOT, commandLine, fmtInt, int, machineInfo, parseBenchArgs, writeResults } from './lib/harness.js'

const args = parseBenchArgs({
  items: { type: 'string', default: '4096' },
  runs: { type: 'string', default: '5' },
  seed: { type: 'string', default: '17' },
  'native-from': { type: 'string' },
})
const BATCH = 32
const N = int('items', args.items)
const RUNS = int('runs', args.runs)
const fixtures = (name) => pathToFileURL(path.join(ROOT, 'test', 'fixtures', name)).href

const loadBefore = os.loadavg()
const { realisticVocab, generatedWords, mixedLengthText, MINILM_SHAPE } = await import(fixtures('realistic-model.js'))
const { bertTokenizerFiles } = await import(fixtures('tiny-models.js'))

// The tokenizer files, as the generated model has them.
const dir = mkdtempSync(path.join(os.tmpdir(), 'is-bench-tokenizers-'))
process.on('exit', () => rmSync(dir, { recursive: true, force: true }))
const modelDir = path.join(dir, 'tiny', 'minilm-shaped')
mkdirSync(modelDir, { recursive: true })
for (const [name, content] of Object.entries(bertTokenizerFiles(realisticVocab(MINILM_SHAPE.words, MINILM_SHAPE.seed)))) {
  writeFileSync(path.join(modelDir, name), typeof content === 'string' ? content : JSON.stringify(content))
}

const text = mixedLengthText(int('seed', args.seed), generatedWords(MINILM_SHAPE.words, MINILM_SHAPE.seed))
const texts = Array.from({ length: N }, (_, i) => text(i))
const batches = []
for (let b = 0; b < N; b += BATCH) batches.push(texts.slice(b, b + BATCH))

// --- the peers ---------------------------------------------------------------------------------
const { AutoTokenizer, env } = await import('@huggingface/transformers')
env.localModelPath = dir
env.allowRemoteModels = false
const hf = await AutoTokenizer.from_pretrained('tiny/minilm-shaped', { local_files_only: true })

// `tokenizers` resolved from --native-from's folder (or this project's).
const requireNative = createRequire(args['native-from'] ? path.resolve(args['native-from'], 'package.json') : path.join(ROOT, 'package.json'))
let Tokenizer
try {
  ;({ Tokenizer } = requireNative('tokenizers'))
} catch (err) {
  process.stderr.write(`cannot load the native tokenizer (npm package "tokenizers"): ${err.message}\ninstall it beside the project, e.g. \`mkdir -p /tmp/tok && npm install --prefix /tmp/tok tokenizers@0.23.2\`, and pass --native-from /tmp/tok\n`)
  process.exit(2)
}
const native = Tokenizer.fromFile(path.join(modelDir, 'tokenizer.json'))
native.setPadding({})
native.setTruncation(512)
const nativeVersion = JSON.parse(readFileSync(requireNative.resolve('tokenizers/package.json'), 'utf8')).version

const peers = {
  transformers: async (batch) => {
    const enc = hf(batch, { padding: true, truncation: true })
    return { ids: enc.input_ids.data, mask: enc.attention_mask.data, types: enc.token_type_ids.data, dims: enc.input_ids.dims }
  },
  native: async (batch) => {
    const encs = await native.encodeBatch(batch)
    const cols = encs[0].getIds().length
    const ids = new BigInt64Array(encs.length * cols)
    const mask = new BigInt64Array(encs.length * cols)
    const types = new BigInt64Array(encs.length * cols)
    encs.forEach((e, r) => {
      const [a, m, t] = [e.getIds(), e.getAttentionMask(), e.getTypeIds()]
      for (let c = 0; c < cols; c++) {
        ids[r * cols + c] = BigInt(a[c])
        mask[r * cols + c] = BigInt(m[c])
        types[r * cols + c] = BigInt(t[c])
      }
    })
    return { ids, mask, types, dims: [encs.length, cols] }
  },
  // The native call alone, its encodings left unread: the floor of what the bindings cost.
  'native-encode-only': async (batch) => {
    await native.encodeBatch(batch)
  },
}

// --- exactness: every batch, element by element -----------------------------------------------
const problems = []
let tokens = 0
for (const [b, batch] of batches.entries()) {
  const x = await peers.transformers(batch)
  const y = await peers.native(batch)
  tokens += x.mask.reduce((s, v) => s + Number(v), 0)
  if (x.dims.join() !== y.dims.join()) {
    problems.push(`batch ${b}: dims ${x.dims} vs ${y.dims}`)
    continue
  }
  for (const k of ['ids', 'mask', 'types']) {
    const i = x[k].findIndex((v, j) => v !== y[k][j])
    if (i !== -1) problems.push(`batch ${b}, row ${Math.floor(i / x.dims[1])}: ${k} differ at column ${i % x.dims[1]} (${x[k][i]} vs ${y[k][i]}) — text ${JSON.stringify(batch[Math.floor(i / x.dims[1])].slice(0, 80))}`)
  }
}

// --- speed: interleaved runs -------------------------------------------------------------------
const runs = { transformers: [], native: [], 'native-encode-only': [] }
for (let r = 0; r < RUNS; r++) {
  for (const [name, fn] of Object.entries(peers)) {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    for (const batch of batches) await fn(batch)
    const ms = performance.now() - t0
    const cpu = process.cpuUsage(cpu0)
    runs[name].push({ ms, itemsPerSec: (N / ms) * 1000, cpuMsPerItem: (cpu.user + cpu.system) / 1000 / N })
  }
}
const median = (list) => [...list].sort((a, b) => a.itemsPerSec - b.itemsPerSec)[Math.floor(list.length / 2)]
const result = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, { ...median(v), runs: v.map((x) => Math.round(x.itemsPerSec)) }]))
const perRound = runs.native.map((n, i) => n.itemsPerSec / runs.transformers[i].itemsPerSec).sort((a, b) => a - b)
const ratio = perRound[Math.floor(perRound.length / 2)]
const onlyRound = runs['native-encode-only'].map((n, i) => n.itemsPerSec / runs.transformers[i].itemsPerSec).sort((a, b) => a - b)
const ratioOnly = onlyRound[Math.floor(onlyRound.length / 2)]

// The model's time per item, where model-efficiency has measured it.
let modelMsPerItem = null
try {
  const eff = JSON.parse(readFileSync(path.join(RESULTS_DIR, 'model-efficiency.json'), 'utf8'))
  const bare = eff.medians?.['bare-sorted']
  if (bare?.itemsPerSec) modelMsPerItem = 1000 / bare.itemsPerSec
} catch {
  // not measured here
}

const tokMs = (p) => 1000 / result[p].itemsPerSec
const share = (p) => (modelMsPerItem ? `${((tokMs(p) / (tokMs(p) + modelMsPerItem)) * 100).toFixed(1)}%` : 'n/a')
const md = `# tokenizers

\`${commandLine('tokenizers')}\` — the generated MiniLM-shaped model's WordPiece tokenizer, ${fmtInt(N)} mixed-length texts (${fmtInt(tokens)} tokens, ${(tokens / N).toFixed(0)} per text), batches of ${BATCH} padded to the longest; ${RUNS} interleaved runs; load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')}.

| peer | items/s | tokens/s | CPU ms/item | of an item's time with the MiniLM-shaped model | runs (items/s) |
|---|--:|--:|--:|--:|---|
${Object.keys(result)
  .map((p) => `| ${p === 'transformers' ? 'transformers.js' : `${p} (\`tokenizers\` ${nativeVersion})`} | ${fmtInt(result[p].itemsPerSec)} | ${fmtInt((result[p].itemsPerSec * tokens) / N)} | ${result[p].cpuMsPerItem.toFixed(3)} | ${share(p)} | ${result[p].runs.map(fmtInt).join(', ')} |`)
  .join('\n')}

**native / transformers.js = ${ratio.toFixed(2)}×** items/s (median of the per-run ratios; the native call alone, its encodings unread: ${ratioOnly.toFixed(2)}×). Exact: ${problems.length === 0 ? `**yes** — the same input_ids, attention_mask and token_type_ids for all ${fmtInt(N)} texts` : `**no** — ${problems.length} batches differ; first: ${problems[0]}`}.${modelMsPerItem ? ` The model alone takes ${modelMsPerItem.toFixed(1)} ms per item (results/model-efficiency.json, bare-sorted).` : ''}
`
process.stdout.write(md)
if (!args['no-write']) writeResults('tokenizers', false, { command: commandLine('tokenizers'), machine: machineInfo(loadBefore, { transformers: (await import('@huggingface/transformers/package.json', { with: { type: 'json' } }).catch(() => ({ default: {} }))).default.version ?? null, tokenizers: nativeVersion }), items: N, tokens, runs: RUNS, result, ratio, ratioEncodeOnly: ratioOnly, exact: problems.length === 0, problems: problems.slice(0, 20), modelMsPerItem }, md)
if (problems.length > 0) {
  process.stderr.write(`!!! the tokenizers disagree on ${problems.length} batches\n`)
  process.exit(1)
}
