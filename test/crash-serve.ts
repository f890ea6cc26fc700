// A durable server (`serve --data-dir`) killed with SIGKILL at random points and restarted on the
// same port and folder: a client stream, the CLI with --checkpoint and a bulk job each finish with
// every result exactly once, in input order, and the ledger shows exactly one bill per item.
// Real processes, real sockets. N is small here (CRASH_ITEMS); benchmarks/crash-serve.js runs big ones.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { parquetReadObjects } from 'hyparquet'
import t from 'tap'
import { InferenceStream, type InferenceResult } from '../lib/client/inference-stream.js'
import { prng } from './helpers/prng.js'
import { until } from './helpers/until.js'

// The built CLI (npm test builds first): a server from source under the test loader starts in
// seconds, from dist in a fraction of one.
const DIST_CLI = fileURLToPath(new URL('../dist/cli/index.js', import.meta.url))
const N = Number(process.env.CRASH_ITEMS ?? 20_000)
const KILLS = 3
const TOKEN = 'crash-token'
const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 1e9))
t.comment(`seed ${SEED} (CRASH_SEED=${SEED} replays the kill points)`)

async function freePort(): Promise<number> {
  const s = createNetServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

/** One `serve --data-dir` process at a time on a fixed port and folder: start, SIGKILL, start again. */
class DurableServer {
  child: ChildProcess | undefined
  starts = 0
  log = ''
  constructor(
    readonly port: number,
    readonly dataDir: string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [DIST_CLI, 'serve', '--port', String(this.port), '--data-dir', this.dataDir, '--token', TOKEN, '--log-level', 'warn', '--log-format', 'json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.child = child
    this.starts++
    child.stdout!.on('data', (d) => (this.log += d))
    child.stderr!.on('data', (d) => (this.log += d))
    let exited = false
    child.once('exit', () => (exited = true))
    await until(async () => {
      if (exited) throw new Error(`serve exited at start ${this.starts}:\n${this.log}`)
      try {
        return (await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1000) })).ok
      } catch {
        return false
      }
    }, `serve to listen (start ${this.starts})`, 60_000)
  }

  async kill(): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exit = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exit
  }

  async stop(): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exit = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    await exit
  }

  /** Items billed in all, from the ledger (`/metrics`, read from loopback). */
  async billed(): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text()
    let n = 0
    for (const m of text.matchAll(/^inference_stream_billed_items_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1])
    return n
  }
}

/** Kills and restarts `server` at each of the points where `progress()` passes a threshold. */
function killer(server: DurableServer, thresholds: number[], progress: () => number | Promise<number>, running: () => boolean) {
  const kills: Array<{ at: number; progress: number }> = []
  let stopped = false
  const done = (async () => {
    for (const at of thresholds) {
      await until(async () => stopped || !running() || (await progress()) >= at, `progress ${at}`, 300_000)
      if (stopped || !running()) return
      kills.push({ at, progress: await progress() })
      await server.kill()
      // Down for a moment: the client's reconnects meet a refused port.
      await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 200)))
      await server.start()
    }
  })()
  return { kills, done, stop: () => void (stopped = true) }
}

function thresholds(rand: () => number, total: number): number[] {
  // Between 5% and 90% of the run, increasing, at least 5% apart.
  const points = Array.from({ length: KILLS }, () => Math.floor(total * (0.05 + rand() * 0.85))).sort((a, b) => a - b)
  for (let i = 1; i < points.length; i++) points[i] = Math.max(points[i], points[i - 1] + Math.floor(total * 0.05))
  return points
}

function tempDir(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('a stream: three SIGKILLs of the server, every result once, in order, billed once', async (t) => {
  const rand = prng(SEED)
  const dataDir = tempDir(t, 'is-crash-stream-')
  const server = new DurableServer(await freePort(), dataDir)
  t.teardown(() => server.kill())
  await server.start()
  const out: InferenceResult<number>[] = []
  let finished = false
  const k = killer(server, thresholds(rand, N), () => out.length, () => !finished)
  const stream = new InferenceStream<number>({
    url: server.url.replace('http', 'ws'),
    model: 'builtin/echo',
    token: TOKEN,
    parameters: { delay_ms: 2 },
    input: (n) => ({ inputs: `item-${n}` }),
    runId: 'crash',
    maxInFlight: 512,
    reconnect: { maxAttempts: 40, minDelayMs: 50, maxDelayMs: 1000 },
  })
  await pipeline(
    Readable.from((function* () { for (let i = 0; i < N; i++) yield i })()),
    stream,
    new Writable({ objectMode: true, write: (r: InferenceResult<number>, _e, cb) => (out.push(r), cb()) }),
  )
  finished = true
  k.stop()
  await k.done
  t.equal(k.kills.length, KILLS, `killed ${KILLS} times mid-run (${JSON.stringify(k.kills)})`)
  t.equal(out.length, N, 'one result per item')
  let wrong = 0
  for (let i = 0; i < out.length; i++) if (out[i].outputs !== `item-${i}` || out[i].error || out[i].id !== `crash-${i}`) wrong++
  t.equal(wrong, 0, 'every result in input order, none failed')
  t.ok(stream.stats.reconnects >= KILLS, `reconnected after each kill (${stream.stats.reconnects})`)
  t.equal(await server.billed(), N, 'the ledger bills each item once')
  await server.stop()
})

t.test('the CLI with --checkpoint: three SIGKILLs of the server, every row once, in order, billed once', async (t) => {
  const rand = prng(SEED + 1)
  const dir = tempDir(t, 'is-crash-cli-')
  const dataDir = join(dir, 'data')
  const input = join(dir, 'in.csv')
  writeFileSync(input, 'text\n' + Array.from({ length: N }, (_, i) => `item-${i}\n`).join(''))
  const output = join(dir, 'out.jsonl')
  const server = new DurableServer(await freePort(), dataDir)
  t.teardown(() => server.kill())
  await server.start()
  const cli = spawn(process.execPath, [DIST_CLI, 'run', input, '--endpoint', server.url, '--token', TOKEN, '-m', 'builtin/echo', '--parameters', '{"delay_ms":2}', '--checkpoint', '-o', output], { stdio: ['ignore', 'pipe', 'pipe'] })
  let cliErr = ''
  cli.stderr.on('data', (d) => (cliErr += d))
  cli.stdout.resume()
  let exited = false
  const exit = new Promise<number | null>((r) => cli.on('exit', (code) => ((exited = true), r(code))))
  t.teardown(() => void cli.kill('SIGKILL'))
  // Progress as the server sees it: items billed so far.
  const k = killer(server, thresholds(rand, N), () => server.billed().catch(() => 0), () => !exited)
  // A stalled run fails here with what the CLI last said, not at the file's timeout with nothing.
  let stalled: NodeJS.Timeout | undefined
  const code = await Promise.race([
    exit,
    new Promise<'stalled'>((r) => (stalled = setTimeout(() => r('stalled'), 180_000))),
  ])
  clearTimeout(stalled)
  if (code === 'stalled') cli.kill('SIGKILL')
  k.stop()
  await k.done
  t.equal(code, 0, `the CLI finished (${cliErr.slice(-2000)})`)
  if (code !== 0) return
  t.equal(k.kills.length, KILLS, `killed ${KILLS} times while the CLI ran (${JSON.stringify(k.kills)})`)
  const rows = readFileSync(output, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; outputs?: unknown; error?: unknown })
  t.equal(rows.length, N, 'one row per input row')
  let wrong = 0
  for (let i = 0; i < rows.length; i++) if (rows[i].text !== `item-${i}` || rows[i].outputs !== `item-${i}` || rows[i].error) wrong++
  t.equal(wrong, 0, 'every row in input order, none failed')
  t.equal(await server.billed(), N, 'the ledger bills each row once')
  await server.stop()
})

t.test('a bulk job: three SIGKILLs of the server, every row once, billed once', async (t) => {
  const rand = prng(SEED + 2)
  const dataDir = tempDir(t, 'is-crash-bulk-')
  const split = join(dataDir, 'datasets', 'crash', 'default')
  mkdirSync(split, { recursive: true })
  writeFileSync(join(split, 'train.csv'), 'text\n' + Array.from({ length: N }, (_, i) => `item-${i}\n`).join(''))
  const server = new DurableServer(await freePort(), dataDir)
  t.teardown(() => server.kill())
  await server.start()
  const auth = { authorization: `Bearer ${TOKEN}` }
  const res = await fetch(`${server.url}/bulk/run/cpu/builtin/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth },
    body: JSON.stringify({ dataset_name: 'crash', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', bulk_name: 'crash-out', parameters: { delay_ms: 2 } }),
  })
  t.equal(res.status, 200)
  const { jobid } = (await res.json()) as { jobid: string }
  type Status = { state: string; processed: number; failed: number; billed?: number }
  const status = async (): Promise<Status | undefined> => {
    try {
      return ((await (await fetch(`${server.url}/bulk/status/${jobid}`, { headers: auth, signal: AbortSignal.timeout(2000) })).json()) as { status: Status }).status
    } catch {
      return undefined
    }
  }
  let ended = false
  const k = killer(server, thresholds(rand, N), () => server.billed().catch(() => 0), () => !ended)
  let last: Status | undefined
  await until(async () => {
    const s = await status()
    if (s) last = s
    ended = s !== undefined && s.state !== 'queued' && s.state !== 'running'
    return ended
  }, 'the job to end', 300_000)
  k.stop()
  await k.done
  t.equal(k.kills.length, KILLS, `killed ${KILLS} times while the job ran (${JSON.stringify(k.kills)})`)
  t.equal(last!.state, 'completed', `the job completed (${JSON.stringify(last)})`)
  t.equal(last!.processed, N)
  t.equal(last!.failed, 0)
  const info = (await (await fetch(`${server.url}/api/datasets/crash-out`, { headers: auth })).json()) as { siblings: { rfilename: string }[] }
  const rows: Record<string, unknown>[] = []
  for (const s of info.siblings.filter((s) => s.rfilename.endsWith('.parquet')).sort((a, b) => a.rfilename.localeCompare(b.rfilename))) {
    const buf = await (await fetch(`${server.url}/datasets/crash-out/resolve/main/${s.rfilename}`, { headers: auth })).arrayBuffer()
    rows.push(...((await parquetReadObjects({ file: buf })) as Record<string, unknown>[]))
  }
  t.equal(rows.length, N, 'one output row per input row')
  let wrong = 0
  for (let i = 0; i < rows.length; i++) if (Number(rows[i].row) !== i || rows[i].text !== `item-${i}` || rows[i].error) wrong++
  t.equal(wrong, 0, 'every row once, in order, none failed')
  t.equal(await server.billed(), N, 'the ledger bills each row once')
  await server.stop()
})
