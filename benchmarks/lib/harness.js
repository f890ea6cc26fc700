/*
 * The harness the benchmark scripts share: paths, argument parsing, starting and stopping our
 * server, re-invoking a script as a child with a role, /proc stats of a process, the runs' medians,
 * machine / load / git information, the result files and the --cpu-prof summary. Plain Node ESM,
 * no build step; what a script measures stays in the script.
 */
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CLI = path.join(ROOT, 'dist', 'cli', 'index.js')
export const LIB = path.join(ROOT, 'dist', 'index.js')
export const RESULTS_DIR = path.join(ROOT, 'benchmarks', 'results')
export const PROFILE_DIR = path.join(RESULTS_DIR, 'profiles')

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/** Options every script takes; a script's own `options` are added (and may override these). */
const COMMON_OPTIONS = {
  role: { type: 'string', default: 'orchestrator' },
  quick: { type: 'boolean', default: false },
  runs: { type: 'string' },
  only: { type: 'string' },
  profile: { type: 'boolean', default: false },
  'no-write': { type: 'boolean', default: false },
  token: { type: 'string', default: 'bench' },
  file: { type: 'string' }, // summarize-profile
}

/** parseArgs (strict) over the common options plus the script's own. */
export function parseBenchArgs(options) {
  return parseArgs({ options: { ...COMMON_OPTIONS, ...options }, strict: true }).values
}

/** `value` as an integer >= min, or a message naming `--name` and exit 2. */
export function int(name, value, min = 1) {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer >= ${min}, got ${JSON.stringify(value)}\n`)
    process.exit(2)
  }
  return n
}

/** The peers of `all` that `--only a,b` names (all without it), in `all`'s order; none: a message and exit 2. */
export function onlyPeers(args, all) {
  const only = args.only ? new Set(args.only.split(',')) : null
  const peers = only ? all.filter((p) => only.has(p)) : all
  if (peers.length === 0) {
    process.stderr.write(`--only matches nothing; peers: ${all.join(', ')}\n`)
    process.exit(2)
  }
  return peers
}

/** Runs per peer: --runs, else 1 with --quick and 3 without (a shared 2-core machine is noisy). */
export function runsArg(args) {
  return args.runs !== undefined ? int('runs', args.runs) : args.quick ? 1 : 3
}

/** Calls the handler of `args.role`; `summarize-profile` is built in, an unknown role exits 2. */
export async function runRole(args, handlers) {
  // A profile taken by hand: `node benchmarks/<script>.js --role summarize-profile --file X.cpuprofile`.
  const all = { 'summarize-profile': () => process.stdout.write(summarizeProfile(path.resolve(args.file))), ...handlers }
  const handler = all[args.role]
  if (!handler) {
    process.stderr.write(`unknown --role ${args.role}\n`)
    process.exit(2)
  }
  await handler()
}

// ---------------------------------------------------------------------------------------------
// Build
// ---------------------------------------------------------------------------------------------

/** Newest mtime (ms) of the files ending in `ext` below `dir`, 0 if none. */
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

/** Exits 2 with `missingMessage` unless every file of `required` exists; warns when dist/ is stale. */
export function checkBuild(required, missingMessage) {
  if (!required.every((f) => existsSync(f))) {
    process.stderr.write(missingMessage)
    process.exit(2)
  }
  if (newestMtime(path.join(ROOT, 'lib'), '.ts') > newestMtime(path.join(ROOT, 'dist'), '.js')) {
    process.stderr.write('warning: lib/ has changed since the last build; run `npm run build` to measure the current code\n')
  }
}

// ---------------------------------------------------------------------------------------------
// Processes: the server, the script's own children, /proc
// ---------------------------------------------------------------------------------------------

/**
 * `node <nodeArgs>` of our server (or any server printing `listening on URL`); resolves {child,
 * base, stderr()}. `ready`: the stdout line that says it runs, its first group the base URL
 * (default `listening on URL`; e.g. `health on URL` for `inference-stream worker --port 0`).
 */
export function startServer(nodeArgs, label, { ready = /listening on (http:\/\/\S+)/ } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, nodeArgs, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => fail(new Error(`${label}: no line matching ${ready} within 20 s`)), 20_000)
    const fail = (e) => {
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`${e.message}\n--- server stderr ---\n${err.slice(-4000)}`))
    }
    child.stdout.on('data', (d) => {
      out += d
      const m = ready.exec(out)
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

/** SIGTERM (graceful: our server closes its sockets and, with --cpu-prof, writes the profile), SIGKILL after timeoutMs. */
export function stopServer(child, timeoutMs = 20_000) {
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
 * Runs `file` with `--role <role>` in a child process and resolves its last stdout line as JSON
 * (ok false when it printed none or exited non-zero). Options: nodeArgs (before the file, e.g.
 * --cpu-prof); sampler(pid), whose stop() result is merged in at exit; keepStderr, to add the
 * child's stderr tail as `stderr`.
 */
export function runChild(file, role, childArgs, { nodeArgs = [], sampler = null, keepStderr = true } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgs, file, '--role', role, ...childArgs], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    const sampling = sampler ? sampler(child.pid) : null
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => {
      err += d
      if (err.length > 64_000) err = err.slice(-32_000)
    })
    child.on('exit', (code) => {
      const sampled = sampling ? sampling.stop() : null
      const line = out.trim().split('\n').pop() ?? ''
      let result
      try {
        result = JSON.parse(line)
      } catch {
        result = { ok: false, error: `${role} printed no result (exit ${code}): ${(err || out).slice(-2000)}` }
      }
      if (code !== 0) result.ok = false
      result.exitCode = code
      if (sampled) Object.assign(result, sampled)
      if (keepStderr && err.trim()) result.stderr = err.slice(-2000)
      resolve(result)
    })
  })
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100 // not POSIX: /proc is missing too, CPU s of the server will be n/a
  }
})()

/** Peak RSS (KiB) and CPU seconds of a live process, from /proc (null where there is no /proc). */
export function procStats(pid) {
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

/** Sets result.serverPeakRssKiB and result.serverCpuSec (CPU between two procStats of the server). */
export function addServerStats(result, before, after) {
  result.serverPeakRssKiB = after.peakRssKiB
  result.serverCpuSec = after.cpuSec != null && before.cpuSec != null ? after.cpuSec - before.cpuSec : null
}

/** Sum of a counter over its label sets in Prometheus text. */
export function metricSum(text, name) {
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/**
 * Reads the server's /metrics into result.billed (and each counter of `moreCounters`, {key: metric},
 * into result[key]); a bill other than `expected` fails the result. Null billed if /metrics fails.
 */
export async function checkBill(result, base, expected, label, moreCounters = {}) {
  try {
    const text = await (await fetch(`${base}/metrics`)).text()
    result.billed = metricSum(text, 'inference_stream_billed_items_total')
    for (const [key, metric] of Object.entries(moreCounters)) result[key] = metricSum(text, metric)
    if (result.billed !== expected) {
      result.ok = false
      result.firstProblems = [...(result.firstProblems ?? []), `server billed ${result.billed} items, expected ${expected}`]
    }
  } catch (err) {
    result.billed = null
    process.stderr.write(`${label}: could not read /metrics: ${err.message}\n`)
  }
}

/** A counting sink, as a user's writer would be: hands each object to onItem. */
export function countingWritable(onItem) {
  return new Writable({
    objectMode: true,
    write(item, _enc, cb) {
      onItem(item)
      cb()
    },
  })
}

// ---------------------------------------------------------------------------------------------
// Runs and the machine
// ---------------------------------------------------------------------------------------------

/** The median run of `runs` by `key` (items/s, rows/s), every run, and whether all were ok. */
export function medianRun(runs, key) {
  const sorted = [...runs].sort((a, b) => (a[key] ?? 0) - (b[key] ?? 0))
  return { med: sorted[Math.floor((sorted.length - 1) / 2)], runs, ok: runs.every((x) => x.ok) }
}

/** The 1-minute load average, to two decimals. */
export const loadAverage = () => Math.round(os.loadavg()[0] * 100) / 100

/** The load average now, with a warning on stderr when it is above half the CPU count. */
export function loadBeforeRuns() {
  const load = loadAverage()
  if (load > os.cpus().length / 2) {
    process.stderr.write(`warning: load average is ${load} on ${os.cpus().length} CPUs: other work will skew the numbers\n`)
  }
  return load
}

/** Short commit of HEAD, marked when lib/ has uncommitted changes; null outside a git checkout. */
export function gitCommit() {
  let commit = null
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'lib'], { cwd: ROOT, encoding: 'utf8' }).trim()
    if (dirty) commit += ' (lib/ has uncommitted changes)'
  } catch {
    // not a git checkout
  }
  return commit
}

/** Installed version of a package in node_modules. */
export const pkgVersion = (pkg) => JSON.parse(readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')).version

/**
 * The results' `machine`: node (then `afterNode`), platform, CPUs, memory, `versions` of packages,
 * commit, and the 1-minute load average before and after (other work skews the numbers).
 */
export function machineInfo(loadBefore, versions, afterNode = {}) {
  const cpus = os.cpus()
  return {
    node: process.version,
    ...afterNode,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? null,
    totalMemMiB: Math.round(os.totalmem() / 2 ** 20),
    ...versions,
    commit: gitCommit(),
    loadAvgBefore: loadBefore,
    loadAvgAfter: loadAverage(),
  }
}

/** The command line as run, for the results: `node benchmarks/<name>.js <args>`. */
export const commandLine = (name) => `node benchmarks/${name}.js ${process.argv.slice(2).join(' ')}`.trim()

// ---------------------------------------------------------------------------------------------
// Output: formats, result files, profiles, exit
// ---------------------------------------------------------------------------------------------
export const fmtInt = (n) => (n == null ? 'n/a' : Math.round(n).toLocaleString('en-US'))
export const fmtMiB = (kib) => (kib == null ? 'n/a' : (kib / 1024).toFixed(0))
export const fmtS = (s) => (s == null ? 'n/a' : s.toFixed(2))
export const fmtPct = (r) => (r == null ? 'n/a' : `${(r * 100).toFixed(0)}%`)

/** Writes results/<name>[-quick].json and .md and says so on stderr. */
export function writeResults(name, quick, json, md) {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const base = path.join(RESULTS_DIR, `${name}${quick ? '-quick' : ''}`)
  writeFileSync(`${base}.json`, `${JSON.stringify(json, null, 2)}\n`)
  writeFileSync(`${base}.md`, md)
  process.stderr.write(`\nwrote ${path.relative(ROOT, base)}.json and .md\n`)
}

/** node flags that write a CPU profile into PROFILE_DIR when `enabled`, else none. */
export const profileFlags = (enabled) => (enabled ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR] : [])

/** The files in PROFILE_DIR now (when profiling), to tell a run's new profile from older ones. */
export const profilesBefore = (enabled) => new Set(enabled && existsSync(PROFILE_DIR) ? readdirSync(PROFILE_DIR) : [])

/**
 * Renames the profiles written since `before` to stable names and returns their paths:
 * `<stem>.cpuprofile` for a process's main thread, `<stem>.thread<N>.cpuprofile` for its worker
 * threads (the models'), which Node profiles separately as CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile.
 */
export function adoptProfiles(before, stem) {
  const files = []
  for (const f of readdirSync(PROFILE_DIR)) {
    if (before.has(f) || !f.endsWith('.cpuprofile')) continue
    const thread = f.startsWith('CPU.') ? Number(f.split('.')[4]) : 0
    // Stable names, so a new profile of a peer replaces the last one.
    const file = path.join(PROFILE_DIR, `${stem}${thread > 0 ? `.thread${thread}` : ''}.cpuprofile`)
    renameSync(path.join(PROFILE_DIR, f), file)
    files.push(file)
  }
  return files
}

/** Self time per function and per file of a .cpuprofile, highest first, as text. */
export function summarizeProfile(file, top = 25) {
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

/** Writes each profile's summary next to it (.txt) and prints it on stderr. */
export function writeProfileSummaries(profiles) {
  for (const p of profiles) {
    const text = summarizeProfile(p.file)
    writeFileSync(p.file.replace(/\.cpuprofile$/, '.txt'), `peer ${p.peer}, run ${p.run + 1}\n${text}`)
    process.stderr.write(`\n[${p.peer} run ${p.run + 1}] ${text}`)
  }
}

/** Exit 1 with the closing `!!!` line when a peer failed its checks. */
export function exitIfFailed(failed) {
  if (failed) {
    process.stderr.write('\n!!! at least one peer FAILED its checks (see above); exit 1\n')
    process.exit(1)
  }
}

/**
 * Ratios of peer `a` over peer `b` per round (each run over its peer's run of the same round),
 * from `all` (peer → runs, each `{ok, itemsPerSec}`): their median, min, max and list, or null.
 */
export function perRound(all, a, b) {
  const A = all.get(a)
  const B = all.get(b)
  if (!A || !B) return null
  const ratios = []
  for (let i = 0; i < Math.min(A.length, B.length); i++) {
    if (A[i]?.ok && B[i]?.ok && B[i].itemsPerSec > 0) ratios.push(A[i].itemsPerSec / B[i].itemsPerSec)
  }
  if (ratios.length === 0) return null
  const sorted = [...ratios].sort((x, y) => x - y)
  return { median: sorted[Math.floor((sorted.length - 1) / 2)], min: sorted[0], max: sorted[sorted.length - 1], runs: ratios }
}
