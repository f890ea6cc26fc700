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
import { mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import {
  CLI, LIB, PROFILE_DIR, addServerStats, adoptProfiles, checkBill, checkBuild, commandLine, countingWritable, exitIfFailed,
  fmtInt, fmtMiB, fmtPct, fmtS, int, loadBeforeRuns, machineInfo, medianRun, parseBenchArgs, pkgVersion, procStats,
  profileFlags, profilesBefore, runChild, runRole, runsArg, startServer, stopServer, writeProfileSummaries, writeResults,
} from './lib/harness.js'

const THIS_FILE = fileURLToPath(import.meta.url)
const MODEL = 'builtin/echo'
const DEFAULTS = { items: 200_000, httpItems: 20_000, delayItems: 40_000 }
const QUICK = { items: 20_000, httpItems: 5_000, delayItems: 10_000 }

const inputOf = (i) => `review text number ${i}`
function* records(n) {
  for (let i = 0; i < n; i++) yield { i, text: inputOf(i) }
}

// Besides the common ones (role, quick, runs, only, profile, no-write, token, file: see lib/harness.js).
const args = parseBenchArgs({
  // orchestrator
  items: { type: 'string' },
  'http-items': { type: 'string' },
  concurrency: { type: 'string', default: '256' },
  'delay-ms': { type: 'string' }, // orchestrator default 20; a client without it runs no delay
  'delay-workers': { type: 'string', default: '4' },
  'delay-max-batch': { type: 'string', default: '32' },
  'delay-items': { type: 'string' },
  'no-delay': { type: 'boolean', default: false },
  // client
  peer: { type: 'string' },
  base: { type: 'string' },
  'max-in-flight': { type: 'string' },
  'stall-ms': { type: 'string', default: '30000' },
})

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
// Orchestrator. Server start/stop, /proc stats and the profile summary: lib/harness.js.
// ---------------------------------------------------------------------------------------------
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

const fmtX = (r) => (r == null ? 'n/a' : `${r >= 10 ? r.toFixed(0) : r.toFixed(1)}×`)

async function orchestrate() {
  const sizes = args.quick ? QUICK : DEFAULTS
  const N = args.items !== undefined ? int('items', args.items) : sizes.items
  const NH = args['http-items'] !== undefined ? int('http-items', args['http-items']) : Math.min(N, sizes.httpItems)
  const ND = args['delay-items'] !== undefined ? int('delay-items', args['delay-items']) : Math.min(N, sizes.delayItems)
  const C = int('concurrency', args.concurrency)
  const runs = runsArg(args)
  const D = int('delay-ms', args['delay-ms'] ?? '20')
  const DW = int('delay-workers', args['delay-workers'])
  const DB = int('delay-max-batch', args['delay-max-batch'])

  checkBuild([CLI, LIB], 'dist/ is missing: run `npm run build` first\n')

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

  if (args.profile) mkdirSync(PROFILE_DIR, { recursive: true })
  process.stderr.write(
    `client-throughput: ${N} records (HTTP ${NH}), concurrency ${C}, ${runs} run(s) per peer; ` +
      `latency hiding: ${ND} records, delay_ms ${D}, --workers ${DW} --max-batch ${DB} (capacity ${fmtInt(capacity)} items/s)\n`,
  )
  const loadBefore = loadBeforeRuns()

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
      const before = profilesBefore(args.profile)
      const s0 = procStats(server.child.pid)
      // The parent samples the client's TCP sockets while it runs (peakSockets, socketsOpened).
      const result = await runChild(THIS_FILE, 'client', clientArgs, { nodeArgs: profileFlags(args.profile), sampler: socketSampler })
      addServerStats(result, s0, procStats(server.child.pid))
      await checkBill(result, server.base, peer.items, peer.name)
      await stopServer(server.child)
      if (args.profile) {
        for (const file of adoptProfiles(before, `client-throughput.${peer.name}.run${r + 1}`)) profiles.push({ peer: peer.name, run: r, file })
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

  const median = (name) => medianRun(all.get(name), 'itemsPerSec')
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
  const machine = machineInfo(loadBefore, { ws: pkgVersion('ws'), pLimit: pkgVersion('p-limit') }, { undici: process.versions.undici ?? null })
  const commit = machine.commit
  const config = {
    items: N,
    httpItems: NH,
    concurrency: C,
    runs,
    serveArgs: serve(),
    latencyHiding: { items: ND, delayMs: D, workers: DW, maxBatch: DB, capacityItemsPerSec: capacity, serveArgs: serve(delayServeArgs) },
    profile: args.profile,
  }
  const command = commandLine('client-throughput')
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
    writeResults('client-throughput', args.quick, json, md)
  }
  writeProfileSummaries(profiles)
  exitIfFailed(failed)
}

// `--role summarize-profile --file X.cpuprofile` summarises a profile taken by hand.
await runRole(args, { client: runClient, orchestrator: orchestrate })
