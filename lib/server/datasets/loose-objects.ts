/**
 * Git loose objects, written and read as streams. isomorphic-git reads, hashes and deflates a
 * whole object in memory (with a JavaScript deflate); output shards can be hundreds of MB, so
 * blobs are written here in one streamed pass (sha1 + Node's zlib) and read back as an inflating
 * stream. The format is git's own: `zlib("<type> <size>\0" + content)` stored at
 * `objects/<2 hex>/<38 hex>`, named by the sha1 of the uncompressed bytes.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs'
import { dirname, join } from 'node:path'
import { pipeline as pipelineCb, Readable, Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'

/** Where a loose object lives in a git directory. */
export function looseObjectPath(gitdir: string, oid: string): string {
  return join(gitdir, 'objects', oid.slice(0, 2), oid.slice(2))
}

/** A blob written by {@link writeLooseBlob}. */
export interface WrittenBlob {
  /** The blob's sha1 (its git object id). */
  oid: string
  /** Its size in bytes. */
  size: number
}

/**
 * Writes a file (a path, streamed) or a Buffer as a git blob, in one pass and without holding the
 * file in memory. The object goes to a temporary file first and is renamed into place, so a reader
 * (a dumb-HTTP clone) never sees half an object. Compression level 1, git's `core.looseCompression`
 * default: shards are mostly compressed already.
 * @throws the file system's error when the source cannot be read, or an Error when the file
 *   changed size while it was read (the blob would not match its header).
 */
export async function writeLooseBlob(gitdir: string, source: string | Buffer): Promise<WrittenBlob> {
  const size = typeof source === 'string' ? (await fsp.stat(source)).size : source.length
  const header = Buffer.from(`blob ${size}\0`)
  const hash = createHash('sha1').update(header)
  const tmp = join(gitdir, 'objects', `tmp_obj_${randomBytes(8).toString('hex')}`)
  let seen = 0
  async function* content(): AsyncGenerator<Buffer> {
    yield header
    if (typeof source !== 'string') {
      hash.update(source)
      seen = source.length
      yield source
      return
    }
    for await (const chunk of createReadStream(source) as AsyncIterable<Buffer>) {
      hash.update(chunk)
      seen += chunk.length
      yield chunk
    }
  }
  try {
    await pipeline(content, zlib.createDeflate({ level: 1 }), createWriteStream(tmp, { flags: 'wx' }))
    if (seen !== size) throw new Error(`${String(source)} changed size while it was copied (${size} then ${seen} bytes)`)
    const oid = hash.digest('hex')
    const dest = looseObjectPath(gitdir, oid)
    await fsp.mkdir(dirname(dest), { recursive: true })
    // rename() replaces atomically: an object that exists already has the same bytes.
    await fsp.rename(tmp, dest)
    return { oid, size }
  } catch (err) {
    await fsp.rm(tmp, { force: true })
    throw err
  }
}

/** Type and size of a loose object, from its header. */
export interface LooseHeader {
  type: string
  size: number
}

// The header ("blob 123456789\0") is in the first deflate block; its block header is a few hundred
// bytes at most, so this many compressed bytes always hold it.
const PEEK_BYTES = 4096

/**
 * Reads a loose object's type and size by inflating only its first bytes (an `info` over large
 * shards must not inflate them). `undefined` when the object is not loose (absent, or packed).
 */
export async function readLooseHeader(gitdir: string, oid: string): Promise<LooseHeader | undefined> {
  let fh: fsp.FileHandle
  try {
    fh = await fsp.open(looseObjectPath(gitdir, oid), 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const buf = Buffer.alloc(PEEK_BYTES)
    const { bytesRead } = await fh.read(buf, 0, PEEK_BYTES, 0)
    // Z_SYNC_FLUSH: inflate what is there without failing on the truncated end.
    const head = zlib.inflateSync(buf.subarray(0, bytesRead), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
    return parseHeader(head, oid).header
  } finally {
    await fh.close()
  }
}

function parseHeader(head: Buffer, oid: string): { header: LooseHeader; length: number } {
  const nul = head.indexOf(0)
  const m = nul > 0 ? /^(blob|tree|commit|tag) (\d+)$/.exec(head.subarray(0, nul).toString('latin1')) : null
  if (!m) throw new Error(`Git object ${oid} has no valid header`)
  return { header: { type: m[1], size: Number(m[2]) }, length: nul + 1 }
}

/** Drops the `"<type> <size>\0"` header of an inflated loose object. */
class StripHeader extends Transform {
  private pending: Buffer | undefined = Buffer.alloc(0)
  constructor(private readonly oid: string) {
    super()
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.pending === undefined) return cb(null, chunk)
    const buf = Buffer.concat([this.pending, chunk])
    if (buf.indexOf(0) < 0) {
      if (buf.length > 64) return cb(new Error(`Git object ${this.oid} has no valid header`))
      this.pending = buf
      return cb()
    }
    try {
      const { length } = parseHeader(buf, this.oid)
      this.pending = undefined
      cb(null, buf.subarray(length))
    } catch (err) {
      cb(err as Error)
    }
  }
}

/** Bytes `start` to `end` of a content, both included (as `fs.createReadStream`'s options). */
export interface ByteRange {
  start: number
  end: number
}

/**
 * The content of a loose object as a stream (inflated, header dropped). Errors of the file or of
 * zlib surface as the stream's 'error'; destroying it closes the file.
 * @param range only these bytes: the object is inflated up to `range.end` and no further (a
 *   deflate stream cannot be entered midway, so the bytes before `start` are inflated and dropped).
 */
export function createLooseObjectStream(gitdir: string, oid: string, range?: ByteRange): Readable {
  const strip = new StripHeader(oid)
  // The callback form returns the last stream and destroys every stream on error or early close.
  pipelineCb(createReadStream(looseObjectPath(gitdir, oid)), zlib.createInflate(), strip, () => {})
  return range ? sliceStream(strip, range) : strip
}

/**
 * Bytes `range.start` to `range.end` of a stream of bytes. The source is destroyed as soon as the
 * last byte is passed on (leaving the loop of an async iterator destroys it), so nothing after the
 * range is read.
 */
export function sliceStream(source: Readable, range: ByteRange): Readable {
  return Readable.from(
    (async function* () {
      let offset = 0
      for await (const chunk of source as AsyncIterable<Buffer>) {
        const from = Math.max(range.start - offset, 0)
        const to = Math.min(range.end + 1 - offset, chunk.length)
        offset += chunk.length
        if (to > from) yield chunk.subarray(from, to)
        if (offset > range.end) return
      }
    })(),
    { objectMode: false },
  )
}
