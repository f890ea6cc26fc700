// Tenants own their data: uploads, output datasets and jobs of one tenant are, to another, exactly
// as absent as things that do not exist; files are private; no raw token is stored; a huge cell
// neither stalls the server nor a cancel.
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, createWriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { parquetReadObjects } from 'hyparquet'
import pino from 'pino'
import t from 'tap'
import { OutputDatasets } from '../lib/server/datasets/output-datasets.js'
import { startServer } from './helpers/server.js'
import { writeV1JobStore } from './helpers/v1-job-store.js'

const A = 'tok-alpha-7f3e9c'
const B = 'tok-bravo-91c2d4'
const bearer = (tok: string): Record<string, string> => ({ authorization: `Bearer ${tok}` })
const basic = (tok: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`git:${tok}`).toString('base64')}` })

function tempDir(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function operatorDataset(dataDir: string, rows: number): void {
  const dir = join(dataDir, 'datasets', 'reviews', 'default')
  mkdirSync(dir, { recursive: true })
  const lines = ['id,text']
  for (let i = 0; i < rows; i++) lines.push(`r${i},review ${i}`)
  writeFileSync(join(dir, 'train.csv'), `${lines.join('\n')}\n`)
}

function walk(dir: string, out: { path: string; dir: boolean }[] = []): { path: string; dir: boolean }[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name)
    out.push({ path, dir: e.isDirectory() })
    if (e.isDirectory()) walk(path, out)
  }
  return out
}

function hashTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const e of walk(dir)) if (!e.dir) out[e.path.slice(dir.length)] = createHash('sha256').update(readFileSync(e.path)).digest('hex')
  return out
}

function filesHolding(dir: string, needles: string[]): string[] {
  return walk(dir).filter((e) => !e.dir && needles.some((n) => readFileSync(e.path).includes(n))).map((e) => e.path)
}

async function req(base: string, path: string, headers: Record<string, string>, init: RequestInit = {}): Promise<{ status: number; text: string }> {
  const res = await fetch(`${base}${path}`, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) } })
  return { status: res.status, text: await res.text() }
}

async function run(base: string, tok: string, body: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}/bulk/run/cpu/builtin/echo`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(tok) }, body: JSON.stringify(body) })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

async function waitDone(base: string, tok: string, id: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const s = (JSON.parse((await req(base, `/bulk/status/${id}`, bearer(tok))).text) as { status: Record<string, unknown> }).status
    if (s.state !== 'queued' && s.state !== 'running') return s
    if (Date.now() > deadline) throw new Error(`job ${id} still ${s.state}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

t.test('another tenant gets exactly the answer of a missing thing, and changes nothing', async (t) => {
  const dataDir = tempDir(t, 'is-tenancy-')
  operatorDataset(dataDir, 5)
  const server = await startServer(t, { tokens: [A, B], dataDir })
  const base = server.url
  const idA = server.tenants.authenticate(A)!.id

  // A uploads a split and writes an output dataset from it.
  const up = await req(base, '/bulk/datasets/mine/default/train.csv', bearer(A), { method: 'PUT', body: 'text\nalpha one\nalpha two\n' })
  t.equal(up.status, 201)
  t.same(JSON.parse(up.text), { dataset: 'mine', config: 'default', split: 'train', path: 'mine/default/train.csv' }, 'no server path in the answer')
  const jobA = await run(base, A, { dataset_name: 'mine', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', bulk_name: 'shared/out' })
  t.equal(jobA.status, 200)
  const idJobA = jobA.body.jobid as string
  t.equal((await waitDone(base, A, idJobA)).state, 'completed')
  const aInfo = await req(base, '/api/datasets/shared/out', bearer(A))
  t.equal(aInfo.status, 200, 'the owner reads its dataset')
  const aSha = JSON.parse(aInfo.text).sha as string
  const before = hashTree(join(dataDir, 'tenants', idA))
  t.ok(Object.keys(before).some((p) => p.includes('outputs/shared/out.git')), 'A\'s output lives under A\'s tenant folder')

  // Every output-dataset route: B on A's dataset = B on a dataset that never existed.
  const routes: [string, (tok: string) => Record<string, string>][] = [
    ['/api/datasets/NAME', bearer],
    ['/api/datasets/NAME/revision/main', bearer],
    [`/api/datasets/NAME/revision/${aSha}`, bearer],
    ['/api/datasets/NAME/refs', bearer],
    ['/api/datasets/NAME/commits/main', bearer],
    ['/api/datasets/NAME/commits/main?limit=1', bearer],
    ['/api/datasets/NAME/tree/main?recursive=true', bearer],
    ['/api/datasets/NAME/tree/main/data?expand=true', bearer],
    ['/api/datasets/NAME/revision/HEAD', bearer],
    ['/datasets/NAME/resolve/main/README.md', bearer],
    ['/datasets/NAME/info/refs', basic],
    ['/datasets/NAME.git/info/refs', basic],
    ['/datasets/NAME/HEAD', basic],
    ['/datasets/NAME/objects/info/packs', basic],
  ]
  for (const [route, auth] of routes) {
    const owner = await req(base, route.replace('NAME', 'shared/out'), auth(A))
    t.equal(owner.status, 200, `A: ${route}`)
    const other = await req(base, route.replace('NAME', 'shared/out'), auth(B))
    const missing = await req(base, route.replace('NAME', 'shared/nothing'), auth(B))
    t.equal(other.status, 404, `B: ${route}`)
    t.equal(other.text, missing.text.replaceAll('shared/nothing', 'shared/out'), `B: ${route} reads as missing`)
  }

  // Jobs: status, cancel and the list.
  for (const [method, path] of [['GET', '/bulk/status/ID'], ['DELETE', '/bulk/status/ID'], ['POST', '/bulk/cancel/ID']]) {
    const other = await req(base, path.replace('ID', idJobA), bearer(B), { method })
    const missing = await req(base, path.replace('ID', '0123456789abcdef'), bearer(B), { method })
    t.equal(other.status, 404, `B: ${method} ${path}`)
    t.equal(other.text, missing.text.replaceAll('0123456789abcdef', idJobA), `B: ${method} ${path} reads as missing`)
  }
  const listOf = async (tok: string): Promise<string[]> => (JSON.parse((await req(base, '/bulk/jobs', bearer(tok))).text).jobs as { jobid: string }[]).map((j) => j.jobid)
  t.ok((await listOf(A)).includes(idJobA))
  t.notOk((await listOf(B)).includes(idJobA), 'A\'s job is not in B\'s list')

  // Uploads: listing, running a job on one, writing over one.
  const splitsOf = async (tok: string): Promise<string[]> => (JSON.parse((await req(base, '/bulk/datasets', bearer(tok))).text).datasets as { name: string }[]).map((d) => d.name)
  t.same(await splitsOf(A), ['mine', 'reviews'])
  t.same(await splitsOf(B), ['reviews'], 'B sees the operator\'s datasets, not A\'s uploads')
  const onA = await run(base, B, { dataset_name: 'mine', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' })
  const onNone = await run(base, B, { dataset_name: 'never', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' })
  t.equal(onA.status, 404)
  t.same(onA.body, { ...onNone.body, error: (onNone.body.error as string).replace('"never"', '"mine"') }, 'a job on A\'s upload reads as missing')
  const put = await req(base, '/bulk/datasets/mine/default/train.csv', bearer(B), { method: 'PUT', body: 'text\nbravo\n' })
  t.equal(put.status, 201, 'B may upload a split of that name: its own')

  // B's job with A's bulk_name commits B's own dataset, never on top of A's.
  const jobB = await run(base, B, { dataset_name: 'mine', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', bulk_name: 'shared/out' })
  t.equal(jobB.status, 200)
  const doneB = await waitDone(base, B, jobB.body.jobid as string)
  t.equal(doneB.state, 'completed')
  t.equal(doneB.total, 1, 'B\'s job read B\'s upload')
  const bCommits = JSON.parse((await req(base, '/api/datasets/shared/out/commits/main', bearer(B))).text) as unknown[]
  t.equal(bCommits.length, 1, 'B\'s dataset has B\'s one commit, no parent from A')
  t.equal(JSON.parse((await req(base, '/api/datasets/shared/out', bearer(A))).text).sha, aSha, 'A\'s main did not move')
  t.same(hashTree(join(dataDir, 'tenants', idA)), before, 'A\'s files are byte for byte unchanged')
  t.equal(readFileSync(join(dataDir, 'datasets/reviews/default/train.csv'), 'utf8').split('\n').length, 7, 'the operator folder is untouched')

  // Private files, and no raw token anywhere.
  await server.close()
  for (const e of walk(dataDir)) {
    if (e.path.startsWith(join(dataDir, 'datasets'))) continue // the operator's own folder
    t.equal(statSync(e.path).mode & 0o777, e.dir ? 0o700 : 0o600, `${e.path.slice(dataDir.length)} mode`)
  }
  t.same(filesHolding(dataDir, [A, B]), [], 'no file holds a raw token')
})

t.test('a v1 data folder: tokens become tenant ids, outputs move under their owner, orphans are reported', async (t) => {
  const dataDir = tempDir(t, 'is-tenancy-v1-')
  writeV1JobStore(join(dataDir, 'jobs.sqlite'), [['aaaa000000000001', A, 'legacy/out'], ['bbbb000000000002', B, 'b-out']])
  const legacy = new OutputDatasets(join(dataDir, 'outputs'))
  await legacy.commit('legacy/out', [{ path: 'README.md', source: Buffer.from('# legacy\n') }], 'v1 output')
  await legacy.commit('orphan', [{ path: 'README.md', source: Buffer.from('# orphan\n') }], 'nobody\'s')
  t.ok(filesHolding(dataDir, [A]).length > 0, 'the v1 file holds raw tokens (so the check below can fail)')
  const lines: string[] = []
  const logger = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }))
  const server = await startServer(t, { tokens: [A, B], dataDir, logger })
  await server.legacyMigrated
  const base = server.url
  const status = await req(base, '/bulk/status/aaaa000000000001', bearer(A))
  t.equal(status.status, 200, 'the job is reachable with its token')
  t.equal(JSON.parse(status.text).status.bulk_name, 'legacy/out')
  t.equal((await req(base, '/bulk/status/aaaa000000000001', bearer(B))).status, 404, 'and only with it')
  t.equal((await req(base, '/api/datasets/legacy/out', bearer(A))).status, 200, 'the output moved under its owner')
  t.equal((await req(base, '/api/datasets/legacy/out', bearer(B))).status, 404)
  t.equal((await req(base, '/api/datasets/orphan', bearer(A))).status, 404, 'an output with no owner is readable by nobody')
  t.ok(lines.some((l) => /"level":40/.test(l) && l.includes('orphan') && l.includes(join(dataDir, 'outputs', 'orphan.git')) && l.includes('move it')), 'a warning says where it is and what to do')
  await server.close()
  t.same(filesHolding(dataDir, [A, B]), [], 'no file holds a raw token after the migration')
})

t.test('a 50 MiB cell: that row fails alone, other tenants are served meanwhile, cancel takes effect at once', async (t) => {
  const dataDir = tempDir(t, 'is-tenancy-big-')
  const dir = join(dataDir, 'datasets', 'big', 'default')
  mkdirSync(dir, { recursive: true })
  const out = createWriteStream(join(dir, 'train.csv'))
  out.write('id,text\n')
  for (let i = 0; i < 300; i++) {
    if (i === 150) {
      out.write('r150,')
      const chunk = 'x'.repeat(1024 * 1024)
      for (let k = 0; k < 50; k++) out.write(chunk)
      out.write('\n')
    } else out.write(`r${i},row ${i}\n`)
  }
  await new Promise((r) => out.end(r))
  const server = await startServer(t, { tokens: [A, B], dataDir })
  const base = server.url
  // Warm B's model first: its cold start (worker threads loading TypeScript under the test loader)
  // is not what this measures.
  const warm = await fetch(`${base}/models/builtin/sentiment`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(B) }, body: JSON.stringify({ inputs: 'warm' }) })
  t.equal(warm.status, 200)
  await warm.arrayBuffer()
  const job = await run(base, A, { dataset_name: 'big', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', bulk_name: 'big-out' })
  t.equal(job.status, 200)
  let slowest = 0
  let polls = 0
  const id = job.body.jobid as string
  for (;;) {
    const s = Date.now()
    const res = await fetch(`${base}/models/builtin/sentiment`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(B) }, body: JSON.stringify({ inputs: 'fine' }), signal: AbortSignal.timeout(20_000) })
    t.equal(res.status, 200)
    await res.arrayBuffer()
    slowest = Math.max(slowest, Date.now() - s)
    polls++
    const st = JSON.parse((await req(base, `/bulk/status/${id}`, bearer(A))).text).status
    if (st.state !== 'queued' && st.state !== 'running') break
  }
  t.ok(slowest < 5000, `another tenant answered within 5 s while the job ran (slowest ${slowest} ms over ${polls})`)
  const done = await waitDone(base, A, id)
  t.equal(done.state, 'completed')
  t.equal(done.processed, 300)
  t.equal(done.failed, 1, 'the big row alone failed')
  const info = JSON.parse((await req(base, '/api/datasets/big-out', bearer(A))).text) as { siblings: { rfilename: string }[] }
  const shard = info.siblings.find((s) => s.rfilename.endsWith('.parquet'))!.rfilename
  const buf = await (await fetch(`${base}/datasets/big-out/resolve/main/${shard}`, { headers: bearer(A) })).arrayBuffer()
  const rows = (await parquetReadObjects({ file: buf })) as Record<string, unknown>[]
  t.equal(rows.length, 300)
  const failed = rows.filter((r) => r.error)
  t.equal(failed.length, 1)
  t.equal(failed[0].row, 150)
  t.equal(failed[0].error_code, 'ERR_LIMIT_EXCEEDED')
  t.equal(rows[151].text, 'row 151', 'rows after the big one keep their place')

  // Cancel while the job reads the big row and waits on slow results.
  const slow = await fetch(`${base}/bulk/run/cpu/builtin/echo`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(A) },
    body: JSON.stringify({ dataset_name: 'big', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text', parameters: { delay_ms: 200 } }),
  })
  const slowId = ((await slow.json()) as { jobid: string }).jobid
  for (let i = 0; i < 200; i++) {
    const st = JSON.parse((await req(base, `/bulk/status/${slowId}`, bearer(A))).text).status
    if (st.state === 'running' && st.processed > 0) break
    await new Promise((r) => setTimeout(r, 25))
  }
  const t0 = Date.now()
  const cancel = await req(base, `/bulk/cancel/${slowId}`, bearer(A), { method: 'POST' })
  t.equal(cancel.status, 200)
  t.equal(JSON.parse(cancel.text).status.state, 'cancelled')
  await server.bulk!.jobs.settled(slowId)
  t.ok(Date.now() - t0 < 1000, `the job stopped within 1 s (${Date.now() - t0} ms)`)
  const after = JSON.parse((await req(base, `/bulk/status/${slowId}`, bearer(A))).text).status
  await new Promise((r) => setTimeout(r, 500))
  const later = JSON.parse((await req(base, `/bulk/status/${slowId}`, bearer(A))).text).status
  t.equal(later.state, 'cancelled')
  t.equal(later.processed, after.processed, 'nothing more is stored after the cancel')
})

t.test('bad URL encoding of the model of /bulk/run is a 400', async (t) => {
  const dataDir = tempDir(t, 'is-tenancy-enc-')
  const server = await startServer(t, { tokens: [A], dataDir })
  const res = await req(server.url, '/bulk/run/cpu/a%ZZ', bearer(A), { method: 'POST', body: '{}' })
  t.equal(res.status, 400)
  t.same(JSON.parse(res.text), { error: 'Model id is not valid URL encoding: "a%ZZ"', code: 'ERR_INVALID_PAYLOAD' })
})
