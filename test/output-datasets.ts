import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import {
  DatasetNotFoundError,
  EntryNotFoundError,
  InvalidDatasetNameError,
  InvalidDatasetPathError,
  InvalidOptionError,
  RevisionNotFoundError,
} from '../lib/errors.js'
import { assertDatasetName, OutputDatasets } from '../lib/server/datasets/output-datasets.js'

const exec = promisify(execFile)

/** The git command line, isolated from the user's configuration. */
async function gitCli(cwd: string, ...args: string[]): Promise<string> {
  const env = { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', GIT_TERMINAL_PROMPT: '0' }
  return (await exec('git', args, { cwd, env, maxBuffer: 64 * 1024 * 1024 })).stdout
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'output-datasets-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Bytes that look like a Parquet file: magic at both ends, incompressible body. */
function parquetish(size: number): Buffer {
  const b = randomBytes(size)
  b.write('PAR1', 0, 'latin1')
  b.write('PAR1', size - 4, 'latin1')
  return b
}

t.test('two commits: the second replaces data/, the first stays readable by sha', async (t) => {
  const dir = tempDir(t)
  const outputs = new OutputDatasets(join(dir, 'outputs'))
  const shard1 = parquetish(3 * 1024 * 1024 + 17)
  writeFileSync(join(dir, 'shard1.parquet'), shard1)
  t.equal(await outputs.exists('user/bulk-x'), false)
  t.same(await outputs.list(), [])

  const sha1 = await outputs.commit(
    'user/bulk-x',
    [
      { path: 'data/train-00000-of-00001.parquet', source: join(dir, 'shard1.parquet') },
      { path: 'README.md', source: Buffer.from('# run 1\n') },
    ],
    'Bulk job 1\n\nmodel builtin/echo',
  )
  t.match(sha1, /^[0-9a-f]{40}$/)
  t.equal(await outputs.exists('user/bulk-x'), true)

  const shardA = parquetish(1000)
  const shardB = parquetish(2000)
  writeFileSync(join(dir, 'a.parquet'), shardA)
  const sha2 = await outputs.commit(
    'user/bulk-x',
    [
      { path: 'data/train-00000-of-00002.parquet', source: join(dir, 'a.parquet') },
      { path: 'data/train-00001-of-00002.parquet', source: shardB },
      { path: 'README.md', source: Buffer.from('# run 2\n') },
    ],
    'Bulk job 2',
    { replace: ['data/'], author: { name: 'alice', email: 'alice@example.com' } },
  )
  t.not(sha2, sha1)

  const info = await outputs.info('user/bulk-x')
  t.equal(info.id, 'user/bulk-x')
  t.equal(info.author, 'user')
  t.equal(info.sha, sha2)
  t.ok(Math.abs(Date.parse(info.lastModified) - Date.now()) < 60_000, 'lastModified is the commit date')
  t.same(
    info.siblings.map((s) => [s.rfilename, s.size]),
    [
      ['README.md', 8],
      ['data/train-00000-of-00002.parquet', 1000],
      ['data/train-00001-of-00002.parquet', 2000],
    ],
  )
  const old = await outputs.info('user/bulk-x', sha1)
  t.equal(old.sha, sha1)
  t.same(
    old.siblings.map((s) => [s.rfilename, s.size]),
    [
      ['README.md', 8],
      ['data/train-00000-of-00001.parquet', shard1.length],
    ],
  )
  t.same(await outputs.info('user/bulk-x', sha1.slice(0, 7)), old, 'a short sha resolves')
  t.same(await outputs.info('user/bulk-x', 'refs/heads/main'), info, 'a full ref name resolves')

  t.ok((await outputs.readFile('user/bulk-x', sha1, 'data/train-00000-of-00001.parquet')).equals(shard1), 'old shard byte for byte')
  t.equal((await outputs.readFile('user/bulk-x', sha1, 'README.md')).toString(), '# run 1\n')
  t.ok((await outputs.readFile('user/bulk-x', 'main', 'data/train-00001-of-00002.parquet')).equals(shardB))
  const file = await outputs.openFile('user/bulk-x', 'main', 'data/train-00000-of-00002.parquet')
  t.equal(file.size, 1000)
  t.equal(file.commit, sha2)
  t.match(file.blobId, /^[0-9a-f]{40}$/)
  t.equal(file.blobId, info.siblings[1].blobId)

  t.same(await outputs.refs('user/bulk-x'), {
    branches: [{ name: 'main', ref: 'refs/heads/main', targetCommit: sha2 }],
    converts: [],
    tags: [],
  })
  const commits = await outputs.commits('user/bulk-x')
  t.same(
    commits.map((c) => [c.id, c.title, c.message, c.authors]),
    [
      [sha2, 'Bulk job 2', '', [{ user: 'alice' }]],
      [sha1, 'Bulk job 1', 'model builtin/echo', [{ user: 'inference-stream' }]],
    ],
  )
  t.same((await outputs.commits('user/bulk-x', sha1)).map((c) => c.id), [sha1])
  t.same(await outputs.list(), ['user/bulk-x'])

  // The git command line agrees: a valid repository, same files, same history.
  const gitdir = outputs.gitdir('user/bulk-x')
  await gitCli(gitdir, 'fsck', '--strict')
  t.equal((await gitCli(gitdir, 'log', '--format=%H', 'main')).trim(), `${sha2}\n${sha1}`)
  t.equal(await gitCli(gitdir, 'show', `${sha1}:README.md`), '# run 1\n')
})

t.test('info/refs and objects/info/packs are what `git update-server-info` writes', async (t) => {
  const dir = tempDir(t)
  const outputs = new OutputDatasets(dir)
  await outputs.commit('solo', [{ path: 'a.txt', source: Buffer.from('a') }], 'one')
  const gitdir = outputs.gitdir('solo')
  // An annotated and a light tag, and a second branch, made by git itself.
  await gitCli(gitdir, '-c', 'user.name=t', '-c', 'user.email=t@t', 'tag', '-a', 'v1', '-m', 'v1', 'main')
  await gitCli(gitdir, 'tag', 'light', 'main')
  await gitCli(gitdir, 'branch', 'dev', 'main')
  const sha = await outputs.commit('solo', [{ path: 'b.txt', source: Buffer.from('b') }], 'two')
  const copy = join(dir, 'copy.git')
  cpSync(gitdir, copy, { recursive: true })
  rmSync(join(copy, 'info', 'refs'))
  rmSync(join(copy, 'objects', 'info', 'packs'))
  await gitCli(copy, 'update-server-info')
  t.equal(readFileSync(join(gitdir, 'info', 'refs'), 'utf8'), readFileSync(join(copy, 'info', 'refs'), 'utf8'))
  t.equal(readFileSync(join(gitdir, 'objects', 'info', 'packs'), 'utf8'), readFileSync(join(copy, 'objects', 'info', 'packs'), 'utf8'))
  t.match(readFileSync(join(gitdir, 'info', 'refs'), 'utf8'), /\trefs\/tags\/v1\^\{\}\n/)

  const refs = await outputs.refs('solo')
  t.same(refs.branches.map((b) => b.name), ['dev', 'main'])
  t.same(refs.tags.map((b) => b.name), ['light', 'v1'])
  const first = refs.branches[0].targetCommit
  t.equal(refs.tags[1].targetCommit, first, 'an annotated tag is peeled to its commit')
  t.equal((await outputs.info('solo', 'v1')).sha, first, 'a revision may be an annotated tag')
  t.equal((await outputs.info('solo', 'dev')).sha, first)
  t.equal((await outputs.info('solo')).sha, sha)
})

t.test('dataset names', async (t) => {
  for (const good of ['x', 'user/bulk-1', 'A_b.c', 'org/my_data.v2', 'a'.repeat(96)]) {
    t.doesNotThrow(() => assertDatasetName(good), good)
  }
  for (const bad of ['', 'a/b/c', '../x', 'a/../b', 'a..b', '.hidden', 'x.git', 'u/x.GIT', 'a b', '-x', 'x-', 'a/', '/a', 'a//b', 'é', 'a'.repeat(97), 'x\0']) {
    t.throws(() => assertDatasetName(bad), InvalidDatasetNameError, JSON.stringify(bad))
  }
  t.throws(() => assertDatasetName(42), { code: 'ERR_INVALID_DATASET_NAME', message: /non-empty string/ })
  const outputs = new OutputDatasets(tempDir(t))
  await t.rejects(outputs.commit('../evil', [{ path: 'a', source: Buffer.from('') }], 'm'), {
    name: 'InvalidDatasetNameError',
    code: 'ERR_INVALID_DATASET_NAME',
    message: 'Invalid dataset name "../evil": each part must be 1 to 96 of A-Z a-z 0-9 . _ -, not starting or ending with . or -',
  })
  await t.rejects(outputs.info('a/b/c'), InvalidDatasetNameError)
  await t.rejects(outputs.exists('a/b/c'), InvalidDatasetNameError)
  t.throws(() => new OutputDatasets(''), InvalidOptionError)
})

t.test('bad file paths and arguments are refused before anything is written', async (t) => {
  const dir = tempDir(t)
  const outputs = new OutputDatasets(dir)
  for (const path of ['../x', '/abs', 'a//b', 'a/', '.git/config', 'data/.GIT/x', 'a/./b', 'a\\b', '', 'a\0b']) {
    await t.rejects(outputs.commit('ds', [{ path, source: Buffer.from('x') }], 'm'), InvalidDatasetPathError, JSON.stringify(path))
  }
  await t.rejects(outputs.commit('ds', [{ path: 'a', source: Buffer.from('x') }], 'm', { replace: ['../'] }), {
    code: 'ERR_INVALID_DATASET_PATH',
    message: /^Replace prefix/,
  })
  await t.rejects(outputs.commit('ds', [{ path: 'a', source: 42 as unknown as Buffer }], 'm'), InvalidOptionError)
  await t.rejects(outputs.commit('ds', [{ path: 'a', source: Buffer.from('x') }], ''), InvalidOptionError)
  await t.rejects(outputs.commit('ds', [{ path: 'a', source: Buffer.from('x') }], 'm', { author: { name: '', email: '' } }), InvalidOptionError)
  await t.rejects(
    outputs.commit('ds', [{ path: 'a', source: Buffer.from('x') }, { path: 'a', source: Buffer.from('y') }], 'm'),
    { name: 'DatasetCommitError', message: 'commit(): a is given twice' },
  )
  t.equal(await outputs.exists('ds'), false)
})

t.test('a failed commit changes nothing', async (t) => {
  const dir = tempDir(t)
  const outputs = new OutputDatasets(join(dir, 'out'))
  await t.rejects(outputs.commit('ds', [{ path: 'a', source: join(dir, 'missing.parquet') }], 'm'), {
    name: 'DatasetCommitError',
    code: 'ERR_DATASET_COMMIT',
    message: /^Cannot copy .*missing\.parquet to a: ENOENT/,
  })
  t.equal(await outputs.exists('ds'), false, 'a failed first commit leaves no repository')
  t.same(await outputs.list(), [])
  const sha = await outputs.commit('ds', [{ path: 'data', source: Buffer.from('file') }], 'm')
  // `data` is a file: `data/x` cannot be added unless the old file is replaced.
  await t.rejects(outputs.commit('ds', [{ path: 'data/x', source: Buffer.from('x') }], 'm2'), {
    name: 'DatasetCommitError',
    message: 'data would be both a file and a folder; remove the old one with the "replace" option',
  })
  t.equal((await outputs.info('ds')).sha, sha)
  const sha2 = await outputs.commit('ds', [{ path: 'data/x', source: Buffer.from('x') }], 'm2', { replace: ['data'] })
  t.same((await outputs.info('ds')).siblings.map((s) => s.rfilename), ['data/x'])
  t.same((await outputs.commits('ds')).map((c) => c.id), [sha2, sha])
})

t.test('unknown dataset, revision and file', async (t) => {
  const outputs = new OutputDatasets(tempDir(t))
  const sha = await outputs.commit('ds', [{ path: 'data/a.txt', source: Buffer.from('a') }, { path: 'empty', source: Buffer.alloc(0) }], 'm')
  t.equal((await outputs.readFile('ds', 'main', 'empty')).length, 0, 'an empty file reads back empty')
  await t.rejects(outputs.info('nope'), { name: 'DatasetNotFoundError', code: 'ERR_DATASET_NOT_FOUND', message: 'Dataset nope does not exist' })
  await t.rejects(outputs.refs('nope'), DatasetNotFoundError)
  await t.rejects(outputs.readFile('nope', 'main', 'a'), DatasetNotFoundError)
  await t.rejects(outputs.info('ds', 'dev'), {
    name: 'RevisionNotFoundError',
    code: 'ERR_REVISION_NOT_FOUND',
    message: 'Revision "dev" does not exist in dataset ds',
  })
  for (const rev of ['../../HEAD', 'objects', 'config', '0'.repeat(40), 'main..x', 'a@{1}', '.x', 'x.lock', '']) {
    await t.rejects(outputs.commits('ds', rev), RevisionNotFoundError, JSON.stringify(rev))
  }
  // A sha that is not a commit (here a blob's) is no revision.
  const blob = (await outputs.info('ds')).siblings[0].blobId
  await t.rejects(outputs.info('ds', blob), { message: /names a blob, not a commit/ })
  t.equal((await outputs.info('ds', 'HEAD')).sha, sha)
  await t.rejects(outputs.readFile('ds', 'main', 'data/b.txt'), {
    name: 'EntryNotFoundError',
    code: 'ERR_ENTRY_NOT_FOUND',
    message: 'data/b.txt does not exist in dataset ds at revision main',
  })
  await t.rejects(outputs.readFile('ds', 'main', 'data'), EntryNotFoundError, 'a folder is no file')
  await t.rejects(outputs.readFile('ds', 'main', 'data/a.txt/x'), EntryNotFoundError)
  await t.rejects(outputs.readFile('ds', 'main', '../x'), InvalidDatasetPathError)
})

t.test('concurrent commits to one dataset are serialized, including the one that creates it', async (t) => {
  const dir = tempDir(t)
  const outputs = new OutputDatasets(dir)
  const other = new OutputDatasets(dir) // a second instance on the same root shares the lock
  const n = 12
  const shas = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      (i % 2 ? other : outputs).commit('team/race', [{ path: `f${String(i).padStart(2, '0')}.txt`, source: Buffer.from(`${i}`) }], `commit ${i}`),
    ),
  )
  t.equal(new Set(shas).size, n, 'every commit made its own version')
  const info = await outputs.info('team/race')
  t.same(
    info.siblings.map((s) => s.rfilename),
    Array.from({ length: n }, (_, i) => `f${String(i).padStart(2, '0')}.txt`),
    'no commit lost the files of another',
  )
  const history = await outputs.commits('team/race')
  t.equal(history.length, n, 'one linear history')
  t.same(new Set(history.map((c) => c.id)), new Set(shas))
  // Each commit sees all those before it: its tree has exactly its predecessors' files plus its own.
  const ordered = [...history].reverse()
  for (let k = 0; k < n; k++) t.equal((await outputs.info('team/race', ordered[k].id)).siblings.length, k + 1)
  await gitCli(outputs.gitdir('team/race'), 'fsck', '--strict')
  const tmp = join(dir, '.tmp')
  t.same(existsSync(tmp) ? readdirSync(tmp) : [], [], 'no temporary repository left')

  // Commits to other datasets run alongside.
  await Promise.all(['a', 'b', 'c'].map((d) => outputs.commit(d, [{ path: 'x', source: Buffer.from(d) }], d)))
  t.same(await outputs.list(), ['a', 'b', 'c', 'team/race'])
  t.equal((await outputs.readFile('b', 'main', 'x')).toString(), 'b')
})

t.test('a source whose size is not what it said fails the commit', { skip: !existsSync('/proc/version') && 'needs Linux /proc' }, async (t) => {
  // /proc files stat as 0 bytes and read as more: the blob would not match its header.
  const outputs = new OutputDatasets(tempDir(t))
  await t.rejects(outputs.commit('ds', [{ path: 'version', source: '/proc/version' }], 'm'), {
    name: 'DatasetCommitError',
    message: /^Cannot copy \/proc\/version to version: \/proc\/version changed size while it was copied \(0 then \d+ bytes\)$/,
  })
  t.equal(await outputs.exists('ds'), false)
})
