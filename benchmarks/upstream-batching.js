#!/usr/bin/env node
/*
 * Question
 *   How many items/s does a model served by an upstream (`--upstream`) move when each pulled batch
 *   goes upstream as one request with `inputs: [..]` (batched, the default for list-taking tasks),
 *   against one request per item (`--upstream-batch ID=0`), with our own server as the upstream?
 *
 * Fixture
 *   Two server processes: the upstream U (`inference-stream serve --port 0`, builtins) and the front
 *   server F (`serve --port 0 --upstream remote/batched=U/models/builtin/sentiment --upstream
 *   remote/single=… --task remote/batched=text-classification --task remote/single=text-classification
 *   --upstream-batch remote/single=0`, defaults otherwise: 4 workers, --max-batch 32,
 *   --upstream-concurrency 8). Both peers use the same F and U, interleaved run by run:
 *     batched   items to `remote/batched`: one POST of up to 32 texts per pulled batch.
 *     single    items to `remote/single`: one POST per item, at most 8 in flight.
 *   The client is a child process (this file with `--role client`): `infer()` from dist/ over
 *   --items texts (default 4 000), one of three sentiment-bearing templates plus the item's
 *   number and a tag of the peer and run (so U's result cache never answers), maxInFlight 1024.
 *   Checks, each a loud `!!!` and exit 1 when broken: every item answered in order, no error, each
 *   output a list of one list of two labels whose first is the template's (POSITIVE / NEGATIVE /
 *   POSITIVE for the neutral one, 0.5 / 0.5), both peers' outputs equal item by item in a round; F billed every item;
 *   U billed as many items as it got requests (a list is one item there).
 *
 * Command
 *   npm run build && node benchmarks/upstream-batching.js     # 4 000 items, 3 interleaved runs (~1.5 min on 2 cores)
 *   node benchmarks/upstream-batching.js --quick              # 1 000 items, 1 run: a smoke test (~30 s)
 *   node benchmarks/upstream-batching.js --items 10000 --runs 5
 *   Results: benchmarks/results/upstream-batching.json and .md (`-quick` with --quick); the
 *   Markdown is also printed on stdout.
 *
 * How to read the result
 *   items/s: items answered per second of the client's wall time (higher is better); "vs single"
 *   is batched over single in the same round (median over rounds). "upstream requests" is what U
 *   billed during the run (one per request), "items/request" the mean list length the front
 *   server reached. CPU s of F and U while the items flowed: the three processes share the two
 *   cores, so a peer whose F + U CPU is near 2 × wall time is bound by the machine, not by waits.
 */
import { fileURLToPath } from 'node:url'
import {
  CLI, LIB, addServerStats, checkBill, checkBuild, commandLine, exitIfFailed, fmtInt, fmtS, int, loadBeforeRuns,
  machineInfo, medianRun, metricSum, parseBenchArgs, perRound, procStats, runChild, runRole, runsArg, startServer, stopServer,
  writeResults,
} from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const PEERS = { batched: 'remote/batched', single: 'remote/single' }
const TEMPLATES = [
  ['I love this, it is wonderful and great', 'POSITIVE'],
  ['This is terrible and awful, a bad one', 'NEGATIVE'],
  ['A table with four legs', 'POSITIVE'], // neutral: 0.5 / 0.5, POSITIVE listed first
]

const args = parseBenchArgs({ items: { type: 'string' }, url: { type: 'string' }, model: { type: 'string' }, tag: { type: 'string' } })

await runRole(args, { orchestrator, client })

/** The client: sends the texts through `infer()`, checks and times them, prints one JSON line. */
async function client() {
  const { infer } = await import(LIB)
  const items = int('items', args.items)
  const tag = args.tag // `<peer>-r<run>`, passed by the orchestrator
  const texts = (function* () {
    for (let i = 0; i < items; i++) yield `${TEMPLATES[i % 3][0]} ${tag} ${i}`
  })()
  const labels = []
  const outputs = []
  const problems = []
  const started = performance.now()
  let n = 0
  for await (const r of infer(texts, { url: args.url, model: args.model, token: args.token, maxInFlight: 1024 })) {
    if (r.error) problems.push(`item ${n}: ${r.error.code} ${r.error.message}`)
    else {
      const first = r.outputs?.[0]?.[0]?.label
      if (r.outputs?.length !== 1 || r.outputs[0].length !== 2 || first !== TEMPLATES[n % 3][1]) problems.push(`item ${n}: ${JSON.stringify(r.outputs)}`)
      labels.push(r.outputs[0].map((x) => `${x.label}:${x.score}`).join(','))
    }
    outputs.push(r)
    n++
  }
  const seconds = (performance.now() - started) / 1000
  if (n !== items) problems.push(`${n} results for ${items} items`)
  process.stdout.write(
    `${JSON.stringify({ ok: problems.length === 0, items: n, seconds, itemsPerSec: n / seconds, firstProblems: problems.slice(0, 5), outputs: labels })}\n`,
  )
}

async function orchestrator() {
  checkBuild([CLI, LIB], 'dist/ is missing: run `npm run build` first\n')
  const quick = args.quick
  const items = args.items !== undefined ? int('items', args.items) : quick ? 1_000 : 4_000
  const runs = runsArg(args)
  const loadBefore = loadBeforeRuns()

  const up = await startServer([CLI, 'serve', '--port', '0', '--log-level', 'warn'], 'upstream')
  const url = `${up.base}/models/builtin/sentiment`
  const front = await startServer(
    [
      CLI, 'serve', '--port', '0', '--log-level', 'warn',
      '--upstream', `${PEERS.batched}=${url}`, '--upstream', `${PEERS.single}=${url}`,
      '--task', `${PEERS.batched}=text-classification`, '--task', `${PEERS.single}=text-classification`,
      '--upstream-batch', `${PEERS.single}=0`,
    ],
    'front',
  )
  const all = new Map(Object.keys(PEERS).map((p) => [p, []]))
  let failed = false
  let frontBilled = 0
  try {
    for (let run = 0; run < runs; run++) {
      const round = {}
      for (const peer of Object.keys(PEERS)) {
        const upBilledBefore = metricSum(await (await fetch(`${up.base}/metrics`)).text(), 'inference_stream_billed_items_total')
        const frontBefore = procStats(front.child.pid)
        const upBefore = procStats(up.child.pid)
        const result = await runChild(THIS_FILE, 'client', ['--items', String(items), '--tag', `${peer}-r${run}`, '--url', front.base, '--model', PEERS[peer], '--token', args.token], {})
        const upAfter = procStats(up.child.pid)
        addServerStats(result, frontBefore, procStats(front.child.pid))
        result.upstreamCpuSec = upAfter.cpuSec != null && upBefore.cpuSec != null ? upAfter.cpuSec - upBefore.cpuSec : null
        result.upstreamRequests = metricSum(await (await fetch(`${up.base}/metrics`)).text(), 'inference_stream_billed_items_total') - upBilledBefore
        result.itemsPerRequest = result.upstreamRequests > 0 ? result.items / result.upstreamRequests : null
        if (peer === 'single' && result.upstreamRequests !== items) {
          result.ok = false
          result.firstProblems = [...(result.firstProblems ?? []), `single: ${result.upstreamRequests} upstream requests for ${items} items`]
        }
        frontBilled += result.items ?? 0
        await checkBill(result, front.base, frontBilled, peer)
        round[peer] = result.outputs
        delete result.outputs
        all.get(peer).push(result)
        process.stderr.write(`run ${run + 1}/${runs} ${peer}: ${fmtInt(result.itemsPerSec)} items/s, ${fmtInt(result.upstreamRequests)} upstream requests${result.ok ? '' : ` FAILED ${JSON.stringify(result.firstProblems ?? result.error)}`}\n`)
      }
      // Same texts but for the tag: the same labels and scores, batched or not.
      const a = round.batched ?? []
      const b = round.single ?? []
      const differ = a.findIndex((x, i) => x !== b[i])
      if (a.length !== b.length || differ >= 0) {
        all.get('batched').at(-1).ok = false
        all.get('batched').at(-1).firstProblems = [`round ${run + 1}: outputs differ from single at item ${differ}: ${a[differ]} vs ${b[differ]}`]
      }
    }
  } finally {
    await stopServer(front.child)
    await stopServer(up.child)
  }

  const rows = Object.keys(PEERS).map((peer) => ({ peer, ...medianRun(all.get(peer), 'itemsPerSec') }))
  for (const r of rows) {
    if (!r.ok) {
      failed = true
      process.stderr.write(`!!! ${r.peer} failed: ${JSON.stringify(r.runs.find((x) => !x.ok))}\n`)
    }
  }
  const ratio = perRound(all, 'batched', 'single')
  const json = {
    date: new Date().toISOString(),
    command: commandLine('upstream-batching'),
    machine: machineInfo(loadBefore, {}),
    items,
    runs,
    peers: Object.fromEntries(rows.map((r) => [r.peer, { median: r.med, runs: r.runs, ok: r.ok }])),
    batchedOverSingle: ratio,
  }
  let md = `# Upstream batching\n\n\`${json.command}\` — ${items} builtin/sentiment items through a front server whose model is an upstream pointing at a second server; ${runs} interleaved run(s), median by items/s.\n\n`
  md += '| peer | items/s | vs single | upstream requests | items/request | front CPU s | upstream CPU s | wall s |\n|---|--:|--:|--:|--:|--:|--:|--:|\n'
  for (const r of rows) {
    const m = r.med
    const vs = r.peer === 'batched' ? (ratio ? `${ratio.median.toFixed(1)}×` : 'n/a') : '1.0×'
    md += `| ${r.peer} | ${fmtInt(m.itemsPerSec)} | ${vs} | ${fmtInt(m.upstreamRequests)} | ${m.itemsPerRequest?.toFixed(1) ?? 'n/a'} | ${fmtS(m.serverCpuSec)} | ${fmtS(m.upstreamCpuSec)} | ${fmtS(m.seconds)} |\n`
  }
  if (ratio) md += `\nbatched / single per round: ${ratio.runs.map((x) => `${x.toFixed(2)}×`).join(', ')} (min ${ratio.min.toFixed(2)}×, max ${ratio.max.toFixed(2)}×).\n`
  md += `\nMachine: ${json.machine.cpus} × ${json.machine.cpuModel}, Node ${json.machine.node}, load ${json.machine.loadAvgBefore} before / ${json.machine.loadAvgAfter} after; commit ${json.machine.commit}.\n`
  process.stdout.write(md)
  if (!args['no-write']) writeResults('upstream-batching', quick, json, md)
  exitIfFailed(failed)
}

