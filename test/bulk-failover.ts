// BulkClient and DatasetBulk over several front-ends sharing one data folder (jobs, output
// datasets) and one state backend: idempotent requests (status, info, downloads, cancel, upload)
// go to the next server on no answer or 502-504; a job start only when it surely reached no server.
// Failures of the network between client and server are played by small HTTP proxies in front of
// the real servers (a cut body, a lost answer, a load balancer's 503).
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createNetServer } from 'node:net'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { BulkClient } from '../lib/client/bulk-client.js'
import { DatasetBulk, type BulkRow } from '../lib/client/dataset-bulk.js'
import { createServer, type InferenceServer } from '../lib/server/server.js'
import { MemoryStateBackend } from '../lib/server/state/memory-backend.js'
import { dataDir, rowText } from './helpers/bulk.js'

const N = 300
const JOB = { model: 'builtin/echo', dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }

async function deadUrl(): Promise<string> {
  const s = createNetServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return `http://127.0.0.1:${port}`
}

/** Front-ends `a` and `b` on one data folder and one state backend (each closed in teardown; A may be closed earlier). */
async function cluster(t: Test): Promise<{ dir: string; a: InferenceServer; b: InferenceServer; aUrl: string; bUrl: string }> {
  const dir = dataDir(N)
  const state = new MemoryStateBackend({ maxRetained: 100_000, retentionMs: 600_000 })
  const options = { tokens: ['t'], dataDir: dir, state, shardRows: 128, maxBatch: 8, shutdownTimeoutMs: 0 }
  const a = createServer({ ...options, nodeId: 'a' })
  const b = createServer({ ...options, nodeId: 'b' })
  await a.listen(0)
  await b.listen(0)
  t.teardown(async () => {
    await a.close()
    await b.close()
    await state.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { dir, a, b, aUrl: a.url, bUrl: b.url }
}

type Hook = (req: IncomingMessage, res: ServerResponse, forward: () => Promise<Response>) => Promise<boolean>

/**
 * An HTTP proxy in front of `target`; `hook` may answer a request itself (returns true), else the
 * request is forwarded and the answer passed on. `seen` lists `METHOD path [range]` of each request.
 */
async function proxy(t: Test, target: string, hook?: Hook): Promise<{ url: string; seen: string[] }> {
  const seen: string[] = []
  const server = createHttpServer(async (req, res) => {
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const body = Buffer.concat(chunks)
    seen.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ''}`)
    const headers: Record<string, string> = {}
    for (const h of ['authorization', 'content-type', 'accept']) if (typeof req.headers[h] === 'string') headers[h] = req.headers[h] as string
    const forward = (): Promise<Response> => fetch(`${target}${req.url}`, { method: req.method, headers, body: body.length > 0 ? body : undefined })
    try {
      if (hook && (await hook(req, res, forward))) return
      const up = await forward()
      const out = Buffer.from(await up.arrayBuffer())
      res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/octet-stream', 'content-length': String(out.length) })
      res.end(out)
    } catch {
      res.destroy()
    }
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen }
}

const isResolve = (req: IncomingMessage): boolean => /^\/datasets\/.+\/resolve\//.test(req.url ?? '')

/** A proxy whose file downloads are cut after `bytes` bytes (the connection dies mid-body). */
function cutter(t: Test, target: string, bytes: number) {
  return proxy(t, target, async (req, res, forward) => {
    if (!isResolve(req)) return false
    const up = Buffer.from(await (await forward()).arrayBuffer())
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(up.length) })
    res.write(up.subarray(0, bytes))
    await new Promise((r) => setTimeout(r, 50))
    res.destroy()
    return true
  })
}

/** A proxy that honours `Range: bytes=N-` on file downloads (206 with the rest), as a CDN in front of the server would. */
function ranged(t: Test, target: string) {
  return proxy(t, target, async (req, res, forward) => {
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
    if (!isResolve(req) || !m) return false
    const whole = Buffer.from(await (await forward()).arrayBuffer())
    const start = Number(m[1])
    res.writeHead(206, { 'content-type': 'application/octet-stream', 'content-range': `bytes ${start}-${whole.length - 1}/${whole.length}`, 'content-length': String(whole.length - start) })
    res.end(whole.subarray(start))
    return true
  })
}

async function readAll(bulk: DatasetBulk): Promise<BulkRow[]> {
  const rows: BulkRow[] = []
  for await (const r of bulk) rows.push(r as BulkRow)
  return rows
}

/** A completed echo job of the {@link dataDir} split, started through `client`: its id and output. */
async function completedJob(client: BulkClient): Promise<{ jobid: string; bulk_name: string; revision: string }> {
  const { jobid, bulk_name } = await client.start(JOB)
  const s = await client.wait(jobid, { pollIntervalMs: 20, maxPollIntervalMs: 100 })
  if (s.state !== 'completed' || !s.revision) throw new Error(`job ${jobid} ended ${s.state}: ${s.error}`)
  return { jobid, bulk_name, revision: s.revision }
}

t.test('A is gone: status, jobs, info and the shard downloads go to B; DatasetBulk reads every row once, in order', async (t) => {
  const { a, aUrl, bUrl } = await cluster(t)
  const client = new BulkClient({ url: [aUrl, bUrl], token: 't' })
  const job = await completedJob(client)
  t.equal(client.url, aUrl, 'A answered while it was up')
  await a.close()
  const s = await client.status(job.jobid)
  t.match(s, { state: 'completed', processed: N, revision: job.revision })
  t.equal(client.url, bUrl, 'B answers now, and is asked first from now on')
  t.ok((await client.jobs()).some((j) => j.jobid === job.jobid))
  const bulk = new DatasetBulk({ url: [aUrl, bUrl], token: 't', jobId: job.jobid, pollIntervalMs: 20 })
  const rows = await readAll(bulk)
  t.same(rows.map((r) => r.row), [...Array(N).keys()], 'every row once, in order')
  t.same(rows.map((r) => r.text), [...Array(N).keys()].map(rowText))
  t.equal(bulk.revision, job.revision)
})

t.test('a download cut mid-body goes on on the next server: from the byte reached where Range is honoured, else from the start', async (t) => {
  const { aUrl, bUrl } = await cluster(t)
  const job = await completedJob(new BulkClient({ url: aUrl, token: 't' }))
  const direct = new BulkClient({ url: bUrl, token: 't' })
  const info = await direct.info(job.bulk_name, job.revision)
  const shard = info.siblings.find((f) => f.rfilename.startsWith('data/') && f.rfilename.endsWith('.parquet'))!
  const tmp = mkdtempSync(join(tmpdir(), 'is-bulk-failover-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const want = join(tmp, 'want.parquet')
  await direct.download(job.bulk_name, job.revision, shard.rfilename, want)
  const expected = readFileSync(want)
  t.ok(expected.length > 1000, `shard of ${expected.length} bytes`)

  const cutA = await cutter(t, aUrl, 700)
  const rangedB = await ranged(t, bUrl)
  const resumed = join(tmp, 'resumed.parquet')
  // A stale file at the destination: the first attempt rewrites it from its first byte.
  writeFileSync(resumed, 'stale bytes of another download')
  const bytes = await new BulkClient({ url: [cutA.url, rangedB.url], token: 't' }).download(job.bulk_name, job.revision, shard.rfilename, resumed, { size: shard.size })
  t.equal(bytes, expected.length)
  t.same(readFileSync(resumed), expected, 'the file is whole and byte for byte the same')
  const range = rangedB.seen.find((l) => l.includes('bytes='))
  t.match(range, /bytes=(\d+)-$/, `B was asked for the rest only (${range})`)
  t.ok(Number(/bytes=(\d+)-/.exec(range ?? '')?.[1]) > 0 && Number(/bytes=(\d+)-/.exec(range ?? '')?.[1]) <= 700)

  // B without Range support (a proxy that drops the header, so the answer is 200 with the whole
  // file): the download starts over.
  const cutA2 = await cutter(t, aUrl, 700)
  const plainB = await proxy(t, bUrl)
  const restarted = join(tmp, 'restarted.parquet')
  t.equal(await new BulkClient({ url: [cutA2.url, plainB.url], token: 't' }).download(job.bulk_name, job.revision, shard.rfilename, restarted, { size: shard.size }), expected.length)
  t.same(readFileSync(restarted), expected, 'restarted cleanly: no bytes of the cut attempt left before the whole file')
  t.ok(plainB.seen.some((l) => / bytes=\d+-$/.test(l)), 'B was asked for the rest, and answered the whole file')

  // B itself honours Range: the rest only (206 from the server, no proxy).
  const cutA4 = await cutter(t, aUrl, 700)
  const direct206 = join(tmp, 'direct206.parquet')
  t.equal(await new BulkClient({ url: [cutA4.url, bUrl], token: 't' }).download(job.bulk_name, job.revision, shard.rfilename, direct206, { size: shard.size }), expected.length)
  t.same(readFileSync(direct206), expected, 'resumed on the server itself: byte for byte the same')

  // Through DatasetBulk: every shard cut on A, read from B.
  const cutA3 = await cutter(t, aUrl, 500)
  const rows = await readAll(new DatasetBulk({ url: [cutA3.url, bUrl], token: 't', dataset: job.bulk_name, revision: job.revision }))
  t.same(rows.map((r) => r.row), [...Array(N).keys()])
  t.ok(cutA3.seen.filter((l) => l.includes('/resolve/')).length >= 1, 'A was tried for shards')
})

t.test('cancel: fails over to B when A is down; a cancel A applied before dying answers the cancelled status', async (t) => {
  const { dir, bUrl } = await cluster(t)
  // A slow job: still running when cancelled.
  const many = join(dir, 'datasets', 'many', 'default')
  const { mkdirSync } = await import('node:fs')
  mkdirSync(many, { recursive: true })
  writeFileSync(join(many, 'train.csv'), `id,text\n${[...Array(3000).keys()].map((i) => `r${i},row ${i}`).join('\n')}\n`)
  const slow = { ...JOB, dataset_name: 'many', parameters: { delay_ms: 50 } }
  const onB = new BulkClient({ url: bUrl, token: 't' })
  const untilRunning = async (id: string): Promise<void> => {
    while ((await onB.status(id)).state === 'queued') await new Promise((r) => setTimeout(r, 10))
  }

  const first = await onB.start(slow)
  await untilRunning(first.jobid)
  const s1 = await new BulkClient({ url: [await deadUrl(), bUrl], token: 't' }).cancel(first.jobid)
  t.equal(s1.state, 'cancelled', 'cancelled through B')

  // A proxy that passes the cancel on to B and loses the answer: as a front-end that cancelled
  // the job and died before answering. The retry on B finds the job cancelled (409): that is the answer.
  const second = await onB.start(slow)
  await untilRunning(second.jobid)
  const lost = await proxy(t, bUrl, async (req, res, forward) => {
    if (!req.url?.startsWith('/bulk/cancel/')) return false
    await forward()
    res.destroy()
    return true
  })
  const s2 = await new BulkClient({ url: [lost.url, bUrl], token: 't' }).cancel(second.jobid)
  t.match(s2, { state: 'cancelled', jobid: second.jobid })
  t.same(lost.seen, [`POST /bulk/cancel/${second.jobid}`])
  // Without a failover, a 409 is the caller's to see.
  await t.rejects(onB.cancel(second.jobid), { code: 'ERR_HTTP', status: 409, remoteCode: 'ERR_JOB_STATE' })
})

t.test('start fails over only when the request surely reached no server', async (t) => {
  const { aUrl, bUrl } = await cluster(t)
  const onB = new BulkClient({ url: bUrl, token: 't' })
  const count = async (): Promise<number> => (await onB.jobs()).length

  const before = await count()
  const started = await new BulkClient({ url: [await deadUrl(), bUrl], token: 't' }).start(JOB)
  t.ok(started.jobid, 'connection refused on the first: started on B')
  t.equal(await count(), before + 1)

  // A load balancer's 503: the request may have reached a server. Not sent again.
  const lb503 = await proxy(t, aUrl, async (req, res) => {
    if (req.method !== 'POST') return false
    res.writeHead(503, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'upstream timed out' }))
    return true
  })
  await t.rejects(new BulkClient({ url: [lb503.url, bUrl], token: 't' }).start(JOB), { code: 'ERR_HTTP', status: 503, message: /upstream timed out/ })
  t.equal(await count(), before + 1, 'no job started on B')

  // Our server's own refusal while it shuts down comes before it does anything: safe to send on.
  const closing = await proxy(t, aUrl, async (req, res) => {
    if (req.method !== 'POST') return false
    res.writeHead(503, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'Server is shutting down', code: 'ERR_SHUTTING_DOWN' }))
    return true
  })
  await new BulkClient({ url: [closing.url, bUrl], token: 't' }).start(JOB)
  t.equal(await count(), before + 2, 'started on B')

  // The request reached A, which started the job, and the answer was lost: failing over would
  // start a second job. One job, and the error says the server did not answer.
  const lost = await proxy(t, aUrl, async (req, res, forward) => {
    if (req.method !== 'POST') return false
    await forward()
    res.destroy()
    return true
  })
  await t.rejects(new BulkClient({ url: [lost.url, bUrl], token: 't' }).start(JOB), { code: 'ERR_HTTP', status: undefined, message: /^Cannot reach .*; the job may have been started all the same: look with jobs\(\) \(`inference-stream bulk jobs`\) before starting it again$/ })
  t.equal(await count(), before + 3, 'exactly one more job: the one A started')
})

t.test('upload fails over (a PUT replaces the whole split); every URL down names each', async (t) => {
  const { bUrl } = await cluster(t)
  const tmp = mkdtempSync(join(tmpdir(), 'is-bulk-failover-up-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const file = join(tmp, 'mine.csv')
  writeFileSync(file, 'text\nhello\nworld\n')
  const dead = await deadUrl()
  const r = await new BulkClient({ url: [dead, bUrl], token: 't' }).upload(file, 'mine', 'default', 'train')
  t.equal(r.bytes, readFileSync(file).length)
  const dead2 = await deadUrl()
  await t.rejects(new BulkClient({ url: [dead, dead2], token: 't' }).status('abc'), {
    code: 'ERR_HTTP',
    status: undefined,
    message: new RegExp(`^Cannot reach ${dead2} .*ECONNREFUSED; tried before: ${dead} \\(Cannot reach ${dead} .*ECONNREFUSED\\)$`),
  })
  t.throws(() => new BulkClient({ url: [] }), { code: 'ERR_INVALID_OPTION', message: /at least one server/ })
  t.throws(() => new BulkClient({ url: [bUrl, `${bUrl}/`] }), { code: 'ERR_INVALID_OPTION', message: /twice/ })
  t.throws(() => new BulkClient({ url: [bUrl, 'ftp://x'] }), { code: 'ERR_INVALID_OPTION', message: /"url\[1\]" must be an http: or https: URL/ })
})
