// Output datasets read with the Hugging Face Hub's own clients (issue 15): the official JavaScript
// client, @huggingface/hub, against a real server; and the requests of Python's huggingface_hub
// (hf_api.py, file_download.py, hf_file_system.py, utils/_http.py, _snapshot_download.py), written
// here as the plain HTTP calls its source makes, answered with the headers it checks.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { datasetInfo, downloadFile, listCommits, listFiles, pathsInfo, whoAmI } from '@huggingface/hub'
import { parquetReadObjects } from 'hyparquet'
import t, { type Test } from 'tap'
import { BulkClient, type BulkJobStatus } from '../lib/client/bulk-client.js'
import { DatasetBulk } from '../lib/client/dataset-bulk.js'
import { sliceStream } from '../lib/server/datasets/loose-objects.js'
import { startServer } from './helpers/server.js'

const A = 'hf_alpha_7f3e9c0d1b2a'
const B = 'hf_bravo_91c2d4e5f6a7'
const N = 250
const text = (i: number): string => `review number ${i}${i % 7 === 0 ? ', with a comma' : ''}`

const JOB = { model: 'builtin/echo', dataset_name: 'reviews', dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' }

function tempDir(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

// bigint (Parquet INT64) as number, so rows of two readers compare.
function plain(row: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(row).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v]))
}

/**
 * A server with tokens A and B and a 250-row split; A runs the same echo job twice (shards of 100
 * rows: three Parquet files), so its output dataset has two commits.
 */
async function setup(t: Test) {
  const dataDir = tempDir(t, 'hub-clients-')
  const dir = join(dataDir, 'datasets', 'reviews', 'default')
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'train.csv'), `id,text\n${[...Array(N).keys()].map((i) => `k${i},"${text(i)}"`).join('\n')}\n`)
  const server = await startServer(t, { tokens: [A, B], dataDir, shardRows: 100 })
  const client = new BulkClient({ url: server.url, token: A })
  const runs: BulkJobStatus[] = []
  for (const parameters of [{}, { run: 2 }]) {
    const { jobid } = await client.start({ ...JOB, parameters })
    const done = await client.wait(jobid, { pollIntervalMs: 20 })
    t.equal(done.state, 'completed', `run ${runs.length + 1} completed`)
    runs.push(done)
  }
  t.equal(runs[0].bulk_name, runs[1].bulk_name, 'both runs commit to one dataset')
  const namespace = (await whoAmI({ hubUrl: server.url, accessToken: A })).name
  return { server, url: server.url, client, runs, namespace, id: `${namespace}/${runs[0].bulk_name}` }
}

t.test('@huggingface/hub: datasetInfo, listFiles, downloadFile, listCommits, pathsInfo', async (t) => {
  const { url, runs, namespace, id } = await setup(t)
  const hub = { hubUrl: url, accessToken: A }
  const repo = { type: 'dataset' as const, name: id }
  const [first, second] = runs.map((r) => r.revision as string)
  t.match(namespace, /^t-[0-9a-f]{12}$/, 'whoAmI names the tenant: the namespace of its datasets')

  const info = await datasetInfo({ ...hub, name: id })
  t.equal(info.name, id)
  t.match(info.id, /^[0-9a-f]{24}$/)
  t.equal(info.private, false)
  t.ok(info.updatedAt instanceof Date && !Number.isNaN(info.updatedAt.getTime()), 'updatedAt is a date')
  const older = await datasetInfo({ ...hub, name: id, revision: first, additionalFields: ['sha'] })
  t.equal(older.sha, first, 'datasetInfo at the first commit')

  const files = []
  for await (const f of listFiles({ ...hub, repo, recursive: true })) files.push(f)
  const shards = ['data/train-00000-of-00003.parquet', 'data/train-00001-of-00003.parquet', 'data/train-00002-of-00003.parquet']
  t.same(files.map((f) => [f.type, f.path]), [['file', 'README.md'], ['directory', 'data'], ...shards.map((p) => ['file', p])], 'recursive listing, depth first')
  t.ok(files.every((f) => f.type === 'directory' ? f.size === 0 : f.size > 0) && files.every((f) => /^[0-9a-f]{40}$/.test(f.oid ?? '')))
  // The same listing one entry a page: the client follows the Link header of each page.
  const asked: string[] = []
  const onePerPage: typeof fetch = (input, init) => {
    const u = new URL(String(input))
    if (!u.searchParams.has('cursor')) u.searchParams.set('limit', '1')
    asked.push(u.search)
    return fetch(u, init)
  }
  const paged = []
  for await (const f of listFiles({ ...hub, repo, recursive: true, fetch: onePerPage })) paged.push(f)
  t.same(paged, files, 'paged listing: the same entries')
  t.equal(asked.length, files.length, 'one request a page')
  t.ok(asked.slice(1).every((q) => q.includes('cursor=') && q.includes('recursive=true')), 'next pages keep the query')
  const top = []
  for await (const f of listFiles({ ...hub, repo })) top.push(f.path)
  t.same(top, ['README.md', 'data'], 'not recursive: the root only')
  const inData = []
  for await (const f of listFiles({ ...hub, repo, path: 'data', revision: first })) inData.push(f.path)
  t.same(inData, shards, 'a folder at a commit')

  // Every shard at main, read back with hyparquet: the job's rows, as DatasetBulk reads them.
  const rows: Record<string, unknown>[] = []
  for (const path of shards) {
    const blob = await downloadFile({ ...hub, repo, path })
    t.ok(blob, path)
    const size = files.find((f) => f.path === path)?.size
    t.equal(blob!.size, size, `${path}: the listed size`)
    rows.push(...((await parquetReadObjects({ file: await blob!.arrayBuffer() })) as Record<string, unknown>[]).map(plain))
  }
  t.equal(rows.length, N)
  t.same(rows.map((r) => r.row), [...Array(N).keys()], 'every row once, in order')
  t.same(rows.map((r) => r.text), [...Array(N).keys()].map(text), 'the source column')
  t.same(rows.map((r) => JSON.parse(r.outputs as string)), [...Array(N).keys()].map(text), 'echo outputs')
  const viaBulk: Record<string, unknown>[] = []
  for await (const row of new DatasetBulk({ url, token: A, dataset: runs[1].bulk_name as string, revision: 'main' })) viaBulk.push(plain(row as Record<string, unknown>))
  t.same(rows, viaBulk, 'the same rows as DatasetBulk reads')

  // README.md at the first commit: the first run's card; at main, the second's.
  const readme1 = await (await downloadFile({ ...hub, repo, path: 'README.md', revision: first }))!.text()
  const readme2 = await (await downloadFile({ ...hub, repo, path: 'README.md' }))!.text()
  t.match(readme1, `job_id: "${runs[0].jobid}"`)
  t.match(readme2, `job_id: "${runs[1].jobid}"`)
  t.equal(await downloadFile({ ...hub, repo, path: 'nope.txt' }), null, 'a missing file is null (EntryNotFound)')

  const commits = []
  for await (const c of listCommits({ ...hub, repo })) commits.push(c)
  t.same(commits.map((c) => c.oid), [second, first], 'two commits, newest first')
  t.ok(commits.every((c) => c.date instanceof Date && c.title.length > 0))
  const pagedCommits = []
  for await (const c of listCommits({ ...hub, repo, batchSize: 1 })) pagedCommits.push(c.oid)
  t.same(pagedCommits, [second, first], 'one commit a page, through the Link header')

  const paths = await pathsInfo({ ...hub, repo, paths: ['README.md', 'data', 'nope'], revision: first })
  t.same(paths.map((p) => [p.type, p.path]), [['file', 'README.md'], ['directory', 'data']], 'paths-info: the paths that exist')
  const expanded = await pathsInfo({ ...hub, repo, paths: ['README.md'], expand: true })
  t.equal(expanded[0].lastCommit?.id, second, 'expand: the last commit that changed it')

  // The ids before namespaces still answer (DatasetBulk and BulkClient use them).
  const legacy = await datasetInfo({ ...hub, name: runs[0].bulk_name as string })
  t.equal(legacy.name, id, 'a name without namespace: the same dataset, reported by its Hub id')
})

t.test('@huggingface/hub as another tenant: the dataset does not exist', async (t) => {
  const { url, id, namespace } = await setup(t)
  const other = { hubUrl: url, accessToken: B }
  const missing = `${namespace}/never-made`
  const errorOf = async (p: Promise<unknown>): Promise<{ status?: number; message: string }> => {
    try {
      await p
    } catch (err) {
      return { status: (err as { statusCode?: number }).statusCode, message: (err as Error).message }
    }
    return t.fail('no error') as never
  }
  for (const [what, call] of [
    ['datasetInfo', (name: string) => datasetInfo({ ...other, name })],
    ['downloadFile', (name: string) => downloadFile({ ...other, repo: { type: 'dataset', name }, path: 'README.md' })],
    ['listFiles', async (name: string) => { for await (const f of listFiles({ ...other, repo: { type: 'dataset', name } })) void f }],
    ['listCommits', async (name: string) => { for await (const c of listCommits({ ...other, repo: { type: 'dataset', name } })) void c }],
  ] as const) {
    const theirs = await errorOf(call(id))
    const none = await errorOf(call(missing))
    t.equal(theirs.status, 404, `${what}: 404`)
    t.equal(theirs.message.replaceAll(id, missing), none.message, `${what}: the answer of a dataset never made`)
  }
  const own = (await whoAmI(other)).name
  t.not(own, namespace, 'B has a namespace of its own')
})

/** A request as huggingface_hub sends it: its headers, no redirect followed (HEAD /resolve). */
async function hfRequest(url: string, token: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Response> {
  return fetch(url, {
    method: init.method ?? 'GET',
    redirect: 'manual',
    headers: { authorization: `Bearer ${token}`, 'user-agent': 'unknown/None; hf_hub/1.0; python/3.12', ...init.headers },
    body: init.body,
  })
}

/** huggingface_hub's paginate(): the first page, then each `Link: <…>; rel="next"` as it is. */
async function paginate(url: string, token: string): Promise<{ items: Record<string, unknown>[]; pages: number }> {
  const items: Record<string, unknown>[] = []
  let next: string | undefined = url
  let pages = 0
  while (next) {
    const res = await hfRequest(next, token)
    if (res.status !== 200) throw new Error(`${next}: ${res.status} ${await res.text()}`)
    items.push(...((await res.json()) as Record<string, unknown>[]))
    pages++
    next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '')?.[1]
  }
  return { items, pages }
}

t.test('huggingface_hub: the requests of its source, answered with the headers it checks', async (t) => {
  const { url, runs, id, namespace } = await setup(t)
  const [first, second] = runs.map((r) => r.revision as string)
  const api = `${url}/api/datasets/${id}`

  // whoami(): GET /api/whoami-v2
  t.equal(((await (await hfRequest(`${url}/api/whoami-v2`, A)).json()) as { name: string }).name, namespace)

  // repo_info / dataset_info (snapshot_download, HfFileSystem): /revision/{quote(rev, safe="")}
  for (const [rev, sha] of [['main', second], [encodeURIComponent('refs/heads/main'), second], [first, first]]) {
    const res = await hfRequest(`${api}/revision/${rev}`, A)
    t.equal(res.status, 200, `dataset_info at ${rev}`)
    const info = (await res.json()) as { id: string; sha: string; siblings: { rfilename: string; size: number; blobId: string }[] }
    t.equal(info.id, id)
    t.equal(info.sha, sha, `sha at ${rev}`)
    t.ok(info.siblings.every((s) => typeof s.rfilename === 'string' && s.size > 0 && /^[0-9a-f]{40}$/.test(s.blobId)), 'siblings with size and blobId (files_metadata)')
  }

  // list_repo_tree (snapshot_download): tree/{sha}?recursive=true&expand=false, paged by Link.
  const tree = await paginate(`${api}/tree/${first}?recursive=true&expand=false`, A)
  const files = tree.items.filter((e) => e.type === 'file') as { path: string; size: number; oid: string }[]
  t.same(files.map((f) => f.path), ['README.md', 'data/train-00000-of-00003.parquet', 'data/train-00001-of-00003.parquet', 'data/train-00002-of-00003.parquet'])
  t.ok(tree.items.every((e) => typeof e.oid === 'string' && typeof e.size === 'number' && typeof e.path === 'string'), 'RepoFile/RepoFolder keys: path, size, oid')
  const small = await paginate(`${api}/tree/${first}?recursive=True&expand=False&limit=2`, A)
  t.same(small.items, tree.items, 'requests-style booleans, two entries a page: the same listing')
  t.equal(small.pages, 3)
  // list_repo_tree(path_in_repo="data"): the path as one quoted segment.
  const data = await paginate(`${api}/tree/main/${encodeURIComponent('data')}?recursive=false&expand=true`, A)
  t.same(data.items.map((e) => e.oid), files.slice(1).map((f) => f.oid), 'the echo runs wrote the same shards')
  t.ok(data.items.every((e) => (e.lastCommit as { id: string }).id === first), 'expand: a shard rewritten with the same bytes last changed in run 1')
  const root = await paginate(`${api}/tree/main?expand=true`, A)
  t.same(root.items.map((e) => [e.path, (e.lastCommit as { id: string }).id]), [['README.md', second], ['data', first]], 'the card changed in run 2')
  t.ok(root.items.every((e) => typeof (e.lastCommit as { title: string }).title === 'string' && !Number.isNaN(Date.parse((e.lastCommit as { date: string }).date))))
  const folderMissing = await hfRequest(`${api}/tree/main/nope`, A)
  t.equal(folderMissing.status, 404)
  t.equal(folderMissing.headers.get('x-error-code'), 'EntryNotFound')

  // get_paths_info (HfFileSystem.info): POST form paths=...&expand=...
  const pi = await hfRequest(`${api}/paths-info/${first}`, A, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'paths=data%2Ftrain-00001-of-00003.parquet&paths=data&paths=nope&expand=false',
  })
  t.equal(pi.status, 200)
  const infos = (await pi.json()) as { type: string; path: string; oid: string; size: number }[]
  t.same(infos.map((e) => [e.type, e.path]), [['file', 'data/train-00001-of-00003.parquet'], ['directory', 'data']])
  t.equal(infos[0].oid, files[2].oid)

  // hf_hub_download: HEAD /resolve (Accept-Encoding: identity, redirects not followed), then GET.
  for (const f of files) {
    const fileUrl = `${url}/datasets/${id}/resolve/${first}/${f.path.split('/').map(encodeURIComponent).join('/')}`
    const head = await hfRequest(fileUrl, A, { method: 'HEAD', headers: { 'accept-encoding': 'identity' } })
    t.equal(head.status, 200, `HEAD ${f.path}`)
    t.equal(head.headers.get('x-repo-commit'), first, 'X-Repo-Commit: the commit (get_hf_file_metadata needs one)')
    t.equal(head.headers.get('etag')?.replace(/^W\//, '').replace(/"/g, ''), f.oid, 'ETag: the blob sha1 (the cache blob name)')
    t.equal(Number(head.headers.get('content-length')), f.size, 'Content-Length: the size')
    t.equal(head.headers.get('content-encoding'), null, 'identity')
    const body = Buffer.from(await (await hfRequest(fileUrl, A)).arrayBuffer())
    t.equal(body.length, f.size)
    // http_get resuming a cut download: Range bytes=N-.
    const rest = await hfRequest(fileUrl, A, { headers: { range: `bytes=${f.size - 7}-` } })
    t.equal(rest.status, 206)
    t.equal(rest.headers.get('content-range'), `bytes ${f.size - 7}-${f.size - 1}/${f.size}`)
    t.same(Buffer.from(await rest.arrayBuffer()), body.subarray(f.size - 7), 'the last 7 bytes')
    // HfFileSystemFile._fetch_range: bytes=start-(end-1).
    const mid = await hfRequest(fileUrl, A, { headers: { range: 'bytes=3-10' } })
    t.equal(mid.status, 206)
    t.equal(Number(mid.headers.get('content-length')), 8)
    t.same(Buffer.from(await mid.arrayBuffer()), body.subarray(3, 11), 'bytes 3 to 10')
  }
  const fileUrl = `${url}/datasets/${id}/resolve/main/README.md`
  const past = await hfRequest(fileUrl, A, { headers: { range: 'bytes=999999-' } })
  t.equal(past.status, 416)
  t.match(past.headers.get('content-range'), /^bytes \*\/\d+$/)
  t.equal(((await past.json()) as { code: string }).code, 'ERR_RANGE_NOT_SATISFIABLE')
  const stale = await hfRequest(fileUrl, A, { headers: { range: 'bytes=0-3', 'if-range': '"0000"' } })
  t.equal(stale.status, 200, 'an If-Range of another version: the whole file')
  await stale.arrayBuffer()

  // hf_raise_for_status reads X-Error-Code (and, for HEAD, X-Error-Message: there is no body).
  const cases: [string, string, number, string | null][] = [
    ['missing file (HEAD)', `${url}/datasets/${id}/resolve/main/nope.json`, 404, 'EntryNotFound'],
    ['missing revision (HEAD)', `${url}/datasets/${id}/resolve/nope/README.md`, 404, 'RevisionNotFound'],
    ['missing dataset (HEAD)', `${url}/datasets/${namespace}/never/resolve/main/README.md`, 404, 'RepoNotFound'],
    ['missing revision', `${api}/revision/v9`, 404, 'RevisionNotFound'],
    ['missing dataset', `${url}/api/datasets/${namespace}/never/revision/main`, 404, 'RepoNotFound'],
  ]
  for (const [what, u, status, code] of cases) {
    const res = await hfRequest(u, A, { method: what.endsWith('(HEAD)') ? 'HEAD' : 'GET' })
    t.equal(res.status, status, what)
    t.equal(res.headers.get('x-error-code'), code, `${what}: X-Error-Code`)
    t.ok((res.headers.get('x-error-message') ?? '').length > 0, `${what}: X-Error-Message`)
    await res.arrayBuffer()
  }
  const gone = await hfRequest(`${url}/datasets/${id}/resolve/main/nope.json`, A, { method: 'HEAD' })
  t.equal(gone.headers.get('x-repo-commit'), second, 'EntryNotFound names the commit (cached as .no_exist/<commit>/...)')
  const badToken = await hfRequest(`${api}/revision/main`, 'hf_wrong')
  t.equal(badToken.status, 401)
  t.equal(badToken.headers.get('x-error-message'), 'Invalid credentials in Authorization header', 'the Hub\'s words: a wrong token, not a missing repo')
  await badToken.arrayBuffer()

  // list_repo_commits and list_repo_refs(include_pull_requests=True).
  const commits = await paginate(`${api}/commits/main?limit=1`, A)
  t.same(commits.items.map((c) => c.id), [second, first])
  t.equal(commits.pages, 2)
  t.ok(commits.items.every((c) => Array.isArray(c.authors) && typeof c.date === 'string' && typeof c.title === 'string' && typeof c.message === 'string'))
  const refs = (await (await hfRequest(`${api}/refs?include_prs=1`, A)).json()) as Record<string, unknown>
  t.same(refs, { branches: [{ name: 'main', ref: 'refs/heads/main', targetCommit: second }], converts: [], tags: [], pullRequests: [] })
})

t.test('every new route: another tenant\'s dataset answers as a missing one', async (t) => {
  const { url, id, namespace, runs } = await setup(t)
  const missing = `${namespace}/never-made`
  const routes: [string, Record<string, string>?, string?][] = [
    ['/api/datasets/ID/tree/main?recursive=true'],
    ['/api/datasets/ID/tree/main/data'],
    [`/api/datasets/ID/tree/${runs[0].revision}?expand=true`],
    ['/api/datasets/ID/commits/main?limit=1'],
    ['/api/datasets/ID/refs?include_prs=1'],
    ['/api/datasets/ID/revision/HEAD'],
    ['/datasets/ID/resolve/main/README.md', { range: 'bytes=0-0' }],
    ['/api/datasets/ID/paths-info/main', { 'content-type': 'application/json' }, '{"paths":["README.md"]}'],
    ['/datasets/ID/info/refs'],
  ]
  for (const [route, headers, body] of routes) {
    const ask = async (tok: string, name: string) => {
      const res = await fetch(url + route.replace('ID', name), { method: body ? 'POST' : 'GET', headers: { authorization: `Bearer ${tok}`, ...headers }, body })
      return { status: res.status, code: res.headers.get('x-error-code'), text: await res.text() }
    }
    const owner = await ask(A, id)
    t.ok(owner.status === 200 || owner.status === 206, `A: ${route} (${owner.status})`)
    const other = await ask(B, id)
    const none = await ask(B, missing)
    t.equal(other.status, 404, `B: ${route}`)
    t.equal(other.code, 'RepoNotFound')
    t.same({ ...other, text: other.text.replaceAll(id, missing) }, none, `B: ${route} reads as missing`)
  }
})

t.test('a range is read up to its last byte and no further', async (t) => {
  let pulled = 0
  let destroyed = false
  const endless = new Readable({
    highWaterMark: 1024,
    read() {
      pulled++
      this.push(Buffer.alloc(1024, pulled % 256))
    },
    destroy(err, cb) {
      destroyed = true
      cb(err)
    },
  })
  const chunks: Buffer[] = []
  for await (const c of sliceStream(endless, { start: 1500, end: 2599 })) chunks.push(c as Buffer)
  const got = Buffer.concat(chunks)
  t.equal(got.length, 1100)
  t.ok(got.subarray(0, 548).every((b) => b === 2) && got.subarray(548).every((b) => b === 3), 'bytes 1500..2599 of the source')
  t.ok(destroyed, 'the source is destroyed once the range is passed on')
  t.ok(pulled <= 6, `the source was read ${pulled} chunks of 1 KiB: the range's 3, and its buffer's read-ahead`)
})
