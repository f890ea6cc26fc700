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
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import WebSocket, { WebSocketServer } from 'ws'

const THIS_FILE = fileURLToPath(import.meta.url)
const ROOT = path.resolve(path.dirname(THIS_FILE), '..')
const CLI = path.join(ROOT, 'dist', 'cli', 'index.js')
const RESULTS_DIR = path.join(ROOT, 'benchmarks', 'results')
const STREAM_PATH = '/bulk/stream/cpu/builtin/echo'
const SUBPROTOCOL_V1 = 'inference-stream.v1'
const DEFAULT_ITEMS = 200_000
const QUICK_ITEMS = 20_000

const inputOf = (i) => `review text number ${i}`

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'orchestrator' },
    // orchestrator
    items: { type: 'string' },
    quick: { type: 'boolean', default: false },
    window: { type: 'string', default: '2000' },
    frame: { type: 'string', default: '100' },
    runs: { type: 'string' },
    only: { type: 'string' },
    workers: { type: 'string' },
    'max-batch': { type: 'string' },
    'max-wait-ms': { type: 'string' },
    profile: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    // client
    url: { type: 'string' },
    protocol: { type: 'string' },
    acks: { type: 'boolean', default: false },
    token: { type: 'string', default: 'bench' },
    'stall-ms': { type: 'string', default: '30000' },
    // summarize-profile
    file: { type: 'string' },
  },
  strict: true,
})

function int(name, value, min = 1) {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}\n`)
    process.exit(2)
  }
  return n
}

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
// Orchestrator
// ---------------------------------------------------------------------------------------------
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** Peak RSS (KiB) and CPU seconds of a live process, from /proc (null where there is no /proc). */
function procStats(pid) {
  let peakRssKiB = null
  let cpuSec = null
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    if (m) peakRssKiB = Number(m[1])
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    cpuSec = (Number(f[11]) + Number(f[12])) / CLK_TCK // utime, stime (fields 14, 15)
  } catch {
    // not Linux, or the process is gone
  }
  return { peakRssKiB, cpuSec }
}

function startServer(nodeArgs, label) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, nodeArgs, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => fail(new Error(`${label}: no "listening on" line within 20 s`)), 20_000)
    const fail = (e) => {
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`${e.message}\n--- server stderr ---\n${err.slice(-4000)}`))
    }
    child.stdout.on('data', (d) => {
      out += d
      const m = /listening on (http:\/\/\S+)/.exec(out)
      if (m) {
        clearTimeout(timer)
        resolve({ child, base: m[1], stderr: () => err })
      }
    })
    child.stderr.on('data', (d) => {
      err += d
      if (err.length > 64_000) err = err.slice(-32_000)
    })
    child.on('exit', (code, signal) => fail(new Error(`${label}: exited early (code ${code}, signal ${signal})`)))
    child.on('error', fail)
  })
}

function stopServer(child, timeoutMs = 20_000) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.removeAllListeners('exit')
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('exit', () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill('SIGTERM') // graceful: our server closes its sockets and, with --cpu-prof, writes the profile
  })
}

function runClientProcess(clientArgs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [THIS_FILE, '--role', 'client', ...clientArgs], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('exit', (code) => {
      const line = out.trim().split('\n').pop() ?? ''
      let result
      try {
        result = JSON.parse(line)
      } catch {
        result = { ok: false, error: `client printed no result (exit ${code}): ${(err || out).slice(-2000)}` }
      }
      if (code !== 0) result.ok = false
      result.exitCode = code
      resolve(result)
    })
  })
}

/** Sum of a counter over its label sets in Prometheus text. */
function metricSum(text, name) {
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

function newestMtime(dir, ext) {
  let newest = 0
  if (!existsSync(dir)) return 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p, ext))
    else if (e.name.endsWith(ext)) newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return newest
}

/** Self time per function of a .cpuprofile, highest first. */
function summarizeProfile(file, top = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const byNode = new Map(prof.nodes.map((n) => [n.id, n]))
  const self = new Map()
  const deltas = prof.timeDeltas
  let total = 0
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = deltas[i + 1] ?? 0 // a sample's time is the gap to the next one
    total += dt
    const n = byNode.get(prof.samples[i])
    const cf = n.callFrame
    const where = cf.url ? `${cf.url.replace(`file://${ROOT}/`, '')}:${cf.lineNumber + 1}` : ''
    const key = `${cf.functionName || '(anonymous)'} ${where}`.trim()
    self.set(key, (self.get(key) ?? 0) + dt)
  }
  const byFile = new Map()
  for (const [k, v] of self) {
    const m = / (\S+):\d+$/.exec(k)
    let f = m ? m[1] : k
    if (f.startsWith('node:')) f = 'node: (core)'
    else if (f.includes('node_modules/')) f = `node_modules/${f.split('node_modules/')[1].split('/')[0]}`
    byFile.set(f, (byFile.get(f) ?? 0) + v)
  }
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, top)
  const files = [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 15)
  const pct = (v) => `${((v / total) * 100).toFixed(1)}%`
  let text = `CPU profile ${path.relative(ROOT, file)}: ${(total / 1e6).toFixed(2)} s sampled\n\nTop self time by function:\n`
  for (const [k, v] of rows) text += `  ${pct(v).padStart(6)}  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}\n`
  text += '\nSelf time by file / package:\n'
  for (const [k, v] of files) text += `  ${pct(v).padStart(6)}  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}\n`
  return text
}

const fmtInt = (n) => (n == null ? 'n/a' : Math.round(n).toLocaleString('en-US'))
const fmtMiB = (kib) => (kib == null ? 'n/a' : (kib / 1024).toFixed(0))
const fmtS = (s) => (s == null ? 'n/a' : s.toFixed(2))
const fmtRatio = (r) => (r == null ? 'n/a' : `${(r * 100).toFixed(0)}%`)

async function orchestrate() {
  const N = args.items !== undefined ? int('items', args.items) : args.quick ? QUICK_ITEMS : DEFAULT_ITEMS
  const W = int('window', args.window)
  const F = int('frame', args.frame)
  // Three interleaved runs by default (median shown): a shared 2-core machine is noisy.
  const runs = args.runs !== undefined ? int('runs', args.runs) : args.quick ? 1 : 3
  if (F > W) {
    process.stderr.write(`--frame (${F}) must not exceed --window (${W})\n`)
    process.exit(2)
  }
  const serveExtra = []
  for (const k of ['workers', 'max-batch', 'max-wait-ms']) {
    if (args[k] !== undefined) serveExtra.push(`--${k}`, String(int(k, args[k], 0)))
  }

  if (!existsSync(CLI)) {
    process.stderr.write(`${path.relative(ROOT, CLI)} is missing: run \`npm run build\` first\n`)
    process.exit(2)
  }
  if (newestMtime(path.join(ROOT, 'lib'), '.ts') > newestMtime(path.join(ROOT, 'dist'), '.js')) {
    process.stderr.write('warning: lib/ has changed since the last build; run `npm run build` to measure the current code\n')
  }

  const profileDir = path.join(RESULTS_DIR, 'profiles')
  const prof = args.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []
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
  if (args.profile) mkdirSync(profileDir, { recursive: true })

  process.stderr.write(
    `server-throughput: ${N} items, window ${W}, ${F} items per batched frame, ${runs} run(s) per peer, ` +
      `serve args [${serveExtra.join(' ') || 'defaults'}]\n`,
  )

  const loadBefore = Math.round(os.loadavg()[0] * 100) / 100
  if (loadBefore > os.cpus().length / 2) {
    process.stderr.write(`warning: load average is ${loadBefore} on ${os.cpus().length} CPUs: other work will skew the numbers\n`)
  }
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
      const before = new Set(args.profile && existsSync(profileDir) ? readdirSync(profileDir) : [])
      const url = `${server.base.replace(/^http/, 'ws')}${STREAM_PATH}`
      const clientArgs = ['--url', url, '--items', String(N), '--window', String(W), '--frame', String(peer.frame), '--token', token]
      if (peer.protocol) clientArgs.push('--protocol', peer.protocol)
      if (peer.acks) clientArgs.push('--acks')
      const s0 = procStats(server.child.pid)
      const result = await runClientProcess(clientArgs)
      const s = procStats(server.child.pid)
      result.serverPeakRssKiB = s.peakRssKiB
      // CPU spent while the client ran (startup excluded; includes the client's connect and 250 ms tail, which are idle).
      result.serverCpuSec = s.cpuSec != null && s0.cpuSec != null ? s.cpuSec - s0.cpuSec : null
      if (peer.ours) {
        try {
          const text = await (await fetch(`${server.base}/metrics`)).text()
          result.billed = metricSum(text, 'inference_stream_billed_items_total')
          result.duplicatesSeenByServer = metricSum(text, 'inference_stream_duplicate_items_total')
          if (result.billed !== N) {
            result.ok = false
            result.firstProblems = [...(result.firstProblems ?? []), `server billed ${result.billed} items, expected ${N}`]
          }
        } catch (err) {
          result.billed = null
          process.stderr.write(`${peer.name}: could not read /metrics: ${err.message}\n`)
        }
      }
      await stopServer(server.child)
      if (args.profile) {
        for (const f of readdirSync(profileDir)) {
          if (before.has(f) || !f.endsWith('.cpuprofile')) continue
          // Stable names, so a new profile of a peer replaces the last one.
          const file = path.join(profileDir, `server-throughput.${peer.name}.run${r + 1}.cpuprofile`)
          renameSync(path.join(profileDir, f), file)
          profiles.push({ peer: peer.name, run: r, file })
        }
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
  const rows = selected.map((peer) => {
    const rs = all.get(peer.name)
    const sorted = [...rs].sort((a, b) => (a.itemsPerSec ?? 0) - (b.itemsPerSec ?? 0))
    const med = sorted[Math.floor((sorted.length - 1) / 2)]
    return { peer, med, runs: rs, ok: rs.every((x) => x.ok) }
  })
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
  const cpus = os.cpus()
  let commit = null
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'lib'], { cwd: ROOT, encoding: 'utf8' }).trim()
    if (dirty) commit += ' (lib/ has uncommitted changes)'
  } catch {
    // not a git checkout
  }
  const wsVersion = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', 'ws', 'package.json'), 'utf8')).version
  const machine = {
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? null,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
    ws: wsVersion,
    commit,
    // Other work on the machine skews the numbers: the 1-minute load average before and after.
    loadAvgBefore: loadBefore,
    loadAvgAfter: Math.round(os.loadavg()[0] * 100) / 100,
  }
  const config = {
    items: N,
    window: W,
    batchedFrame: F,
    runs,
    serveArgs: ['serve', '--port', '0', '--log-level', 'warn', ...serveExtra],
    profile: args.profile,
  }
  const command = `node benchmarks/server-throughput.js ${process.argv.slice(2).join(' ')}`.trim()
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
    mkdirSync(RESULTS_DIR, { recursive: true })
    const base = path.join(RESULTS_DIR, `server-throughput${args.quick ? '-quick' : ''}`)
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
    writeFileSync(`${base}.json`, `${JSON.stringify(json, null, 2)}\n`)
    writeFileSync(`${base}.md`, md)
    process.stderr.write(`\nwrote ${path.relative(ROOT, base)}.json and .md\n`)
  }
  for (const p of profiles) {
    const text = summarizeProfile(p.file)
    const out = p.file.replace(/\.cpuprofile$/, '.txt')
    writeFileSync(out, `peer ${p.peer}, run ${p.run + 1}\n${text}`)
    process.stderr.write(`\n[${p.peer} run ${p.run + 1}] ${text}`)
  }
  if (failed) {
    process.stderr.write('\n!!! at least one peer FAILED its checks (see above); exit 1\n')
    process.exit(1)
  }
}

// A profile taken by hand: `node benchmarks/server-throughput.js --role summarize-profile --file X.cpuprofile`.
if (args.role === 'ws-echo-server') runWsEchoServer()
else if (args.role === 'client') runClient()
else if (args.role === 'summarize-profile') process.stdout.write(summarizeProfile(path.resolve(args.file)))
else if (args.role === 'orchestrator') await orchestrate()
else {
  process.stderr.write(`unknown --role ${args.role}\n`)
  process.exit(2)
}
