#!/usr/bin/env node
/*
 * Question
 *   Does length-aware batching (`serve --batching length`: a worker batches queued items of
 *   similar length, the oldest always in) beat FIFO batching (`--batching fifo`) on a realistic
 *   model over mixed-length texts, and by how much? Issue 17's goal: ≥ 1.3× items/s. FIFO batches
 *   of 32 of these texts carry ~256% padded tokens over the real ones, sorted ones ~6%
 *   (benchmarks/results/model-efficiency.md): the model does that much wasted work.
 *
 * Fixture
 *   The model and texts of benchmarks/model-efficiency.js (its `server` peer): the generated
 *   MiniLM-L6-shaped classifier (test/fixtures/realistic-model.js: hidden 384, 6 layers, 12 heads,
 *   ~50 MB fp32; `--quick`: the small shape) and item i's text made from i alone, 4 to 250 words
 *   drawn log-uniformly (6 to ~300 tokens, median ~42). `--items` of them (default 320; `--quick`
 *   128), the same in every run.
 *   Peers, interleaved round by round over `--runs` (default 3), each a fresh
 *   `inference-stream serve --port 0 --models DIR --batching <peer>` (defaults otherwise: 4 batch
 *   workers, --max-batch 32, --max-wait-ms 0, the model in a thread of its own), warmed up with one
 *   `wait_for_model` request; then model-efficiency.js's client role in its own process sends the
 *   texts through `new InferenceStream({protocol: 'v1', ordered: true, maxInFlight: 256})`, timed
 *   from before it connects to its last result:
 *     fifo     `--batching fifo`: each batch is the next 32 queued items, in order.
 *     length   `--batching length`: among the next 256 queued items, the oldest and the 31 nearest
 *              its length (in characters: a token estimate).
 *   Checks (a loud `!!!` and exit 1 when broken): every item answered exactly once and in input
 *   order (the client restores it), each with a probability distribution over the model's labels;
 *   the server's bill grows by exactly the items.
 *
 * Command
 *   npm run build && node benchmarks/length-batching.js              # 320 texts, 3 rounds (~6 min on 2 cores)
 *   node benchmarks/length-batching.js --quick                       # small model, 128 texts, 1 round: smoke test
 *                                                                    # (the small model's cost is not padding: its ratio says little)
 *   node benchmarks/length-batching.js --items 640 --runs 5 --max-in-flight 1024
 *   Results: benchmarks/results/length-batching.json and .md (`-quick` with --quick); the Markdown
 *   is also printed on stdout.
 *
 * How to read the result
 *   items/s: the client's wall rate (median round). "length / fifo" per round is the point: each
 *   round runs both peers back to back, so a ratio is of two runs under the same load; the median,
 *   min and max of those ratios are given. Mean batch and model s come from the server's
 *   /metrics (batches of up to 32; model s is the time inside model calls, summed over batches).
 *   CPU ms/item is client + server CPU per item (ONNX Runtime's threads included), steadier than
 *   wall rates when other work shares the machine: "by CPU" is fifo's CPU per item over length's.
 */
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import {
  CLI, LIB, checkBuild, commandLine, exitIfFailed, fmtS, int, loadBeforeRuns, machineInfo, medianRun, onlyPeers, parseBenchArgs, perRound,
  pkgVersion, runChild, runsArg, startServer, stopServer, writeResults,
} from './lib/harness.js'
import { generatedModel, measureServerPeer } from './lib/server-peer.js'

const CLIENT = fileURLToPath(new URL('./model-efficiency.js', import.meta.url))
const PEERS = ['fifo', 'length']

const args = parseBenchArgs({
  items: { type: 'string' },
  'max-in-flight': { type: 'string', default: '256' },
  seed: { type: 'string', default: '17' },
})

async function main() {
  const quick = args.quick
  const N = args.items !== undefined ? int('items', args.items) : quick ? 128 : 320
  const seed = int('seed', args.seed)
  const inFlight = int('max-in-flight', args['max-in-flight'])
  const runs = runsArg(args)
  const peers = onlyPeers(args, PEERS)
  checkBuild([CLI, LIB], 'dist/ is missing: run `npm run build` first\n')
  const { modelsDir, model, generated } = await generatedModel(quick)
  process.stderr.write(`length-batching: ${N} texts, ${inFlight} in flight, ${runs} round(s) of ${peers.join(', ')}\n`)

  const loadBefore = loadBeforeRuns()
  const common = ['--items', String(N), '--seed', String(seed), '--dir', modelsDir, '--model', model, '--max-in-flight', String(inFlight), ...(quick ? ['--quick'] : [])]
  const all = new Map(peers.map((p) => [p, []]))
  let failed = false
  for (let r = 0; r < runs; r++) {
    for (const peer of peers) {
      process.stderr.write(`  round ${r + 1}: ${peer} ...`)
      const token = `bench-${r}`
      let result
      const server = await startServer([CLI, 'serve', '--port', '0', '--log-level', 'warn', '--models', modelsDir, '--batching', peer], peer)
      try {
        result = await measureServerPeer(server, {
          model,
          token,
          label: peer,
          warmInputs: ['a short warm-up text', 'another one, a little longer than the first'],
          items: N,
          client: () => runChild(CLIENT, 'client', [...common, '--base', server.base, '--token', token]),
        })
        result.cpuMsPerItem = result.cpuSec != null && result.serverCpuSec != null ? ((result.cpuSec + result.serverCpuSec) / N) * 1000 : null
        result.load = os.loadavg()[0]
      } catch (err) {
        result = { ok: false, error: err.message, stderr: server.stderr().slice(-2000) }
      } finally {
        await stopServer(server.child)
      }
      result.peer = peer
      process.stderr.write(result.ok ? ` ${result.itemsPerSec.toFixed(1)} items/s (mean batch ${result.meanBatch?.toFixed(1)}, load ${result.load?.toFixed(1)})\n` : ' FAILED\n')
      if (!result.ok) {
        failed = true
        process.stderr.write(`!!! ${peer}: ${result.error ?? ''} ${JSON.stringify(result.firstProblems ?? [])} ${result.stderr ?? ''}\n`)
      }
      all.get(peer).push(result)
    }
  }

  const med = new Map(peers.map((p) => [p, medianRun(all.get(p), 'itemsPerSec').med]))
  const ratio = perRound(all, 'length', 'fifo')
  // CPU per item, per round: fifo's over length's (how much more work FIFO's batches cost).
  const byCpu = []
  for (let i = 0; i < runs; i++) {
    const f = all.get('fifo')?.[i]
    const l = all.get('length')?.[i]
    if (f?.ok && l?.ok && f.cpuMsPerItem && l.cpuMsPerItem) byCpu.push(f.cpuMsPerItem / l.cpuMsPerItem)
  }
  byCpu.sort((a, b) => a - b)
  const byCpuMedian = byCpu.length ? byCpu[Math.floor((byCpu.length - 1) / 2)] : null
  const fmtX = (x) => (x == null ? 'n/a' : `${x.toFixed(2)}×`)
  const shape = generated.shape
  let md = `# length-batching${quick ? ' (quick)' : ''}\n\n`
  md += `\`${commandLine('length-batching')}\` — ${model} (generated: hidden ${shape.hidden}, ${shape.layers} layers, ${shape.heads} heads, FFN ${shape.ffn}, ${(generated.bytes / 1e6).toFixed(0)} MB fp32), ` +
    `${N} mixed-length texts, InferenceStream v1 with ${inFlight} in flight, \`serve\` defaults but \`--batching\`; ${runs} round(s), peers interleaved; load average ${loadBefore} → ${os.loadavg()[0].toFixed(2)}.\n\n`
  md += '| peer | items/s (median) | per round | mean batch | model s | CPU ms/item |\n|---|---:|---|---:|---:|---:|\n'
  for (const p of peers) {
    const m = med.get(p)
    if (!m) continue
    md += `| ${p}${m.ok ? '' : ' **FAILED**'} | ${m.itemsPerSec?.toFixed(1) ?? 'n/a'} | ${all.get(p).map((x) => (x.ok ? x.itemsPerSec.toFixed(1) : 'failed')).join(', ')} | ${m.meanBatch?.toFixed(1) ?? 'n/a'} | ${fmtS(m.callSec)} | ${m.cpuMsPerItem?.toFixed(1) ?? 'n/a'} |\n`
  }
  if (ratio) {
    md += `\n**length / fifo = ${fmtX(ratio.median)}** items/s, median of ${ratio.runs.length} rounds (${ratio.runs.map((x) => x.toFixed(2)).join(', ')}; min ${fmtX(ratio.min)}, max ${fmtX(ratio.max)}); goal ≥ 1.3: ${ratio.median >= 1.3 ? 'met' : '**not met**'}. ` +
      `By CPU per item (fifo's over length's, per round): ${fmtX(byCpuMedian)}.\n`
  }
  process.stdout.write(`\n${md}`)
  if (!args['no-write']) {
    writeResults('length-batching', quick, {
      command: commandLine('length-batching'),
      model,
      generatedShape: shape,
      items: N,
      maxInFlight: inFlight,
      runs,
      ratio,
      byCpu: { median: byCpuMedian, runs: byCpu },
      medians: Object.fromEntries(med),
      all: Object.fromEntries(all),
      machine: machineInfo(loadBefore, { transformers: pkgVersion('@huggingface/transformers'), onnxruntime: pkgVersion('onnxruntime-node') }),
    }, md)
  }
  exitIfFailed(failed)
}

await main()
