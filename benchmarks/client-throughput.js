#!/usr/bin/env node
/*
 * Question
 *   How fast does the InferenceStream client move records through our server, compared with the
 *   ways a user would otherwise do it: a hand-written websocket client, or one HTTP request per
 *   record? And with a slow model, does the client keep the server's batch workers busy (does it
 *   hide the model's latency)?
 *
 * Fixture
 *   `builtin/echo` on our server (`node dist/cli/index.js serve --port 0 --log-level warn`), a
 *   fresh server process per peer and run. Record i = {i, text: "review text number <i>"}, made
 *   lazily by a generator (never an array of N), inputs = text. Every client is its own child
 *   process (this file re-invoked with `--role client`), never sharing an event loop with the
 *   server. All peers use the same concurrency C (`--concurrency`, default 256): maxInFlight for
 *   the streams, the window for raw ws, the p-limit / map concurrency for HTTP.
 *     1 stream-v1      `new InferenceStream({protocol: 'v1', ordered: true, maxInFlight: C})` between
 *                      `Readable.from(records)` and a counting Writable in `stream/promises`
 *                      pipeline(). The product.
 *     2 stream-legacy  the same with `protocol: 'legacy'` (one payload per frame, no acks).
 *     3 raw-ws         a hand-written `ws` client in the original examples' style: "Bearer" as
 *                      bytes, one `{"id","inputs"}` message per item, at most C unanswered, counts
 *                      results. No ordering, no reconnect, no backpressure to a source: the
 *                      transport's ceiling for one message per item.
 *     4 http-plimit    one `POST /models/builtin/echo` `{"inputs": text}` per record with `fetch`
 *                      (undici's global pool: no per-origin connection limit, so up to C keep-alive
 *                      sockets) and `p-limit(C)`, the usual `Promise.all(records.map(r => limit(...)))`
 *                      — which holds a promise per record, as users' code does.
 *     5 http-map       `Readable.from(records).map(post, {concurrency: C})` into the counting Writable.
 *   Extra row: 1 with InferenceStream's default maxInFlight (1024), what a user gets without tuning.
 *   HTTP peers run fewer records (`--http-items`, default 20 000): their items/s is compared, not
 *   their wall time.
 *   Checks, each a loud `!!!` and exit 1 when broken: every record answered exactly once with its
 *   own inputs, in input order where the peer promises order (1, 2, 5), no error result, no HTTP
 *   answer from the cache, and the server's bill (`/metrics`) equal to the number of records.
 *
 *   Latency hiding: `builtin/echo` with `parameters: {delay_ms: D}` (default 20) — the model sleeps
 *   D ms once per batch — on a server started with `--workers W --max-batch B` (default 4 × 32), so
 *   its capacity is W·B/D items/s (6 400/s by default). InferenceStream v1 runs with maxInFlight
 *   2·W·B (just enough to have a batch queued behind every running one) and 8·W·B; the raw ws
 *   client with a window of 8·W·B is the reference for what a full server delivers.
 *
 * Command
 *   npm run build && node benchmarks/client-throughput.js     # 200 000 records (HTTP 20 000), 3 runs: ~3.5 min on 2 cores
 *   node benchmarks/client-throughput.js --quick              # 20 000 records (HTTP 5 000), 1 run: smoke test
 *   node benchmarks/client-throughput.js --items 500000 --http-items 50000 --concurrency 512 --runs 5
 *   node benchmarks/client-throughput.js --only stream-v1,raw-ws --profile   # + CPU profile of each client
 *   node benchmarks/client-throughput.js --delay-workers 8 --delay-max-batch 64 --delay-ms 20
 *   Results: benchmarks/results/client-throughput.json and .md (`-quick` with --quick); the
 *   Markdown is also printed on stdout.
 *
 * How to read the result
 *   items/s: records answered per second of the client's wall time, from before it connects (or
 *   sends its first request) to its last result (higher is better). "vs raw ws" is 1 over 3: how
 *   much of the one-message-per-item ceiling the client keeps (v1 frames many items per message,
 *   so it may exceed 100%). "vs HTTP" is over peer 4: the speed-up of using a stream at all; the
 *   promise was 1 ≥ 10× 4, and the verdict line says whether this run kept it. "in flight"
 *   is the most records ever sent and unanswered, as the client counted it (for HTTP, requests
 *   between fetch() and the end of their body; the sockets column is the most TCP sockets the
 *   client process had open, sampled every 20 ms) — the concurrency actually achieved.
 *   Peak RSS is VmHWM of each process (client: process.resourceUsage(); server: /proc just before
 *   it stops). CPU s is user+system time while records flowed; client and server share the
 *   machine's cores, so the one whose CPU s is close to the wall time is the bottleneck. Client
 *   CPU µs/record is what one record costs the client process, whatever the machine's load.
 *   Latency table: "achieved / capacity" near 100% means the client hides the model's latency (the
 *   batch workers never wait for it); well below means the client (or window) starves them.
 *   With --runs R > 1 every row is the peer's median run by items/s; compare numbers within a run.
 */
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const THIS_FILE = fileURLToPath(import.meta.url)
const ROOT = path.resolve(path.dirname(THIS_FILE), '..')
const CLI = path.join(ROOT, 'dist', 'cli', 'index.js')
const LIB = path.join(ROOT, 'dist', 'index.js')
const RESULTS_DIR = path.join(ROOT, 'benchmarks', 'results')
const MODEL = 'builtin/echo'
const DEFAULTS = { items: 200_000, httpItems: 20_000, delayItems: 40_000 }
const QUICK = { items: 20_000, httpItems: 5_000, delayItems: 10_000 }

const inputOf = (i) => `review text number ${i}`
function* records(n) {
  for (let i = 0; i < n; i++) yield { i, text: inputOf(i) }
}

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'orchestrator' },
    // orchestrator
    items: { type: 'string' },
    'http-items': { type: 'string' },
    quick: { type: 'boolean', default: false },
    concurrency: { type: 'string', default: '256' },
    runs: { type: 'string' },
    only: { type: 'string' },
    'delay-ms': { type: 'string' }, // orchestrator default 20; a client without it runs no delay
    'delay-workers': { type: 'string', default: '4' },
    'delay-max-batch': { type: 'string', default: '32' },
    'delay-items': { type: 'string' },
    'no-delay': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    // client
    peer: { type: 'string' },
    base: { type: 'string' },
    'max-in-flight': { type: 'string' },
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
// Role: client. One peer, N records, prints one JSON line of results on stdout.
// ---------------------------------------------------------------------------------------------

/** Bookkeeping shared by every peer: exactly once, own inputs, order where promised. */
function checker(N, ordered) {
  const seen = new Uint8Array(N)
  const c = { answered: 0, duplicates: 0, unknown: 0, wrongOutputs: 0, errorResults: 0, outOfOrder: 0, firstProblems: [] }
  let inFlight = 0
  let peakInFlight = 0
  let lastProgress = Date.now()
  const problem = (text) => {
    if (c.firstProblems.length < 10) c.firstProblems.push(text)
  }
  return {
    c,
    problem,
    get lastProgress() {
      return lastProgress
    },
    sent(k = 1) {
      inFlight += k
      if (inFlight > peakInFlight) peakInFlight = inFlight
    },
    get peakInFlight() {
      return peakInFlight
    },
    /** One answer for record i carrying `outputs`. */
    answer(i, outputs) {
      inFlight--
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
      if (outputs !== null && typeof outputs === 'object' && 'error' in outputs) {
        c.errorResults++
        problem(`error result for ${i}: ${JSON.stringify(outputs).slice(0, 200)}`)
      } else if (outputs !== inputOf(i)) {
        c.wrongOutputs++
        problem(`wrong outputs for ${i}: ${JSON.stringify(outputs).slice(0, 200)}`)
      }
    },
    missing() {
      let missing = 0
      for (let i = 0; i < N; i++) {
        if (seen[i]) continue
        if (missing < 5) problem(`no answer for record ${i}`)
        missing++
      }
      return missing
    },
  }
}

/** A counting sink, as a user's writer would be: consumes results one by one. */
function countingWritable(onResult) {
  return new Writable({
    objectMode: true,
    write(result, _enc, cb) {
      onResult(result)
      cb()
    },
  })
}

async function runClient() {
  const peer = args.peer
  const N = int('items', args.items)
  const C = int('max-in-flight', args['max-in-flight'])
  const stallMs = int('stall-ms', args['stall-ms'])
  const base = args.base
  const token = args.token
  const delayMs = args['delay-ms'] !== undefined ? Number(args['delay-ms']) : 0
  const ordered = peer === 'stream-v1' || peer === 'stream-legacy' || peer === 'http-map'
  const ck = checker(N, ordered)
  const extra = {}
  let error = null

  // A peer that stops making progress fails instead of hanging the benchmark.
  let stalled = null
  const stallTimer = setInterval(() => {
    if (Date.now() - ck.lastProgress > stallMs) stalled?.(new Error(`no answer for ${stallMs} ms (answered ${ck.c.answered}/${N})`))
  }, 1000)
  const stall = new Promise((_, reject) => {
    stalled = reject
  })
  stall.catch(() => {})

  // Modules load before the clock starts: the run measures moving records, not startup.
  const { InferenceStream } = await import(LIB)
  const { default: WebSocket } = await import('ws')
  const { default: pLimit } = await import('p-limit')
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  try {
    if (peer === 'stream-v1' || peer === 'stream-legacy') {
      const parameters = delayMs > 0 ? { delay_ms: delayMs } : undefined
      const stream = new InferenceStream({
        url: base,
        model: MODEL,
        token,
        protocol: peer === 'stream-v1' ? 'v1' : 'legacy',
        ordered: true,
        maxInFlight: C,
        reconnect: false, // a cut is a failure here, not something to hide
        input: (r) => ({ inputs: r.text }),
        ...(parameters ? { parameters } : {}),
      })
      const source = Readable.from(records(N))
      const sink = countingWritable((res) => ck.answer(res.record?.i, res.outputs))
      await Promise.race([pipeline(source, stream, sink), stall])
      const s = stream.stats
      extra.peakInFlightReported = stream.peakInFlight
      extra.streamStats = s
      if (s.ignored > 0 || s.reconnects > 0 || s.resent > 0) ck.problem(`stream stats: ${JSON.stringify(s)}`)
      extra.peakInFlight = stream.peakInFlight
    } else if (peer === 'raw-ws') {
      const url = `${base.replace(/^http/, 'ws')}/bulk/stream/cpu/${MODEL}`
      let framesIn = 0
      let statusMessages = 0
      await Promise.race([
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, { perMessageDeflate: false })
          let sent = 0
          const pump = () => {
            while (sent < N && sent - ck.c.answered < C) {
              const payload = { id: String(sent), inputs: inputOf(sent) }
              if (delayMs > 0) payload.parameters = { delay_ms: delayMs }
              ws.send(JSON.stringify(payload))
              ck.sent()
              sent++
            }
          }
          ws.on('open', () => {
            ws.send(Buffer.from(`Bearer ${token}`)) // bytes, as the original examples send it
            pump()
          })
          ws.on('message', (data) => {
            framesIn++
            const m = JSON.parse(data.toString('utf8'))
            if (m.type === 'results') {
              ck.answer(Number(m.id), m.outputs)
              if (ck.c.answered === N) ws.close(1000)
              else pump()
            } else if (m.type === 'status') {
              statusMessages++
              if (m.code !== undefined) reject(new Error(`status ${m.code}: ${m.message}`))
            } else ck.problem(`unexpected message ${JSON.stringify(m).slice(0, 200)}`)
          })
          ws.on('error', reject)
          ws.on('close', (code) => (ck.c.answered === N ? resolve() : reject(new Error(`closed with ${code} after ${ck.c.answered}/${N}`))))
        }),
        stall,
      ])
      extra.framesIn = framesIn
      extra.statusMessages = statusMessages
      extra.peakInFlight = ck.peakInFlight
    } else if (peer === 'http-plimit' || peer === 'http-map') {
      const endpoint = `${base}/models/${MODEL}`
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` }
      const status = {}
      let fromCache = 0
      // Requests between fetch() and the end of their body: the concurrency the server sees.
      let requests = 0
      let peakRequests = 0
      const post = async (r) => {
        if (++requests > peakRequests) peakRequests = requests
        const res = await fetch(endpoint, { method: 'POST', headers, body: JSON.stringify({ inputs: r.text }) })
        const body = await res.json()
        requests--
        status[res.status] = (status[res.status] ?? 0) + 1
        if (res.headers.get('x-compute-type') === 'cache') fromCache++
        return { i: r.i, outputs: res.ok ? body : { error: `HTTP ${res.status}`, body } }
      }
      if (peer === 'http-plimit') {
        const limit = pLimit(C)
        // What users write: a promise per record up front, p-limit runs C at a time.
        const all = []
        for (const r of records(N)) {
          all.push(
            limit(async () => {
              const { i, outputs } = await post(r)
              ck.answer(i, outputs)
            }),
          )
        }
        await Promise.race([Promise.all(all), stall])
      } else {
        const sink = countingWritable(({ i, outputs }) => ck.answer(i, outputs))
        await Promise.race([pipeline(Readable.from(records(N)).map(post, { concurrency: C }), sink), stall])
      }
      extra.httpStatus = status
      extra.fromCache = fromCache
      if (fromCache > 0) ck.problem(`${fromCache} answers came from the HTTP cache`)
      extra.peakInFlight = peakRequests
    } else {
      throw new Error(`unknown --peer ${peer}`)
    }
  } catch (err) {
    error = err?.stack ?? String(err)
  }
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  clearInterval(stallTimer)
  const missing = ck.missing()
  const c = ck.c
  const ok =
    !error && missing === 0 && c.duplicates === 0 && c.unknown === 0 && c.wrongOutputs === 0 && c.errorResults === 0 &&
    c.outOfOrder === 0 && !(extra.fromCache > 0) &&
    !(extra.streamStats && (extra.streamStats.ignored > 0 || extra.streamStats.reconnects > 0))
  const out = {
    ok,
    error,
    peer,
    items: N,
    concurrency: C,
    delayMs,
    wallMs,
    itemsPerSec: wallMs > 0 ? (c.answered / wallMs) * 1000 : 0,
    answered: c.answered,
    missing,
    duplicates: c.duplicates,
    unknown: c.unknown,
    wrongOutputs: c.wrongOutputs,
    errorResults: c.errorResults,
    outOfOrder: c.outOfOrder,
    ordered,
    ...extra,
    firstProblems: c.firstProblems,
    cpuSec: (cpu.user + cpu.system) / 1e6,
    peakRssKiB: process.resourceUsage().maxRSS,
  }
  // Exit explicitly: keep-alive sockets of fetch's pool must not hold the process (and its profile).
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(ok ? 0 : 1))
}

// ---------------------------------------------------------------------------------------------
// Orchestrator. Server start/stop, /proc stats and the profile summary as in server-throughput.js.
// ---------------------------------------------------------------------------------------------
let CLK_TCK = 100
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
} catch {
  // not POSIX: /proc is missing too, CPU s of the server will be n/a
}

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
    child.kill('SIGTERM')
  })
}

/**
 * Samples the TCP sockets a process has open, from outside it (so the client pays nothing), every
 * 25 ms: the most open at once is the concurrency on the wire; distinct ones seen approximate the
 * connections opened (one that lives less than a sample can slip through). Unix sockets (stdio,
 * and a few Node makes while it starts) are not counted.
 */
function socketSampler(pid) {
  const kind = new Map() // socket inode -> is TCP
  let peak = 0
  let available = true
  let exec = false
  const tcpInodes = () => {
    const set = new Set()
    for (const f of ['tcp', 'tcp6']) {
      let text = ''
      try {
        text = readFileSync(`/proc/${pid}/net/${f}`, 'utf8')
      } catch {
        continue
      }
      for (const line of text.split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/)
        if (cols.length > 9) set.add(cols[9])
      }
    }
    return set
  }
  const sample = () => {
    const inodes = []
    try {
      // Between fork and exec the child still holds this process's fds: wait for the client's own
      // (the kernel switches cmdline before it closes the close-on-exec fds: skip that sample too).
      if (!exec) {
        exec = readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('\0client\0')
        return
      }
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
          if (m) inodes.push(m[1])
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      available = false // no /proc, or the process is gone
      return
    }
    if (inodes.some((i) => !kind.has(i))) {
      const tcp = tcpInodes() // only when a socket is new: /proc/net/tcp lists every socket of the host
      for (const i of inodes) if (!kind.has(i)) kind.set(i, tcp.has(i))
    }
    const n = inodes.filter((i) => kind.get(i)).length
    if (n > peak) peak = n
  }
  const timer = setInterval(sample, 25)
  return {
    stop() {
      clearInterval(timer)
      if (!available && kind.size === 0) return { peakSockets: null, socketsOpened: null }
      let opened = 0
      for (const v of kind.values()) if (v) opened++
      return { peakSockets: peak, socketsOpened: opened }
    },
  }
}

function runClientProcess(nodeArgs, clientArgs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgs, THIS_FILE, '--role', 'client', ...clientArgs], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const sockets = socketSampler(child.pid)
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('exit', (code) => {
      const wire = sockets.stop()
      const line = out.trim().split('\n').pop() ?? ''
      let result
      try {
        result = JSON.parse(line)
      } catch {
        result = { ok: false, error: `client printed no result (exit ${code}): ${(err || out).slice(-2000)}` }
      }
      if (code !== 0) result.ok = false
      result.exitCode = code
      Object.assign(result, wire)
      if (err.trim()) result.stderr = err.slice(-2000)
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

/** Self time per function and per file of a .cpuprofile, highest first. */
function summarizeProfile(file, top = 25) {
  const prof = JSON.parse(readFileSync(file, 'utf8'))
  const byNode = new Map(prof.nodes.map((n) => [n.id, n]))
  const self = new Map()
  const deltas = prof.timeDeltas
  let total = 0
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = deltas[i + 1] ?? 0 // a sample's time is the gap to the next one
    total += dt
    const cf = byNode.get(prof.samples[i]).callFrame
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
const fmtPct = (r) => (r == null ? 'n/a' : `${(r * 100).toFixed(0)}%`)
const fmtX = (r) => (r == null ? 'n/a' : `${r >= 10 ? r.toFixed(0) : r.toFixed(1)}×`)

async function orchestrate() {
  const sizes = args.quick ? QUICK : DEFAULTS
  const N = args.items !== undefined ? int('items', args.items) : sizes.items
  const NH = args['http-items'] !== undefined ? int('http-items', args['http-items']) : Math.min(N, sizes.httpItems)
  const ND = args['delay-items'] !== undefined ? int('delay-items', args['delay-items']) : Math.min(N, sizes.delayItems)
  const C = int('concurrency', args.concurrency)
  const runs = args.runs !== undefined ? int('runs', args.runs) : args.quick ? 1 : 3
  const D = int('delay-ms', args['delay-ms'] ?? '20')
  const DW = int('delay-workers', args['delay-workers'])
  const DB = int('delay-max-batch', args['delay-max-batch'])

  if (!existsSync(CLI) || !existsSync(LIB)) {
    process.stderr.write('dist/ is missing: run `npm run build` first\n')
    process.exit(2)
  }
  if (newestMtime(path.join(ROOT, 'lib'), '.ts') > newestMtime(path.join(ROOT, 'dist'), '.js')) {
    process.stderr.write('warning: lib/ has changed since the last build; run `npm run build` to measure the current code\n')
  }

  const serve = (extra = []) => [CLI, 'serve', '--port', '0', '--log-level', 'warn', ...extra]
  const peers = [
    { name: 'stream-v1', n: '1', what: `InferenceStream v1, ordered, maxInFlight ${C}`, items: N, c: C },
    { name: 'stream-legacy', n: '2', what: `InferenceStream legacy, ordered, maxInFlight ${C}`, items: N, c: C },
    { name: 'raw-ws', n: '3', what: `hand-written ws, 1 msg/item, window ${C}`, items: N, c: C },
    { name: 'http-plimit', n: '4', what: `fetch + p-limit(${C}), 1 POST/record`, items: NH, c: C },
    { name: 'http-map', n: '5', what: `Readable.map(fetch, {concurrency: ${C}})`, items: NH, c: C },
    { name: 'stream-v1-default', n: '1′', client: 'stream-v1', what: 'InferenceStream v1, ordered, maxInFlight 1024 (default)', items: N, c: 1024 },
  ]
  const only = args.only ? new Set(args.only.split(',')) : null
  const selected = only ? peers.filter((p) => only.has(p.name)) : peers
  const delayRuns = args['no-delay'] || (only && !only.has('delay'))
    ? []
    : [
        ...[2, 8].map((k) => ({
          name: `delay-v1-${k}x`,
          client: 'stream-v1',
          what: `InferenceStream v1, maxInFlight ${k}·W·B`,
          items: ND,
          c: k * DW * DB,
          delay: true,
        })),
        // What the server gives any client that keeps it full: the practical ceiling of this table.
        { name: 'delay-raw-ws-8x', client: 'raw-ws', what: 'hand-written ws, window 8·W·B', items: ND, c: 8 * DW * DB, delay: true },
      ]
  if (selected.length === 0 && delayRuns.length === 0) {
    process.stderr.write(`--only matches nothing; peers: ${peers.map((p) => p.name).join(', ')}, delay\n`)
    process.exit(2)
  }
  const delayServeArgs = ['--workers', String(DW), '--max-batch', String(DB)]
  const capacity = (DW * DB * 1000) / D

  const profileDir = path.join(RESULTS_DIR, 'profiles')
  if (args.profile) mkdirSync(profileDir, { recursive: true })
  process.stderr.write(
    `client-throughput: ${N} records (HTTP ${NH}), concurrency ${C}, ${runs} run(s) per peer; ` +
      `latency hiding: ${ND} records, delay_ms ${D}, --workers ${DW} --max-batch ${DB} (capacity ${fmtInt(capacity)} items/s)\n`,
  )
  const loadBefore = Math.round(os.loadavg()[0] * 100) / 100
  if (loadBefore > os.cpus().length / 2) {
    process.stderr.write(`warning: load average is ${loadBefore} on ${os.cpus().length} CPUs: other work will skew the numbers\n`)
  }

  const all = new Map([...selected, ...delayRuns].map((p) => [p.name, []]))
  const profiles = []
  let failed = false
  // Interleaved runs (a b c … a b c …) so a drift of the machine does not favour one peer.
  for (let r = 0; r < runs; r++) {
    for (const peer of [...selected, ...delayRuns]) {
      const token = `bench-${peer.name}-${r}`
      let server
      try {
        server = await startServer(serve(peer.delay ? delayServeArgs : []), peer.name)
      } catch (err) {
        process.stderr.write(`${peer.name}: ${err.message}\n`)
        all.get(peer.name).push({ ok: false, error: err.message })
        failed = true
        continue
      }
      const clientArgs = ['--peer', peer.client ?? peer.name, '--base', server.base, '--items', String(peer.items), '--max-in-flight', String(peer.c), '--token', token]
      if (peer.delay) clientArgs.push('--delay-ms', String(D))
      const before = new Set(args.profile && existsSync(profileDir) ? readdirSync(profileDir) : [])
      const nodeArgs = args.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []
      const s0 = procStats(server.child.pid)
      const result = await runClientProcess(nodeArgs, clientArgs)
      const s = procStats(server.child.pid)
      result.serverPeakRssKiB = s.peakRssKiB
      result.serverCpuSec = s.cpuSec != null && s0.cpuSec != null ? s.cpuSec - s0.cpuSec : null
      try {
        const text = await (await fetch(`${server.base}/metrics`)).text()
        result.billed = metricSum(text, 'inference_stream_billed_items_total')
        if (result.billed !== peer.items) {
          result.ok = false
          result.firstProblems = [...(result.firstProblems ?? []), `server billed ${result.billed} items, expected ${peer.items}`]
        }
      } catch (err) {
        result.billed = null
        process.stderr.write(`${peer.name}: could not read /metrics: ${err.message}\n`)
      }
      await stopServer(server.child)
      if (args.profile) {
        for (const f of readdirSync(profileDir)) {
          if (before.has(f) || !f.endsWith('.cpuprofile')) continue
          const file = path.join(profileDir, `client-throughput.${peer.name}.run${r + 1}.cpuprofile`)
          renameSync(path.join(profileDir, f), file)
          profiles.push({ peer: peer.name, run: r, file })
        }
      }
      all.get(peer.name).push(result)
      const line = `${peer.name.padEnd(18)} run ${r + 1}/${runs}: ${fmtInt(result.itemsPerSec)} items/s, ${fmtS(result.wallMs / 1000)} s, in flight ≤ ${result.peakInFlight ?? 'n/a'}, sockets ≤ ${result.peakSockets ?? 'n/a'} (${result.socketsOpened ?? 'n/a'} seen)`
      if (result.ok) {
        process.stderr.write(`${line}\n`)
      } else {
        failed = true
        process.stderr.write(
          `\n!!! ${peer.name} FAILED its checks: ${result.error ?? ''}\n` +
            `!!! answered ${result.answered}/${peer.items}, missing ${result.missing}, duplicates ${result.duplicates}, ` +
            `unknown ${result.unknown}, wrong outputs ${result.wrongOutputs}, error results ${result.errorResults}, ` +
            `out of order ${result.outOfOrder}, billed ${result.billed ?? 'n/a'}\n` +
            `!!! ${(result.firstProblems ?? []).join('\n!!! ')}\n` +
            (result.stderr ? `--- client stderr (tail) ---\n${result.stderr}\n` : '') +
            `--- server stderr (tail) ---\n${server.stderr().slice(-2000)}\n\n`,
        )
      }
    }
  }

  const median = (name) => {
    const rs = all.get(name)
    const sorted = [...rs].sort((a, b) => (a.itemsPerSec ?? 0) - (b.itemsPerSec ?? 0))
    return { med: sorted[Math.floor((sorted.length - 1) / 2)], runs: rs, ok: rs.every((x) => x.ok) }
  }
  const rows = selected.map((peer) => ({ peer, ...median(peer.name) }))
  const drows = delayRuns.map((peer) => ({ peer, ...median(peer.name) }))
  const ips = (name) => rows.find((r) => r.peer.name === name)?.med.itemsPerSec ?? null
  const ratio = (a, b) => (ips(a) != null && ips(b) ? ips(a) / ips(b) : null)
  const ratios = {
    streamV1OverRawWs: ratio('stream-v1', 'raw-ws'),
    streamV1OverHttpPlimit: ratio('stream-v1', 'http-plimit'),
    streamV1OverHttpMap: ratio('stream-v1', 'http-map'),
    streamLegacyOverRawWs: ratio('stream-legacy', 'raw-ws'),
    streamLegacyOverHttpPlimit: ratio('stream-legacy', 'http-plimit'),
  }
  const floorHolds = ratios.streamV1OverHttpPlimit == null ? null : ratios.streamV1OverHttpPlimit >= 10

  let table =
    '| # | peer | what | records | items/s | wall s | vs raw ws | vs HTTP (4) | in flight ≤ | sockets ≤ (seen) | client peak RSS MiB | server peak RSS MiB | client CPU s | server CPU s | client CPU µs/record | checks |\n' +
    '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n'
  for (const r of rows) {
    const m = r.med
    const vsWs = ips('raw-ws') && m.itemsPerSec != null ? m.itemsPerSec / ips('raw-ws') : null
    const vsHttp = ips('http-plimit') && m.itemsPerSec != null ? m.itemsPerSec / ips('http-plimit') : null
    table +=
      `| ${r.peer.n} | ${r.peer.name} | ${r.peer.what} | ${fmtInt(r.peer.items)} | ${fmtInt(m.itemsPerSec)} | ${fmtS(m.wallMs != null ? m.wallMs / 1000 : null)} | ` +
      `${fmtPct(vsWs)} | ${fmtX(vsHttp)} | ${m.peakInFlight ?? 'n/a'} | ${m.peakSockets ?? 'n/a'} (${m.socketsOpened ?? 'n/a'}) | ${fmtMiB(m.peakRssKiB)} | ${fmtMiB(m.serverPeakRssKiB)} | ` +
      `${fmtS(m.cpuSec)} | ${fmtS(m.serverCpuSec)} | ${m.cpuSec != null ? fmtInt((m.cpuSec * 1e6) / r.peer.items) : 'n/a'} | ${r.ok ? (m.ordered ? 'once, in order' : 'once') : '**FAILED**'} |\n`
  }
  let verdict = ''
  if (ratios.streamV1OverRawWs != null || ratios.streamV1OverHttpPlimit != null) {
    verdict +=
      `\n1 / 3 (InferenceStream v1 over raw ws): **${fmtPct(ratios.streamV1OverRawWs)}**; ` +
      `2 / 3 (legacy over raw ws): ${fmtPct(ratios.streamLegacyOverRawWs)}; ` +
      `1 / 4 (over fetch + p-limit): **${fmtX(ratios.streamV1OverHttpPlimit)}**; 1 / 5 (over Readable.map): ${fmtX(ratios.streamV1OverHttpMap)}.\n`
    if (floorHolds != null) {
      verdict += `\nFloor "1 is at least 10× 4": **${floorHolds ? 'holds' : 'DOES NOT HOLD'}** in this run (${fmtX(ratios.streamV1OverHttpPlimit)}).\n`
    }
  }
  let dtable = ''
  if (drows.length > 0) {
    dtable =
      `\nLatency hiding: \`builtin/echo\` with \`parameters: {delay_ms: ${D}}\` (one sleep per batch), server \`--workers ${DW} --max-batch ${DB}\`: ` +
      `capacity W·B/delay = ${DW}·${DB}/${D / 1000} s = ${fmtInt(capacity)} items/s. ` +
      `A timer of ${D} ms fires a little late and a batch takes some time of its own, so a full server stays a few % under it: ` +
      `the raw ws row, with the same window as the largest, shows what the server gives a client that keeps it full.\n\n` +
      '| peer | what | records | maxInFlight | items/s | achieved / capacity | wall s | in flight ≤ | client peak RSS MiB | server peak RSS MiB | client CPU s | server CPU s | checks |\n' +
      '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n'
    for (const r of drows) {
      const m = r.med
      dtable +=
        `| ${r.peer.name} | ${r.peer.what} | ${fmtInt(r.peer.items)} | ${r.peer.c} | ${fmtInt(m.itemsPerSec)} | ${fmtPct(m.itemsPerSec != null ? m.itemsPerSec / capacity : null)} | ` +
        `${fmtS(m.wallMs != null ? m.wallMs / 1000 : null)} | ${m.peakInFlight ?? 'n/a'} | ${fmtMiB(m.peakRssKiB)} | ${fmtMiB(m.serverPeakRssKiB)} | ${fmtS(m.cpuSec)} | ${fmtS(m.serverCpuSec)} | ${r.ok ? (m.ordered ? 'once, in order' : 'once') : '**FAILED**'} |\n`
    }
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
  const version = (pkg) => JSON.parse(readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')).version
  const machine = {
    node: process.version,
    undici: process.versions.undici ?? null,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? null,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
    ws: version('ws'),
    pLimit: version('p-limit'),
    commit,
    loadAvgBefore: loadBefore,
    loadAvgAfter: Math.round(os.loadavg()[0] * 100) / 100,
  }
  const config = {
    items: N,
    httpItems: NH,
    concurrency: C,
    runs,
    serveArgs: serve(),
    latencyHiding: { items: ND, delayMs: D, workers: DW, maxBatch: DB, capacityItemsPerSec: capacity, serveArgs: serve(delayServeArgs) },
    profile: args.profile,
  }
  const command = `node benchmarks/client-throughput.js ${process.argv.slice(2).join(' ')}`.trim()
  const question =
    'How fast does the InferenceStream client move records through our server (builtin/echo), compared with a hand-written ws client and with one HTTP request per record? Does it hide a slow model\'s latency?'
  const md =
    `# client-throughput\n\n${question}\n\n` +
    `${date} · \`${command}\` · node ${machine.node} (undici ${machine.undici}) · ${machine.cpus}× ${machine.cpuModel} · ws ${machine.ws}` +
    (commit ? ` · ${commit}` : '') +
    ` · load ${machine.loadAvgBefore} → ${machine.loadAvgAfter}\n\n` +
    `${N.toLocaleString('en-US')} records per websocket peer, ${NH.toLocaleString('en-US')} per HTTP peer (compare items/s), ` +
    `concurrency ${C} for every peer, ${runs} run(s) per peer${runs > 1 ? ' (median shown)' : ''}, ` +
    `a fresh \`${config.serveArgs.slice(1).join(' ')}\` per run.\n\n${table}${verdict}${dtable}`

  process.stdout.write(`\n${table}${verdict}${dtable}`)
  if (!args['no-write']) {
    mkdirSync(RESULTS_DIR, { recursive: true })
    const base = path.join(RESULTS_DIR, `client-throughput${args.quick ? '-quick' : ''}`)
    const pick = (r) => ({
      name: r.peer.name,
      number: r.peer.n,
      what: r.peer.what,
      records: r.peer.items,
      concurrency: r.peer.c,
      itemsPerSec: r.med.itemsPerSec ?? null,
      wallMs: r.med.wallMs ?? null,
      peakInFlight: r.med.peakInFlight ?? null,
      peakSockets: r.med.peakSockets ?? null,
      socketsOpened: r.med.socketsOpened ?? null,
      clientPeakRssKiB: r.med.peakRssKiB ?? null,
      serverPeakRssKiB: r.med.serverPeakRssKiB ?? null,
      clientCpuSec: r.med.cpuSec ?? null,
      serverCpuSec: r.med.serverCpuSec ?? null,
      ok: r.ok,
      runs: r.runs,
    })
    const json = {
      question,
      date,
      command,
      machine,
      config,
      ok: !failed,
      ratios,
      floor: { promise: 'stream-v1 items/s >= 10 × http-plimit items/s', holds: floorHolds },
      peers: rows.map(pick),
      latencyHiding: drows.map((r) => ({ ...pick(r), capacityItemsPerSec: capacity, achievedOverCapacity: r.med.itemsPerSec != null ? r.med.itemsPerSec / capacity : null })),
    }
    writeFileSync(`${base}.json`, `${JSON.stringify(json, null, 2)}\n`)
    writeFileSync(`${base}.md`, md)
    process.stderr.write(`\nwrote ${path.relative(ROOT, base)}.json and .md\n`)
  }
  for (const p of profiles) {
    const text = summarizeProfile(p.file)
    writeFileSync(p.file.replace(/\.cpuprofile$/, '.txt'), `peer ${p.peer}, run ${p.run + 1}\n${text}`)
    process.stderr.write(`\n[${p.peer} run ${p.run + 1}] ${text}`)
  }
  if (failed) {
    process.stderr.write('\n!!! at least one peer FAILED its checks (see above); exit 1\n')
    process.exit(1)
  }
}

if (args.role === 'client') await runClient()
else if (args.role === 'summarize-profile') process.stdout.write(summarizeProfile(path.resolve(args.file)))
else if (args.role === 'orchestrator') await orchestrate()
else {
  process.stderr.write(`unknown --role ${args.role}\n`)
  process.exit(2)
}
