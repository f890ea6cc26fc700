#!/usr/bin/env node
/*
 * Question
 *   Does batching pay for a real model — an ONNX model run by transformers.js, not `builtin/echo`?
 *   How many items/s does our server give `tiny/sentiment` (text-classification) with
 *   `--max-batch` 1 vs 8 vs 32, and `tiny/nli` zero-shot (3 candidate labels, so 3 sequences per
 *   item), and what batch size do the workers actually reach? Against the same model at
 *   `--max-batch 32`, how does streaming (InferenceStream) compare with one HTTP request per item?
 *   And where does an item's time go in the model call (tokenizer vs the rest)?
 *
 * Fixture
 *   The tiny generated models of the tests (`test/fixtures/tiny-models.js`, written into
 *   `<tmpdir>/inference-stream-bench/tiny-models` at start; `--models DIR` serves another folder
 *   instead) on our server: `node dist/cli/index.js serve --port 0 --log-level warn --models DIR
 *   --workers W --max-batch B`, a fresh server process per peer and run. Before the clock starts
 *   the parent sends one warm-up `POST /models/{id}` with `options.wait_for_model: true` (the model
 *   loads) whose inputs are a few known texts whose labels it checks, then reads `/metrics`.
 *   Item i is a review-like English text made from i alone (a seeded PRNG: a subject, one opinion
 *   sentence that is positive or negative — 1 or 2 sentiment words, never negated —, one sentence
 *   naming one of the topics weather / sports / cooking, and 0–9 neutral clauses: 10 to 81 words,
 *   median 17, 1 in 12 over 50), made lazily by a generator in the client. Every client is its
 *   own child process (this file re-invoked with `--role client`). Peers, all with concurrency C
 *   (`--concurrency`, default 256):
 *     bB          `tiny/sentiment` (`--model`) on `--workers W --max-batch B` for each B of
 *                 `--max-batches` (1, 8, 32), through `new InferenceStream({protocol: 'v1',
 *                 ordered: true, maxInFlight: C})` in a `stream/promises` pipeline from
 *                 `Readable.from(records)` to a counting Writable, as client-throughput.js's stream-v1.
 *     bB-w1       the same with `--workers 1` for each B of `--single-worker` (1, 32): one model
 *                 call at a time, so what batching saves is not hidden by calls overlapping.
 *     zs-bB       `tiny/nli` (`--zs-model`) as zero-shot-classification, `parameters:
 *                 {candidate_labels: ['weather', 'sports', 'cooking']}`: each item is 3 (text,
 *                 "This example is {label}.") pairs, all pairs of a batch in one model call.
 *     http-bB     one `POST /models/{--model}` `{"inputs": text, "options": {"use_cache": false}}`
 *                 per item with `fetch` and `p-limit(C)` (a promise per record up front, as users
 *                 write it; client-throughput.js's http-plimit), on the server of the largest B.
 *                 `use_cache: false` so every request runs the model, as every stream item does.
 *   Breakdown (no server, `--role breakdown`, one child process per model and run), over the same
 *   texts in batches of each B, calls one after the other: the model's `TransformersPipeline.run`,
 *   what a batch worker calls (which runs the model in a thread of its own); the same model on the
 *   calling thread (`TransformersModel.run` of dist/models/transformers-model.js: tokenizer, ONNX
 *   Runtime, outputs), where dist/ has that class; and the model's tokenizer alone (as the model
 *   calls it: padded, truncated, pairs for zero-shot).
 *   Checks, each a loud `!!!` and exit 1 when broken: the known texts of the warm-up get their
 *   labels (POSITIVE / NEGATIVE; weather / sports / cooking); every item answered exactly once,
 *   in input order for the streams; no error result; outputs in the task's shape; for the tiny
 *   models every item's label is the one its text implies (tiny/sentiment: POSITIVE iff at least
 *   as many positive as negative words; tiny/nli: the topic the text names) — with other models
 *   the agreement is reported, not required; no HTTP answer from the cache; and the server's bill
 *   (`inference_stream_billed_items_total`) grew by exactly the number of items during the run.
 *
 * Command
 *   npm run build && node benchmarks/batching.js          # 3 interleaved runs (~4 min on a quiet 2-core machine)
 *   npm run bench:batching                                 # the same
 *   node benchmarks/batching.js --quick                    # fewer items, 1 run: smoke test (~30 s)
 *   node benchmarks/batching.js --model tiny/ner           # another tiny text model (ner, embed, fill-mask)
 *   node benchmarks/batching.js --models ~/models --model Xenova/distilbert-base-uncased-finetuned-sst-2-english --zs-model Xenova/bart-large-mnli
 *   node benchmarks/batching.js --only b1,b32 --profile   # + CPU profile of each server thread
 *   Results: benchmarks/results/batching.json and .md (`-quick` with --quick; another --model or
 *   --zs-model adds their names); the Markdown is also printed on stdout.
 *
 * How to read the result
 *   items/s: items answered per second of the client's wall time, from before it connects to its
 *   last result (higher is better); for zero-shot, sequences/s is 3× that. "vs" is over the row
 *   named: for a stream row, the row of the same model and workers with the smallest B (1) — what
 *   batching buys; for HTTP, the stream row on the same server settings — what streaming buys
 *   (the verdict lines under the table repeat these ratios). "mean batch" is
 *   the server's `inference_stream_batch_size` histogram (sum / count) over the run: the batch the
 *   workers actually pulled, which B caps; "call ms" is the mean duration of one model call
 *   (`inference_stream_batch_seconds`), and "call µs/item" the sum of all calls' durations over
 *   the items — with W > 1 calls overlap, so it can exceed the wall time per item. Server CPU
 *   µs/item is the server process's user+system CPU (ONNX Runtime's threads included) over the
 *   items: the cost of an item whatever the machine's load; client CPU µs/item the same for the
 *   client. Client and server share the 2 cores: the one whose CPU s is close to the wall time is
 *   the bottleneck. The breakdown gives the model call alone: if the pipeline's items/s at B = 32 is
 *   far above B = 1, batching can pay, by at most that ratio; the tokenizer share is how much of the
 *   on-thread call is tokenization, which batching does not make cheaper per item; "thread hop" what
 *   handing a batch to the model's thread and back costs per item. A build of dist/ while the peers
 *   run (another shell, a test run) is reported with `!!!` and exit 1: they measured different code. With --runs R > 1 every row is
 *   the peer's median run by items/s (breakdown: each cell's median); compare within one run.
 */
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
// mulberry32, so item i is the same text in every process and run.
import { prng } from '../test/fixtures/prng.js'
import {
  CLI, LIB, PROFILE_DIR, ROOT, addServerStats, adoptProfiles, checkBill, checkBuild, commandLine, countingWritable, exitIfFailed,
  fmtInt, fmtMiB, fmtS, int, loadBeforeRuns, machineInfo, medianRun, metricSum, parseBenchArgs, pkgVersion, procStats,
  profileFlags, profilesBefore, runChild, runRole, runsArg, startServer, stopServer, writeProfileSummaries, writeResults,
} from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const TINY_MODELS_JS = path.join(ROOT, 'test', 'fixtures', 'tiny-models.js')
const DEFAULTS = { items: 40_000, zsItems: 12_000, httpItems: 8_000, breakdownItems: 4_000 }
const QUICK = { items: 4_000, zsItems: 2_000, httpItems: 2_000, breakdownItems: 1_000 }
const CANDIDATE_LABELS = ['weather', 'sports', 'cooking']
const ZS_PARAMETERS = { candidate_labels: CANDIDATE_LABELS }
/** The tiny models' tasks (test/fixtures/tiny-models.js); other models need --task / are text-classification. */
const TINY_TASKS = {
  'tiny/sentiment': 'text-classification',
  'tiny/nli': 'zero-shot-classification',
  'tiny/ner': 'token-classification',
  'tiny/embed': 'feature-extraction',
  'tiny/fill-mask': 'fill-mask',
}
const MODEL_TASKS = ['text-classification', 'token-classification', 'feature-extraction', 'fill-mask']

// Besides the common ones (role, quick, runs, only, profile, no-write, token, file: see lib/harness.js).
const args = parseBenchArgs({
  // orchestrator
  items: { type: 'string' },
  'zs-items': { type: 'string' },
  'http-items': { type: 'string' },
  'breakdown-items': { type: 'string' },
  concurrency: { type: 'string', default: '256' },
  'max-batches': { type: 'string', default: '1,8,32' },
  workers: { type: 'string', default: '4' },
  'single-worker': { type: 'string', default: '1,32' },
  models: { type: 'string' },
  'zs-model': { type: 'string', default: 'tiny/nli' },
  'onnx-threads': { type: 'string' },
  'max-wait-ms': { type: 'string' },
  'no-zs': { type: 'boolean', default: false },
  'no-http': { type: 'boolean', default: false },
  'no-breakdown': { type: 'boolean', default: false },
  // orchestrator and children
  model: { type: 'string', default: 'tiny/sentiment' },
  task: { type: 'string' },
  // client
  peer: { type: 'string' },
  base: { type: 'string' },
  'max-in-flight': { type: 'string' },
  'stall-ms': { type: 'string', default: '60000' },
  // breakdown
  dir: { type: 'string' },
  batches: { type: 'string' },
})

// ---------------------------------------------------------------------------------------------
// The inputs: review-like texts, item i a pure function of i.
// ---------------------------------------------------------------------------------------------


const SUBJECTS = [
  'this blender', 'the headset', 'this phone case', 'the toaster', 'this jacket', 'the yoga mat', 'this coffee maker',
  'the hiking stick', 'this stroller', 'the blanket', 'this backpack', 'the desk lamp', 'this water bottle', 'the kettle',
  'this umbrella', 'the drill', 'this frying pan', 'the tent', 'this keyboard', 'the rice cooker',
]
// Sentiment words of tiny/sentiment (test/fixtures/tiny-models.js POSITIVE_WORDS / NEGATIVE_WORDS).
const POSITIVE = ['good', 'great', 'love', 'excellent', 'happy', 'wonderful', 'amazing', 'best', 'nice', 'fantastic', 'awesome', 'perfect']
const NEGATIVE = ['bad', 'terrible', 'hate', 'awful', 'sad', 'horrible', 'worst', 'poor', 'boring', 'angry', 'rude']
const POSITIVE_SET = new Set(POSITIVE)
const NEGATIVE_SET = new Set(NEGATIVE)
const pick = (r, list) => list[Math.floor(r() * list.length)]
// {s}: the subject; {a}, {b}: sentiment words of the text's polarity (adjective-like ones).
const OPINIONS = {
  positive: ['{s} is {a}', 'honestly {s} is {a} and {b}', 'I love {s}', 'what a {a} purchase', '{s} turned out {a}', '{a} quality, {b} price'],
  negative: ['{s} is {a}', 'honestly {s} is {a} and {b}', 'I hate {s}', 'what a {a} purchase', '{s} turned out {a}', '{a} quality, {b} price'],
}
const POSITIVE_ADJ = ['good', 'great', 'excellent', 'wonderful', 'amazing', 'nice', 'fantastic', 'awesome', 'perfect']
const NEGATIVE_ADJ = ['bad', 'terrible', 'awful', 'horrible', 'poor', 'boring']
// One sentence per text names its topic (a candidate label) and no other label; no sentiment words.
const TOPIC_SENTENCES = {
  weather: ['we took it out in cold weather', 'the weather ruined our weekend trip anyway', 'it handles any kind of weather', 'I checked the weather before ordering'],
  sports: ['I use it mostly for sports', 'it goes in my sports bag every morning', 'my kids take it to sports practice', 'the sports club ordered a few of them'],
  cooking: ['it makes cooking a lot quicker', 'I do most of my cooking with it now', 'it came with a small cooking guide', 'cooking for six people is no problem'],
}
const TOPICS = Object.keys(TOPIC_SENTENCES)
const CLAUSES = [
  'it arrived on a tuesday', 'we used it for two weeks', 'the box was a bit dented', 'my brother has the same one',
  'it comes in three colors', 'setup took about ten minutes', 'the manual is in four languages', 'I bought it after reading the reviews',
  'shipping took five days', 'it fits in the drawer next to the sink', 'the color is darker than in the photos',
  'my neighbour asked where I got it', 'it replaced an older model', 'the battery lasts about a week', 'there is a small scratch on the side',
  'customer service answered within a day', 'I ordered the medium size', 'it weighs less than I expected', 'the cable is quite short',
  'we keep it in the garage', 'it was on sale last month', 'the instructions were easy to follow', 'it makes a quiet humming sound',
]
const capitalize = (s) => s[0].toUpperCase() + s.slice(1)

/** Item i: {i, text, polarity, topic}. */
function recordOf(i) {
  const r = prng(Math.imul(i + 1, 2654435761))
  const polarity = r() < 0.5 ? 'positive' : 'negative'
  const topic = pick(r, TOPICS)
  const subject = pick(r, SUBJECTS)
  const adj = polarity === 'positive' ? POSITIVE_ADJ : NEGATIVE_ADJ
  const a = pick(r, adj)
  let b = pick(r, adj)
  if (b === a) b = adj[(adj.indexOf(a) + 1) % adj.length]
  const opinion = pick(r, OPINIONS[polarity]).replace('{s}', subject).replace('{a}', a).replace('{b}', b)
  const u = r()
  const nClauses = u < 0.45 ? 0 : u < 0.85 ? 1 + Math.floor(r() * 3) : 4 + Math.floor(r() * 6)
  const parts = [opinion, pick(r, TOPIC_SENTENCES[topic])]
  for (let k = 0; k < nClauses; k++) parts.push(pick(r, CLAUSES))
  // The opinion first or last, the rest in the order drawn; sentences or comma-joined clauses.
  if (r() < 0.3) parts.push(parts.shift())
  let text = ''
  for (let k = 0; k < parts.length; k++) {
    const sep = k === 0 ? '' : r() < 0.6 ? '. ' : ', '
    text += sep + (k === 0 || sep === '. ' ? capitalize(parts[k]) : parts[k])
  }
  text += r() < 0.2 ? '!' : '.'
  return { i, text, polarity, topic }
}
function* records(n) {
  for (let i = 0; i < n; i++) yield recordOf(i)
}

/** The label tiny/sentiment gives a text: POSITIVE iff at least as many positive as negative words. */
function tinySentimentLabel(text) {
  let score = 0
  for (const w of text.toLowerCase().split(/[^a-z]+/)) score += POSITIVE_SET.has(w) ? 1 : NEGATIVE_SET.has(w) ? -1 : 0
  return score >= 0 ? 'POSITIVE' : 'NEGATIVE'
}

/** Texts whose labels any sensible model gets right: the warm-up checks them. */
const KNOWN = {
  'text-classification': [
    { text: 'I love it, excellent quality and a great price.', label: 'POSITIVE' },
    { text: 'Terrible product, I hate it. The worst purchase ever.', label: 'NEGATIVE' },
  ],
  'zero-shot-classification': [
    { text: 'The weather was cold and rainy all week.', label: 'weather' },
    { text: 'We watched the sports final with the whole team.', label: 'sports' },
    { text: 'A cooking class: pasta, soup and a recipe for dinner.', label: 'cooking' },
  ],
}

/** What an item sends as inputs for a task (fill-mask needs a mask token: BERT's [MASK]). */
function inputsOf(task, text) {
  if (task !== 'fill-mask') return text
  const words = text.split(' ')
  words[Math.floor(words.length / 2)] = '[MASK]'
  return words.join(' ')
}

/** The model's task: --task, else the tiny model's, else text-classification. */
function taskOf(model, flag) {
  const task = flag ?? TINY_TASKS[model] ?? 'text-classification'
  if (!MODEL_TASKS.includes(task) && task !== 'zero-shot-classification') {
    process.stderr.write(`--task must be one of ${MODEL_TASKS.join(', ')}, got ${JSON.stringify(task)}\n`)
    process.exit(2)
  }
  return task
}

const isNum = (x) => typeof x === 'number' && Number.isFinite(x)

/**
 * Checks one answer of `task` for a single-string input: null if its shape is right, else the
 * problem; `label` is the top label (classification tasks) for the label checks.
 */
function checkShape(task, input, outputs) {
  switch (task) {
    case 'text-classification': {
      const row = Array.isArray(outputs) && outputs.length === 1 ? outputs[0] : null
      if (!Array.isArray(row) || row.length === 0 || !row.every((x) => typeof x?.label === 'string' && isNum(x.score))) return { problem: 'not [[{label, score}, ...]]' }
      const sum = row.reduce((s, x) => s + x.score, 0)
      if (row.length > 1 && Math.abs(sum - 1) > 1e-3) return { problem: `scores sum to ${sum}` }
      return { label: row[0].label }
    }
    case 'zero-shot-classification': {
      if (outputs?.sequence !== input) return { problem: 'sequence is not the input' }
      if (!Array.isArray(outputs.labels) || [...outputs.labels].sort().join() !== [...CANDIDATE_LABELS].sort().join()) return { problem: 'labels are not the candidate labels' }
      if (!Array.isArray(outputs.scores) || !outputs.scores.every(isNum) || Math.abs(outputs.scores.reduce((s, x) => s + x, 0) - 1) > 1e-3) return { problem: 'scores do not sum to 1' }
      return { label: outputs.labels[0] }
    }
    case 'token-classification': {
      if (!Array.isArray(outputs)) return { problem: 'not a list of entities' }
      for (const e of outputs) {
        if (!isNum(e?.score) || typeof e.word !== 'string' || !Number.isInteger(e.start) || !Number.isInteger(e.end)) return { problem: 'entity without score, word, start, end' }
        if (input.slice(e.start, e.end).toLowerCase() !== e.word.toLowerCase()) return { problem: `word ${JSON.stringify(e.word)} is not input[${e.start}:${e.end}]` }
      }
      return {}
    }
    case 'feature-extraction': {
      const rows = Array.isArray(outputs) && outputs.length === 1 ? outputs[0] : null
      if (!Array.isArray(rows) || rows.length === 0 || !rows.every((v) => Array.isArray(v) && v.length > 0 && v.every(isNum))) return { problem: 'not [[[numbers per token], ...]]' }
      return {}
    }
    case 'fill-mask': {
      if (!Array.isArray(outputs) || outputs.length === 0 || !outputs.every((x) => isNum(x?.score) && typeof x.token_str === 'string' && typeof x.sequence === 'string')) {
        return { problem: 'not [{sequence, score, token, token_str}, ...]' }
      }
      return {}
    }
    default:
      return { problem: `unknown task ${task}` }
  }
}

/** The label item `rec` must get, when this model's rule is known (the tiny models); else null. */
function expectedLabel(model, task, rec) {
  if (model === 'tiny/sentiment') return tinySentimentLabel(rec.text)
  if (model === 'tiny/nli') return rec.topic
  return null
}
/** The label a sensible model gives it: reported as agreement, not checked. */
function plausibleLabel(task, rec) {
  if (task === 'text-classification') return rec.polarity === 'positive' ? 'POSITIVE' : 'NEGATIVE'
  if (task === 'zero-shot-classification') return rec.topic
  return null
}

// ---------------------------------------------------------------------------------------------
// Role: client. One peer, N items, prints one JSON line of results on stdout.
// ---------------------------------------------------------------------------------------------
async function runClient() {
  const peer = args.peer // 'stream' or 'http'
  const model = args.model
  const task = taskOf(model, args.task)
  const N = int('items', args.items)
  const C = int('max-in-flight', args['max-in-flight'])
  const stallMs = int('stall-ms', args['stall-ms'])
  const base = args.base
  const token = args.token
  const parameters = task === 'zero-shot-classification' ? ZS_PARAMETERS : undefined
  const ordered = peer === 'stream'

  const seen = new Uint8Array(N)
  const c = { answered: 0, duplicates: 0, unknown: 0, wrongOutputs: 0, wrongLabels: 0, errorResults: 0, outOfOrder: 0, plausibleChecked: 0, plausibleAgreed: 0 }
  const firstProblems = []
  const problem = (text) => {
    if (firstProblems.length < 10) firstProblems.push(text)
  }
  let lastProgress = Date.now()
  const answer = (i, outputs, error) => {
    lastProgress = Date.now()
    if (!Number.isInteger(i) || i < 0 || i >= N) {
      c.unknown++
      problem(`unknown record ${JSON.stringify(i)}`)
      return
    }
    if (seen[i]) {
      c.duplicates++
      problem(`duplicate answer for ${i}`)
      return
    }
    if (ordered && i !== c.answered) {
      c.outOfOrder++
      problem(`record ${i} came out at position ${c.answered}`)
    }
    seen[i] = 1
    c.answered++
    if (error || (outputs !== null && typeof outputs === 'object' && !Array.isArray(outputs) && 'error' in outputs)) {
      c.errorResults++
      problem(`error result for ${i}: ${JSON.stringify(error ?? outputs).slice(0, 300)}`)
      return
    }
    const rec = recordOf(i)
    const shape = checkShape(task, inputsOf(task, rec.text), outputs)
    if (shape.problem) {
      c.wrongOutputs++
      problem(`outputs of ${i} (${shape.problem}): ${JSON.stringify(outputs).slice(0, 200)}`)
      return
    }
    const expected = expectedLabel(model, task, rec)
    if (expected !== null && shape.label !== expected) {
      c.wrongLabels++
      problem(`record ${i} got ${shape.label}, expected ${expected}: ${JSON.stringify(rec.text)}`)
    }
    const plausible = plausibleLabel(task, rec)
    if (plausible !== null) {
      c.plausibleChecked++
      if (shape.label === plausible) c.plausibleAgreed++
    }
  }

  // A peer that stops making progress fails instead of hanging the benchmark.
  let stalled = null
  const stallTimer = setInterval(() => {
    if (Date.now() - lastProgress > stallMs) stalled?.(new Error(`no answer for ${stallMs} ms (answered ${c.answered}/${N})`))
  }, 1000)
  const stall = new Promise((_, reject) => {
    stalled = reject
  })
  stall.catch(() => {})

  // Modules load before the clock starts: the run measures moving items, not startup.
  const { InferenceStream } = await import(LIB)
  const { default: pLimit } = await import('p-limit')
  const extra = {}
  let error = null
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  try {
    if (peer === 'stream') {
      const stream = new InferenceStream({
        url: base,
        model,
        token,
        protocol: 'v1',
        ordered: true,
        maxInFlight: C,
        reconnect: false, // a cut is a failure here, not something to hide
        input: (r) => ({ inputs: inputsOf(task, r.text) }),
        ...(parameters ? { parameters } : {}),
      })
      const sink = countingWritable((res) => answer(res.record?.i, res.outputs, res.error))
      await Promise.race([pipeline(Readable.from(records(N)), stream, sink), stall])
      const s = stream.stats
      extra.streamStats = s
      extra.peakInFlight = stream.peakInFlight
      if (s.ignored > 0 || s.reconnects > 0 || s.resent > 0) problem(`stream stats: ${JSON.stringify(s)}`)
    } else if (peer === 'http') {
      const endpoint = `${base}/models/${model}`
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` }
      const status = {}
      let fromCache = 0
      let requests = 0
      let peakRequests = 0
      const post = async (r) => {
        if (++requests > peakRequests) peakRequests = requests
        const body = { inputs: inputsOf(task, r.text), ...(parameters ? { parameters } : {}), options: { use_cache: false } }
        const res = await fetch(endpoint, { method: 'POST', headers, body: JSON.stringify(body) })
        const json = await res.json()
        requests--
        status[res.status] = (status[res.status] ?? 0) + 1
        if (res.headers.get('x-compute-type') === 'cache') fromCache++
        answer(r.i, res.ok ? json : null, res.ok ? undefined : { status: res.status, body: json })
      }
      const limit = pLimit(C)
      // What users write: a promise per record up front, p-limit runs C at a time.
      const all = []
      for (const r of records(N)) all.push(limit(() => post(r)))
      await Promise.race([Promise.all(all), stall])
      extra.httpStatus = status
      extra.fromCache = fromCache
      extra.peakInFlight = peakRequests
      if (fromCache > 0) problem(`${fromCache} answers came from the HTTP cache`)
    } else {
      throw new Error(`unknown --peer ${peer}`)
    }
  } catch (err) {
    error = err?.stack ?? String(err)
  }
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  clearInterval(stallTimer)
  let missing = 0
  for (let i = 0; i < N; i++) {
    if (seen[i]) continue
    if (missing < 5) problem(`no answer for record ${i}`)
    missing++
  }
  const ok =
    !error && missing === 0 && c.duplicates === 0 && c.unknown === 0 && c.wrongOutputs === 0 && c.wrongLabels === 0 &&
    c.errorResults === 0 && c.outOfOrder === 0 && !(extra.fromCache > 0) &&
    !(extra.streamStats && (extra.streamStats.ignored > 0 || extra.streamStats.reconnects > 0))
  const out = {
    ok,
    error,
    peer,
    model,
    task,
    items: N,
    concurrency: C,
    wallMs,
    itemsPerSec: wallMs > 0 ? (c.answered / wallMs) * 1000 : 0,
    ...c,
    missing,
    ordered,
    labelsChecked: expectedLabel(model, task, recordOf(0)) !== null,
    plausibleAgreement: c.plausibleChecked > 0 ? c.plausibleAgreed / c.plausibleChecked : null,
    ...extra,
    firstProblems,
    cpuSec: (cpu.user + cpu.system) / 1e6,
    peakRssKiB: process.resourceUsage().maxRSS,
  }
  // Exit explicitly: keep-alive sockets of fetch's pool must not hold the process (and its profile).
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(ok ? 0 : 1))
}

// ---------------------------------------------------------------------------------------------
// Role: breakdown. The model call alone, in this process, no server: prints one JSON line.
// ---------------------------------------------------------------------------------------------
async function runBreakdown() {
  const model = args.model
  const task = taskOf(model, args.task)
  const N = int('items', args.items)
  const batches = listArg('batches', args.batches)
  const parameters = task === 'zero-shot-classification' ? ZS_PARAMETERS : {}
  const dir = path.join(path.resolve(args.dir), ...model.split('/'))
  const options = { id: model, dir, task, cacheDir: path.join(os.tmpdir(), 'inference-stream-bench', 'cache') }
  // What a batch worker calls: the public pipeline (which may run the model in a thread of its own).
  const { TransformersPipeline } = await import(LIB)
  const pipe = new TransformersPipeline(options)
  await pipe.load()
  // The same model on this thread, where dist/ has it as a class of its own (TransformersModel).
  let onThread = null
  const modelFile = path.join(ROOT, 'dist', 'models', 'transformers-model.js')
  if (existsSync(modelFile)) {
    const { TransformersModel } = await import(pathToFileURL(modelFile).href)
    if (TransformersModel) {
      onThread = new TransformersModel(options)
      await onThread.load()
    }
  }
  // The tokenizer on its own, loaded from the same folder (transformers.js's AutoTokenizer).
  const { AutoTokenizer, env } = await import('@huggingface/transformers')
  env.allowLocalModels = true
  env.allowRemoteModels = false
  const tokenizer = await AutoTokenizer.from_pretrained(dir, { local_files_only: true })
  const inputs = []
  for (const r of records(N)) inputs.push(inputsOf(task, r.text))
  // As transformers-tasks.js calls it: padded and truncated, every (text, hypothesis) pair for zero-shot.
  const hypotheses = CANDIDATE_LABELS.map((l) => `This example is ${l}.`)
  let tokens = 0
  const tokenize = async (batch) => {
    const enc = task !== 'zero-shot-classification'
      ? tokenizer(batch, { padding: true, truncation: true })
      : tokenizer(batch.flatMap((t) => hypotheses.map(() => t)), { padding: true, truncation: true, text_pair: batch.flatMap(() => hypotheses) })
    tokens += enc.input_ids.dims.reduce((a, b) => a * b, 1)
    return batch
  }
  let errors = 0
  const countErrors = (outputs) => {
    for (const o of outputs) if (o instanceof Error) errors++
    return outputs
  }
  const parts = {
    pipeline: (batch) => pipe.run(batch, parameters).then(countErrors),
    ...(onThread ? { model: (batch) => onThread.run(batch, parameters).then(countErrors) } : {}),
    tokenizer: tokenize,
  }
  const out = { ok: true, error: null, model, task, items: N, onThread: onThread !== null, rows: [] }
  try {
    for (const B of batches) {
      // A warm-up pass of each part at this size (V8 and ONNX Runtime settle), then two timed passes
      // of each, alternated, the faster kept: a shared machine only ever slows a pass down.
      const ms = {}
      for (let pass = -1; pass < 2; pass++) {
        for (const [name, call] of Object.entries(parts)) {
          const n = pass < 0 ? Math.min(N, 4 * B) : N
          tokens = 0
          const t0 = performance.now()
          for (let k = 0; k < n; k += B) await call(inputs.slice(k, k + B))
          if (pass >= 0) ms[name] = Math.min(ms[name] ?? Infinity, performance.now() - t0)
        }
      }
      const perSec = (name) => (ms[name] != null ? (N / ms[name]) * 1000 : null)
      out.rows.push({
        batch: B,
        pipelineItemsPerSec: perSec('pipeline'),
        modelItemsPerSec: perSec('model'),
        tokenizeItemsPerSec: perSec('tokenizer'),
        // Of the model call on its own thread when there is one, else of the pipeline's.
        tokenizerShare: ms.tokenizer / (ms.model ?? ms.pipeline),
        paddedTokensPerItem: tokens / N,
      })
    }
    if (errors > 0) throw new Error(`${errors} error results`)
  } catch (err) {
    out.ok = false
    out.error = err?.stack ?? String(err)
  }
  await pipe.close()
  await onThread?.close()
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(out.ok ? 0 : 1))
}

// ---------------------------------------------------------------------------------------------
// Orchestrator. Server start/stop, /proc stats and the profile summary: lib/harness.js.
// ---------------------------------------------------------------------------------------------

/** Newest mtime (ms) of the files below dir: tells whether dist/ was rebuilt while the peers ran. */
function newestMtime(dir) {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)
  }
  return newest
}

/** A comma-separated list of integers >= 1 (or `none`: empty). */
function listArg(name, value) {
  if (value === 'none' || value === '') return []
  return [...new Set(String(value).split(',').map((v) => int(name, v.trim())))]
}

/** The counters and histograms of one model read from /metrics (summed over label sets). */
async function readMetrics(base) {
  const text = await (await fetch(`${base}/metrics`)).text()
  const errors = text
    .split('\n')
    .filter((l) => l.startsWith('inference_stream_items_total{') && l.includes('outcome="error"'))
    .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
  return {
    billed: metricSum(text, 'inference_stream_billed_items_total'),
    batchItems: metricSum(text, 'inference_stream_batch_size_sum'),
    batches: metricSum(text, 'inference_stream_batch_size_count'),
    batchSeconds: metricSum(text, 'inference_stream_batch_seconds_sum'),
    errorItems: errors,
  }
}

/**
 * The warm-up: one POST of the known texts with wait_for_model (the model loads), checked. Returns
 * {ms, problem}; problem null when the answer is right.
 */
async function warmUp(base, model, task, token) {
  const known = KNOWN[task] ?? [{ text: 'I bought this umbrella last week and it works.', label: null }]
  const t0 = performance.now()
  const body = {
    inputs: known.map((k) => inputsOf(task, k.text)),
    ...(task === 'zero-shot-classification' ? { parameters: ZS_PARAMETERS } : {}),
    options: { wait_for_model: true, use_cache: false },
  }
  let res
  let json
  try {
    res = await fetch(`${base}/models/${model}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(300_000),
    })
    json = await res.json()
  } catch (err) {
    return { ms: performance.now() - t0, problem: `warm-up request failed: ${err.message}` }
  }
  const ms = performance.now() - t0
  if (!res.ok || !Array.isArray(json) || json.length !== known.length) return { ms, problem: `warm-up answered ${res.status} ${JSON.stringify(json).slice(0, 300)}` }
  const labels = []
  for (let k = 0; k < known.length; k++) {
    // A list of strings gets one output per string, each shaped as a single string's would be.
    const one = task === 'text-classification' ? [json[k]] : json[k]
    const shape = checkShape(task, inputsOf(task, known[k].text), one)
    if (shape.problem) return { ms, problem: `warm-up output ${k} (${shape.problem}): ${JSON.stringify(json[k]).slice(0, 300)}` }
    labels.push(shape.label ?? null)
  }
  // The known labels: only where the model has them (POSITIVE/NEGATIVE; the candidate labels always).
  const hasLabels = task === 'zero-shot-classification' || (task === 'text-classification' && json.every((x) => x.some((y) => /^(POSITIVE|NEGATIVE)$/.test(y.label))))
  if (hasLabels) {
    for (let k = 0; k < known.length; k++) {
      if (labels[k] !== known[k].label) return { ms, problem: `known text ${JSON.stringify(known[k].text)} got ${labels[k]}, expected ${known[k].label}` }
    }
  }
  return { ms, problem: null, knownLabels: hasLabels ? labels : null }
}

const fmtX = (r) => (r == null ? 'n/a' : `${r.toFixed(2)}×`)
const fmtF = (x, d = 1) => (x == null ? 'n/a' : x.toFixed(d))
const median = (xs) => {
  const s = xs.filter((x) => x != null).sort((a, b) => a - b)
  return s.length === 0 ? null : s[Math.floor((s.length - 1) / 2)]
}

async function orchestrate() {
  const sizes = args.quick ? QUICK : DEFAULTS
  const N = args.items !== undefined ? int('items', args.items) : sizes.items
  const NZ = args['zs-items'] !== undefined ? int('zs-items', args['zs-items']) : sizes.zsItems
  const NH = args['http-items'] !== undefined ? int('http-items', args['http-items']) : sizes.httpItems
  const NB = args['breakdown-items'] !== undefined ? int('breakdown-items', args['breakdown-items']) : sizes.breakdownItems
  const C = int('concurrency', args.concurrency)
  const W = int('workers', args.workers)
  const runs = runsArg(args)
  const batches = listArg('max-batches', args['max-batches'])
  const singleWorker = listArg('single-worker', args['single-worker'])
  if (batches.length === 0) {
    process.stderr.write('--max-batches needs at least one size\n')
    process.exit(2)
  }
  const top = Math.max(...batches)
  const model = args.model
  const task = taskOf(model, args.task)
  if (task === 'zero-shot-classification') {
    process.stderr.write('--model is the single-text model; zero-shot runs with --zs-model\n')
    process.exit(2)
  }
  const zsModel = args['zs-model']
  const serveExtra = []
  if (args['onnx-threads'] !== undefined) serveExtra.push('--onnx-threads', String(int('onnx-threads', args['onnx-threads'], 0)))
  if (args['max-wait-ms'] !== undefined) serveExtra.push('--max-wait-ms', String(int('max-wait-ms', args['max-wait-ms'], 0)))

  checkBuild([CLI, LIB], 'dist/ is missing: run `npm run build` first\n')
  const DIST = path.join(ROOT, 'dist')
  const distBuilt = newestMtime(DIST)

  // The models: the tiny generated ones (written fresh: a few hundred kB), or --models DIR.
  let modelsDir
  if (args.models !== undefined) modelsDir = path.resolve(args.models)
  else {
    modelsDir = path.join(os.tmpdir(), 'inference-stream-bench', 'tiny-models')
    const { makeTinyModels } = await import(pathToFileURL(TINY_MODELS_JS).href)
    await makeTinyModels(modelsDir)
  }

  const serve = (w, b) => [CLI, 'serve', '--port', '0', '--log-level', 'warn', '--models', modelsDir, '--workers', String(w), '--max-batch', String(b), ...serveExtra]
  const peers = [
    ...batches.map((b) => ({ name: `b${b}`, group: 'model', model, task, peer: 'stream', workers: W, maxBatch: b, items: N, what: `InferenceStream v1, ${model}` })),
    ...singleWorker.map((b) => ({ name: `b${b}-w1`, group: 'model-w1', model, task, peer: 'stream', workers: 1, maxBatch: b, items: N, what: `InferenceStream v1, ${model}` })),
    ...(args['no-zs'] ? [] : batches.map((b) => ({ name: `zs-b${b}`, group: 'zs', model: zsModel, task: 'zero-shot-classification', peer: 'stream', workers: W, maxBatch: b, items: NZ, what: `InferenceStream v1, ${zsModel} zero-shot, 3 labels` }))),
    ...(args['no-http'] ? [] : [{ name: `http-b${top}`, group: 'http', model, task, peer: 'http', workers: W, maxBatch: top, items: NH, what: `fetch + p-limit(${C}), 1 POST/item, ${model}` }]),
  ]
  const only = args.only ? new Set(args.only.split(',')) : null
  const selected = only ? peers.filter((p) => only.has(p.name)) : peers
  const breakdownModels = args['no-breakdown'] || (only && !only.has('breakdown'))
    ? []
    : [{ model, task }, ...(args['no-zs'] ? [] : [{ model: zsModel, task: 'zero-shot-classification' }])]
  if (selected.length === 0 && breakdownModels.length === 0) {
    process.stderr.write(`--only matches nothing; peers: ${peers.map((p) => p.name).join(', ')}, breakdown\n`)
    process.exit(2)
  }

  if (args.profile) mkdirSync(PROFILE_DIR, { recursive: true })
  process.stderr.write(
    `batching: ${model} (${task}) ${N} items, ${zsModel} zero-shot ${NZ} items, HTTP ${NH} items, concurrency ${C}, ` +
      `--max-batch ${batches.join('/')} on --workers ${W}` + (singleWorker.length ? ` (and ${singleWorker.join('/')} on --workers 1)` : '') +
      `, breakdown ${NB} items, ${runs} run(s) per peer; models in ${modelsDir}\n`,
  )
  const loadBefore = loadBeforeRuns()

  const all = new Map(selected.map((p) => [p.name, []]))
  const breakdowns = new Map(breakdownModels.map((m) => [m.model, []]))
  const profiles = []
  let failed = false
  // Interleaved runs (a b c … a b c …) so a drift of the machine does not favour one peer.
  for (let r = 0; r < runs; r++) {
    for (const peer of selected) {
      const token = `bench-${peer.name}-${r}`
      let server
      try {
        server = await startServer([...profileFlags(args.profile), ...serve(peer.workers, peer.maxBatch)], peer.name)
      } catch (err) {
        process.stderr.write(`\n!!! ${peer.name}: ${err.message}\n`)
        all.get(peer.name).push({ ok: false, error: err.message })
        failed = true
        continue
      }
      const before = profilesBefore(args.profile)
      const warm = await warmUp(server.base, peer.model, peer.task, token)
      let result
      if (warm.problem) {
        result = { ok: false, error: warm.problem, firstProblems: [warm.problem] }
      } else {
        const m0 = await readMetrics(server.base)
        const clientArgs = ['--peer', peer.peer, '--base', server.base, '--model', peer.model, '--task', peer.task, '--items', String(peer.items), '--max-in-flight', String(C), '--token', token]
        const s0 = procStats(server.child.pid)
        result = await runChild(THIS_FILE, 'client', clientArgs)
        addServerStats(result, s0, procStats(server.child.pid))
        // The bill must grow by exactly the items of the run (the warm-up was billed before m0).
        await checkBill(result, server.base, m0.billed + peer.items, peer.name)
        try {
          const m1 = await readMetrics(server.base)
          result.billedDuringRun = m1.billed - m0.billed
          result.modelCalls = m1.batches - m0.batches
          result.meanBatch = result.modelCalls > 0 ? (m1.batchItems - m0.batchItems) / result.modelCalls : null
          result.modelCallSec = m1.batchSeconds - m0.batchSeconds
          result.serverErrorItems = m1.errorItems - m0.errorItems
          if (result.serverErrorItems > 0) {
            result.ok = false
            result.firstProblems = [...(result.firstProblems ?? []), `the server counted ${result.serverErrorItems} error items`]
          }
        } catch (err) {
          process.stderr.write(`${peer.name}: could not read /metrics: ${err.message}\n`)
        }
      }
      result.warmUpMs = warm.ms
      await stopServer(server.child)
      if (args.profile) {
        for (const file of adoptProfiles(before, `batching.${peer.name}.run${r + 1}`)) {
          const thread = /\.thread(\d+)\.cpuprofile$/.exec(file)?.[1]
          profiles.push({ peer: thread ? `${peer.name} (server thread ${thread})` : `${peer.name} (server main thread)`, run: r, file })
        }
      }
      all.get(peer.name).push(result)
      const line =
        `${peer.name.padEnd(9)} run ${r + 1}/${runs}: ${fmtInt(result.itemsPerSec)} items/s, ${fmtS(result.wallMs != null ? result.wallMs / 1000 : null)} s, ` +
        `mean batch ${fmtF(result.meanBatch)}, server CPU ${fmtS(result.serverCpuSec)} s, load ${fmtF(os.loadavg()[0], 2)}`
      if (result.ok) {
        process.stderr.write(`${line}\n`)
      } else {
        failed = true
        process.stderr.write(
          `\n!!! ${peer.name} FAILED its checks: ${result.error ?? ''}\n` +
            `!!! answered ${result.answered ?? 'n/a'}/${peer.items}, missing ${result.missing ?? 'n/a'}, duplicates ${result.duplicates ?? 'n/a'}, ` +
            `unknown ${result.unknown ?? 'n/a'}, wrong outputs ${result.wrongOutputs ?? 'n/a'}, wrong labels ${result.wrongLabels ?? 'n/a'}, ` +
            `error results ${result.errorResults ?? 'n/a'}, out of order ${result.outOfOrder ?? 'n/a'}, billed during the run ${result.billedDuringRun ?? 'n/a'}\n` +
            `!!! ${(result.firstProblems ?? []).join('\n!!! ')}\n` +
            (result.stderr ? `--- client stderr (tail) ---\n${result.stderr}\n` : '') +
            `--- server stderr (tail) ---\n${server.stderr().slice(-2000)}\n\n`,
        )
      }
    }
    for (const bm of breakdownModels) {
      const res = await runChild(THIS_FILE, 'breakdown', ['--dir', modelsDir, '--model', bm.model, '--task', bm.task, '--items', String(NB), '--batches', batches.join(',')])
      breakdowns.get(bm.model).push(res)
      if (res.ok) {
        process.stderr.write(`breakdown ${bm.model} run ${r + 1}/${runs}: ${res.rows.map((x) => `B=${x.batch} ${fmtInt(x.pipelineItemsPerSec)} items/s`).join(', ')}\n`)
      } else {
        failed = true
        process.stderr.write(`\n!!! breakdown of ${bm.model} FAILED: ${res.error}\n${res.stderr ?? ''}\n`)
      }
    }
  }

  // Every peer must have run the same code: a build during the run (another shell, a test run) breaks that.
  const distRebuilt = newestMtime(DIST) !== distBuilt
  if (distRebuilt) {
    failed = true
    process.stderr.write('\n!!! dist/ was rebuilt while the peers ran: they did not all measure the same code; run again\n')
  }

  // ---- tables
  const rows = selected.map((peer) => ({ peer, ...medianRun(all.get(peer.name), 'itemsPerSec') }))
  const ips = (name) => rows.find((r) => r.peer.name === name)?.med.itemsPerSec ?? null
  const ratio = (a, b) => (ips(a) != null && ips(b) ? ips(a) / ips(b) : null)
  // "vs": over the row of the same group with the smallest B (what batching buys); HTTP over the
  // stream row on the same server settings (what streaming buys).
  const baseOf = (peer) => {
    if (peer.group === 'http') return `b${peer.maxBatch}`
    const same = peers.filter((p) => p.group === peer.group).sort((a, b) => a.maxBatch - b.maxBatch)[0]
    return same && same.name !== peer.name ? same.name : null
  }
  let table =
    '| peer | what | server | items | items/s | vs | mean batch | model calls | call ms | call µs/item | server CPU µs/item | client CPU µs/item | wall s | in flight ≤ | server peak RSS MiB | warm-up s | checks |\n' +
    '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n'
  for (const r of rows) {
    const m = r.med
    const b = baseOf(r.peer)
    const vs = b && ips(b) && m.itemsPerSec != null ? m.itemsPerSec / ips(b) : null
    const items = r.peer.items
    const checks = !r.ok ? '**FAILED**' : `once${m.ordered ? ', in order' : ''}${m.labelsChecked ? ', labels' : m.plausibleAgreement != null ? `, agree ${(m.plausibleAgreement * 100).toFixed(0)}%` : ''}`
    table +=
      `| ${r.peer.name} | ${r.peer.what} | \`--workers ${r.peer.workers} --max-batch ${r.peer.maxBatch}\` | ${fmtInt(items)} | ${fmtInt(m.itemsPerSec)} | ` +
      `${b ? `${fmtX(vs)} (over ${b})` : '1.00×'} | ${fmtF(m.meanBatch)} | ${fmtInt(m.modelCalls)} | ${m.modelCalls ? fmtF((m.modelCallSec * 1000) / m.modelCalls, 2) : 'n/a'} | ` +
      `${m.modelCallSec != null ? fmtInt((m.modelCallSec * 1e6) / items) : 'n/a'} | ${m.serverCpuSec != null ? fmtInt((m.serverCpuSec * 1e6) / items) : 'n/a'} | ` +
      `${m.cpuSec != null ? fmtInt((m.cpuSec * 1e6) / items) : 'n/a'} | ${fmtS(m.wallMs != null ? m.wallMs / 1000 : null)} | ${m.peakInFlight ?? 'n/a'} | ` +
      `${fmtMiB(m.serverPeakRssKiB)} | ${fmtS(m.warmUpMs != null ? m.warmUpMs / 1000 : null)} | ${checks} |\n`
  }

  const ratios = { model: {}, modelOneWorker: {}, zeroShot: {}, streamOverHttp: null }
  const small = Math.min(...batches)
  for (const b of batches) {
    if (b === small) continue
    ratios.model[`b${b}/b${small}`] = ratio(`b${b}`, `b${small}`)
    ratios.zeroShot[`zs-b${b}/zs-b${small}`] = ratio(`zs-b${b}`, `zs-b${small}`)
  }
  if (singleWorker.length > 1) {
    const s1 = Math.min(...singleWorker)
    for (const b of singleWorker) if (b !== s1) ratios.modelOneWorker[`b${b}-w1/b${s1}-w1`] = ratio(`b${b}-w1`, `b${s1}-w1`)
  }
  ratios.streamOverHttp = ratio(`b${top}`, `http-b${top}`)
  let verdict = '\n'
  const fmtRatios = (o) => Object.entries(o).filter(([, v]) => v != null).map(([k, v]) => `${k} **${fmtX(v)}**`).join(', ')
  if (fmtRatios(ratios.model)) verdict += `\nBatching, ${model} on ${W} workers: ${fmtRatios(ratios.model)}.`
  if (fmtRatios(ratios.modelOneWorker)) verdict += `\nBatching, ${model} on 1 worker: ${fmtRatios(ratios.modelOneWorker)}.`
  if (fmtRatios(ratios.zeroShot)) verdict += `\nBatching, ${zsModel} zero-shot (3 pairs per item) on ${W} workers: ${fmtRatios(ratios.zeroShot)}.`
  if (ratios.streamOverHttp != null) verdict += `\nStreaming over one HTTP request per item, ${model}, \`--max-batch ${top}\`: b${top} / http-b${top} = **${fmtX(ratios.streamOverHttp)}**.`
  verdict += '\n'

  // Breakdown: each cell's median over the runs.
  const breakdownRows = []
  for (const bm of breakdownModels) {
    const okRuns = breakdowns.get(bm.model).filter((x) => x.ok)
    for (const B of batches) {
      const cells = okRuns.map((x) => x.rows.find((y) => y.batch === B)).filter(Boolean)
      const cell = (key) => median(cells.map((c) => c[key]))
      breakdownRows.push({
        model: bm.model,
        task: bm.task,
        batch: B,
        pipelineItemsPerSec: cell('pipelineItemsPerSec'),
        modelItemsPerSec: cell('modelItemsPerSec'),
        tokenizeItemsPerSec: cell('tokenizeItemsPerSec'),
        tokenizerShare: cell('tokenizerShare'),
        paddedTokensPerItem: cell('paddedTokensPerItem'),
        runs: cells,
      })
    }
  }
  let btable = ''
  if (breakdownRows.length > 0) {
    const us = (perSec) => (perSec ? 1e6 / perSec : null)
    btable =
      `\nBreakdown: the model call alone, no server, in one process over the same ${fmtInt(NB)} texts in batches of B, calls one after the other ` +
      `(each the faster of 2 alternated passes): \`TransformersPipeline.run\`, what a batch worker calls (in dist/ now: the model in a thread of its own); ` +
      `the same model on the calling thread (\`TransformersModel.run\`: tokenizer, ONNX Runtime, outputs) where dist/ has it; and the tokenizer alone. ` +
      `"pipeline vs B=${small}" bounds what batching can buy one worker; the tokenizer share (of the on-thread call) is the part batching does not make cheaper per item; ` +
      `"thread hop" is the pipeline's µs/item over the on-thread call's.\n\n` +
      `| model | B | pipeline items/s | pipeline µs/item | pipeline vs B=${small} | on-thread items/s | on-thread µs/item | thread hop µs/item | tokenizer µs/item | ONNX + outputs µs/item | tokenizer share | padded tokens/item |\n` +
      '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n'
    for (const x of breakdownRows) {
      const b1 = breakdownRows.find((y) => y.model === x.model && y.batch === small)
      const pipeUs = us(x.pipelineItemsPerSec)
      const modelUs = us(x.modelItemsPerSec)
      const tokUs = us(x.tokenizeItemsPerSec)
      const callUs = modelUs ?? pipeUs
      btable +=
        `| ${x.model}${x.task === 'zero-shot-classification' ? ' (zero-shot, 3 pairs/item)' : ''} | ${x.batch} | ${fmtInt(x.pipelineItemsPerSec)} | ${fmtInt(pipeUs)} | ` +
        `${b1?.pipelineItemsPerSec && x.pipelineItemsPerSec ? fmtX(x.pipelineItemsPerSec / b1.pipelineItemsPerSec) : 'n/a'} | ${fmtInt(x.modelItemsPerSec)} | ${fmtInt(modelUs)} | ` +
        `${pipeUs != null && modelUs != null ? fmtInt(pipeUs - modelUs) : 'n/a'} | ${fmtInt(tokUs)} | ${callUs != null && tokUs != null ? fmtInt(callUs - tokUs) : 'n/a'} | ` +
        `${x.tokenizerShare != null ? `${(x.tokenizerShare * 100).toFixed(0)}%` : 'n/a'} | ${fmtF(x.paddedTokensPerItem)} |\n`
    }
  }

  const date = new Date().toISOString()
  const machine = machineInfo(loadBefore, {
    ws: pkgVersion('ws'),
    transformers: pkgVersion('@huggingface/transformers'),
    onnxruntimeNode: pkgVersion('onnxruntime-node'),
  })
  const commit = machine.commit
  const config = {
    model,
    task,
    zsModel: args['no-zs'] ? null : zsModel,
    candidateLabels: CANDIDATE_LABELS,
    modelsDir: args.models !== undefined ? modelsDir : 'tiny models of test/fixtures/tiny-models.js, generated at start',
    items: N,
    zsItems: NZ,
    httpItems: NH,
    breakdownItems: NB,
    concurrency: C,
    workers: W,
    maxBatches: batches,
    singleWorker,
    runs,
    distBuiltAt: new Date(distBuilt).toISOString(),
    distRebuiltDuringRun: distRebuilt,
    serveArgs: serve(W, top).slice(1),
    profile: args.profile,
  }
  const command = commandLine('batching')
  const question =
    'Does batching pay for a real model (ONNX through transformers.js)? Items/s of a text-classification model and of zero-shot with --max-batch 1 vs 8 vs 32, the mean batch the workers reached, and streaming vs one HTTP request per item at the largest batch.'
  const md =
    `# batching\n\n${question}\n\n` +
    `${date} · \`${command}\` · node ${machine.node} · ${machine.cpus}× ${machine.cpuModel} · transformers.js ${machine.transformers} · onnxruntime-node ${machine.onnxruntimeNode}` +
    (commit ? ` · ${commit}` : '') +
    ` · load ${machine.loadAvgBefore} → ${machine.loadAvgAfter}\n\n` +
    `${model} (${task}): ${fmtInt(N)} items per stream peer, ${fmtInt(NH)} for HTTP (compare items/s); ${zsModel} zero-shot with candidate labels ${CANDIDATE_LABELS.join(', ')}: ${fmtInt(NZ)} items; ` +
    `concurrency ${C} for every peer, ${runs} run(s) per peer${runs > 1 ? ' (median shown)' : ''}, a fresh \`${serve(W, top).slice(1).join(' ').replace(modelsDir, 'DIR')}\` (with each row's workers and max-batch) per run, ` +
    `its model loaded by a warm-up request before the clock starts.\n\n${table}${verdict}${btable}`

  process.stdout.write(`\n${table}${verdict}${btable}`)
  if (!args['no-write']) {
    const json = {
      question,
      date,
      command,
      machine,
      config,
      ok: !failed,
      ratios,
      peers: rows.map((r) => ({
        name: r.peer.name,
        what: r.peer.what,
        model: r.peer.model,
        task: r.peer.task,
        client: r.peer.peer,
        workers: r.peer.workers,
        maxBatch: r.peer.maxBatch,
        items: r.peer.items,
        itemsPerSec: r.med.itemsPerSec ?? null,
        wallMs: r.med.wallMs ?? null,
        meanBatch: r.med.meanBatch ?? null,
        modelCalls: r.med.modelCalls ?? null,
        modelCallSec: r.med.modelCallSec ?? null,
        serverCpuSec: r.med.serverCpuSec ?? null,
        clientCpuSec: r.med.cpuSec ?? null,
        serverPeakRssKiB: r.med.serverPeakRssKiB ?? null,
        clientPeakRssKiB: r.med.peakRssKiB ?? null,
        peakInFlight: r.med.peakInFlight ?? null,
        warmUpMs: r.med.warmUpMs ?? null,
        ok: r.ok,
        runs: r.runs,
      })),
      breakdown: breakdownRows,
    }
    const tiny = model === 'tiny/sentiment' && (args['no-zs'] || zsModel === 'tiny/nli') && args.models === undefined
    const name = tiny ? 'batching' : `batching-${[model, ...(args['no-zs'] ? [] : [zsModel])].map((m) => m.replace(/[^A-Za-z0-9._-]+/g, '-')).join('-')}`
    writeResults(name, args.quick, json, md)
  }
  writeProfileSummaries(profiles)
  exitIfFailed(failed)
}

// `--role summarize-profile --file X.cpuprofile` summarises a profile taken by hand.
await runRole(args, { client: runClient, breakdown: runBreakdown, orchestrator: orchestrate })
