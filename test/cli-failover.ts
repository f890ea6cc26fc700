// The CLI with a repeated --endpoint: `run` starts on the first front-end that answers and moves to
// the next when one is lost (rows once, in order, billed once by the shared state); `bench` and the
// `bulk` commands take the list too.
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command, CommanderError } from 'commander'
import t, { type Test } from 'tap'
import { bulkCommand } from '../lib/cli/bulk.js'
import { BulkClient } from '../lib/client/bulk-client.js'
import { InferenceStreamError } from '../lib/errors.js'
import { createServer, type InferenceServer } from '../lib/server/server.js'
import type { ServerOptions } from '../lib/server/options.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { dataDir } from './helpers/bulk.js'
import { cliProcess as spawnCli } from './helpers/cli.js'

const dir = mkdtempSync(join(tmpdir(), 'is-cli-failover-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const cliProcess = (args: string[]) => spawnCli(args, { INFERENCE_STREAM_TOKEN: '' })

async function deadUrl(): Promise<string> {
  const s = createNetServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return `http://127.0.0.1:${port}`
}

/** Front-ends `a` and `b` on one MemoryStateBackend and one tenant secret. */
async function cluster(t: Test, options: ServerOptions = {}): Promise<{ state: MemoryStateBackend; a: InferenceServer; b: InferenceServer; aUrl: string; bUrl: string }> {
  const state = new MemoryStateBackend({ maxRetained: 100_000, retentionMs: 600_000 })
  const common = { state, tenantSecret: randomBytes(32), tokens: ['k'], shutdownTimeoutMs: 0, ...options }
  const a = createServer({ ...common, nodeId: 'a' })
  const b = createServer({ ...common, nodeId: 'b' })
  await a.listen(0)
  await b.listen(0)
  t.teardown(async () => {
    await a.close()
    await b.close()
    await state.close()
  })
  return { state, a, b, aUrl: a.url, bUrl: b.url }
}

async function billed(state: MemoryStateBackend): Promise<number> {
  return (await state.ledger()).reduce((n, e) => n + e.items, 0)
}

function writeInput(path: string, n: number): void {
  const lines = ['key,text']
  for (let i = 0; i < n; i++) lines.push(`k${i},row ${i}`)
  writeFileSync(path, `${lines.join('\n')}\n`)
}

const jsonl = (path: string): Record<string, unknown>[] => readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l))

t.test('run --endpoint DOWN --endpoint B: the run goes to B and says it skipped the first', async (t) => {
  const { state, bUrl } = await cluster(t)
  const input = join(dir, 'first-down.csv')
  const out = join(dir, 'first-down.jsonl')
  writeInput(input, 300)
  const dead = await deadUrl()
  const p = cliProcess(['run', input, '-o', out, '-m', 'builtin/echo', '--endpoint', dead, '--endpoint', bUrl, '--token', 'k', '--no-progress'])
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  t.match(p.err(), new RegExp(`cannot reach ${dead.replace('http:', 'ws:')}/bulk/stream/cpu/builtin/echo \\(.*ECONNREFUSED.*\\); trying the next --endpoint`))
  const rows = jsonl(out)
  t.same(rows.map((r) => r.key), [...Array(300).keys()].map((i) => `k${i}`))
  t.equal(await billed(state), 300)
})

t.test('run with two --endpoint: A dies mid-run, the run finishes on B, every row once, in order, billed once', async (t) => {
  const { state, a, aUrl, bUrl } = await cluster(t, { maxBatch: 16 })
  const input = join(dir, 'mid-run.csv')
  const out = join(dir, 'mid-run.jsonl')
  const N = 3000
  writeInput(input, N)
  const p = cliProcess(['run', input, '-o', out, '-m', 'builtin/echo', '--parameters', '{"delay_ms":2}', '--endpoint', aUrl, '--endpoint', bUrl, '--token', 'k', '--max-in-flight', '256', '--no-progress'])
  const deadline = Date.now() + 60_000
  while ((await billed(state)) < N / 3 && p.child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  t.ok((await billed(state)) < N, 'A killed mid-run')
  const closing = a.close()
  a.terminateStreams()
  await closing
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  t.match(p.err(), /reconnected to ws:\/\/.*/)
  t.match(p.out(), /reconnects: 1/)
  const rows = jsonl(out)
  t.same(rows.map((r) => r.key), [...Array(N).keys()].map((i) => `k${i}`), 'every row once, in order')
  t.ok(rows.every((r, i) => r.outputs === `row ${i}`), "each row's own result")
  t.equal(await billed(state), N, 'billed once per row by the shared state')
})

t.test('run: no --endpoint answers (exit 1, each named); one given twice (exit 2)', async (t) => {
  const input = join(dir, 'none.csv')
  writeInput(input, 5)
  const d1 = await deadUrl()
  const d2 = await deadUrl()
  const none = cliProcess(['run', input, '-o', join(dir, 'none.jsonl'), '-m', 'builtin/echo', '--endpoint', d1, '--endpoint', d2, '--no-progress'])
  const twice = cliProcess(['run', input, '-m', 'builtin/echo', '--endpoint', d1, '--endpoint', d1])
  t.equal((await none.exited).code, 1, none.err())
  t.match(none.err(), /Cannot reach any of the 2 endpoints tried: ws:\/\/127\.0\.0\.1:\d+\/bulk\/stream\/cpu\/builtin\/echo \(.*ECONNREFUSED.*\), ws:\/\/127\.0\.0\.1:\d+\/bulk\/stream\/cpu\/builtin\/echo \(.*ECONNREFUSED.*\); nothing was sent/)
  t.equal((await twice.exited).code, 2)
  t.match(twice.err(), new RegExp(`--endpoint ${d1} is given twice`))
})

t.test('a first connection that fails: at once (not after the reconnect budget), one line, nothing left behind', async (t) => {
  const input = join(dir, 'down.csv')
  writeInput(input, 50)
  const dead = await deadUrl()
  const started = Date.now()
  const runs = ['down.jsonl', 'down.parquet'].map((name) => cliProcess(['run', input, '-o', join(dir, name), '-m', 'builtin/echo', '--endpoint', dead, '--no-progress']))
  for (const [i, p] of runs.entries()) {
    t.equal((await p.exited).code, 1, p.err())
    t.match(p.err(), /^inference-stream: run failed after 0 rows: Cannot reach ws:\/\/127\.0\.0\.1:\d+\/bulk\/stream\/cpu\/builtin\/echo \(.*ECONNREFUSED.*\); nothing was sent \(ERR_CONNECTION_LOST\)\n$/)
    t.notOk(existsSync(join(dir, `${['down.jsonl', 'down.parquet'][i]}.partial`)), 'no empty <output>.partial')
  }
  // The reconnect budget alone is 17-22 s; a CLI start-up on a loaded machine a few.
  t.ok(Date.now() - started < 12_000, `failed in ${Date.now() - started} ms`)
  // Port 9 (discard), as a user tries a down server: fetch refuses it without connecting.
  const bulk = [
    cliProcess(['bulk', 'run', '-m', 'builtin/echo', '--dataset', 'x', '--split', 'train', '--column', 'text', '--endpoint', 'http://127.0.0.1:9', '--token', 't']),
    cliProcess(['bulk', 'download', '--dataset', 'x', '-o', join(dir, 'dl.jsonl'), '--endpoint', 'http://127.0.0.1:9', '--token', 't']),
  ]
  for (const p of bulk) {
    t.equal((await p.exited).code, 1, p.err())
    t.match(p.err(), /^inference-stream: Cannot reach http:\/\/127\.0\.0\.1:9 \((POST|GET) [^)]+\): port 9 is one that fetch never connects to \(a "bad port" of the Fetch standard\), so nothing was sent; serve on another port\n$/)
    t.notMatch(p.err(), /may have been started/, 'nothing was sent: no job can have started')
  }
  t.notOk(existsSync(join(dir, 'dl.jsonl.partial')), 'no <output>.partial of a download that never started')
})

t.test('bench --endpoint DOWN --endpoint B: measures B, its /health and /metrics read', async (t) => {
  const { bUrl } = await cluster(t)
  const p = cliProcess(['bench', '-m', 'builtin/echo', '--endpoint', await deadUrl(), '--endpoint', bUrl, '--token', 'k', '--items', '200', '--in-flight', '16', '--json', '--no-progress'])
  const { code } = await p.exited
  t.equal(code, 0, p.err())
  const result = JSON.parse(p.out()) as { endpoint: string[]; levels: { items: number; failed: number; meanBatch: number | null }[]; workers: number | null }
  t.equal(result.endpoint.length, 2)
  t.match(result.levels, [{ items: 200, failed: 0 }])
  t.not(result.workers, null, "B's /health was read")
  t.not(result.levels[0].meanBatch, null, "B's /metrics was read")
})

// The bulk commands in this process (as test/cli-bulk.ts runs them).
async function runBulk(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = ''
  let err = ''
  let code = 0
  const io = {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    stderrIsTTY: false,
    env: { INFERENCE_STREAM_TOKEN: '' },
    setExitCode: (c: number) => (code = c),
  }
  const program = new Command('inference-stream').exitOverride().addCommand(bulkCommand(io))
  try {
    await program.parseAsync(['node', 'inference-stream', ...args])
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode
    else if (e instanceof InferenceStreamError) {
      err += `inference-stream: ${e.message} (${e.code})\n`
      code = 2
    } else throw e
  }
  return { code, out, err }
}

t.test('bulk run / status / download / cancel with --endpoint DOWN --endpoint B', async (t) => {
  const data = dataDir(200)
  t.teardown(() => rmSync(data, { recursive: true, force: true }))
  const { bUrl } = await cluster(t, { dataDir: data })
  const dead = await deadUrl()
  const servers = ['--endpoint', dead, '--endpoint', bUrl, '--token', 'k']
  const run = await runBulk(['bulk', 'run', '-m', 'builtin/echo', '-d', 'reviews', '--split', 'train', '-c', 'text', '--wait', '--json', '--no-progress', '--poll-interval', '20', ...servers])
  t.equal(run.code, 0, run.err)
  const final = JSON.parse(run.out) as { jobid: string; state: string; processed: number }
  t.match(final, { state: 'completed', processed: 200 })
  const status = await runBulk(['bulk', 'status', final.jobid, '--json', ...servers])
  t.equal(status.code, 0, status.err)
  t.match(JSON.parse(status.out), { status: { state: 'completed' } })
  const out = join(dir, 'bulk.jsonl')
  const download = await runBulk(['bulk', 'download', final.jobid, '-o', out, '--no-progress', ...servers])
  t.equal(download.code, 0, download.err)
  t.same(jsonl(out).map((r) => r.row), [...Array(200).keys()])
  const jobs = await runBulk(['bulk', 'jobs', '--json', ...servers])
  t.equal(jobs.code, 0, jobs.err)
  // A cancel of a finished job: B's 409, exit 2 (not a failover matter).
  const cancel = await runBulk(['bulk', 'cancel', final.jobid, ...servers])
  t.equal(cancel.code, 2)
  t.match(cancel.err, /already completed.*HTTP 409/)
  t.ok((await new BulkClient({ url: bUrl, token: 'k' }).jobs()).length === 1, 'one job')
})
