import { execFile, spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { parquetReadObjects } from 'hyparquet'
import t from 'tap'
import { Tenants, dataDirSecret } from '../lib/server/tenants.js'
import { infer } from '../lib/client/infer.js'
import { SqliteStateBackend } from '../lib/server/state/sqlite-backend.js'
import { connect } from './helpers/ws-client.js'
import { startServer } from './helpers/server.js'
import { auth, dataDir, post, status, waitState } from './helpers/bulk.js'
import { CLI } from './helpers/cli.js'

const exec = promisify(execFile)

async function parquetRows(base: string, name: string, revision: string, path: string): Promise<Record<string, unknown>[]> {
  const res = await fetch(`${base}/datasets/${name}/resolve/${revision}/${path}`, { headers: auth })
  const buf = await res.arrayBuffer()
  return parquetReadObjects({ file: buf })
}

const job = { dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }

t.test('a job over a few thousand rows: queued → running → completed, outputs equal the stream option, two runs = two commits', async (t) => {
  const N = 2500
  const server = await startServer(t, { tokens: ['t'], dataDir: dataDir(N), shardRows: 1000, maxConcurrentJobs: 1 })
  const base = server.url
  const first = await post(base, '/bulk/run/cpu/builtin/sentiment', job)
  t.equal(first.status, 200)
  t.match(first.body, { jobid: /^[0-9a-f]{16}$/, bulk_name: 'bulk-reviews-default-train-text-builtin-sentiment' })
  // A second job waits queued while the first runs (one job at a time here).
  const second = await post(base, '/bulk/run/cpu/builtin/sentiment', job)
  const s2 = await status(base, second.body.jobid as string)
  t.match(s2, { state: 'queued', active: 1 })
  const seen = await waitState(base, first.body.jobid as string, ['completed', 'failed'])
  const states = [...new Set(seen.map((s) => s.state))]
  t.same(states.filter((s) => s !== 'queued'), ['running', 'completed'].filter((s) => states.includes(s)))
  const done = seen[seen.length - 1]
  t.match(done, { state: 'completed', active: 0, total: N, processed: N, failed: 0, revision: /^[0-9a-f]{40}$/, start_time: Number, end_time: Number })
  for (const s of seen) t.ok((s.processed as number) <= N && (s.failed as number) <= (s.processed as number), 'consistent counts')

  const info = (await (await fetch(`${base}/api/datasets/${first.body.bulk_name}`, { headers: auth })).json()) as { sha: string; siblings: { rfilename: string }[] }
  const shards = info.siblings.map((s) => s.rfilename).filter((f) => f.startsWith('data/'))
  t.same(shards, ['data/train-00000-of-00003.parquet', 'data/train-00001-of-00003.parquet', 'data/train-00002-of-00003.parquet'])
  const rows = []
  for (const f of shards) rows.push(...(await parquetRows(base, first.body.bulk_name as string, done.revision as string, f)))
  t.equal(rows.length, N)
  t.same(rows.map((r) => r.row), [...Array(N).keys()], 'every row once, in order')
  // The same inputs through the streaming option give the same outputs.
  const texts = rows.map((r) => r.text as string)
  const streamed = []
  for await (const r of infer(texts, { url: base, model: 'builtin/sentiment', token: 't' })) streamed.push(JSON.stringify(r.outputs))
  t.same(rows.map((r) => r.outputs), streamed, 'bulk outputs equal streaming outputs')

  await waitState(base, second.body.jobid as string, ['completed'])
  const commits = (await (await fetch(`${base}/api/datasets/${first.body.bulk_name}/commits/main`, { headers: auth })).json()) as { id: string }[]
  t.equal(commits.length, 2, 'two runs, two commits')
  t.equal(commits[1].id, done.revision, 'the first revision is still there')
  const old = await parquetRows(base, first.body.bulk_name as string, done.revision as string, 'data/train-00001-of-00003.parquet')
  t.equal(old.length, 1000, 'the old revision stays readable')
  // And with the git command line.
  const clone = join(mkdtempSync(join(tmpdir(), 'is-clone-')), 'c')
  await exec('git', ['clone', '-q', `${base.replace('http://', 'http://user:t@')}/datasets/${first.body.bulk_name}`, clone])
  const log = (await exec('git', ['-C', clone, 'log', '--oneline'])).stdout.trim().split('\n')
  t.equal(log.length, 2)
})

t.test('bad requests get a clear 4xx', async (t) => {
  const server = await startServer(t, { tokens: ['t'], dataDir: dataDir(10) })
  const base = server.url
  const cases: [string, unknown, number, RegExp, Record<string, string>?][] = [
    ['/bulk/run/cpu/builtin/sentiment', { ...job, dataset_name: 'nope' }, 404, /nope/],
    ['/bulk/run/cpu/builtin/sentiment', { ...job, dataset_config: 'other' }, 404, /config "?other"?/],
    ['/bulk/run/cpu/builtin/sentiment', { ...job, dataset_split: 'test' }, 404, /split "?test"?/],
    ['/bulk/run/cpu/builtin/sentiment', { ...job, dataset_column: 'body' }, 400, /no column "body" \(columns: id, text\)/],
    ['/bulk/run/cpu/no/such-model', job, 404, /Model no\/such-model does not exist/],
    ['/bulk/run/cpu/builtin/sentiment', '{bad json', 400, /not valid JSON/],
    ['/bulk/run/cpu/builtin/sentiment', { dataset_name: 'reviews' }, 400, /"dataset_config" is required/],
    ['/bulk/run/cpu/builtin/sentiment', { ...job, parameters: [1] }, 400, /"parameters" must be a JSON object/],
    ['/bulk/run/cpu/builtin/sentiment', { ...job, bulk_name: '../escape' }, 400, /./],
    ['/bulk/run/cpu/builtin/sentiment', job, 401, /Invalid token/, { authorization: 'Bearer wrong' }],
  ]
  for (const [path, body, code, message, headers] of cases) {
    const r = await post(base, path, body, headers)
    t.equal(r.status, code, `${JSON.stringify(body).slice(0, 60)} -> ${code}`)
    t.match(r.body.error, message)
  }
  const missing = await fetch(`${base}/bulk/status/0123456789abcdef`, { headers: auth })
  t.equal(missing.status, 404)
})

t.test('fairness: a running job does not starve a live stream of the same model', async (t) => {
  const server = await startServer(t, { tokens: ['t'], dataDir: dataDir(3000), workers: 2, maxBatch: 8, jobMaxInFlight: 16 })
  const base = server.url
  const r = await post(base, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 10 } })
  await waitState(base, r.body.jobid as string, ['running'])
  while (((await status(base, r.body.jobid as string)).processed as number) < 50) await new Promise((res) => setTimeout(res, 10))
  const c = await connect(server.streamUrl('builtin/echo'), { token: 't' })
  const sent = Date.now()
  c.send({ id: 'live', inputs: 'hello', parameters: { delay_ms: 10 } })
  await c.waitFor(() => c.results().has('live'), 'the live item')
  const waited = Date.now() - sent
  const s = await status(base, r.body.jobid as string)
  t.ok((s.processed as number) < 3000, `the stream item was answered while the job ran (${s.processed}/3000 done, waited ${waited} ms)`)
  await c.close()
  await fetch(`${base}/bulk/cancel/${r.body.jobid}`, { method: 'POST', headers: auth })
  t.match(await status(base, r.body.jobid as string), { state: 'cancelled', active: 0 })
})

t.test('kill the server mid-job (SIGKILL), restart: the job completes, each row once, billed once', async (t) => {
  const N = 3000
  const dir = dataDir(N)
  const cli = CLI
  const start = async (): Promise<{ child: ReturnType<typeof spawn>; url: string }> => {
    const child = spawn(process.execPath, [cli, 'serve', '--port', '0', '--token', 't', '--data-dir', dir, '--log-level', 'warn', '--shard-rows', '1000'], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout!.on('data', (d) => (out += d))
    const deadline = Date.now() + 90_000 // not-stuck bound: a CLI started from source under the TS loader on a loaded machine
    while (!/listening on (\S+)/.test(out)) {
      if (Date.now() > deadline) throw new Error('server did not start')
      await new Promise((r) => setTimeout(r, 20))
    }
    return { child, url: /listening on (\S+)/.exec(out)![1] }
  }
  const a = await start()
  t.teardown(() => a.child.kill('SIGKILL'))
  const r = await post(a.url, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 5 } })
  const id = r.body.jobid as string
  while (((await status(a.url, id)).processed as number) < 600) await new Promise((res) => setTimeout(res, 10))
  a.child.kill('SIGKILL')
  await new Promise((res) => a.child.once('exit', res))
  const b = await start()
  t.teardown(() => b.child.kill('SIGTERM'))
  const seen = await waitState(b.url, id, ['completed', 'failed'], 120_000)
  const done = seen[seen.length - 1]
  t.match(done, { state: 'completed', processed: N, failed: 0 })
  const info = (await (await fetch(`${b.url}/api/datasets/${r.body.bulk_name}`, { headers: auth })).json()) as { siblings: { rfilename: string }[] }
  const rows = []
  for (const f of info.siblings.map((s) => s.rfilename).filter((f) => f.startsWith('data/'))) rows.push(...(await parquetRows(b.url, r.body.bulk_name as string, 'main', f)))
  t.same(rows.map((x) => x.row), [...Array(N).keys()], 'each row exactly once, in order')
  t.ok(rows.every((x, i) => x.outputs === JSON.stringify(`${['I love it, works great', 'Terrible, it broke', 'It arrived on Tuesday', 'Best purchase ever', 'Awful customer service'][i % 5]} (${i})`)))
  b.child.kill('SIGTERM')
  await new Promise((res) => b.child.once('exit', res))
  // The ledger is the state store's (one for streams, HTTP and jobs).
  const state = new SqliteStateBackend({ path: join(dir, 'state.sqlite'), maxRetained: 10, retentionMs: 60_000 })
  const ledger = await state.ledger(new Tenants({ secret: dataDirSecret(dir) }).defaultTenant('t').id)
  await state.close()
  t.equal(ledger.reduce((n, e) => n + e.items, 0), N, 'the durable bill equals the number of rows')
})

t.test('upload a local file as a dataset split, then run a job on it', async (t) => {
  const server = await startServer(t, { tokens: ['t'], dataDir: dataDir(1), maxUploadBytes: 10_000 })
  const base = server.url
  const csv = 'text\nI love this\nI hate this\n'
  const up = await fetch(`${base}/bulk/datasets/me/uploaded/default/train.csv`, { method: 'PUT', headers: auth, body: csv })
  t.equal(up.status, 201)
  const list = (await (await fetch(`${base}/bulk/datasets`, { headers: auth })).json()) as { datasets: { name: string }[] }
  t.ok(list.datasets.some((d) => d.name === 'me/uploaded'))
  const r = await post(base, '/bulk/run/cpu/builtin/sentiment', { ...job, dataset_name: 'me/uploaded' })
  t.equal(r.status, 200)
  const seen = await waitState(base, r.body.jobid as string, ['completed', 'failed'])
  t.match(seen[seen.length - 1], { state: 'completed', processed: 2 })
  const big = await fetch(`${base}/bulk/datasets/me/big/default/train.csv`, { method: 'PUT', headers: auth, body: 'text\n' + 'x'.repeat(20_000) })
  t.equal(big.status, 413)
  const traversal = await fetch(`${base}/bulk/datasets/..%2F..%2Fetc/default/train.csv`, { method: 'PUT', headers: auth, body: csv })
  t.equal(traversal.status, 400)
  const noAuth = await fetch(`${base}/bulk/datasets/me/x/default/train.csv`, { method: 'PUT', body: csv })
  t.equal(noAuth.status, 401)
})

t.test('cancel: a queued job stays cancelled and never runs; cancelling an ended job is 409', async (t) => {
  const server = await startServer(t, { tokens: ['t'], dataDir: dataDir(300), maxConcurrentJobs: 1 })
  const base = server.url
  const a = await post(base, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 5 } })
  const b = await post(base, '/bulk/run/cpu/builtin/echo', { ...job, parameters: { delay_ms: 6 } })
  t.match(await status(base, b.body.jobid as string), { state: 'queued' })
  const c = await post(base, `/bulk/cancel/${b.body.jobid}`, {})
  t.equal(c.status, 200)
  await waitState(base, a.body.jobid as string, ['completed'])
  await new Promise((r) => setTimeout(r, 200))
  t.match(await status(base, b.body.jobid as string), { state: 'cancelled', processed: 0, active: 0 })
  const again = await post(base, `/bulk/cancel/${a.body.jobid}`, {})
  t.equal(again.status, 409)
  t.match(again.body, { code: 'ERR_JOB_STATE', error: /already completed/ })
})
