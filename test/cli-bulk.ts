import { createServer as createNetServer } from 'node:net'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Command, CommanderError } from 'commander'
import { parquetReadObjects } from 'hyparquet'
import t from 'tap'
import { bulkCommand } from '../lib/cli/bulk.js'
import { InferenceStreamError } from '../lib/errors.js'
import { BulkClient, type BulkJobStatus } from '../lib/client/bulk-client.js'
import { DatasetBulk, type BulkRow } from '../lib/client/dataset-bulk.js'
import { cliProcess as spawnCliProcess } from './helpers/cli.js'
import { startServer } from './helpers/server.js'

const dir = mkdtempSync(join(tmpdir(), 'is-cli-bulk-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

// The token variable is cleared so a developer's own setting never leaks into these runs.
const cliProcess = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnCliProcess(args, { INFERENCE_STREAM_TOKEN: '', ...env })

interface CliResult {
  code: number | null
  out: string
  err: string
}

async function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const p = cliProcess(args, env)
  const { code } = await p.exited
  return { code, out: p.out(), err: p.err() }
}

// The bulk commands in this process, as lib/cli/index.ts runs them (a spawn costs seconds of
// TypeScript loading; the few spawned runs above check the real binary end to end).
async function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  let out = ''
  let err = ''
  let code = 0
  const io = {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    stderrIsTTY: false,
    env: { INFERENCE_STREAM_TOKEN: '', ...env },
    setExitCode: (c: number) => (code = c),
  }
  const program = new Command('inference-stream').exitOverride().addCommand(bulkCommand(io))
  try {
    await program.parseAsync(['node', 'inference-stream', ...args])
  } catch (e) {
    if (e instanceof CommanderError) code = e.exitCode
    else if (e instanceof InferenceStreamError) {
      // What index.ts does with an error thrown while parsing flags.
      err += `inference-stream: ${e.message} (${e.code})\n`
      code = 2
    } else throw e
  }
  return { code, out, err }
}

const N = 250
function textOf(i: number): string {
  return i % 4 === 0 ? `terrible, awful ${i}` : `great, I love it ${i}`
}
function csvOf(n: number, column = 'text'): string {
  const lines = [`key,${column}`]
  for (let i = 0; i < n; i++) lines.push(`k${i},"${textOf(i)}"`)
  return `${lines.join('\n')}\n`
}

const dataDir = join(dir, 'data')
mkdirSync(join(dataDir, 'datasets', 'reviews', 'default'), { recursive: true })
writeFileSync(join(dataDir, 'datasets', 'reviews', 'default', 'train.csv'), csvOf(N))
mkdirSync(join(dataDir, 'datasets', 'many', 'default'), { recursive: true })
writeFileSync(join(dataDir, 'datasets', 'many', 'default', 'train.csv'), csvOf(5000))
// Other columns to keep: `id` and `label` are result columns too (written as input_id, input_label).
mkdirSync(join(dataDir, 'datasets', 'wide', 'default'), { recursive: true })
writeFileSync(join(dataDir, 'datasets', 'wide', 'default', 'train.csv'), ['id,rating,text,label,input_label', 'a1,5,"great, I love it",pos,x', 'a2,1,"terrible, awful",neg,y', 'a3,3,"it is fine",,z', ''].join('\n'))
const server = await startServer(t, { tokens: ['tok'], dataDir, maxBatch: 4, jobMaxInFlight: 8 })
const server2 = ['--endpoint', server.url]
const client = new BulkClient({ url: server.url, token: 'tok' })
const REVIEWS = ['--dataset', 'reviews', '--split', 'train', '--column', 'text']

async function readParquetFile(path: string): Promise<Record<string, unknown>[]> {
  const buf = readFileSync(path)
  return parquetReadObjects({ file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer })
}

function readJsonl(path: string): Record<string, unknown>[] {
  return readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
}

let jobId = ''
let bulkName = ''
let revision = ''

t.test('bulk run --wait: progress, then the final status; status shows it', async (t) => {
  const r = await spawnCli(['bulk', 'run', '--model', 'builtin/sentiment', ...REVIEWS, '--wait', '--progress-interval', '0', '--poll-interval', '20', ...server2], { INFERENCE_STREAM_TOKEN: 'tok' })
  t.equal(r.code, 0, r.err)
  const m = /^jobid\s+(\S+)\nbulk_name\s+(\S+)\n/.exec(r.out)
  t.ok(m, r.out)
  jobId = m?.[1] ?? ''
  bulkName = m?.[2] ?? ''
  t.equal(bulkName, 'bulk-reviews-default-train-text-builtin-sentiment')
  t.match(r.out, /state\s+completed/)
  t.match(r.out, new RegExp(`rows\\s+${N}/${N} processed, 0 failed`))
  t.match(r.err, new RegExp(`job ${jobId.slice(0, 8)}: completed, ${N}/${N} rows \\(100%\\)`), 'a progress line')
  t.notMatch(r.err, /completed, .* 0\.0 rows\/s/, 'a finished job\'s rate is its own, not 0')

  const json = await runCli(['bulk', 'status', jobId, '--json', ...server2, '--token', 'tok'])
  t.equal(json.code, 0, json.err)
  const status = (JSON.parse(json.out) as { status: BulkJobStatus }).status
  t.match(status, { active: 0, state: 'completed', jobid: jobId, bulk_name: bulkName, model: 'builtin/sentiment', total: N, processed: N, failed: 0, error: null })
  t.match(status.revision, /^[0-9a-f]{40}$/)
  revision = status.revision as string

  const table = await runCli(['bulk', 'status', jobId, ...server2, '--token', 'tok'])
  t.equal(table.code, 0, table.err)
  t.match(table.out, new RegExp(`^job\\s+${jobId}\\nstate\\s+completed\\nmodel\\s+builtin/sentiment\\ndataset\\s+reviews \\(config default, split train, column text\\)`))
  t.match(table.out, new RegExp(`output\\s+${bulkName} @ ${revision}`))

  const jobs = await runCli(['bulk', 'jobs', ...server2, '--token', 'tok'])
  t.equal(jobs.code, 0, jobs.err)
  t.match(jobs.out, new RegExp(`${jobId}  completed  ${N}/${N} rows  builtin/sentiment  reviews/default/train:text -> ${bulkName}`))
})

t.test('bulk download to .jsonl: the rows of the job, as DatasetBulk reads them', async (t) => {
  const out = join(dir, 'out.jsonl')
  const r = await spawnCli(['bulk', 'download', jobId, '-o', out, ...server2, '--token', 'tok'])
  t.equal(r.code, 0, r.err)
  t.match(r.out, new RegExp(`^${N} rows -> .*out\\.jsonl \\(${bulkName} @ ${revision}\\)`))
  const rows = readJsonl(out)
  t.equal(rows.length, N)
  t.same(rows.map((row) => row.row), [...Array(N).keys()], 'input order')
  t.same(rows.map((row) => row.text), [...Array(N).keys()].map(textOf))
  t.ok(rows.every((row, i) => row.label === (i % 4 === 0 ? 'NEGATIVE' : 'POSITIVE')))
  t.same(Object.keys(rows[0]), ['id', 'row', 'text', 'label', 'score', 'outputs', 'error', 'error_code'])
  t.equal(typeof rows[0].outputs, 'string', 'outputs as JSON text')
  const direct: BulkRow[] = []
  for await (const row of new DatasetBulk({ url: server.url, token: 'tok', jobId })) direct.push(row as BulkRow)
  t.same(rows, direct, 'the same rows as DatasetBulk')
  t.notOk(existsSync(`${out}.partial`))

  // --parse-outputs, and a Parquet file by --dataset + --revision.
  const parsed = join(dir, 'parsed.jsonl')
  t.equal((await runCli(['bulk', 'download', jobId, '-o', parsed, '--parse-outputs', ...server2, '--token', 'tok'])).code, 0)
  t.match(readJsonl(parsed)[1].outputs, [[{ label: 'POSITIVE' }, { label: 'NEGATIVE' }]])
  const pq = join(dir, 'out.parquet')
  const byRev = await runCli(['bulk', 'download', '--dataset', bulkName, '--revision', revision.slice(0, 10), '-o', pq, ...server2, '--token', 'tok'])
  t.equal(byRev.code, 0, byRev.err)
  const pqRows = await readParquetFile(pq)
  t.equal(pqRows.length, N)
  t.same(pqRows.map((row) => row.text), [...Array(N).keys()].map(textOf))
})

t.test('bulk upload a CSV, then run a job on it and download its outputs as CSV', async (t) => {
  const file = join(dir, 'mine.csv')
  writeFileSync(file, csvOf(40, 'sentence'))
  const up = await spawnCli(['bulk', 'upload', file, '--dataset', 'org/mine', '--config', 'small', '--split', 'test', ...server2, '--token', 'tok'])
  t.equal(up.code, 0, up.err)
  t.match(up.out, /mine\.csv \(\d+ bytes\) -> dataset org\/mine, config small, split test/)
  // Under the tenant's own uploads, never the operator's datasets folder.
  const tenant = server.tenants.authenticate('tok')!.id
  t.ok(existsSync(join(dataDir, 'tenants', tenant, 'datasets', 'org', 'mine', 'small', 'test.csv')), 'on the server, in the tenant\'s folder')
  t.notOk(existsSync(join(dataDir, 'datasets', 'org', 'mine')), 'not in the operator\'s folder')

  const run = await runCli(['bulk', 'run', '-m', 'builtin/echo', '-d', 'org/mine', '--config', 'small', '--split', 'test', '-c', 'sentence', '--bulk-name', 'org/mine-echo', '--wait', '--json', '--no-progress', '--poll-interval', '20', ...server2, '--token', 'tok'])
  t.equal(run.code, 0, run.err)
  t.equal(run.err, '', 'no progress with --no-progress')
  const final = JSON.parse(run.out) as BulkJobStatus
  t.match(final, { state: 'completed', bulk_name: 'org/mine-echo', total: 40, processed: 40 })
  const out = join(dir, 'mine.csv.out.csv')
  const dl = await runCli(['bulk', 'download', final.jobid, '-o', out, ...server2, '--token', 'tok'])
  t.equal(dl.code, 0, dl.err)
  const lines = readFileSync(out, 'utf8').trim().split('\n')
  t.equal(lines[0], 'id,row,sentence,outputs,error,error_code')
  t.equal(lines.length, 41)
  t.equal(lines[1], '0,0,"terrible, awful 0","""terrible, awful 0""",,')
})

t.test('bulk run without --wait; cancel; run --wait on a job that gets cancelled exits 1', async (t) => {
  const slow = ['-m', 'builtin/echo', '-d', 'many', '--split', 'train', '-c', 'text', '--parameters', '{"delay_ms":50}', ...server2, '--token', 'tok']
  const started = await runCli(['bulk', 'run', ...slow, '--json'])
  t.equal(started.code, 0, started.err)
  const { jobid } = JSON.parse(started.out) as { jobid: string; bulk_name: string }
  await untilRunning(jobid)
  const cancel = await runCli(['bulk', 'cancel', jobid, ...server2, '--token', 'tok'])
  t.equal(cancel.code, 0, cancel.err)
  t.match(cancel.out, /state\s+cancelled/)
  t.match(cancel.out, /error\s+Cancelled/)
  const again = await runCli(['bulk', 'cancel', jobid, ...server2, '--token', 'tok'])
  t.equal(again.code, 2, 'a finished job cannot be cancelled')
  t.match(again.err, new RegExp(`^inference-stream: Job ${jobid} is already cancelled \\(POST /bulk/cancel/${jobid}: HTTP 409, ERR_JOB_STATE\\)\\n$`))

  const waiting = cliProcess(['bulk', 'run', ...slow, '--wait', '--poll-interval', '20', '--progress-interval', '0'])
  let cancelled = false
  const deadline = Date.now() + 30_000
  while (!cancelled && Date.now() < deadline) {
    const m = /^jobid\s+(\S+)/.exec(waiting.out())
    if (m) {
      await untilRunning(m[1])
      await client.cancel(m[1])
      cancelled = true
    } else await new Promise((r) => setTimeout(r, 20))
  }
  const { code } = await waiting.exited
  t.equal(code, 1, waiting.err())
  t.match(waiting.out(), /state\s+cancelled/)
  t.match(waiting.err(), /inference-stream: job \S+ cancelled: Cancelled \(ERR_JOB_CANCELLED\)/)

  const dl = await runCli(['bulk', 'download', jobid, '-o', join(dir, 'never.jsonl'), ...server2, '--token', 'tok'])
  t.equal(dl.code, 1)
  t.match(dl.err, new RegExp(`\\ninference-stream: Bulk job ${jobid} was cancelled \\(ERR_JOB_CANCELLED\\)\\n$`))
  t.notOk(existsSync(join(dir, 'never.jsonl')))
})

// A job cancelled while still `queued` is resurrected by the server (reported); cancel running ones.
async function untilRunning(id: string): Promise<void> {
  while ((await client.status(id)).state === 'queued') await new Promise((r) => setTimeout(r, 10))
}

t.test('bulk run --keep-columns: other input columns in the outputs; a missing or clashing one refused', async (t) => {
  const WIDE = ['--dataset', 'wide', '--split', 'train', '--column', 'text']
  const run = await spawnCli(['bulk', 'run', '-m', 'builtin/sentiment', ...WIDE, '--keep-columns', 'id,rating', '--keep-columns', 'label', '--bulk-name', 'wide-kept', '--wait', '--json', '--no-progress', '--poll-interval', '20', ...server2, '--token', 'tok'])
  t.equal(run.code, 0, run.err)
  const final = JSON.parse(run.out) as BulkJobStatus
  t.match(final, { state: 'completed', total: 3, processed: 3, failed: 0, keep_columns: ['id', 'rating', 'label'] })
  const out = join(dir, 'wide.jsonl')
  t.equal((await runCli(['bulk', 'download', final.jobid, '-o', out, ...server2, '--token', 'tok'])).code, 0)
  const rows = readJsonl(out)
  t.same(Object.keys(rows[0]), ['id', 'row', 'text', 'input_id', 'rating', 'input_label', 'label', 'score', 'outputs', 'error', 'error_code'], 'kept columns after the source column; result-named ones prefixed')
  t.same(rows.map((r) => [r.row, r.input_id, r.rating, r.input_label, r.label]), [[0, 'a1', '5', 'pos', 'POSITIVE'], [1, 'a2', '1', 'neg', 'NEGATIVE'], [2, 'a3', '3', '', rows[2].label]])
  t.type(rows[2].label, 'string')
  const pq = join(dir, 'wide.parquet')
  t.equal((await runCli(['bulk', 'download', final.jobid, '-o', pq, ...server2, '--token', 'tok'])).code, 0)
  t.same((await readParquetFile(pq)).map((r) => r.input_id), ['a1', 'a2', 'a3'], 'in Parquet too')

  // Every other column: input_label would be written twice (the kept label becomes input_label).
  const all = await spawnCli(['bulk', 'run', '-m', 'builtin/sentiment', ...WIDE, '--keep-all-columns', ...server2, '--token', 'tok'])
  t.equal(all.code, 2, all.err)
  t.match(all.err, /Kept column "input_label" would be written as "input_label", as column "label" is: keep only one of them .*HTTP 400, ERR_INVALID_PAYLOAD/)
  const cases: [string[], RegExp][] = [
    [['--keep-columns', 'rating,nope'], /^inference-stream: Cannot keep column "nope": dataset wide \(default\/train\) has no such column \(columns: id, rating, text, label, input_label\) \(POST \/bulk\/run\//],
    [['--keep-columns', 'rating', '--keep-all-columns'], /--keep-columns and --keep-all-columns both say what to keep: pass one/],
    [['--keep-columns', 'a,,b'], /--keep-columns takes column names separated by commas, got "a,,b"/],
  ]
  for (const [args, message] of cases) {
    const r = await runCli(['bulk', 'run', '-m', 'builtin/sentiment', ...WIDE, ...args, ...server2, '--token', 'tok'])
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, message)
  }
  // The same rule on the HTTP route, for a client that is not ours.
  const res = await fetch(`${server.url}/bulk/run/cpu/builtin/sentiment`, {
    method: 'POST',
    headers: { authorization: 'Bearer tok', 'content-type': 'application/json' },
    body: JSON.stringify({ dataset_name: 'wide', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', keep_columns: 'rating' }),
  })
  t.equal(res.status, 400)
  t.match(await res.json(), { error: '"keep_columns" must be an array of column names, or "*" for every column', code: 'ERR_INVALID_PAYLOAD' })
  const star = await client.start({ model: 'builtin/echo', dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', keep_columns: '*', bulk_name: 'reviews-star' })
  const done = await client.wait(star.jobid, { pollIntervalMs: 20 })
  t.match(done, { state: 'completed', keep_columns: ['key'] }, '"*" keeps every other column')
  const starRows: Record<string, unknown>[] = []
  for await (const row of new DatasetBulk({ url: server.url, token: 'tok', jobId: star.jobid })) starRows.push(row as Record<string, unknown>)
  t.same(starRows.slice(0, 2).map((r) => [r.row, r.text, r.key]), [[0, textOf(0), 'k0'], [1, textOf(1), 'k1']])
})

t.test('usage errors: one line, exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['bulk', 'run', '-m', 'builtin/sentiment', ...REVIEWS], /^inference-stream: --endpoint URL is required: bulk jobs run on a server started with `inference-stream serve --data-dir DIR` \(ERR_INVALID_OPTION\)\n$/],
    [['bulk', 'run', '-m', 'builtin/sentiment', ...REVIEWS, '--column', 'nope', ...server2, '--token', 'tok'], /^inference-stream: Dataset reviews \(default\/train\) has no column "nope" \(columns: key, text\) \(POST \/bulk\/run\/cpu\/builtin\/sentiment: HTTP 400, ERR_INVALID_PAYLOAD\)\n$/],
    [['bulk', 'run', '-m', 'builtin/sentiment', ...REVIEWS, ...server2], /Missing "Authorization: Bearer <token>" header; no token was sent .*HTTP 401, ERR_AUTHENTICATION/],
    [['bulk', 'run', '-m', 'builtin/sentiment', '--dataset', 'reviews', '--column', 'text', ...server2], /^error: required option '--split <name>' not specified\n$/],
    [['bulk', 'run', '-m', 'builtin/sentiment', ...REVIEWS, '--parameters', '{bad', ...server2], /--parameters must be a JSON object/],
    [['bulk', 'status', 'nope', ...server2, '--token', 'tok'], /^inference-stream: No job nope \(GET \/bulk\/status\/nope: HTTP 404, ERR_JOB_NOT_FOUND\)\n$/],
    [['bulk', 'status', ...server2], /^error: missing required argument 'jobid'\n$/],
    [['bulk', 'status', 'x', '--endpoint', 'ftp://host'], /--endpoint must be an http: or https: URL/],
    [['bulk', 'download', '-o', join(dir, 'x.jsonl'), ...server2], /Give a JOBID or --dataset NAME \(one of them\)/],
    [['bulk', 'download', 'abc', '--revision', 'main', '-o', join(dir, 'x.jsonl'), ...server2], /--revision goes with --dataset/],
    [['bulk', 'download', 'abc', '-o', join(dir, 'x.xlsx'), ...server2], /ERR_UNKNOWN_FORMAT/],
    [['bulk', 'upload', join(dir, 'missing.csv'), '-d', 'x', '--split', 'train', ...server2, '--token', 'tok'], /Cannot upload .*missing\.csv.*\(ERR_INPUT_FILE\)/],
    [['bulk', 'frobnicate'], /unknown command 'frobnicate'/],
  ]
  await Promise.all(
    cases.map(async ([args, message], i) => {
      // The first and the commander usage error through the real binary, the rest in process.
      const r = i === 0 || i === 3 ? await spawnCli(args) : await runCli(args)
      t.equal(r.code, 2, `${args.join(' ')}: ${r.err}`)
      t.match(r.err, message, args.join(' '))
      t.notMatch(r.err, /\n\s+at /, 'no stack trace')
    }),
  )
  // A port nobody listens on: one a server just left.
  const closed = createNetServer()
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
  const port = (closed.address() as { port: number }).port
  await new Promise((r) => closed.close(r))
  const gone = await runCli(['bulk', 'status', 'abc', '--endpoint', `http://127.0.0.1:${port}`, '--token', 'tok'])
  t.equal(gone.code, 1, 'an unreachable server is not a usage error')
  t.match(gone.err, /^inference-stream: Cannot reach http:\/\/127\.0\.0\.1:\d+ \(GET .*\/bulk\/status\/abc\): ECONNREFUSED\n$/)
})

t.test('--help of each subcommand has examples and says a server is needed', async (t) => {
  const subs = ['run', 'status', 'jobs', 'cancel', 'download', 'upload']
  const helps = await Promise.all([runCli(['bulk', '--help']), ...subs.map((s) => runCli(['bulk', s, '--help']))])
  for (const [i, h] of helps.entries()) {
    const name = i === 0 ? 'bulk' : `bulk ${subs[i - 1]}`
    t.equal(h.code, 0, name)
    t.match(h.out, /Examples?:\n\s+\$ inference-stream /, `${name}: examples`)
    t.match(h.out, /--data-dir/, `${name}: says bulk needs a server with --data-dir`)
  }
  const top = await spawnCli(['--help'])
  t.equal(top.code, 0)
  t.match(top.out, /\n  bulk\s+Bulk jobs on a server/, 'registered in the real binary')
})
