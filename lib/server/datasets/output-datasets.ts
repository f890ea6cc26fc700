/**
 * Output datasets: one real, bare git repository per dataset under a root folder
 * (`{root}/{name}.git`, e.g. `{root}/user/bulk-x.git`), written with isomorphic-git — no git
 * command line at run time. Each commit is a version; old versions stay readable by sha. After
 * every commit the repository gets the files of `git update-server-info`, so `git clone` over the
 * dumb HTTP protocol works (docs/protocol.md, "Output datasets").
 */
import { randomBytes } from 'node:crypto'
import fs, { promises as fsp } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { Readable } from 'node:stream'
import git from 'isomorphic-git'
import {
  DatasetCommitError,
  DatasetNotFoundError,
  EntryNotFoundError,
  InvalidDatasetNameError,
  InvalidDatasetPathError,
  InvalidOptionError,
  RevisionNotFoundError,
} from '../../errors.js'
import { blobSize, TreeReader, type TreeEntry, type TreePage } from './dataset-tree.js'
import { createLooseObjectStream, readLooseHeader, sliceStream, writeLooseBlob, type ByteRange } from './loose-objects.js'
import { objectType, peelTag, updateServerInfo, writeFileAtomic } from './server-info.js'

/** The branch every commit goes to, and the default revision. */
export const DEFAULT_BRANCH = 'main'

/** Author of commits that name none. */
export const DEFAULT_AUTHOR = { name: 'inference-stream', email: 'inference-stream@localhost' }

/** A file of a commit: its path in the dataset, and a file to copy in (streamed) or its bytes. */
export interface CommitFile {
  /** Path in the dataset, `/`-separated, e.g. `data/train-00000-of-00002.parquet`. */
  path: string
  /** A file on disk to copy in (read as a stream), or the content itself. */
  source: string | Buffer
}

/** Options of {@link OutputDatasets.commit}. */
export interface CommitOptions {
  /**
   * Path prefixes whose files of the previous version are removed before the new files are added,
   * e.g. `['data/']`, so a re-run's shards replace the old ones (which stay in history). Plain
   * string prefixes: end a folder with `/`. Default: none (files are added or overwritten).
   */
  replace?: string[]
  /** Author and committer. Default {@link DEFAULT_AUTHOR}. */
  author?: { name: string; email: string }
}

/** A file of a dataset, as the Hub lists it in `siblings`. */
export interface DatasetSibling {
  /** Path in the dataset. */
  rfilename: string
  /** Size in bytes. */
  size: number
  /** Git blob sha1 of the content (the Hub's `blobId`; also the `etag` of a download). */
  blobId: string
}

/** Hub-like dataset info (`GET /api/datasets/{name}`). */
export interface DatasetInfo {
  /** The dataset name. */
  id: string
  /** The namespace (part before `/`), when the name has one. */
  author?: string
  /** Commit sha of the revision. */
  sha: string
  /** Committer date of that commit, ISO 8601. */
  lastModified: string
  /** Always false: access follows the server's tokens. */
  private: false
  /** Every file at that revision, sorted by path. */
  siblings: DatasetSibling[]
}

/** A branch or tag (Hub `GitRefInfo`). */
export interface DatasetRef {
  /** Short name, e.g. `main`. */
  name: string
  /** Full name, e.g. `refs/heads/main`. */
  ref: string
  /** Commit it points to (annotated tags peeled). */
  targetCommit: string
}

/** Refs of a dataset (`GET /api/datasets/{name}/refs`); `converts` is always empty here. */
export interface DatasetRefs {
  branches: DatasetRef[]
  converts: DatasetRef[]
  tags: DatasetRef[]
}

/** A commit as the Hub lists it (`GET /api/datasets/{name}/commits/{rev}`). */
export interface DatasetCommit {
  /** Commit sha. */
  id: string
  /** First line of the message. */
  title: string
  /** The rest of the message (the Hub's commit description), trimmed; '' when there is none. */
  message: string
  /** The author, by name. */
  authors: { user: string }[]
  /** Author date, ISO 8601. */
  date: string
}

/** A file at a revision, ready to stream (see {@link OutputDatasets.openFile}). */
export interface DatasetFile {
  /** Path in the dataset. */
  path: string
  /** Size in bytes. */
  size: number
  /** Git blob sha1. */
  blobId: string
  /** Commit sha the revision resolved to. */
  commit: string
  /**
   * Opens the content as a stream; each call opens a new one. Destroy it if not read to the end.
   * @param range only bytes `start` to `end` (both included); nothing past `end` is read.
   */
  createReadStream(range?: ByteRange): Readable
}

/** Options of {@link OutputDatasets.commits}: a page of the history. */
export interface CommitsPage {
  /** Commits to skip from the newest. Default 0. */
  skip?: number
  /** Commits to return at most. Default: all. */
  limit?: number
}

/** Options of {@link OutputDatasets.tree}. */
export interface TreeOptions {
  /** Folder to list, `''` (default) for the root. */
  path?: string
  /** List the entries of sub-folders too (depth first). Default false. */
  recursive?: boolean
  /** List only entries after this path (the `next` of the page before). */
  after?: string
  /** Entries per page. Default 1000. */
  limit?: number
  /** Add each entry's `lastCommit`. Default false. */
  expand?: boolean
}

interface TreeLeaf {
  oid: string
  mode: string
  type: 'blob' | 'commit'
}

type TreeNode = Map<string, TreeNode | TreeLeaf>

const NAME_SEGMENT = /^(?![.-])[A-Za-z0-9._-]{1,96}(?<![.-])$/

/**
 * Checks an output dataset name: one or two `/`-separated segments (like Hub ids, `name` or
 * `namespace/name`) of `[A-Za-z0-9._-]`, each at most 96 characters, not starting or ending with
 * `.` or `-`, without `..`, not ending in `.git`.
 * @throws InvalidDatasetNameError naming what is wrong.
 */
export function assertDatasetName(name: unknown): asserts name is string {
  const bad = (why: string): never => {
    throw new InvalidDatasetNameError(`Invalid dataset name ${JSON.stringify(name)}: ${why}`)
  }
  if (typeof name !== 'string' || name.length === 0) bad('expected a non-empty string')
  const segments = (name as string).split('/')
  if (segments.length > 2) bad('expected "name" or "namespace/name"')
  for (const s of segments) {
    if (!NAME_SEGMENT.test(s)) bad('each part must be 1 to 96 of A-Z a-z 0-9 . _ -, not starting or ending with . or -')
    if (s.includes('..')) bad('".." is not allowed')
    if (s.toLowerCase().endsWith('.git')) bad('must not end in ".git"')
  }
}

/**
 * Checks a file path inside a dataset: relative, `/`-separated, no empty, `.`, `..` or `.git`
 * segment, no backslash or NUL, at most 4096 characters.
 * @throws InvalidDatasetPathError naming what is wrong.
 */
export function assertDatasetPath(path: unknown, what = 'File path'): asserts path is string {
  const bad = (why: string): never => {
    throw new InvalidDatasetPathError(`${what} ${JSON.stringify(path)} is not valid: ${why}`)
  }
  if (typeof path !== 'string' || path.length === 0) bad('expected a non-empty string')
  const p = path as string
  if (p.length > 4096) bad('longer than 4096 characters')
  if (p.includes('\0') || p.includes('\\')) bad('no NUL or backslash allowed (use / between folders)')
  for (const s of p.split('/')) {
    if (s === '') bad('expected a relative path without empty segments (no leading, trailing or double /)')
    if (s === '.' || s === '..') bad('"." and ".." segments are not allowed')
    if (s.toLowerCase() === '.git') bad('".git" is reserved')
  }
}

// git check-ref-format's rules, restricted to a safe alphabet: the revision becomes a file path
// under the git directory in isomorphic-git, so nothing may climb out of `refs/`.
const REF_CHARS = /^[A-Za-z0-9._/+@-]{1,256}$/

function isValidRevision(rev: string): boolean {
  if (!REF_CHARS.test(rev) || rev.includes('..') || rev.includes('@{') || rev.includes('//')) return false
  if (rev.startsWith('/') || rev.endsWith('/') || rev.endsWith('.')) return false
  return rev.split('/').every((s) => !s.startsWith('.') && !s.endsWith('.lock'))
}

// Per git directory, across instances in this process: commits to one dataset are serialized.
const locks = new Map<string, Promise<void>>()

async function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(key) ?? Promise.resolve()
  const run = prev.then(fn)
  const tail = run.then(
    () => {},
    () => {},
  )
  locks.set(key, tail)
  try {
    return await run
  } finally {
    if (locks.get(key) === tail) locks.delete(key)
  }
}

/** Sets every file under `dir` to 0600 and every folder (`dir` too) to 0700. */
export async function makePrivate(dir: string): Promise<void> {
  await fsp.chmod(dir, 0o700)
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) await makePrivate(path)
    else if (entry.isFile()) await fsp.chmod(path, 0o600)
  }
}

function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code
  return code === 'NotFoundError' || code === 'ENOENT'
}

/**
 * Git-versioned output datasets under one root folder. One process should own a root: commits are
 * serialized per dataset within the process, not across processes.
 * @example
 * const outputs = new OutputDatasets('./outputs')
 * const sha = await outputs.commit('me/bulk-1', [
 *   { path: 'data/train-00000-of-00001.parquet', source: '/tmp/shard.parquet' },
 *   { path: 'README.md', source: Buffer.from('# bulk-1\n') },
 * ], 'Bulk job 42', { replace: ['data/'] })
 */
export class OutputDatasets {
  /** Absolute root folder. */
  readonly root: string

  /** @param rootDir folder holding the repositories; created on the first commit. */
  constructor(rootDir: string) {
    if (typeof rootDir !== 'string' || rootDir.length === 0) {
      throw new InvalidOptionError('OutputDatasets needs a root folder (a non-empty string)')
    }
    this.root = resolve(rootDir)
  }

  /**
   * The git directory of a dataset (`{root}/{name}.git`), whether or not it exists.
   * @throws InvalidDatasetNameError for a bad name.
   */
  gitdir(name: string): string {
    assertDatasetName(name)
    return join(this.root, `${name}.git`)
  }

  /**
   * Commits files to `main` of a dataset, creating the repository on the first commit, and returns
   * the new commit sha. Always makes a commit, even when nothing changed (a re-run is a version).
   * Files are copied as streams. Commits to one dataset wait for each other.
   * @param name dataset name, see {@link assertDatasetName}.
   * @param files files to add or overwrite.
   * @param message commit message: a title line, optionally a blank line and a description.
   * @throws InvalidDatasetNameError, InvalidDatasetPathError, InvalidOptionError for bad arguments;
   *   DatasetCommitError when a source cannot be copied or a path is both a file and a folder
   *   (nothing is changed then).
   */
  async commit(name: string, files: CommitFile[], message: string, options: CommitOptions = {}): Promise<string> {
    const gitdir = this.gitdir(name)
    if (!Array.isArray(files)) throw new InvalidOptionError('commit(): "files" must be an array of {path, source}')
    const seen = new Set<string>()
    for (const f of files) {
      if (typeof f !== 'object' || f === null) throw new InvalidOptionError('commit(): each file must be {path, source}')
      assertDatasetPath(f.path)
      if (typeof f.source !== 'string' && !Buffer.isBuffer(f.source)) {
        throw new InvalidOptionError(`commit(): "source" of ${f.path} must be a file path or a Buffer`)
      }
      if (seen.has(f.path)) throw new DatasetCommitError(`commit(): ${f.path} is given twice`)
      seen.add(f.path)
    }
    if (typeof message !== 'string' || message.trim() === '') throw new InvalidOptionError('commit(): "message" must be a non-empty string')
    const replace = options.replace ?? []
    if (!Array.isArray(replace)) throw new InvalidOptionError('commit(): option "replace" must be an array of path prefixes')
    for (const p of replace) assertDatasetPath(typeof p === 'string' ? p.replace(/\/$/, '') : p, 'Replace prefix')
    const author = options.author ?? DEFAULT_AUTHOR
    if (typeof author?.name !== 'string' || author.name === '' || typeof author.email !== 'string') {
      throw new InvalidOptionError('commit(): option "author" must be {name, email} with a non-empty name')
    }
    return withLock(gitdir, () => this.doCommit(gitdir, files, message, replace, author))
  }

  private async doCommit(
    finalDir: string,
    files: CommitFile[],
    message: string,
    replace: string[],
    author: { name: string; email: string },
  ): Promise<string> {
    const existing = await isRepository(finalDir)
    // A new repository is built aside and renamed into place, so readers never see it empty.
    const gitdir = existing ? finalDir : join(this.root, '.tmp', `new-${randomBytes(8).toString('hex')}.git`)
    try {
      // Outputs are their tenant's: the root and every folder in it readable by the server's user only.
      if (!existing) await fsp.mkdir(dirname(gitdir), { recursive: true, mode: 0o700 })
      if (!existing) await git.init({ fs, gitdir, bare: true, defaultBranch: DEFAULT_BRANCH })
      let parent: string | undefined
      const entries = new Map<string, TreeLeaf>()
      if (existing) {
        try {
          parent = await git.resolveRef({ fs, gitdir, ref: `refs/heads/${DEFAULT_BRANCH}` })
        } catch (err) {
          if (!isNotFound(err)) throw err
        }
        if (parent) await flattenTree(gitdir, (await git.readCommit({ fs, gitdir, oid: parent })).commit.tree, '', entries)
      }
      for (const path of [...entries.keys()]) {
        if (replace.some((prefix) => path.startsWith(prefix))) entries.delete(path)
      }
      for (const f of files) {
        let oid: string
        try {
          oid = (await writeLooseBlob(gitdir, f.source)).oid
        } catch (err) {
          const from = typeof f.source === 'string' ? f.source : 'a Buffer'
          throw new DatasetCommitError(`Cannot copy ${from} to ${f.path}: ${(err as Error).message}`, { cause: err })
        }
        entries.set(f.path, { oid, mode: '100644', type: 'blob' })
      }
      const tree = await writeTrees(gitdir, buildTree(entries))
      const now = { timestamp: Math.floor(Date.now() / 1000), timezoneOffset: 0 }
      const who = { name: author.name, email: author.email, ...now }
      const oid = await git.writeCommit({
        fs,
        gitdir,
        commit: {
          tree,
          parent: parent ? [parent] : [],
          author: who,
          committer: who,
          message: message.endsWith('\n') ? message : `${message}\n`,
        },
      })
      // isomorphic-git's writeRef truncates and rewrites the file in place; a concurrent reader
      // could see it empty. A rename is atomic, as git's own lock-file dance.
      await writeFileAtomic(join(gitdir, 'refs', 'heads', DEFAULT_BRANCH), `${oid}\n`)
      await updateServerInfo(gitdir)
      // isomorphic-git and the loose-object writer create with the process's default modes.
      await makePrivate(gitdir)
      if (!existing) {
        await fsp.mkdir(dirname(finalDir), { recursive: true, mode: 0o700 })
        await fsp.rename(gitdir, finalDir)
      }
      return oid
    } catch (err) {
      if (!existing) await fsp.rm(gitdir, { recursive: true, force: true })
      throw err
    }
  }

  /**
   * Whether a dataset exists (has its first commit).
   * @throws InvalidDatasetNameError for a bad name.
   */
  async exists(name: string): Promise<boolean> {
    return isRepository(this.gitdir(name))
  }

  /** Names of every dataset, sorted. */
  async list(): Promise<string[]> {
    const names: string[] = []
    const scan = async (dir: string, prefix: string, depth: number): Promise<void> => {
      let items: fs.Dirent[]
      try {
        items = await fsp.readdir(dir, { withFileTypes: true })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
        throw err
      }
      for (const d of items) {
        if (!d.isDirectory()) continue
        if (d.name.endsWith('.git')) {
          const name = prefix + d.name.slice(0, -4)
          if (isValidName(name) && (await isRepository(join(dir, d.name)))) names.push(name)
        } else if (depth === 0 && NAME_SEGMENT.test(d.name)) {
          await scan(join(dir, d.name), `${d.name}/`, 1)
        }
      }
    }
    await scan(this.root, '', 0)
    return names.sort()
  }

  /**
   * Resolves a revision — a branch, a tag (tags first when both exist, as git does), a full
   * `refs/...` name, or a commit sha of at least 4 hex digits — to a commit sha.
   * @throws DatasetNotFoundError, RevisionNotFoundError.
   */
  async resolveRevision(name: string, revision: string = DEFAULT_BRANCH): Promise<string> {
    const gitdir = await this.existingGitdir(name)
    return resolveCommit(gitdir, name, revision)
  }

  /**
   * Hub-like info of a dataset at a revision: sha, date and files with their sizes.
   * @param revision branch, tag or sha. Default `main`.
   * @throws DatasetNotFoundError, RevisionNotFoundError.
   */
  async info(name: string, revision: string = DEFAULT_BRANCH): Promise<DatasetInfo> {
    const gitdir = await this.existingGitdir(name)
    const sha = await resolveCommit(gitdir, name, revision)
    const { commit } = await git.readCommit({ fs, gitdir, oid: sha })
    const entries = new Map<string, TreeLeaf>()
    await flattenTree(gitdir, commit.tree, '', entries)
    const siblings: DatasetSibling[] = []
    for (const [path, e] of entries) {
      if (e.type !== 'blob') continue
      siblings.push({ rfilename: path, size: await blobSize(gitdir, e.oid), blobId: e.oid })
    }
    siblings.sort((a, b) => (a.rfilename < b.rfilename ? -1 : a.rfilename > b.rfilename ? 1 : 0))
    const slash = name.indexOf('/')
    return {
      id: name,
      ...(slash > 0 ? { author: name.slice(0, slash) } : {}),
      sha,
      lastModified: new Date(commit.committer.timestamp * 1000).toISOString(),
      private: false,
      siblings,
    }
  }

  /**
   * Branches and tags of a dataset.
   * @throws DatasetNotFoundError.
   */
  async refs(name: string): Promise<DatasetRefs> {
    const gitdir = await this.existingGitdir(name)
    const list = async (kind: 'heads' | 'tags'): Promise<DatasetRef[]> => {
      const names = (await git.listRefs({ fs, gitdir, filepath: `refs/${kind}` })).filter((r) => !r.endsWith('^{}')).sort()
      const out: DatasetRef[] = []
      for (const short of names) {
        const ref = `refs/${kind}/${short}`
        const oid = await git.resolveRef({ fs, gitdir, ref })
        out.push({ name: short, ref, targetCommit: await peelTag(gitdir, oid) })
      }
      return out
    }
    return { branches: await list('heads'), converts: [], tags: await list('tags') }
  }

  /**
   * The history of a revision, newest first, following first parents (the only ones: commits of
   * {@link commit} have one parent). A page of it reads the commits up to its end, none after.
   * @param revision branch, tag or sha. Default `main`.
   * @throws DatasetNotFoundError, RevisionNotFoundError.
   */
  async commits(name: string, revision: string = DEFAULT_BRANCH, page: CommitsPage = {}): Promise<DatasetCommit[]> {
    const gitdir = await this.existingGitdir(name)
    let oid: string | undefined = await resolveCommit(gitdir, name, revision)
    const skip = page.skip ?? 0
    const end = page.limit === undefined ? Infinity : skip + page.limit
    const out: DatasetCommit[] = []
    for (let i = 0; oid !== undefined && i < end; i++) {
      const { commit } = await git.readCommit({ fs, gitdir, oid })
      if (i >= skip) {
        const text = commit.message.replace(/\n+$/, '')
        const nl = text.indexOf('\n')
        out.push({
          id: oid,
          title: nl < 0 ? text : text.slice(0, nl),
          message: nl < 0 ? '' : text.slice(nl + 1).trim(),
          authors: [{ user: commit.author.name }],
          date: new Date(commit.author.timestamp * 1000).toISOString(),
        })
      }
      oid = commit.parent[0]
    }
    return out
  }

  /**
   * A page of the tree of a revision, as the Hub lists it (`GET /api/datasets/{id}/tree/{rev}/{path}`).
   * @throws DatasetNotFoundError, RevisionNotFoundError, InvalidDatasetPathError, EntryNotFoundError
   *   (`path` is not a folder at that revision).
   */
  async tree(name: string, revision: string, options: TreeOptions = {}): Promise<TreePage & { commit: string }> {
    const path = options.path ?? ''
    if (path !== '') assertDatasetPath(path, 'Folder path')
    const gitdir = await this.existingGitdir(name)
    const commit = await resolveCommit(gitdir, name, revision)
    const reader = new TreeReader(gitdir)
    const root = (await git.readCommit({ fs, gitdir, oid: commit })).commit.tree
    const page = await reader.list(root, path, { recursive: options.recursive ?? false, after: options.after, limit: options.limit ?? 1000 })
    if (!page) throw new EntryNotFoundError(`No folder ${path} in dataset ${name} at revision ${revision}`)
    if (options.expand) await reader.addLastCommits(commit, page.entries)
    return { commit, ...page }
  }

  /**
   * The entries of the given paths at a revision (the Hub's paths-info): files and folders that
   * exist, in the order asked, each once; paths that do not exist are left out.
   * @throws DatasetNotFoundError, RevisionNotFoundError, InvalidDatasetPathError.
   */
  async pathsInfo(name: string, revision: string, paths: string[], options: { expand?: boolean } = {}): Promise<{ commit: string; entries: TreeEntry[] }> {
    for (const p of paths) assertDatasetPath(p)
    const gitdir = await this.existingGitdir(name)
    const commit = await resolveCommit(gitdir, name, revision)
    const reader = new TreeReader(gitdir)
    const root = (await git.readCommit({ fs, gitdir, oid: commit })).commit.tree
    const entries: TreeEntry[] = []
    for (const path of new Set(paths)) {
      const e = await reader.at(root, path)
      if (e) entries.push(await reader.describe(e, path))
    }
    if (options.expand) await reader.addLastCommits(commit, entries)
    return { commit, entries }
  }

  /**
   * A file at a revision, to stream: size, blob id and commit are known before any byte is read.
   * @throws DatasetNotFoundError, RevisionNotFoundError, InvalidDatasetPathError, EntryNotFoundError.
   */
  async openFile(name: string, revision: string, path: string): Promise<DatasetFile> {
    assertDatasetPath(path)
    const gitdir = await this.existingGitdir(name)
    const commit = await resolveCommit(gitdir, name, revision)
    const missing = (): never => {
      throw new EntryNotFoundError(`${path} does not exist in dataset ${name} at revision ${revision}`)
    }
    let tree = (await git.readCommit({ fs, gitdir, oid: commit })).commit.tree
    const segments = path.split('/')
    let leaf: { oid: string; type: string } | undefined
    for (let i = 0; i < segments.length; i++) {
      const entry = (await git.readTree({ fs, gitdir, oid: tree })).tree.find((e) => e.path === segments[i])
      if (!entry) return missing()
      if (i < segments.length - 1) {
        if (entry.type !== 'tree') return missing()
        tree = entry.oid
      } else leaf = entry
    }
    if (!leaf || leaf.type !== 'blob') return missing()
    const blobId = leaf.oid
    const header = await readLooseHeader(gitdir, blobId)
    return {
      path,
      size: header ? header.size : await blobSize(gitdir, blobId),
      blobId,
      commit,
      createReadStream: (range?: ByteRange) => {
        if (header) return createLooseObjectStream(gitdir, blobId, range)
        // Packed (only after a manual repack): isomorphic-git reads the blob whole.
        const whole = Readable.from(
          (async function* () {
            yield Buffer.from((await git.readBlob({ fs, gitdir, oid: blobId })).blob)
          })(),
        )
        return range ? sliceStream(whole, range) : whole
      },
    }
  }

  /**
   * The bytes of a file at a revision. For large files prefer {@link openFile}, which streams.
   * @throws DatasetNotFoundError, RevisionNotFoundError, InvalidDatasetPathError, EntryNotFoundError.
   */
  async readFile(name: string, revision: string, path: string): Promise<Buffer> {
    const file = await this.openFile(name, revision, path)
    const chunks: Buffer[] = []
    for await (const chunk of file.createReadStream()) chunks.push(chunk as Buffer)
    return Buffer.concat(chunks)
  }

  /** The git directory of a dataset that exists, or DatasetNotFoundError. */
  private async existingGitdir(name: string): Promise<string> {
    const gitdir = this.gitdir(name)
    if (!(await isRepository(gitdir))) throw new DatasetNotFoundError(`Dataset ${name} does not exist`)
    return gitdir
  }
}

function isValidName(name: string): boolean {
  try {
    assertDatasetName(name)
    return true
  } catch {
    return false
  }
}

async function isRepository(gitdir: string): Promise<boolean> {
  try {
    return (await fsp.stat(join(gitdir, 'HEAD'))).isFile()
  } catch {
    return false
  }
}

async function resolveCommit(gitdir: string, name: string, revision: string): Promise<string> {
  const notFound = (why = ''): never => {
    throw new RevisionNotFoundError(`Revision ${JSON.stringify(revision)} does not exist in dataset ${name}${why}`)
  }
  if (typeof revision !== 'string' || !isValidRevision(revision)) return notFound(' (not a valid branch, tag or commit sha)')
  let oid: string | undefined
  const candidates = revision === 'HEAD' || revision.startsWith('refs/') ? [revision] : [`refs/tags/${revision}`, `refs/heads/${revision}`]
  for (const ref of candidates) {
    try {
      oid = await git.resolveRef({ fs, gitdir, ref })
      break
    } catch (err) {
      if (!isNotFound(err)) throw err
    }
  }
  if (oid === undefined && /^[0-9a-f]{4,40}$/.test(revision)) {
    try {
      oid = await git.expandOid({ fs, gitdir, oid: revision })
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'AmbiguousError') notFound(' (ambiguous short sha: give more digits)')
      if (!isNotFound(err)) throw err
    }
  }
  if (oid === undefined) return notFound()
  let type: string
  try {
    oid = await peelTag(gitdir, oid)
    type = await objectType(gitdir, oid)
  } catch (err) {
    if (isNotFound(err)) return notFound()
    throw err
  }
  if (type !== 'commit') notFound(` (it names a ${type}, not a commit)`)
  return oid
}

/** Adds every entry below `tree` to `out`, keyed by full path. */
async function flattenTree(gitdir: string, tree: string, prefix: string, out: Map<string, TreeLeaf>): Promise<void> {
  for (const e of (await git.readTree({ fs, gitdir, oid: tree })).tree) {
    if (e.type === 'tree') await flattenTree(gitdir, e.oid, `${prefix}${e.path}/`, out)
    else out.set(`${prefix}${e.path}`, { oid: e.oid, mode: e.mode, type: e.type })
  }
}

function buildTree(entries: Map<string, TreeLeaf>): TreeNode {
  const root: TreeNode = new Map()
  const conflict = (path: string): never => {
    throw new DatasetCommitError(
      `${path} would be both a file and a folder; remove the old one with the "replace" option`,
    )
  }
  for (const [path, leaf] of entries) {
    const segments = path.split('/')
    let node = root
    for (let i = 0; i < segments.length - 1; i++) {
      let next = node.get(segments[i])
      if (next === undefined) node.set(segments[i], (next = new Map()))
      if (!(next instanceof Map)) return conflict(segments.slice(0, i + 1).join('/'))
      node = next
    }
    const last = segments[segments.length - 1]
    if (node.get(last) instanceof Map) return conflict(path)
    node.set(last, leaf)
  }
  return root
}

/** Writes a tree and its subtrees bottom-up; returns the root tree's oid. */
async function writeTrees(gitdir: string, node: TreeNode): Promise<string> {
  const tree: { mode: string; path: string; oid: string; type: 'blob' | 'tree' | 'commit' }[] = []
  for (const [path, child] of node) {
    if (child instanceof Map) tree.push({ mode: '040000', path, oid: await writeTrees(gitdir, child), type: 'tree' })
    else tree.push({ mode: child.mode, path, oid: child.oid, type: child.type })
  }
  return git.writeTree({ fs, gitdir, tree })
}
