import { createServer as createHttpServer } from 'node:http'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import t, { type Test } from 'tap'
import { BulkClient, type BulkJobStatus } from '../lib/client/bulk-client.js'
import { DatasetBulk, type BulkRow, type DatasetBulkOptions } from '../lib/client/dataset-bulk.js'
import { AbortError, BulkJobCancelledError, BulkJobFailedError, HttpError, InvalidOptionError } from '../lib/errors.js'
import type { ServerOptions } from '../lib/server/options.js'
import { startServer } from './helpers/server.js'

const N = 300

function tempDir(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function textOf(i: number): string {
  return i % 3 === 0 ? `awful, terrible product ${i}` : `I love it, works great ${i}`
}

/** A CSV split `{dataDir}/datasets/{name}/default/train.csv` with columns id, text. */
function writeDataset(dataDir: string, name: string, n: number): void {
  const dir = join(dataDir, 'datasets', name, 'default')
  mkdirSync(dir, { recursive: true })
  const lines = ['id,text']
  for (let i = 0; i < n; i++) lines.push(`k${i},"${textOf(i)}"`)
  writeFileSync(join(dir, 'train.csv'), `${lines.join('\n')}\n`)
}

async function bulkServer(t: Test, options: ServerOptions = {}) {
  const dataDir = tempDir(t, 'dataset-bulk-data-')
  writeDataset(dataDir, 'reviews', N)
  const server = await startServer(t, { tokens: ['t'], dataDir, ...options })
  return { server, dataDir, url: server.url, client: new BulkClient({ url: server.url, token: 't' }) }
}

const JOB = { model: 'builtin/sentiment', dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }

/** Reads every row, or the error the stream was destroyed with; checks 'error' comes once and 'close' last. */
async function collect(t: Test, bulk: DatasetBulk): Promise<{ rows: BulkRow[]; error?: Error }> {
  const rows: BulkRow[] = []
  let errors = 0
  bulk.on('error', () => errors++)
  const closed = new Promise<void>((resolve) => bulk.on('close', resolve))
  let error: Error | undefined
  try {
    for await (const row of bulk) rows.push(row as BulkRow)
  } catch (err) {
    error = err as Error
  }
  await closed
  t.ok(errors <= 1, "'error' at most once")
  return { rows, error }
}

// One server for the tests that need no special settings (the sentiment model loads once). Three
// shards of 128, 128 and 44 rows per job: the order across shards is tested too.
const shared = await bulkServer(t, { shardRows: 128 })

t.test('a job started by DatasetBulk: every row once, in input order, with labels; events, getters, temp files gone', async (t) => {
  const { url } = shared
  const tmp = tempDir(t, 'dataset-bulk-tmp-')
  const bulk = new DatasetBulk({ url, token: 't', job: JOB, pollIntervalMs: 20, maxPollIntervalMs: 100, tmpDir: tmp, highWaterMark: 8 })
  const jobs: { jobid: string; bulk_name: string }[] = []
  const progress: BulkJobStatus[] = []
  const shards: { path: string; index: number; count: number }[] = []
  let peakBuffered = 0
  bulk.on('job', (j) => jobs.push(j))
  bulk.on('progress', (s: BulkJobStatus) => progress.push(s))
  bulk.on('shard', (s) => shards.push(s))
  const rows: BulkRow[] = []
  // A slow consumer: the stream must wait for it, never buffering past its highWaterMark.
  await pipeline(
    bulk,
    new Writable({
      objectMode: true,
      highWaterMark: 1,
      write(row: BulkRow, _e, cb) {
        peakBuffered = Math.max(peakBuffered, bulk.readableLength)
        rows.push(row)
        if (rows.length % 50 === 0) setTimeout(cb, 5)
        else cb()
      },
    }),
  )
  t.equal(rows.length, N)
  t.same(rows.map((r) => r.row), [...Array(N).keys()], 'input order, each row once')
  t.same(rows.map((r) => r.text), [...Array(N).keys()].map(textOf), 'the source column')
  t.same(rows.map((r) => r.id), [...Array(N).keys()].map(String))
  t.ok(rows.every((r) => r.label === (r.row % 3 === 0 ? 'NEGATIVE' : 'POSITIVE')), 'labels')
  t.ok(rows.every((r) => typeof r.score === 'number' && r.error === null && r.error_code === null))
  t.equal(typeof rows[0].outputs, 'string', 'outputs as JSON text')
  t.equal((JSON.parse(rows[0].outputs as string) as { label: string }[][])[0][0].label, 'NEGATIVE')
  t.ok(peakBuffered <= 8, `backpressure: at most highWaterMark rows buffered (peak ${peakBuffered})`)

  t.equal(jobs.length, 1, "'job' once")
  t.equal(jobs[0].jobid, bulk.jobId)
  t.equal(jobs[0].bulk_name, bulk.bulkName)
  t.match(bulk.bulkName, /^bulk-reviews-default-train-text-builtin-sentiment/)
  t.ok(progress.length >= 1)
  const last = progress[progress.length - 1]
  t.equal(last.state, 'completed')
  t.equal(last.processed, N)
  t.equal(last.total, N)
  t.equal(bulk.status, last)
  t.match(bulk.revision, /^[0-9a-f]{40}$/)
  t.equal(bulk.revision, last.revision)
  t.same(shards.map((s) => s.path), ['data/train-00000-of-00003.parquet', 'data/train-00001-of-00003.parquet', 'data/train-00002-of-00003.parquet'])
  t.same(readdirSync(tmp), [], 'temporary shard files deleted')
})

t.test('parseOutputs: outputs come parsed', async (t) => {
  const { url, client } = shared
  const { jobid } = await client.start(JOB)
  const { rows } = await collect(t, new DatasetBulk({ url, token: 't', jobId: jobid, parseOutputs: true, pollIntervalMs: 20 }))
  t.equal(rows.length, N)
  t.match(rows[1].outputs, [[{ label: 'POSITIVE', score: Number }, { label: 'NEGATIVE', score: Number }]])
})

t.test('attaching to a job by jobId', async (t) => {
  const { url, client } = shared
  const { jobid, bulk_name } = await client.start({ ...JOB, model: 'builtin/echo', bulk_name: 'me/echo' })
  t.equal(bulk_name, 'me/echo')
  const bulk = new DatasetBulk({ url, token: 't', jobId: jobid, pollIntervalMs: 20 })
  t.equal(bulk.jobId, jobid, 'known at once')
  const jobs: unknown[] = []
  bulk.on('job', (j) => jobs.push(j))
  const { rows, error } = await collect(t, bulk)
  t.error(error)
  t.same(jobs, [{ jobid, bulk_name: 'me/echo' }], "'job' once the first status names the output")
  t.equal(bulk.bulkName, 'me/echo')
  t.equal(rows.length, N)
  t.same(rows.map((r) => JSON.parse(r.outputs as string)), [...Array(N).keys()].map(textOf), 'echo outputs, in order')

  // A finished job attached again: no wait, same rows.
  const again = await collect(t, new DatasetBulk({ url, token: 't', jobId: jobid }))
  t.equal(again.rows.length, N)
})

t.test('two runs into one output dataset: each revision readable by dataset + revision', async (t) => {
  const { url, client } = shared
  const first = await client.wait((await client.start({ ...JOB, bulk_name: 'me/compare' })).jobid, { pollIntervalMs: 20 })
  const second = await client.wait((await client.start({ ...JOB, model: 'builtin/echo', bulk_name: 'me/compare' })).jobid, { pollIntervalMs: 20 })
  t.equal(first.state, 'completed')
  t.equal(second.state, 'completed')
  t.not(first.revision, second.revision)

  const old = new DatasetBulk({ url, token: 't', dataset: 'me/compare', revision: first.revision as string })
  t.equal(old.revision, first.revision)
  t.equal(old.jobId, undefined)
  const oldRows = await collect(t, old)
  t.error(oldRows.error)
  t.equal(oldRows.rows.length, N)
  t.ok(oldRows.rows.every((r) => r.label === 'POSITIVE' || r.label === 'NEGATIVE'), 'the first run: sentiment')

  const latest = new DatasetBulk({ url, token: 't', dataset: 'me/compare' })
  t.equal(latest.revision, 'main', 'before it is resolved: the revision given')
  const latestRows = await collect(t, latest)
  t.equal(latest.revision, second.revision, 'main resolved to the second commit')
  t.equal(latestRows.rows.length, N)
  t.same(latestRows.rows.map((r) => JSON.parse(r.outputs as string)), [...Array(N).keys()].map(textOf), 'the second run: echo')
  t.notOk('label' in latestRows.rows[0])

  // A short sha works as a revision; an unknown one is the server's 404 with its code.
  const short = await collect(t, new DatasetBulk({ url, token: 't', dataset: 'me/compare', revision: (first.revision as string).slice(0, 8) }))
  t.equal(short.rows.length, N)
  const missing = await collect(t, new DatasetBulk({ url, token: 't', dataset: 'me/compare', revision: 'nope' }))
  t.type(missing.error, HttpError)
  t.match(missing.error, { code: 'ERR_HTTP', status: 404, remoteCode: 'ERR_REVISION_NOT_FOUND' })
  const noDataset = await collect(t, new DatasetBulk({ url, token: 't', dataset: 'me/none' }))
  t.match(noDataset.error, { code: 'ERR_HTTP', status: 404, remoteCode: 'ERR_DATASET_NOT_FOUND' })
})

t.test('a job over a missing column: the 400 surfaces with the server message and code', async (t) => {
  const { url, client } = shared
  const { rows, error } = await collect(t, new DatasetBulk({ url, token: 't', job: { ...JOB, dataset_column: 'nope' } }))
  t.equal(rows.length, 0)
  t.type(error, HttpError)
  t.match(error, { name: 'HttpError', code: 'ERR_HTTP', status: 400, remoteCode: 'ERR_INVALID_PAYLOAD' })
  t.match(error?.message, /has no column "nope" \(columns: id, text\)/)
  t.match(error?.message, /POST \/bulk\/run\/cpu\/builtin\/sentiment: HTTP 400, ERR_INVALID_PAYLOAD/)

  await t.rejects(client.start({ ...JOB, model: 'nobody/nothing' }), { code: 'ERR_HTTP', status: 404, remoteCode: 'ERR_UNKNOWN_MODEL' })
  await t.rejects(client.start({ ...JOB, dataset_name: 'nope' }), { status: 404, remoteCode: 'ERR_DATASET_NOT_FOUND', message: /No dataset "nope"/ })
  await t.rejects(client.status('unknown1'), { code: 'ERR_HTTP', status: 404, remoteCode: 'ERR_JOB_NOT_FOUND' })
  await t.rejects(new BulkClient({ url, token: 'wrong' }).status('x'), { code: 'ERR_HTTP', status: 401, remoteCode: 'ERR_AUTHENTICATION' })
  await t.rejects(new BulkClient({ url }).status('x'), { status: 401, message: /no token was sent/ })
})

t.test('a server without --data-dir, and one that is gone: clear errors', async (t) => {
  const plain = await startServer(t, { tokens: ['t'] })
  const { error } = await collect(t, new DatasetBulk({ url: plain.url, token: 't', job: JOB }))
  t.match(error, { code: 'ERR_HTTP', status: 501, remoteCode: 'ERR_BULK_DISABLED', message: /runs no bulk jobs: .*start it with `inference-stream serve --data-dir DIR`/ })
  const gone = await startServer(t, { tokens: ['t'] })
  const url = gone.url
  await gone.close()
  await t.rejects(new BulkClient({ url, token: 't' }).status('x'), { code: 'ERR_HTTP', status: undefined, message: /Cannot reach .*ECONNREFUSED/ })
})

// A server whose echo jobs are slow (8 rows in flight, 50 ms per batch: ~160 rows/s), one job at a time.
async function slowServer(t: Test) {
  const s = await bulkServer(t, { maxConcurrentJobs: 1, jobMaxInFlight: 8, maxBatch: 4 })
  writeDataset(s.dataDir, 'many', 5000)
  return s
}
const SLOW_JOB = { ...JOB, model: 'builtin/echo', dataset_name: 'many', parameters: { delay_ms: 50 } }

// Waits until a job is running. (A job cancelled in its first moments, while still `queued`, is
// overwritten back to `running` by the server's runner and runs to the end: see the report to
// the server side. The tests cancel running jobs only.)
async function untilRunning(client: BulkClient, jobId: string): Promise<void> {
  for (;;) {
    const s = await client.status(jobId)
    if (s.state !== 'queued') return
    await new Promise((r) => setTimeout(r, 10))
  }
}

t.test('a cancelled job: ERR_JOB_CANCELLED carrying the job', async (t) => {
  const { url } = await slowServer(t)
  const bulk = new DatasetBulk({ url, token: 't', job: SLOW_JOB, pollIntervalMs: 20, maxPollIntervalMs: 50 })
  let cancelled: Promise<BulkJobStatus> | undefined
  bulk.on('progress', (s: BulkJobStatus) => {
    if (!cancelled && s.state === 'running' && s.processed > 0) cancelled = bulk.cancel()
  })
  const { rows, error } = await collect(t, bulk)
  t.equal(rows.length, 0)
  t.type(error, BulkJobCancelledError)
  t.match(error, { code: 'ERR_JOB_CANCELLED', jobId: bulk.jobId, jobStatus: { state: 'cancelled', jobid: bulk.jobId } })
  t.match(error?.message, new RegExp(`Bulk job ${bulk.jobId} was cancelled`))
  const after = await cancelled
  t.equal(after?.state, 'cancelled')
  t.ok((after?.processed ?? 0) < 5000, 'stopped before the end')
  // Cancelling again: the server's 409 with its code.
  await t.rejects(new BulkClient({ url, token: 't' }).cancel(bulk.jobId as string), { code: 'ERR_HTTP', status: 409, remoteCode: 'ERR_JOB_STATE' })
})

t.test('a failed job: ERR_JOB_FAILED carrying the job\'s error', async (t) => {
  const { url, client, dataDir } = await slowServer(t)
  // The only job slot is taken, so the next job waits queued; its split disappears meanwhile.
  const blocker = await client.start(SLOW_JOB)
  await untilRunning(client, blocker.jobid)
  writeDataset(dataDir, 'doomed', 10)
  const bulk = new DatasetBulk({ url, token: 't', job: { ...JOB, dataset_name: 'doomed' }, pollIntervalMs: 20, maxPollIntervalMs: 50 })
  bulk.once('progress', (s: BulkJobStatus) => {
    t.equal(s.state, 'queued')
    unlinkSync(join(dataDir, 'datasets', 'doomed', 'default', 'train.csv'))
    void client.cancel(blocker.jobid)
  })
  const { error } = await collect(t, bulk)
  t.type(error, BulkJobFailedError)
  t.match(error, { code: 'ERR_JOB_FAILED', jobId: bulk.jobId, jobError: /doomed/, jobStatus: { state: 'failed' } })
  t.match(error?.message, new RegExp(`Bulk job ${bulk.jobId} failed: .*doomed`))
})

t.test('abort via signal: while polling, and while reading rows (temp files gone)', async (t) => {
  const { url, client } = await slowServer(t)
  const ac = new AbortController()
  const bulk = new DatasetBulk({ url, token: 't', job: SLOW_JOB, pollIntervalMs: 20, signal: ac.signal })
  bulk.on('progress', (s: BulkJobStatus) => {
    if (s.state === 'running') ac.abort()
  })
  const { error } = await collect(t, bulk)
  t.type(error, AbortError)
  t.equal((error as AbortError).code, 'ABORT_ERR')
  const status = await client.status(bulk.jobId as string)
  t.ok(status.active, 'the job goes on on the server')
  await client.cancel(status.jobid)

  // Reading rows of a finished run, aborted after a few.
  const done = await client.wait((await client.start({ ...JOB, model: 'builtin/echo', bulk_name: 'me/abort' })).jobid, { pollIntervalMs: 20 })
  t.equal(done.state, 'completed')
  const tmp = tempDir(t, 'dataset-bulk-abort-')
  const ac2 = new AbortController()
  const reading = new DatasetBulk({ url, token: 't', dataset: 'me/abort', tmpDir: tmp, highWaterMark: 1, signal: ac2.signal })
  const rows: BulkRow[] = []
  let closed = false
  reading.on('close', () => (closed = true))
  await t.rejects(
    (async () => {
      for await (const row of reading) {
        rows.push(row as BulkRow)
        if (rows.length === 10) {
          t.equal(readdirSync(tmp).length, 1, 'a temporary folder while reading')
          ac2.abort()
        }
      }
    })(),
    { code: 'ABORT_ERR' },
  )
  await new Promise((r) => setImmediate(r))
  t.ok(closed)
  t.equal(rows.length, 10)
  t.same(readdirSync(tmp), [], 'temporary files deleted before close')

  // An already aborted signal: nothing is started.
  const jobsBefore = (await client.jobs()).length
  const pre = await collect(t, new DatasetBulk({ url, token: 't', job: JOB, signal: AbortSignal.abort() }))
  t.match(pre.error, { code: 'ABORT_ERR' })
  t.equal((await client.jobs()).length, jobsBefore, 'no job started')
})

t.test('polls retry transient answers (a restarting server), up to `retries` in a row', async (t) => {
  let polls = 0
  let failFirst = 2
  const fake = createHttpServer((req, res) => {
    polls++
    if (polls <= failFirst) {
      res.writeHead(503, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: 'Server is shutting down', code: 'ERR_SHUTTING_DOWN' }))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ status: { active: 0, state: 'cancelled', jobid: 'j1', bulk_name: 'b', error: 'Cancelled', revision: null } }))
  })
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r))
  t.teardown(() => fake.close())
  const url = `http://127.0.0.1:${(fake.address() as { port: number }).port}`
  const client = new BulkClient({ url, token: 't' })
  const s = await client.wait('j1', { pollIntervalMs: 5, retries: 2 })
  t.equal(s.state, 'cancelled')
  t.equal(polls, 3)
  polls = 0
  failFirst = 10
  await t.rejects(client.wait('j1', { pollIntervalMs: 5, retries: 2 }), { code: 'ERR_HTTP', status: 503, remoteCode: 'ERR_SHUTTING_DOWN' })
  t.equal(polls, 3, 'gave up after retries + 1 polls')
  // Through DatasetBulk: the job's state after the retries decides.
  polls = 0
  failFirst = 1
  const { error } = await collect(t, new DatasetBulk({ url, token: 't', jobId: 'j1', pollIntervalMs: 5 }))
  t.match(error, { code: 'ERR_JOB_CANCELLED', jobId: 'j1', jobError: 'Cancelled' })
})

t.test('BulkClient.upload: a local file becomes a split a job can read', async (t) => {
  const { client, url } = shared
  const dir = tempDir(t, 'dataset-bulk-upload-')
  const file = join(dir, 'mine.jsonl')
  writeFileSync(file, ['a', 'b', 'c'].map((s) => JSON.stringify({ sentence: `text ${s}` })).join('\n') + '\n')
  t.same(await client.upload(file, 'org/mine', 'small', 'test'), { dataset: 'org/mine', config: 'small', split: 'test', bytes: statSync(file).size })
  const { rows } = await collect(t, new DatasetBulk({ url, token: 't', pollIntervalMs: 20, job: { model: 'builtin/echo', dataset_name: 'org/mine', dataset_config: 'small', dataset_split: 'test', dataset_column: 'sentence' } }))
  t.same(rows.map((r) => [r.row, r.sentence, r.outputs]), [[0, 'text a', '"text a"'], [1, 'text b', '"text b"'], [2, 'text c', '"text c"']])
  await t.rejects(client.upload(join(dir, 'x.xlsx'), 'a', 'b', 'c'), { code: 'ERR_UNKNOWN_FORMAT' })
  await t.rejects(client.upload(join(dir, 'missing.csv'), 'a', 'b', 'c'), { code: 'ERR_INPUT_FILE', message: /missing\.csv/ })
  await t.rejects(client.upload(file, 'bad..name', 'b', 'c'), { code: 'ERR_HTTP', status: 400, remoteCode: 'ERR_INVALID_DATASET_NAME' })
})

t.test('options are checked, naming the option', async (t) => {
  const url = 'http://127.0.0.1:1'
  const cases: [Partial<DatasetBulkOptions>, RegExp][] = [
    [{}, /exactly one of "job" \(start one\), "jobId" \(attach\) and "dataset" \(read a revision\), got none/],
    [{ jobId: 'a', dataset: 'b' }, /got jobId, dataset/],
    [{ job: { ...JOB, dataset_column: '' } }, /"job.dataset_column" is required/],
    [{ job: { ...JOB, compute: 'tpu' as 'cpu' } }, /"job.compute" must be "cpu" or "gpu"/],
    [{ job: { ...JOB, parameters: [] as unknown as Record<string, unknown> } }, /"job.parameters" must be an object/],
    [{ jobId: 'a/b' }, /"jobId" must be a job id/],
    [{ jobId: 'a', revision: 'main' }, /"revision" goes with "dataset"/],
    [{ dataset: 'd', pollIntervalMs: 0 }, /"pollIntervalMs" must be an integer >= 1/],
    [{ dataset: 'd', pollIntervalMs: 500, maxPollIntervalMs: 100 }, /"maxPollIntervalMs" \(100\) must be >= "pollIntervalMs" \(500\)/],
    [{ dataset: 'd', retries: -1 }, /"retries" must be an integer >= 0/],
    [{ dataset: 'd', parseOutputs: 'yes' as unknown as boolean }, /"parseOutputs" must be a boolean/],
    [{ dataset: 'd', url: 'ftp://x' }, /"url" must be an http: or https: URL/],
    [{ dataset: 'd', url: 'nope' }, /"url" must be an absolute http\(s\) URL/],
    [{ dataset: 'd', token: 'a b' }, /"token" must be a non-empty string without spaces/],
  ]
  for (const [o, message] of cases) {
    t.throws(() => new DatasetBulk({ url, ...o } as DatasetBulkOptions), { name: 'InvalidOptionError', code: 'ERR_INVALID_OPTION', message }, JSON.stringify(o))
  }
  t.throws(() => new DatasetBulk(null as unknown as DatasetBulkOptions), InvalidOptionError)
})

t.test('error classes carry their fields', async (t) => {
  const failed = new BulkJobFailedError('Bulk job j failed: boom', { jobId: 'j', jobError: 'boom', jobStatus: { state: 'failed' } })
  t.match(failed, { name: 'BulkJobFailedError', code: 'ERR_JOB_FAILED', jobId: 'j', jobError: 'boom', jobStatus: { state: 'failed' } })
  const cancelled = new BulkJobCancelledError('Bulk job j was cancelled', { jobId: 'j' })
  t.match(cancelled, { name: 'BulkJobCancelledError', code: 'ERR_JOB_CANCELLED', jobId: 'j' })
  const http = new HttpError('No job x (GET /bulk/status/x: HTTP 404, ERR_JOB_NOT_FOUND)', { status: 404, remoteCode: 'ERR_JOB_NOT_FOUND', request: 'GET http://h/bulk/status/x' })
  t.match(http, { name: 'HttpError', code: 'ERR_HTTP', status: 404, remoteCode: 'ERR_JOB_NOT_FOUND', request: 'GET http://h/bulk/status/x' })
  t.notOk('cause' in http, 'no cause unless given')
})
