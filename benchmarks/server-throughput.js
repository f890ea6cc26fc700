#!/usr/bin/env node
/*
 * Question
 *   How many items/s does our server move with `builtin/echo`, one message per item (legacy
 *   protocol) vs v1 batched frames (100 payloads per frame, acked), compared with a plain `ws`
 *   echo server (the transport's ceiling) in the same run?
 *
 * Fixture
 *   N small items (default 200 000; `--quick`: 20 000), item i = {"id": "<i>", "inputs":
 *   "review text number <i>"}, all on one websocket with one token. Every server runs in its own
 *   child process and every client in another child process (this file re-invoked with `--role`),
 *   so the two never share an event loop. Peers, measured one after the other in the same run:
 *     ws-echo           plain `ws` server that parses each message and answers
 *                       {"type":"results","id","outputs":inputs}: one message per item. The ceiling.
 *     ws-echo-batched   the same plain server, 100 payloads per frame answered with one array frame:
 *                       the ceiling for batched framing.
 *     legacy            our server (`node dist/cli/index.js serve`), no subprotocol, one message per item.
 *     v1                our server, subprotocol inference-stream.v1, 100 payloads per frame, one ack
 *                       per received frame.
 *   Every client pipelines with the same bounded window (default 2000 items sent and unanswered), so
 *   no ws buffer grows without bound. The client checks that every id was answered exactly once
 *   with its own inputs, reports a mismatch loudly and exits non-zero (then so does this script).
 *   For our server it also reads /metrics and checks that exactly N items were billed.
 *
 * Command
 *   npm run build && node benchmarks/server-throughput.js             # N = 200 000, 3 runs: about 2 min on 2 cores
 *   node benchmarks/server-throughput.js --quick                      # N = 20 000, 1 run: smoke test
 *   node benchmarks/server-throughput.js --items 500000 --window 4000 --frame 100 --runs 3
 *   node benchmarks/server-throughput.js --workers 4 --max-batch 128  # passed to `serve`
 *   node benchmarks/server-throughput.js --only v1 --profile          # + CPU profile of each server
 *   (`npm run bench:server` runs the default.) Results go to benchmarks/results/server-throughput.json
 *   and .md (`-quick` suffix with --quick); the Markdown table is also printed on stdout.
 *
 * How to read the result
 *   items/s: items answered per second of wall time, from the socket's open to the last result
 *   (higher is better). "1st half → 2nd half" splits it by items answered, so a rate that falls
 *   as the server accumulates state shows (the JSON has itemsPerSecByTenth). "vs ws" is items/s
 *   over the plain ws per-message peer's: the share of the transport ceiling our server reaches;
 *   "vs same framing" compares with the plain ws peer that frames the same way (per message or
 *   100 per frame), i.e. what our protocol, queue and store cost on top of the bare transport.
 *   Peak RSS is VmHWM of each process (the server's read from /proc just before it is stopped,
 *   the client's from process.resourceUsage()). CPU s is user+system time of each process while
 *   the items flowed (startup excluded); client and server share the cores, so on a 2-core
 *   machine the process whose CPU s is close to the wall time is the bottleneck, and both well
 *   below it means waiting (or other load on the machine: the load average is recorded). With
 *   --runs R > 1 each row is the peer's median run by items/s. Compare numbers within one run.
 */
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket, { WebSocketServer } from 'ws'
import {
  CLI, PROFILE_DIR, ROOT, addServerStats, adoptProfiles, checkBill, checkBuild, commandLine, exitIfFailed, fmtInt, fmtMiB,
  fmtPct as fmtRatio, fmtS, int, loadBeforeRuns, machineInfo, medianRun, parseBenchArgs, pkgVersion, procStats, profileFlags,
  profilesBefore, runChild, runRole, runsArg, startServer, stopServer, writeProfileSummaries, writeResults,
} from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const STREAM_PATH = '/bulk/stream/cpu/builtin/echo'
const SUBPROTOCOL_V1 = 'inference-stream.v1'
const DEFAULT_ITEMS = 200_000
const QUICK_ITEMS = 20_000

const inputOf = (i) => `review text number ${i}`

// Besides the common ones (role, quick, runs, only, profile, no-write, token, file: see lib/harness.js).
const args = parseBenchArgs({
  // orchestrator
  items: { type: 'string' },
  window: { type: 'string', default: '2000' },
  frame: { type: 'string', default: '100' },
  workers: { type: 'string' },
  'max-batch': { type: 'string' },
  'max-wait-ms': { type: 'string' },
  // client
  url: { type: 'string' },
  protocol: { type: 'string' },
  acks: { type: 'boolean', default: false },
  'stall-ms': { type: 'string', default: '30000' },
})

// ---------------------------------------------------------------------------------------------
// Role: plain ws echo server (the transport's ceiling). Parses each message like a real server
// would and answers in the same shape as ours, one result per payload, arrays for arrays.
// ---------------------------------------------------------------------------------------------
function runWsEchoServer() {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  wss.on('connection', (ws) => {
    let authed = false
    ws.on('message', (data) => {
      if (!authed) {
        authed = true // the "Bearer <token>" frame
        return
      }
      const msg = JSON.parse(data.toString('utf8'))
      if (Array.isArray(msg)) {
        ws.send(JSON.stringify(msg.map((p) => ({ type: 'results', id: p.id, outputs: p.inputs }))))
      } else {
        ws.send(JSON.stringify({ type: 'results', id: msg.id, outputs: msg.inputs }))
      }
    })
  })
  wss.on('listening', () => process.stdout.write(`listening on http://127.0.0.1:${wss.address().port}\n`))
  process.on('SIGTERM', () => process.exit(0))
}

// ---------------------------------------------------------------------------------------------
// Role: pipelined client. Sends N items with at most `window` sent and unanswered, `frame` per
// frame, counts every answer, and prints one JSON line of results on stdout.
// ---------------------------------------------------------------------------------------------
function runClient() {
  const url = args.url
  const N = int('items', args.items)
  const W = int('window', args.window)
  const F = int('frame', args.frame)
  const stallMs = int('stall-ms', args['stall-ms'])
  const acks = args.acks
  if (F > W) {
    process.stderr.write(`--frame (${F}) must not exceed --window (${W})\n`)
    process.exit(2)
  }
  const seen = new Uint8Array(N)
  let sent = 0
  let answered = 0
  let duplicates = 0
  let unknownIds = 0
  let wrongOutputs = 0
  let errorResults = 0
  let statusMessages = 0
  const statusErrors = []
  let unexpected = 0
  let framesOut = 0
  let framesIn = 0
  let maxInFlight = 0
  let startedAt = 0
  let endedAt = 0
  let cpuAtStart = process.cpuUsage()
  let cpuAtEnd = null
  // When each tenth of the items had been answered: shows a rate that changes along the run.
  const tenths = []
  let nextTenth = Math.ceil(N / 10)
  let lastProgress = Date.now()
  let finished = false
  const firstProblems = []
  const problem = (text) => {
    if (firstProblems.length < 10) firstProblems.push(text)
  }

  const ws = new WebSocket(url, args.protocol ? [args.protocol] : [], { perMessageDeflate: false })

  const pump = () => {
    while (sent < N) {
      const n = Math.min(F, N - sent)
      if (sent - answered + n > W) break
      if (F === 1) {
        ws.send(JSON.stringify({ id: String(sent), inputs: inputOf(sent) }))
      } else {
        const frame = new Array(n)
        for (let k = 0; k < n; k++) frame[k] = { id: String(sent + k), inputs: inputOf(sent + k) }
        ws.send(JSON.stringify(frame))
      }
      sent += n
      framesOut++
      if (sent - answered > maxInFlight) maxInFlight = sent - answered
    }
  }

  const handle = (m, ackIds) => {
    if (m === null || typeof m !== 'object') {
      unexpected++
      problem(`not an object: ${JSON.stringify(m)}`)
      return
    }
    if (m.type === 'status') {
      statusMessages++
      if (m.code !== undefined && statusErrors.length < 10) statusErrors.push(m)
      return
    }
    if (m.type !== 'results') {
      unexpected++
      problem(`unexpected message: ${JSON.stringify(m).slice(0, 200)}`)
      return
    }
    if (acks) ackIds.push(m.id)
    const i = Number(m.id)
    if (!Number.isInteger(i) || i < 0 || i >= N || String(i) !== m.id) {
      unknownIds++
      problem(`unknown id ${JSON.stringify(m.id)}`)
      return
    }
    if (seen[i]) {
      duplicates++
      problem(`duplicate id ${m.id}`)
      return
    }
    seen[i] = 1
    answered++
    if (answered === nextTenth) {
      tenths.push(Date.now() - startedAt)
      nextTenth = Math.ceil((N * (tenths.length + 1)) / 10)
    }
    if (m.outputs !== null && typeof m.outputs === 'object' && 'error' in m.outputs) {
      errorResults++
      problem(`error result for ${m.id}: ${JSON.stringify(m.outputs).slice(0, 200)}`)
    } else if (m.outputs !== inputOf(i)) {
      wrongOutputs++
      problem(`wrong outputs for ${m.id}: ${JSON.stringify(m.outputs).slice(0, 200)}`)
    }
  }

  const report = (error) => {
    if (finished) return
    finished = true
    clearInterval(watchdog)
    const wallMs = (endedAt || Date.now()) - startedAt
    let missing = 0
    for (let i = 0; i < N; i++) {
      if (seen[i]) continue
      if (missing < 5) problem(`no answer for id ${i}`)
      missing++
    }
    const ok =
      !error && missing === 0 && duplicates === 0 && unknownIds === 0 && wrongOutputs === 0 && errorResults === 0 &&
      unexpected === 0 && statusErrors.length === 0
    const cpu = cpuAtEnd ?? process.cpuUsage(cpuAtStart)
    const out = {
      ok,
      error: error ?? null,
      items: N,
      window: W,
      frame: F,
      protocol: ws.protocol || null,
      wallMs,
      itemsPerSec: wallMs > 0 ? (answered / wallMs) * 1000 : 0,
      // items/s within each tenth of the run (by items answered)
      itemsPerSecByTenth: tenths.map((t, k) => {
        const dt = t - (k === 0 ? 0 : tenths[k - 1])
        const n = Math.ceil((N * (k + 1)) / 10) - Math.ceil((N * k) / 10)
        return dt > 0 ? Math.round((n / dt) * 1000) : null
      }),
      firstHalfItemsPerSec: tenths.length >= 5 && tenths[4] > 0 ? (Math.ceil(N / 2) / tenths[4]) * 1000 : null,
      secondHalfItemsPerSec:
        tenths.length >= 10 && tenths[9] > tenths[4] ? ((N - Math.ceil(N / 2)) / (tenths[9] - tenths[4])) * 1000 : null,
      answered,
      missing,
      duplicates,
      unknownIds,
      wrongOutputs,
      errorResults,
      unexpected,
      statusMessages,
      statusErrors,
      framesOut,
      framesIn,
      maxInFlight,
      firstProblems,
      cpuSec: (cpu.user + cpu.system) / 1e6,
      peakRssKiB: process.resourceUsage().maxRSS,
    }
    process.stdout.write(`${JSON.stringify(out)}\n`)
    ws.terminate()
    process.exitCode = ok ? 0 : 1
    setImmediate(() => process.exit())
  }

  const watchdog = setInterval(() => {
    if (Date.now() - lastProgress > stallMs) {
      report(`stalled: no message for ${stallMs} ms with ${answered}/${N} answered and ${sent} sent`)
    }
  }, 1000)

  ws.on('open', () => {
    ws.send(`Bearer ${args.token}`)
    startedAt = Date.now()
    cpuAtStart = process.cpuUsage()
    lastProgress = startedAt
    pump()
  })
  ws.on('message', (data) => {
    framesIn++
    lastProgress = Date.now()
    let msg
    try {
      msg = JSON.parse(data.toString('utf8'))
    } catch {
      unexpected++
      problem(`frame is not JSON: ${data.toString('utf8').slice(0, 200)}`)
      return
    }
    const ackIds = []
    if (Array.isArray(msg)) for (const m of msg) handle(m, ackIds)
    else handle(msg, ackIds)
    if (acks && ackIds.length > 0) ws.send(JSON.stringify({ type: 'ack', ids: ackIds }))
    if (answered === N && endedAt === 0) {
      endedAt = Date.now()
      cpuAtEnd = process.cpuUsage(cpuAtStart)
      // Keep listening briefly so a late duplicate is still counted (not part of the timing).
      setTimeout(() => report(null), 250)
    } else {
      pump()
    }
  })
  ws.on('error', (err) => report(`socket error: ${err.message}`))
  ws.on('close', (code, reason) => {
    if (endedAt === 0) report(`socket closed early: ${code} ${reason.toString()}`)
  })
}

// ---------------------------------------------------------------------------------------------
// Orchestrator. Server start/stop, /proc stats and the profile summary: lib/harness.js.
// ---------------------------------------------------------------------------------------------
async function orchestrate() {
  const N = args.items !== undefined ? int('items', args.items) : args.quick ? QUICK_ITEMS : DEFAULT_ITEMS
  const W = int('window', args.window)
  const F = int('frame', args.frame)
  // Three interleaved runs by default (median shown): a shared 2-core machine is noisy.
  const runs = runsArg(args)
  if (F > W) {
    process.stderr.write(`--frame (${F}) must not exceed --window (${W})\n`)
    process.exit(2)
  }
  const serveExtra = []
  for (const k of ['workers', 'max-batch', 'max-wait-ms']) {
    if (args[k] !== undefined) serveExtra.push(`--${k}`, String(int(k, args[k], 0)))
  }

  checkBuild([CLI], `${path.relative(ROOT, CLI)} is missing: run \`npm run build\` first\n`)

  const prof = profileFlags(args.profile)
  const ours = (extra) => [
    ...prof,
    CLI, 'serve', '--port', '0', '--log-level', 'warn', ...serveExtra, ...extra,
  ]
  const plain = [...prof, THIS_FILE, '--role', 'ws-echo-server']
  const peers = [
    { name: 'ws-echo', what: 'plain ws echo, 1 msg/item', server: plain, ours: false, frame: 1, ceiling: 'ws-echo' },
    { name: 'ws-echo-batched', what: `plain ws echo, ${F} items/frame`, server: plain, ours: false, frame: F, ceiling: 'ws-echo-batched' },
    { name: 'legacy', what: 'ours, legacy, 1 msg/item', server: ours([]), ours: true, frame: 1, ceiling: 'ws-echo' },
    { name: 'v1', what: `ours, v1, ${F} items/frame + acks`, server: ours([]), ours: true, frame: F, protocol: SUBPROTOCOL_V1, acks: true, ceiling: 'ws-echo-batched' },
  ]
  const only = args.only ? new Set(args.only.split(',')) : null
  const selected = only ? peers.filter((p) => only.has(p.name)) : peers
  if (selected.length === 0) {
    process.stderr.write(`--only matches no peer; peers: ${peers.map((p) => p.name).join(', ')}\n`)
    process.exit(2)
  }
  if (args.profile) mkdirSync(PROFILE_DIR, { recursive: true })

  process.stderr.write(
    `server-throughput: ${N} items, window ${W}, ${F} items per batched frame, ${runs} run(s) per peer, ` +
      `serve args [${serveExtra.join(' ') || 'defaults'}]\n`,
  )

  const loadBefore = loadBeforeRuns()
  const all = new Map(selected.map((p) => [p.name, []]))
  const profiles = []
  let failed = false
  // Interleave the runs (a b c d a b c d …) so a drift of the machine does not favour one peer.
  for (let r = 0; r < runs; r++) {
    for (const peer of selected) {
      const token = `bench-${peer.name}-${r}`
      let server
      try {
        server = await startServer(peer.server, peer.name)
      } catch (err) {
        process.stderr.write(`${peer.name}: ${err.message}\n`)
        all.get(peer.name).push({ ok: false, error: err.message })
        failed = true
        continue
      }
      const before = profilesBefore(args.profile)
      const url = `${server.base.replace(/^http/, 'ws')}${STREAM_PATH}`
      const clientArgs = ['--url', url, '--items', String(N), '--window', String(W), '--frame', String(peer.frame), '--token', token]
      if (peer.protocol) clientArgs.push('--protocol', peer.protocol)
      if (peer.acks) clientArgs.push('--acks')
      const s0 = procStats(server.child.pid)
      const result = await runChild(THIS_FILE, 'client', clientArgs, { keepStderr: false })
      // CPU spent while the client ran (startup excluded; includes the client's connect and 250 ms tail, which are idle).
      addServerStats(result, s0, procStats(server.child.pid))
      if (peer.ours) {
        await checkBill(result, server.base, N, peer.name, { duplicatesSeenByServer: 'inference_stream_duplicate_items_total' })
      }
      await stopServer(server.child)
      if (args.profile) {
        for (const file of adoptProfiles(before, `server-throughput.${peer.name}.run${r + 1}`)) profiles.push({ peer: peer.name, run: r, file })
      }
      all.get(peer.name).push(result)
      const line = `${peer.name.padEnd(16)} run ${r + 1}/${runs}: ${fmtInt(result.itemsPerSec)} items/s, ${fmtS(result.wallMs / 1000)} s`
      if (result.ok) {
        process.stderr.write(`${line}\n`)
      } else {
        failed = true
        process.stderr.write(
          `\n!!! ${peer.name} FAILED the exactly-once check: ${result.error ?? ''}\n` +
            `!!! answered ${result.answered}/${N}, missing ${result.missing}, duplicates ${result.duplicates}, ` +
            `unknown ids ${result.unknownIds}, wrong outputs ${result.wrongOutputs}, error results ${result.errorResults}, ` +
            `unexpected ${result.unexpected}, status errors ${JSON.stringify(result.statusErrors ?? [])}, billed ${result.billed ?? 'n/a'}\n` +
            `!!! ${(result.firstProblems ?? []).join('\n!!! ')}\n` +
            (peer.ours ? `--- server stderr (tail) ---\n${server.stderr().slice(-2000)}\n` : '') +
            '\n',
        )
      }
    }
  }

  // One row per peer: its median run by items/s.
  const rows = selected.map((peer) => ({ peer, ...medianRun(all.get(peer.name), 'itemsPerSec') }))
  const ips = (name) => rows.find((r) => r.peer.name === name)?.med.itemsPerSec ?? null
  const wsCeiling = ips('ws-echo')
  for (const r of rows) {
    r.vsWs = wsCeiling && r.med.itemsPerSec != null ? r.med.itemsPerSec / wsCeiling : null
    const same = ips(r.peer.ceiling)
    r.vsSame = same && r.med.itemsPerSec != null ? r.med.itemsPerSec / same : null
  }

  const header =
    '| peer | what | items/s | 1st half → 2nd half items/s | wall s | vs ws (1 msg/item) | vs same framing | server peak RSS MiB | client peak RSS MiB | server CPU s | client CPU s | exactly once |\n' +
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n'
  let table = header
  for (const r of rows) {
    const m = r.med
    table +=
      `| ${r.peer.name} | ${r.peer.what} | ${fmtInt(m.itemsPerSec)} | ${fmtInt(m.firstHalfItemsPerSec)} → ${fmtInt(m.secondHalfItemsPerSec)} | ${fmtS(m.wallMs != null ? m.wallMs / 1000 : null)} | ` +
      `${fmtRatio(r.vsWs)} | ${fmtRatio(r.vsSame)} | ${fmtMiB(m.serverPeakRssKiB)} | ${fmtMiB(m.peakRssKiB)} | ` +
      `${fmtS(m.serverCpuSec)} | ${fmtS(m.cpuSec)} | ${r.ok ? 'ok' : '**FAILED**'} |\n`
  }
  const date = new Date().toISOString()
  const machine = machineInfo(loadBefore, { ws: pkgVersion('ws') })
  const commit = machine.commit
  const config = {
    items: N,
    window: W,
    batchedFrame: F,
    runs,
    serveArgs: ['serve', '--port', '0', '--log-level', 'warn', ...serveExtra],
    profile: args.profile,
  }
  const command = commandLine('server-throughput')
  const md =
    `# server-throughput\n\n` +
    `How many items/s does our server move with builtin/echo, legacy one message per item vs v1 batched ` +
    `frames, compared with a plain ws echo server in the same run?\n\n` +
    `${date} · \`${command}\` · node ${machine.node} · ${machine.cpus}× ${machine.cpuModel} · ws ${machine.ws}` +
    (commit ? ` · ${commit}` : '') +
    ` · load ${machine.loadAvgBefore} → ${machine.loadAvgAfter}` +
    `\n\n${N.toLocaleString('en-US')} items, window ${W} unanswered, batched frames of ${F}, ${runs} run(s) per peer` +
    (runs > 1 ? ' (median shown)' : '') +
    `, \`${config.serveArgs.join(' ')}\`.\n\n${table}`

  process.stdout.write(`\n${table}`)
  if (!args['no-write']) {
    const json = {
      question:
        'How many items/s does our server move with builtin/echo, one message per item (legacy) vs v1 batched frames, compared with a plain ws echo server (the transport ceiling) in the same run?',
      date,
      command,
      machine,
      config,
      ok: !failed,
      peers: rows.map((r) => ({
        name: r.peer.name,
        what: r.peer.what,
        itemsPerSec: r.med.itemsPerSec ?? null,
        wallMs: r.med.wallMs ?? null,
        firstHalfItemsPerSec: r.med.firstHalfItemsPerSec ?? null,
        secondHalfItemsPerSec: r.med.secondHalfItemsPerSec ?? null,
        ratioVsWs: r.vsWs,
        ratioVsSameFraming: r.vsSame,
        serverPeakRssKiB: r.med.serverPeakRssKiB ?? null,
        clientPeakRssKiB: r.med.peakRssKiB ?? null,
        serverCpuSec: r.med.serverCpuSec ?? null,
        clientCpuSec: r.med.cpuSec ?? null,
        ok: r.ok,
        runs: r.runs,
      })),
    }
    writeResults('server-throughput', args.quick, json, md)
  }
  writeProfileSummaries(profiles)
  exitIfFailed(failed)
}

// `--role summarize-profile --file X.cpuprofile` summarises a profile taken by hand.
await runRole(args, { 'ws-echo-server': runWsEchoServer, client: runClient, orchestrator: orchestrate })
