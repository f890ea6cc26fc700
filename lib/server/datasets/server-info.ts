/**
 * The files a git "dumb HTTP" client needs, as `git update-server-info` writes them, so a
 * repository written by isomorphic-git (which never writes them) can be cloned with plain GETs:
 * - `info/refs`: one `<oid>\t<refname>` line per ref under `refs/`, sorted by name, and for an
 *   annotated tag a second `<peeled oid>\t<refname>^{}` line. HEAD is not listed (clients GET `HEAD`).
 * - `objects/info/packs`: one `P pack-<sha>.pack` line per pack, then an empty line (just `\n`
 *   when there are no packs — isomorphic-git writes loose objects only).
 */
import { randomBytes } from 'node:crypto'
import fs, { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import git from 'isomorphic-git'
import { readLooseHeader } from './loose-objects.js'

/** Writes `info/refs` and `objects/info/packs` of a git directory, each replaced atomically. */
export async function updateServerInfo(gitdir: string): Promise<void> {
  const lines: string[] = []
  // listRefs also returns the peeled `tags/x^{}` lines of packed-refs as if they were refs.
  const names = (await git.listRefs({ fs, gitdir, filepath: 'refs' })).filter((r) => !r.endsWith('^{}'))
  for (const name of names.map((r) => `refs/${r}`).sort(byteOrder)) {
    const oid = await git.resolveRef({ fs, gitdir, ref: name })
    lines.push(`${oid}\t${name}\n`)
    const peeled = await peelTag(gitdir, oid)
    if (peeled !== oid) lines.push(`${peeled}\t${name}^{}\n`)
  }
  await writeFileAtomic(join(gitdir, 'info', 'refs'), lines.join(''))
  let packs: string[] = []
  try {
    packs = (await fsp.readdir(join(gitdir, 'objects', 'pack'))).filter((f) => /^pack-[0-9a-f]{40}\.pack$/.test(f)).sort()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  await writeFileAtomic(join(gitdir, 'objects', 'info', 'packs'), packs.map((p) => `P ${p}\n`).join('') + '\n')
}

/** The object an annotated tag (or chain of them) points to; any other oid as it is. */
export async function peelTag(gitdir: string, oid: string): Promise<string> {
  for (let depth = 0; depth < 10; depth++) {
    if ((await objectType(gitdir, oid)) !== 'tag') return oid
    oid = (await git.readTag({ fs, gitdir, oid })).tag.object
  }
  return oid
}

/** An object's type, from the loose header when loose (cheap for large blobs), else from the packs. */
export async function objectType(gitdir: string, oid: string): Promise<string> {
  const header = await readLooseHeader(gitdir, oid)
  if (header) return header.type
  // Packed (only if someone repacked by hand): isomorphic-git inflates the whole object to tell.
  return (await git.readObject({ fs, gitdir, oid, format: 'content' })).type
}

/** Writes a file through a temporary sibling and a rename, so readers see the old or the new file whole. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`
  await fsp.mkdir(join(path, '..'), { recursive: true })
  try {
    await fsp.writeFile(tmp, data)
    await fsp.rename(tmp, path)
  } catch (err) {
    await fsp.rm(tmp, { force: true })
    throw err
  }
}

// git sorts refs with strcmp; refnames are ASCII, where code-unit order is byte order.
function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
