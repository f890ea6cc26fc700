/**
 * The tree of an output dataset at a commit, as the Hub's tree listing and paths-info show it:
 * entries `{type: 'file' | 'directory', oid, size, path}` (a folder's size is 0 and its oid is its
 * tree's), optionally with the last commit that changed each one. Listings are paged by a cursor
 * (the last path of the page before), so a page costs the trees on its way, never the whole
 * dataset; entries are listed depth first, each folder's entries sorted by name.
 */
import fs from 'node:fs'
import git from 'isomorphic-git'
import { readLooseHeader } from './loose-objects.js'

/** When an entry last changed (the Hub's `lastCommit`). */
export interface LastCommit {
  /** Commit sha. */
  id: string
  /** First line of its message. */
  title: string
  /** Its committer date, ISO 8601. */
  date: string
}

/** A file or folder of a dataset, as the Hub lists it in a tree or in paths-info. */
export interface TreeEntry {
  /** `file` or `directory`. */
  type: 'file' | 'directory'
  /** Git blob sha1 of a file, tree sha1 of a folder. */
  oid: string
  /** Size in bytes of a file; 0 for a folder. */
  size: number
  /** Path in the dataset. */
  path: string
  /** The last commit that changed it: only when asked for (`expand`). */
  lastCommit?: LastCommit
}

/** One page of a tree listing. */
export interface TreePage {
  /** Entries of this page, in listing order. */
  entries: TreeEntry[]
  /** The path to list after for the next page; absent on the last page. */
  next?: string
}

interface RawEntry {
  path: string
  oid: string
  type: 'blob' | 'tree' | 'commit'
}

// Trees kept by one reader (one request): a tree is read once however often a walk passes it.
const MAX_CACHED_TREES = 4096
// History walked at most to find when entries last changed; older entries get no lastCommit.
const MAX_HISTORY = 10_000

/** Reads trees of one git directory, caching them for the life of the reader (one request). */
export class TreeReader {
  private readonly trees = new Map<string, RawEntry[]>()

  constructor(private readonly gitdir: string) {}

  /** A tree's entries, sorted by name (code unit order); submodules left out. */
  async entries(tree: string): Promise<RawEntry[]> {
    let list = this.trees.get(tree)
    if (!list) {
      list = (await git.readTree({ fs, gitdir: this.gitdir, oid: tree })).tree
        .filter((e) => e.type !== 'commit')
        .map((e) => ({ path: e.path, oid: e.oid, type: e.type }))
        .sort((a, b) => compare(a.path, b.path))
      if (this.trees.size >= MAX_CACHED_TREES) this.trees.clear()
      this.trees.set(tree, list)
    }
    return list
  }

  /** The entry at `path` below the root tree `root`, or undefined. `''` is the root itself. */
  async at(root: string, path: string): Promise<RawEntry | undefined> {
    let entry: RawEntry | undefined = { path: '', oid: root, type: 'tree' }
    for (const segment of path === '' ? [] : path.split('/')) {
      if (entry.type !== 'tree') return undefined
      entry = (await this.entries(entry.oid)).find((e) => e.path === segment)
      if (!entry) return undefined
    }
    return entry
  }

  /**
   * A page of the entries of folder `dir` (`''`: the root) below the root tree `root`.
   * @param after list only entries after this path (the `next` of the page before).
   * @param limit entries per page, at least 1.
   * @returns undefined when `dir` is not a folder of the tree.
   */
  async list(root: string, dir: string, options: { recursive: boolean; after?: string; limit: number }): Promise<TreePage | undefined> {
    const start = await this.at(root, dir)
    if (!start || start.type !== 'tree') return undefined
    const after = options.after?.split('/')
    const entries: TreeEntry[] = []
    let more = false
    const walk = async (tree: string, prefix: string[]): Promise<boolean> => {
      for (const e of await this.entries(tree)) {
        const segments = [...prefix, e.path]
        const folder = e.type === 'tree'
        if (after && compareSegments(segments, after) <= 0) {
          // At or before the cursor: only the cursor's folder, or one holding it, has entries still to list.
          if (folder && options.recursive && isPrefix(segments, after) && (await walk(e.oid, segments))) return true
          continue
        }
        if (entries.length === options.limit) {
          more = true
          return true
        }
        entries.push(await this.describe(e, segments.join('/')))
        if (folder && options.recursive && (await walk(e.oid, segments))) return true
      }
      return false
    }
    await walk(start.oid, dir === '' ? [] : dir.split('/'))
    return { entries, ...(more ? { next: entries[entries.length - 1].path } : {}) }
  }

  /** The Hub's entry of a tree entry at `path`: a file with its size, or a folder. */
  async describe(e: RawEntry, path: string): Promise<TreeEntry> {
    if (e.type === 'tree') return { type: 'directory', oid: e.oid, size: 0, path }
    return { type: 'file', oid: e.oid, size: await blobSize(this.gitdir, e.oid), path }
  }

  /**
   * Sets `lastCommit` of each entry: the newest commit, walking first parents back from `commit`,
   * whose version of the path differs from its parent's (or the first commit). At most
   * {@link MAX_HISTORY} commits are walked; an entry older than that keeps no lastCommit.
   */
  async addLastCommits(commit: string, entries: TreeEntry[]): Promise<void> {
    const pending = new Map(entries.map((e) => [e.path, e]))
    let oid = commit
    let current = (await git.readCommit({ fs, gitdir: this.gitdir, oid })).commit
    for (let walked = 0; pending.size > 0 && walked < MAX_HISTORY; walked++) {
      const parentOid = current.parent[0]
      const parent = parentOid ? (await git.readCommit({ fs, gitdir: this.gitdir, oid: parentOid })).commit : undefined
      const info: LastCommit = {
        id: oid,
        title: current.message.split('\n')[0],
        date: new Date(current.committer.timestamp * 1000).toISOString(),
      }
      for (const [path, entry] of pending) {
        const before = parent ? await this.at(parent.tree, path) : undefined
        if (before?.oid !== entry.oid) {
          entry.lastCommit = info
          pending.delete(path)
        }
      }
      if (!parent || !parentOid) break
      oid = parentOid
      current = parent
    }
  }
}

/** A blob's size, from its loose header when loose (4 KiB read), else from the packs. */
export async function blobSize(gitdir: string, oid: string): Promise<number> {
  const header = await readLooseHeader(gitdir, oid)
  if (header) return header.size
  return (await git.readBlob({ fs, gitdir, oid })).blob.length
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function compareSegments(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compare(a[i], b[i])
    if (c !== 0) return c
  }
  return a.length - b.length
}

function isPrefix(prefix: string[], of: string[]): boolean {
  return prefix.length <= of.length && prefix.every((s, i) => s === of[i])
}
