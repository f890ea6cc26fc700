import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { OutputDatasets } from '../lib/server/datasets/output-datasets.js'
import { startServer } from './helpers/server.js'

const exec = promisify(execFile)

const NAME = 'user/bulk-x'

/** The git command line, isolated from the user's configuration and never prompting. */
async function gitCli(cwd: string, ...args: string[]): Promise<string> {
  const env = {
    ...process.env,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: '/bin/false',
    SSH_ASKPASS: '/bin/false',
  }
  return (await exec('git', ['-c', 'credential.helper=', '-c', 'init.defaultBranch=main', ...args], { cwd, env })).stdout
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'hub-routes-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

interface Fixture {
  dir: string
  outputs: OutputDatasets
  sha1: string
  sha2: string
  shard1: Buffer
  shard2: Buffer
}

/** A dataset with two commits: a parquet-ish shard and a README each; the second replaces data/. */
async function fixture(t: Test): Promise<Fixture> {
  const dir = tempDir(t)
  const outputs = new OutputDatasets(join(dir, 'outputs'))
  const shard1 = randomBytes(300_000)
  const shard2 = randomBytes(200_000)
  const sha1 = await outputs.commit(
    NAME,
    [
      { path: 'data/train-00000-of-00001.parquet', source: shard1 },
      { path: 'README.md', source: Buffer.from('# run 1\n') },
    ],
    'Run 1',
  )
  const sha2 = await outputs.commit(
    NAME,
    [
      { path: 'data/train-00000-of-00001.parquet', source: shard2 },
      { path: 'README.md', source: Buffer.from('# run 2\n') },
    ],
    'Run 2\n\nsecond model',
    { replace: ['data/'] },
  )
  return { dir, outputs, sha1, sha2, shard1, shard2 }
}

/** A GET with the path sent exactly as given (fetch would normalize `..` away). */
function rawGet(base: string, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; body: string }> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    http
      .get({ host: u.hostname, port: u.port, path, headers }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
      })
      .on('error', reject)
  })
}

t.test('info, refs, commits and files at both revisions', async (t) => {
  const f = await fixture(t)
  const server = await startServer(t, { outputs: f.outputs })
  const get = (path: string, init?: RequestInit) => fetch(server.url + path, init)

  let res = await get(`/api/datasets/${NAME}`)
  t.equal(res.status, 200)
  t.match(res.headers.get('content-type'), /^application\/json/)
  const info = (await res.json()) as { id: string; sha: string; siblings: { rfilename: string; size: number }[]; lastModified: string }
  t.equal(info.id, NAME)
  t.equal(info.sha, f.sha2)
  t.match(info.lastModified, /^\d{4}-\d\d-\d\dT/)
  t.same(info.siblings.map((s) => [s.rfilename, s.size]), [['README.md', 8], ['data/train-00000-of-00001.parquet', 200_000]])

  for (const rev of [f.sha1, f.sha1.slice(0, 10)]) {
    const old = (await (await get(`/api/datasets/${NAME}/revision/${rev}`)).json()) as typeof info
    t.equal(old.sha, f.sha1, `revision ${rev}`)
    t.same(old.siblings.map((s) => [s.rfilename, s.size]), [['README.md', 8], ['data/train-00000-of-00001.parquet', 300_000]])
  }
  t.equal(((await (await get(`/api/datasets/${NAME}/revision/refs%2Fheads%2Fmain`)).json()) as typeof info).sha, f.sha2, 'an encoded full ref')

  t.same(await (await get(`/api/datasets/${NAME}/refs`)).json(), {
    branches: [{ name: 'main', ref: 'refs/heads/main', targetCommit: f.sha2 }],
    converts: [],
    tags: [],
  })
  const commits = (await (await get(`/api/datasets/${NAME}/commits/main`)).json()) as { id: string; title: string; message: string; authors: unknown; date: string }[]
  t.same(commits.map((c) => [c.id, c.title, c.message]), [[f.sha2, 'Run 2', 'second model'], [f.sha1, 'Run 1', '']])
  t.same(commits[0].authors, [{ user: 'inference-stream' }])
  t.same(((await (await get(`/api/datasets/${NAME}/commits/${f.sha1}`)).json()) as { id: string }[]).map((c) => c.id), [f.sha1])

  res = await get(`/datasets/${NAME}/resolve/main/README.md`)
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'text/markdown; charset=utf-8')
  t.equal(res.headers.get('content-length'), '8')
  t.equal(res.headers.get('x-repo-commit'), f.sha2)
  const etag = res.headers.get('etag')
  t.match(etag, /^"[0-9a-f]{40}"$/)
  t.equal(await res.text(), '# run 2\n')
  res = await get(`/datasets/${NAME}/resolve/${f.sha1}/README.md`)
  t.equal(await res.text(), '# run 1\n')
  t.equal(res.headers.get('x-repo-commit'), f.sha1)

  res = await get(`/datasets/${NAME}/resolve/${f.sha1}/data/train-00000-of-00001.parquet`)
  t.equal(res.headers.get('content-type'), 'application/vnd.apache.parquet')
  t.equal(res.headers.get('content-length'), '300000')
  t.ok(Buffer.from(await res.arrayBuffer()).equals(f.shard1), 'the old shard, byte for byte')
  res = await get(`/datasets/${NAME}/resolve/main/data%2Ftrain-00000-of-00001.parquet`)
  t.ok(Buffer.from(await res.arrayBuffer()).equals(f.shard2), 'the new shard (path may be encoded)')

  res = await get(`/datasets/${NAME}/resolve/main/README.md`, { method: 'HEAD' })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-length'), '8')
  t.equal(await res.text(), '')
  res = await get(`/datasets/${NAME}/resolve/main/README.md`, { headers: { 'if-none-match': etag ?? '' } })
  t.equal(res.status, 304)
})

t.test('unknown dataset, revision, file: 404 with the Hub error code; bad names: 400', async (t) => {
  const f = await fixture(t)
  const server = await startServer(t, { outputs: f.outputs })
  const cases: [string, number, string | null, RegExp][] = [
    ['/api/datasets/user/nope', 404, 'RepoNotFound', /^Dataset user\/nope does not exist$/],
    ['/api/datasets/nope/refs', 404, 'RepoNotFound', /does not exist/],
    [`/api/datasets/${NAME}/revision/dev`, 404, 'RevisionNotFound', /^Revision "dev" does not exist in dataset user\/bulk-x$/],
    [`/api/datasets/${NAME}/commits/${'0'.repeat(40)}`, 404, 'RevisionNotFound', /does not exist/],
    [`/datasets/${NAME}/resolve/dev/README.md`, 404, 'RevisionNotFound', /does not exist/],
    [`/datasets/${NAME}/resolve/main/nope.txt`, 404, 'EntryNotFound', /^nope\.txt does not exist in dataset user\/bulk-x at revision main$/],
    [`/datasets/${NAME}/resolve/main/data`, 404, 'EntryNotFound', /does not exist/],
    ['/datasets/user/nope/info/refs', 404, 'RepoNotFound', /does not exist/],
    [`/datasets/${NAME}/objects/00/${'0'.repeat(38)}`, 404, 'EntryNotFound', /^No objects\/00\/0+ in dataset/],
    ['/api/datasets/a/b/c', 400, null, /^Invalid dataset name "a\/b\/c"/],
    ['/api/datasets/.hidden', 400, null, /^Invalid dataset name/],
    ['/api/datasets/bad..name/refs', 400, null, /"\.\." is not allowed/],
    ['/api/datasets/x.git', 400, null, /must not end in "\.git"/],
    ['/datasets/bad%20name/resolve/main/README.md', 400, null, /^Invalid dataset name "bad name"/],
    ['/api/datasets/%E0%A4%A', 400, null, /not valid URL encoding/],
  ]
  for (const [path, status, hubCode, message] of cases) {
    const res = await fetch(server.url + path)
    t.equal(res.status, status, path)
    t.equal(res.headers.get('x-error-code'), hubCode, `${path} x-error-code`)
    const body = (await res.json()) as { error: string; code?: string }
    t.match(body.error, message, `${path} error`)
  }
  // Other methods are not these routes': the server's 404.
  const post = await fetch(`${server.url}/api/datasets/${NAME}`, { method: 'POST', body: '{}' })
  t.equal(post.status, 404)
  t.same(await post.json(), { error: `Not found: POST /api/datasets/${NAME}` })
})

t.test('path traversal is refused', async (t) => {
  const f = await fixture(t)
  const server = await startServer(t, { outputs: f.outputs })
  const secret = join(f.dir, 'outputs', 'user', 'bulk-x.git', 'config')
  t.ok(readFileSync(secret, 'utf8').includes('[core]'), 'the file the attacks aim at exists')
  const attacks: [string, number][] = [
    [`/datasets/${NAME}/resolve/main/../../../../etc/passwd`, 400],
    [`/datasets/${NAME}/resolve/main/%2e%2e/%2e%2e/config`, 400],
    [`/datasets/${NAME}/resolve/main/..%2F..%2Fconfig`, 400],
    [`/datasets/${NAME}/resolve/main/data/./x`, 400],
    [`/datasets/${NAME}/resolve/main/.git/config`, 400],
    [`/datasets/${NAME}/resolve/..%2F..%2F..%2Fconfig/README.md`, 404],
    [`/datasets/${NAME}/resolve/..%2Fconfig/README.md`, 404],
    [`/datasets/${NAME}/config`, 404],
    [`/datasets/${NAME}.git/config`, 404],
    [`/datasets/${NAME}/objects/../config`, 404],
    [`/datasets/${NAME}/objects/info/../../config`, 404],
    [`/datasets/${NAME}/objects/info/..%2F..%2Fconfig`, 404],
    [`/datasets/${NAME}/hooks/pre-receive.sample`, 404],
    ['/datasets/..%2F..%2Fetc/info/refs', 400],
    ['/datasets/user/..%2Fbulk-x/info/refs', 400],
    ['/datasets/user/../user/bulk-x/info/refs', 404],
    [`/api/datasets/${NAME}/revision/..%2F..%2Fconfig`, 404],
    [`/api/datasets/${NAME}/commits/..%2F..%2F..%2F..%2Fetc%2Fpasswd`, 404],
  ]
  for (const [path, status] of attacks) {
    const res = await rawGet(server.url, path)
    t.equal(res.status, status, path)
    t.notMatch(res.body, /\[core\]|root:/, `${path} leaks nothing`)
  }
})

t.test('git clone over HTTP (dumb protocol): two commits, both readable', async (t) => {
  const f = await fixture(t)
  const server = await startServer(t, { outputs: f.outputs })
  const info = await fetch(`${server.url}/datasets/${NAME}/info/refs?service=git-upload-pack`)
  t.equal(info.status, 200)
  t.match(info.headers.get('content-type'), /^text\/plain/, 'not the smart advertisement, so git falls back to dumb')
  t.equal(await info.text(), `${f.sha2}\trefs/heads/main\n`)
  const head = await fetch(`${server.url}/datasets/${NAME}/HEAD`)
  t.equal(await head.text(), 'ref: refs/heads/main\n')

  for (const suffix of ['', '.git']) {
    const dest = join(f.dir, `clone${suffix || '-plain'}`)
    await gitCli(f.dir, 'clone', '--quiet', `${server.url}/datasets/${NAME}${suffix}`, dest)
    const log = (await gitCli(dest, 'log', '--oneline', '--no-decorate')).trim().split('\n')
    t.equal(log.length, 2, `clone${suffix}: git log shows 2 commits`)
    t.match(log[0], /Run 2$/)
    t.match(log[1], /Run 1$/)
    t.equal((await gitCli(dest, 'rev-parse', 'HEAD')).trim(), f.sha2)
    t.equal(readFileSync(join(dest, 'README.md'), 'utf8'), '# run 2\n')
    t.ok(readFileSync(join(dest, 'data', 'train-00000-of-00001.parquet')).equals(f.shard2))
    await gitCli(dest, 'checkout', '--quiet', f.sha1)
    t.equal(readFileSync(join(dest, 'README.md'), 'utf8'), '# run 1\n')
    t.ok(readFileSync(join(dest, 'data', 'train-00000-of-00001.parquet')).equals(f.shard1), 'the old shard from history')
    await gitCli(dest, 'fsck', '--strict')
  }

  // A third commit, then `git pull` fetches only what is new.
  const dest = join(f.dir, 'clone-plain')
  await gitCli(dest, 'checkout', '--quiet', 'main')
  const sha3 = await f.outputs.commit(NAME, [{ path: 'README.md', source: Buffer.from('# run 3\n') }], 'Run 3')
  await gitCli(dest, 'pull', '--quiet', '--ff-only')
  t.equal((await gitCli(dest, 'rev-parse', 'HEAD')).trim(), sha3)
  t.equal(readFileSync(join(dest, 'README.md'), 'utf8'), '# run 3\n')
})

t.test('with tokens: Bearer for the API, the token as basic-auth password for git clone', async (t) => {
  const f = await fixture(t)
  const token = 'hf_secret_token'
  const server = await startServer(t, { outputs: f.outputs, tokens: [token] })
  const url = `${server.url}/api/datasets/${NAME}`

  let res = await fetch(url)
  t.equal(res.status, 401)
  t.match(res.headers.get('www-authenticate'), /Basic realm="inference-stream"/)
  t.same(await res.json(), { error: 'Missing "Authorization: Bearer <token>" header', code: 'ERR_AUTHENTICATION' })
  res = await fetch(url, { headers: { authorization: 'Bearer wrong' } })
  t.equal(res.status, 401)
  t.same(await res.json(), { error: 'Invalid token', code: 'ERR_AUTHENTICATION' })
  res = await fetch(`${server.url}/api/datasets/user/nope`)
  t.equal(res.status, 401, 'no answer about existence without a token')
  res = await fetch(url, { headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200)
  t.equal(((await res.json()) as { sha: string }).sha, f.sha2)
  res = await fetch(`${server.url}/datasets/${NAME}/resolve/main/README.md`, {
    headers: { authorization: `Basic ${Buffer.from(`user:${token}`).toString('base64')}` },
  })
  t.equal(await res.text(), '# run 2\n')

  const port = new URL(server.url).port
  await t.rejects(gitCli(f.dir, 'clone', '--quiet', `http://127.0.0.1:${port}/datasets/${NAME}`, join(f.dir, 'anon')), 'no token: clone refused')
  await t.rejects(gitCli(f.dir, 'clone', '--quiet', `http://user:wrong@127.0.0.1:${port}/datasets/${NAME}`, join(f.dir, 'wrong')), 'wrong token: refused')
  const dest = join(f.dir, 'authed')
  await gitCli(f.dir, 'clone', '--quiet', `http://user:${token}@127.0.0.1:${port}/datasets/${NAME}`, dest)
  t.equal((await gitCli(dest, 'log', '--oneline')).trim().split('\n').length, 2)
  t.equal(readFileSync(join(dest, 'README.md'), 'utf8'), '# run 2\n')
})

t.test('without outputs the routes answer 404', async (t) => {
  const server = await startServer(t)
  const res = await fetch(`${server.url}/api/datasets/${NAME}`)
  t.equal(res.status, 404)
  t.same(await res.json(), { error: `Not found: GET /api/datasets/${NAME}` })
})

t.test('reads during commits see whole versions', async (t) => {
  const f = await fixture(t)
  const server = await startServer(t, { outputs: f.outputs })
  let committing = true
  const writer = (async () => {
    for (let i = 0; i < 15; i++) {
      await f.outputs.commit(NAME, [{ path: 'README.md', source: Buffer.from(`# run ${i + 3}\n`) }], `Run ${i + 3}`)
    }
    committing = false
  })()
  let reads = 0
  while (committing) {
    const refs = await (await fetch(`${server.url}/datasets/${NAME}/info/refs`)).text()
    t.match(refs, /^[0-9a-f]{40}\trefs\/heads\/main\n$/)
    const res = await fetch(`${server.url}/datasets/${NAME}/resolve/main/README.md`)
    t.equal(res.status, 200)
    t.match(await res.text(), /^# run \d+\n$/)
    reads++
  }
  await writer
  t.ok(reads > 0)
  t.equal((await f.outputs.commits(NAME)).length, 17)
})
