#!/usr/bin/env node
/*
 * Question
 *   How many items/s does our server move with `builtin/echo`, one message per item (legacy
 *   protocol) vs v1 batched frames (100 payloads per frame, acked), compared with a plain `ws`
 *   echo server (the transport's ceiling) in the same run? And what does the state backend cost
 *   there: v1 on the memory backend vs on the SQLite backend (issue 13's bars: memory keeps at
 *   least 0.9 of the ratio to ws-echo recorded before the state layer; SQLite at least 0.5 of memory)?
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
 *     v1-memory         v1 on createServer({ state: new MemoryStateBackend(...) }) (this file with
 *                       `--role state-server`; the backend `serve` uses by default, given explicitly).
 *     v1-sqlite         the same with SqliteStateBackend on a fresh file per run (WAL, synchronous
 *                       NORMAL, the defaults) in a temp folder that is removed afterwards.
 *   The state peers take the server's default limits (maxRetained, retentionMs, maxRetainedBytes)
 *   and --workers / --max-batch / --max-wait-ms like `serve`; --backends picks them.
 *     v1-baseline       with --baseline DIR: v1 on DIR/dist/cli/index.js (another commit, built), to
 *                       measure "before" in the same run rather than only read it from a file.
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
 *   node benchmarks/server-throughput.js --items 100000 --runs 3 --backends memory,sqlite   # the state peers (default: both)
 *   node benchmarks/server-throughput.js --only ws-echo,v1-sqlite --backends sqlite --profile
 *   node benchmarks/server-throughput.js --baseline /tmp/old --baseline-label d9c3d09   # + v1 of another build
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
 *   The state backends' table gives ratios per round (each run over its peer's run of the same
 *   round: interleaved, so under the same load), median over the rounds: v1-memory × ws-echo,
 *   v1-sqlite × v1-memory, and the goals against results/server-throughput.before-state-layer.json
 *   (the results recorded before the state layer, kept as they were).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket, { WebSocketServer } from 'ws'
import {
  CLI, LIB, PROFILE_DIR, RESULTS_DIR, ROOT, addServerStats, adoptProfiles, checkBill, checkBuild, commandLine, exitIfFailed, fmtInt, fmtMiB,
  fmtPct as fmtRatio, fmtS, int, loadBeforeRuns, machineInfo, medianRun, parseBenchArgs, pkgVersion, procStats, profileFlags,
  profilesBefore, runChild, runRole, runsArg, startServer, stopServer, writeProfileSummaries, writeResults,
  perRound,
} from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const STREAM_PATH = '/bulk/stream/cpu/builtin/echo'
const SUBPROTOCOL_V1 = 'inference-stream.v1'
const DEFAULT_ITEMS = 200_000
const QUICK_ITEMS = 20_000
const SERVER_OPTIONS = path.join(ROOT, 'dist', 'server', 'options.js')
// Not exported from the package entry (better-sqlite3 is an optional dependency): from dist/.
const SQLITE_BACKEND = path.join(ROOT, 'dist', 'server', 'state', 'sqlite-backend.js')
const BACKENDS = ['memory', 'sqlite']
// The results recorded before the state layer (kept unchanged): the goals are relative to them.
const BEFORE_FILE = path.join(RESULTS_DIR, 'server-throughput.before-state-layer.json')
// Issue 13's bars.
const GOAL_MEMORY_KEEPS = 0.9
const GOAL_SQLITE_VS_MEMORY = 0.5

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
  backends: { type: 'string', default: BACKENDS.join(',') },
  baseline: { type: 'string' },
  'baseline-label': { type: 'string' },
  // state-server
  backend: { type: 'string' },
  'sqlite-file': { type: 'string' },
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
// Role: our server through createServer with an explicit state backend (what `serve` does,
// plus `state`). Prints `listening on URL` like `serve`; SIGTERM closes the server, then the
// backend (a backend given by the caller is the caller's to close).
// ---------------------------------------------------------------------------------------------
async function runStateServer() {
  const { createServer, MemoryStateBackend } = await import(LIB)
  const { resolveServerOptions } = await import(SERVER_OPTIONS)
  const given = {}
  for (const [flag, key] of [['workers', 'workers'], ['max-batch', 'maxBatch'], ['max-wait-ms', 'maxWaitMs']]) {
    if (args[flag] !== undefined) given[key] = int(flag, args[flag], 0)
  }
  // The limits the server would give its default backend.
  const o = resolveServerOptions(given)
  const limits = { maxRetained: o.maxRetained, retentionMs: o.retentionMs, maxRetainedBytes: o.maxRetainedBytes }
  let state
  if (args.backend === 'memory') {
    state = new MemoryStateBackend(limits)
  } else if (args.backend === 'sqlite') {
    if (!args['sqlite-file']) {
      process.stderr.write('--backend sqlite needs --sqlite-file\n')
      process.exit(2)
    }
    const { SqliteStateBackend } = await import(SQLITE_BACKEND)
    state = new SqliteStateBackend({ path: args['sqlite-file'], ...limits })
  } else {
    process.stderr.write(`--backend must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(args.backend)}\n`)
    process.exit(2)
  }
  const server = createServer({ ...given, state })
  const url = await server.listen(0, '127.0.0.1')
  process.stdout.write(`listening on ${url}\n`)
  let stopping = false
  process.on('SIGTERM', () => {
    if (stopping) return
    stopping = true
    server
      .close()
      .then(() => state.close())
      .then(() => server.registry.close())
      .then(
        () => process.exit(0),
        (err) => {
          process.stderr.write(`shutdown failed: ${err?.stack ?? err}\n`)
          process.exit(1)
        },
      )
  })
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

  const backends = args.backends === 'none' || args.backends === '' ? [] : args.backends.split(',')
  for (const b of backends) {
    if (!BACKENDS.includes(b)) {
      process.stderr.write(`--backends: unknown backend ${JSON.stringify(b)}; backends: ${BACKENDS.join(', ')} (or none)\n`)
      process.exit(2)
    }
  }

  checkBuild(
    [CLI, LIB, SERVER_OPTIONS, ...(backends.includes('sqlite') ? [SQLITE_BACKEND] : [])],
    'dist/ is missing files the benchmark runs: run `npm run build` first\n',
  )

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
  if (args.baseline !== undefined) {
    const cli = path.resolve(args.baseline, 'dist', 'cli', 'index.js')
    checkBuild([cli], `--baseline: ${cli} is missing: build that checkout first\n`)
    const label = args['baseline-label'] ?? path.resolve(args.baseline)
    peers.push({
      name: 'v1-baseline',
      what: `v1 of ${label}, ${F} items/frame + acks`,
      server: [...prof, cli, 'serve', '--port', '0', '--log-level', 'warn', ...serveExtra],
      ours: true,
      frame: F,
      protocol: SUBPROTOCOL_V1,
      acks: true,
      ceiling: 'ws-echo-batched',
    })
  }
  const BACKEND_WHAT = { memory: 'MemoryStateBackend', sqlite: 'SqliteStateBackend (WAL, synchronous NORMAL)' }
  for (const b of backends) {
    peers.push({
      name: `v1-${b}`,
      what: `ours, v1, ${F} items/frame + acks, ${BACKEND_WHAT[b]}`,
      server: [...prof, THIS_FILE, '--role', 'state-server', '--backend', b, ...serveExtra],
      ours: true,
      frame: F,
      protocol: SUBPROTOCOL_V1,
      acks: true,
      ceiling: 'ws-echo-batched',
      backend: b,
    })
  }
  const only = args.only ? new Set(args.only.split(',')) : null
  // The SQLite files: a fresh one per run, deleted after it; the folder at exit, whatever happens.
  const sqliteDir = backends.includes('sqlite') ? mkdtempSync(path.join(os.tmpdir(), 'is-bench-throughput-')) : null
  if (sqliteDir) process.on('exit', () => rmSync(sqliteDir, { recursive: true, force: true }))
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
      let sqliteFile = null
      try {
        sqliteFile = peer.backend === 'sqlite' ? path.join(sqliteDir, `${peer.name}.run${r + 1}.sqlite`) : null
        server = await startServer(sqliteFile ? [...peer.server, '--sqlite-file', sqliteFile] : peer.server, peer.name)
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
      if (sqliteFile) {
        // After close (its WAL checkpointed into the file): the file's size, then it goes.
        result.sqliteFileBytes = existsSync(sqliteFile) ? statSync(sqliteFile).size : null
        for (const f of [sqliteFile, `${sqliteFile}-wal`, `${sqliteFile}-shm`]) rmSync(f, { force: true })
      }
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
  const state = stateSummary(selected, all, N)
  const date = new Date().toISOString()
  const machine = machineInfo(loadBefore, { ws: pkgVersion('ws'), ...(backends.includes('sqlite') ? { 'better-sqlite3': pkgVersion('better-sqlite3') } : {}) })
  const commit = machine.commit
  const config = {
    items: N,
    window: W,
    batchedFrame: F,
    runs,
    serveArgs: ['serve', '--port', '0', '--log-level', 'warn', ...serveExtra],
    backends,
    baseline: args.baseline !== undefined ? { dir: path.resolve(args.baseline), label: args['baseline-label'] ?? null } : null,
    profile: args.profile,
  }
  const command = commandLine('server-throughput')
  const md =
    `# server-throughput\n\n` +
    `How many items/s does our server move with builtin/echo, legacy one message per item vs v1 batched ` +
    `frames, compared with a plain ws echo server in the same run? And v1 on the memory vs the SQLite state backend?\n\n` +
    `${date} · \`${command}\` · node ${machine.node} · ${machine.cpus}× ${machine.cpuModel} · ws ${machine.ws}` +
    (commit ? ` · ${commit}` : '') +
    ` · load ${machine.loadAvgBefore} → ${machine.loadAvgAfter}` +
    `\n\n${N.toLocaleString('en-US')} items, window ${W} unanswered, batched frames of ${F}, ${runs} run(s) per peer` +
    (runs > 1 ? ' (median shown)' : '') +
    `, \`${config.serveArgs.join(' ')}\`.\n\n${table}` +
    (state ? `\n${state.md}` : '')

  process.stdout.write(`\n${table}${state ? `\n${state.md}` : ''}`)
  if (!args['no-write']) {
    const json = {
      question:
        'How many items/s does our server move with builtin/echo, one message per item (legacy) vs v1 batched frames, compared with a plain ws echo server (the transport ceiling) in the same run? And v1 on the memory vs the SQLite state backend?',
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
        ...(r.peer.backend ? { backend: r.peer.backend } : {}),
        ok: r.ok,
        runs: r.runs,
      })),
      ...(state ? { stateBackends: state.json } : {}),
    }
    writeResults('server-throughput', args.quick, json, md)
  }
  writeProfileSummaries(profiles)
  exitIfFailed(failed)
}

// ---------------------------------------------------------------------------------------------
// The state backends' summary: ratios per round, the goals against the results recorded before
// the state layer. Null when no state peer ran.
// ---------------------------------------------------------------------------------------------

function readBefore() {
  if (!existsSync(BEFORE_FILE)) return null
  const b = JSON.parse(readFileSync(BEFORE_FILE, 'utf8'))
  const peer = (name) => b.peers.find((p) => p.name === name) ?? null
  return { file: path.relative(ROOT, BEFORE_FILE), date: b.date, commit: b.machine?.commit ?? null, command: b.command, items: b.config?.items ?? null, peers: b.peers, v1: peer('v1') }
}

function stateSummary(selected, all, N) {
  const names = ['v1-baseline', 'v1', 'v1-memory', 'v1-sqlite'].filter((n) => selected.some((p) => p.name === n))
  if (!names.some((n) => n === 'v1-memory' || n === 'v1-sqlite')) return null
  const fmtX = (x) => (x == null ? 'n/a' : x.median.toFixed(2))
  const rows = names.map((name) => {
    const runs = all.get(name)
    const { med } = medianRun(runs, 'itemsPerSec')
    const files = runs.map((x) => x.sqliteFileBytes).filter((x) => x != null).sort((x, y) => x - y)
    return {
      name,
      itemsPerSec: med?.itemsPerSec ?? null,
      vsWsEcho: perRound(all, name, 'ws-echo'),
      vsWsEchoBatched: perRound(all, name, 'ws-echo-batched'),
      vsMemory: name === 'v1-memory' ? null : perRound(all, name, 'v1-memory'),
      vsBaseline: name === 'v1-baseline' ? null : perRound(all, name, 'v1-baseline'),
      sqliteFileBytes: files.length ? files[Math.floor((files.length - 1) / 2)] : null,
      runs: runs.map((x) => (x.ok ? Math.round(x.itemsPerSec) : null)),
    }
  })
  const row = (n) => rows.find((r) => r.name === n)
  const before = readBefore()
  const goals = {}
  const memory = row('v1-memory')
  if (memory?.vsWsEcho && before?.v1?.ratioVsWs) {
    const kept = memory.vsWsEcho.median / before.v1.ratioVsWs
    goals.memoryKeepsRatioVsWs = { ratioVsWs: memory.vsWsEcho.median, beforeRatioVsWs: before.v1.ratioVsWs, kept, goal: GOAL_MEMORY_KEEPS, met: kept >= GOAL_MEMORY_KEEPS }
  }
  if (memory?.vsWsEchoBatched && before?.v1?.ratioVsSameFraming) {
    // Not a goal: the same comparison against the peer that frames like v1.
    goals.memoryKeepsRatioVsSameFraming = { ratio: memory.vsWsEchoBatched.median, beforeRatio: before.v1.ratioVsSameFraming, kept: memory.vsWsEchoBatched.median / before.v1.ratioVsSameFraming }
  }
  if (memory && row('v1-baseline')?.vsWsEcho && memory.vsBaseline) {
    // The same goal in this run: (memory / ws-echo) / (baseline / ws-echo) = memory / baseline, per round.
    goals.memoryKeepsRatioVsWsSameRun = { baselineRatioVsWs: row('v1-baseline').vsWsEcho.median, kept: memory.vsBaseline.median, goal: GOAL_MEMORY_KEEPS, met: memory.vsBaseline.median >= GOAL_MEMORY_KEEPS }
  }
  const sqlite = row('v1-sqlite')
  if (sqlite?.vsMemory) goals.sqliteVsMemory = { ratio: sqlite.vsMemory.median, goal: GOAL_SQLITE_VS_MEMORY, met: sqlite.vsMemory.median >= GOAL_SQLITE_VS_MEMORY }

  const verdict = (met) => (met ? 'met' : '**not met**')
  let md =
    `## State backends\n\n` +
    `v1 with each state backend. Ratios are per round (each run over its peer's run of the same round), median over the rounds.\n\n` +
    `| peer | items/s | × ws-echo | × ws-echo-batched | × v1-memory |${row('v1-baseline') ? ' × v1-baseline |' : ''} SQLite file MiB | runs (items/s) |\n` +
    `|---|--:|--:|--:|--:|${row('v1-baseline') ? '--:|' : ''}--:|---|\n`
  for (const r of rows) {
    md +=
      `| ${r.name} | ${fmtInt(r.itemsPerSec)} | ${fmtX(r.vsWsEcho)} | ${fmtX(r.vsWsEchoBatched)} | ${r.name === 'v1-memory' ? '1.00' : fmtX(r.vsMemory)} | ` +
      (row('v1-baseline') ? `${r.name === 'v1-baseline' ? '1.00' : fmtX(r.vsBaseline)} | ` : '') +
      `${r.sqliteFileBytes == null ? '—' : (r.sqliteFileBytes / 2 ** 20).toFixed(1)} | ${r.runs.map((x) => (x == null ? 'failed' : fmtInt(x))).join(', ')} |\n`
  }
  md += '\n'
  const g = goals.memoryKeepsRatioVsWs
  if (g) {
    md +=
      `- memory: ${g.ratioVsWs.toFixed(2)} × ws-echo; before the state layer v1 was ${g.beforeRatioVsWs.toFixed(2)} × ws-echo, so it keeps ` +
      `${g.kept.toFixed(2)} of that ratio (goal ≥ ${g.goal}): ${verdict(g.met)}` +
      (before.items !== N ? ` (before: ${before.items.toLocaleString('en-US')} items per peer; this run: ${N.toLocaleString('en-US')})` : '') +
      '\n'
  } else if (memory) {
    md += `- memory vs before: n/a (needs ws-echo in this run and ${path.relative(ROOT, BEFORE_FILE)})\n`
  }
  const gr = goals.memoryKeepsRatioVsWsSameRun
  if (gr) {
    md +=
      `- memory against v1-baseline (${args['baseline-label'] ?? 'the --baseline build'}) in this run, which was ${gr.baselineRatioVsWs.toFixed(2)} × ws-echo: keeps ` +
      `${gr.kept.toFixed(2)} of its ratio (goal ≥ ${gr.goal}): ${verdict(gr.met)}\n`
  }
  const gs = goals.memoryKeepsRatioVsSameFraming
  if (gs) md += `- memory against the same framing: ${gs.ratio.toFixed(2)} × ws-echo-batched (before: ${gs.beforeRatio.toFixed(2)}), keeps ${gs.kept.toFixed(2)}\n`
  const gq = goals.sqliteVsMemory
  if (gq) md += `- SQLite: ${gq.ratio.toFixed(2)} × memory (goal ≥ ${gq.goal}): ${verdict(gq.met)}\n`

  if (before) {
    md +=
      `\n## Before the state layer\n\n` +
      `From \`${before.file}\` (${before.date} · \`${before.command}\` · ${before.commit} · ${before.items?.toLocaleString('en-US')} items), kept as recorded:\n\n` +
      '| peer | items/s | vs ws (1 msg/item) | vs same framing |\n|---|--:|--:|--:|\n' +
      before.peers.map((p) => `| ${p.name} | ${fmtInt(p.itemsPerSec)} | ${fmtRatio(p.ratioVsWs)} | ${fmtRatio(p.ratioVsSameFraming)} |\n`).join('')
  }
  const json = {
    rows,
    goals,
    before: before ? { file: before.file, date: before.date, commit: before.commit, command: before.command, items: before.items, peers: before.peers.map((p) => ({ name: p.name, itemsPerSec: p.itemsPerSec, ratioVsWs: p.ratioVsWs, ratioVsSameFraming: p.ratioVsSameFraming })) } : null,
  }
  return { md, json }
}

// `--role summarize-profile --file X.cpuprofile` summarises a profile taken by hand.
await runRole(args, { 'ws-echo-server': runWsEchoServer, 'state-server': runStateServer, client: runClient, orchestrator: orchestrate })
