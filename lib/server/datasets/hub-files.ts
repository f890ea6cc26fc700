/**
 * The files of output datasets over HTTP: downloads at a revision (`resolve`, with the headers the
 * Hub's clients read and single byte ranges), and the files of git's dumb HTTP protocol. Bodies
 * are streamed from the git objects; a range inflates the blob up to its last byte and no further.
 */
import { createReadStream, promises as fsp } from 'node:fs'
import type http from 'node:http'
import { extname, join, posix, sep } from 'node:path'
import { pipeline } from 'node:stream'
import type { Logger } from 'pino'
import { DatasetNotFoundError, EntryNotFoundError, RangeNotSatisfiableError } from '../../errors.js'
import type { ByteRange } from './loose-objects.js'
import type { OutputDatasets } from './output-datasets.js'

const NO_CACHE = {
  expires: 'Fri, 01 Jan 1980 00:00:00 GMT',
  pragma: 'no-cache',
  'cache-control': 'no-cache, max-age=0, must-revalidate',
}
// Objects and packs are named by their content, so they never change (as git http-backend says).
const CACHE_FOREVER = { 'cache-control': 'public, max-age=31536000, immutable' }

const CONTENT_TYPES: Record<string, string> = {
  '.parquet': 'application/vnd.apache.parquet',
  '.json': 'application/json',
  '.jsonl': 'application/jsonl',
  '.ndjson': 'application/x-ndjson',
  '.csv': 'text/csv; charset=utf-8',
  '.tsv': 'text/tab-separated-values; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.yaml': 'text/yaml; charset=utf-8',
  '.yml': 'text/yaml; charset=utf-8',
}

/**
 * The byte range of a `Range` header on a file of `size` bytes: `bytes=A-B`, `bytes=A-` or
 * `bytes=-N` (the last N bytes), B clipped to the file. `undefined` when there is no header, or one
 * this server answers with the whole file (several ranges, another unit, bad syntax: RFC 9110
 * lets a server ignore those).
 * @throws RangeNotSatisfiableError when the range starts at or past the end (or asks for 0 bytes).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined
  const m = /^bytes=[ \t]*(\d*)-(\d*)[ \t]*$/.exec(header)
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  const unsatisfiable = (): never => {
    throw new RangeNotSatisfiableError(`Range ${header} is outside the file (${size} bytes)`)
  }
  if (m[1] === '') {
    const last = Number(m[2])
    if (last === 0 || size === 0) return unsatisfiable()
    return { start: Math.max(size - last, 0), end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === '' ? Infinity : Number(m[2])
  if (end < start) return undefined
  if (start >= size) return unsatisfiable()
  return { start, end: Math.min(end, size - 1) }
}

/**
 * Answers a download of `path` at `revision` (GET or HEAD): `content-length`, `etag` (the git blob
 * sha1, quoted, as the Hub gives for a file stored in git), `x-repo-commit` (the commit the
 * revision resolved to), `accept-ranges`; 304 to a matching `if-none-match`; 206 with
 * `content-range` for one satisfiable range (unless an `if-range` names another version).
 * @throws the errors of {@link OutputDatasets.openFile}; an EntryNotFoundError carries the resolved
 *   commit in `x-repo-commit` (huggingface_hub caches a file's absence per commit).
 */
export async function sendFile(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  outputs: OutputDatasets,
  name: string,
  revision: string,
  path: string,
  logger?: Logger,
): Promise<void> {
  let file
  try {
    file = await outputs.openFile(name, revision, path)
  } catch (err) {
    if (err instanceof EntryNotFoundError) res.setHeader('x-repo-commit', await outputs.resolveRevision(name, revision))
    throw err
  }
  const etag = `"${file.blobId}"`
  const base = posix.basename(file.path)
  const headers: http.OutgoingHttpHeaders = {
    'content-type': CONTENT_TYPES[extname(base).toLowerCase()] ?? 'application/octet-stream',
    'content-length': file.size,
    'accept-ranges': 'bytes',
    etag,
    // As the Hub: clients (huggingface_hub) read the resolved commit from this header.
    'x-repo-commit': file.commit,
    'content-disposition': `inline; filename*=UTF-8''${encodeURIComponent(base)}`,
  }
  if (req.headers['if-none-match'] === etag) {
    delete headers['content-length']
    res.writeHead(304, headers)
    res.end()
    return
  }
  const ifRange = req.headers['if-range']
  let range: ByteRange | undefined
  try {
    range = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, file.size) : undefined
  } catch (err) {
    res.setHeader('content-range', `bytes */${file.size}`)
    throw err
  }
  if (range) {
    headers['content-length'] = range.end - range.start + 1
    headers['content-range'] = `bytes ${range.start}-${range.end}/${file.size}`
  }
  res.writeHead(range ? 206 : 200, headers)
  if (req.method === 'HEAD') {
    res.end()
    return
  }
  pipeline(file.createReadStream(range), res, (err) => {
    if (err && err.code !== 'ERR_STREAM_PREMATURE_CLOSE') logger?.error({ err, name, path }, 'Output dataset download failed')
  })
}

/**
 * Answers a file of git's dumb HTTP protocol (`info/refs`, `HEAD`, an object or a pack) of a
 * dataset's git directory; `file` is one of the shapes the router admits, never a free path.
 */
export async function sendGitFile(req: http.IncomingMessage, res: http.ServerResponse, outputs: OutputDatasets, name: string, file: string): Promise<void> {
  const gitdir = outputs.gitdir(name)
  if (!(await outputs.exists(name))) throw new DatasetNotFoundError(`Dataset ${name} does not exist`)
  const full = join(gitdir, ...file.split('/'))
  // The router admits no `..`; this is the belt to those braces.
  if (!full.startsWith(gitdir + sep)) throw new EntryNotFoundError(`No ${file} in dataset ${name}`)
  let handle: fsp.FileHandle
  try {
    handle = await fsp.open(full, 'r')
  } catch (err) {
    // A 404 is part of the protocol: a missing loose object makes git look in objects/info/packs.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new EntryNotFoundError(`No ${file} in dataset ${name}`)
    throw err
  }
  let size: number
  try {
    const st = await handle.stat()
    if (!st.isFile()) throw new EntryNotFoundError(`No ${file} in dataset ${name}`)
    size = st.size
  } catch (err) {
    await handle.close()
    throw err
  }
  const immutable = file.startsWith('objects/') && !file.startsWith('objects/info/')
  res.writeHead(200, {
    // text/plain on info/refs (never application/x-git-upload-pack-advertisement) is what tells
    // git that this is a dumb server, so it fetches HEAD and the objects one by one.
    'content-type': gitContentType(file),
    'content-length': size,
    ...(immutable ? CACHE_FOREVER : NO_CACHE),
  })
  if (req.method === 'HEAD') {
    await handle.close()
    res.end()
    return
  }
  // The opened handle is streamed, so a concurrent rename of info/refs cannot change what is sent.
  pipeline(createReadStream('', { fd: handle.fd, autoClose: false }), res, () => {
    void handle.close()
  })
}

function gitContentType(file: string): string {
  if (file.endsWith('.pack')) return 'application/x-git-packed-objects'
  if (file.endsWith('.idx')) return 'application/x-git-packed-objects-toc'
  if (/^objects\/[0-9a-f]{2}\//.test(file)) return 'application/x-git-loose-object'
  return 'text/plain; charset=utf-8'
}
