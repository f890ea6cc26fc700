/**
 * Input datasets of bulk jobs: a folder the server is given (`--datasets DIR`), laid out as
 * `{name}/{config}/{split}.{ext}` or sharded `{name}/{config}/{split}-{n}.{ext}` (docs/bulk.md,
 * "Datasets folder layout"). Finds a split's files, tells its columns and row count cheaply, and
 * takes uploads atomically. Everything streams: a split is never read whole into memory.
 */
import { randomBytes } from 'node:crypto'
import { createReadStream, promises as fsp, type Dirent } from 'node:fs'
import { dirname, join, relative, resolve as resolvePath, sep } from 'node:path'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import {
  DatasetLayoutError,
  DatasetNotFoundError,
  InputFileError,
  InvalidDatasetNameError,
  InvalidOptionError,
  LimitExceededError,
  UnknownFormatError,
} from '../../errors.js'
import { countRows as countFileRows } from '../../io/count-rows.js'
import { CsvRows, type CsvRow } from '../../io/csv-rows.js'
import { inputFileError } from '../../io/fs-errors.js'
import type { RecordFormat } from '../../io/formats.js'
import { parquetColumns } from '../../io/read-parquet.js'
import { readRecords } from '../../io/read-records.js'

/** A split's files, as {@link InputDatasets.resolve} finds them. */
export interface ResolvedDataset {
  /** Dataset name, e.g. `org/reviews`. */
  name: string
  /** Config, e.g. `default`. */
  config: string
  /** Split, e.g. `train`. */
  split: string
  /** Absolute paths: the one file, or the shards in shard order. Read them in this order. */
  files: string[]
  /** The format of every file. */
  format: RecordFormat
  /** How each file is named to clients (`{name}/{config}/{file}`): never a server path. */
  shown: string[]
}

/**
 * `message` with the absolute paths of a split's files (and its folder) replaced by their
 * dataset-relative names: messages go to clients, who must not learn the server's layout.
 */
export function scrubPaths(message: string, resolved: ResolvedDataset): string {
  let out = message
  resolved.files.forEach((f, i) => (out = out.split(f).join(resolved.shown[i])))
  if (resolved.files.length > 0) out = out.split(dirname(resolved.files[0])).join(`${resolved.name}/${resolved.config}`)
  return out
}

/** Options of {@link InputDatasets}. */
export interface InputDatasetsOptions {
  /**
   * A read-only layer under this one (the operator's datasets folder under a tenant's uploads): its
   * splits are listed and resolved too, and a split of the same name/config/split here shadows it.
   * Uploads never go to it. Default none.
   */
  base?: InputDatasets
}

/** A split as {@link InputDatasets.list} lists it. */
export interface SplitEntry {
  name: string
  config: string
  split: string
}

/** Options of {@link InputDatasets.upload}. */
export interface UploadOptions {
  /** Largest body accepted, in bytes; a larger one fails with `LimitExceededError` and nothing is kept. Default 1 GiB. */
  maxBytes?: number
}

/** Default {@link UploadOptions.maxBytes}: 1 GiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024

/** File extensions of data files, and their format (as `formatOf` in lib/io). */
export const DATASET_EXTENSIONS: Readonly<Record<string, RecordFormat>> = {
  csv: 'csv',
  tsv: 'tsv',
  jsonl: 'jsonl',
  ndjson: 'jsonl',
  json: 'json',
  parquet: 'parquet',
}

// `{split}.{ext}` or `{split}-{n}.{ext}` / `{split}-{n}-of-{m}.{ext}` (the Hub's shard names). The
// shard part is digits only, so a split may itself contain `-` (`train-clean`) without ambiguity.
const DATA_FILE = /^(.+?)(?:-(\d+)(?:-of-(\d+))?)?\.([A-Za-z]+)$/
const SEGMENT = /^[A-Za-z0-9._-]{1,96}$/
const SHARD_SUFFIX = /-\d+$/

interface DataFile {
  split: string
  /** Shard number, or undefined for a single-file split. */
  shard: number | undefined
  file: string
  format: RecordFormat
}

function parseDataFile(file: string): DataFile | undefined {
  const m = DATA_FILE.exec(file)
  if (!m) return undefined
  const format = DATASET_EXTENSIONS[m[4].toLowerCase()]
  if (!format || !isSegment(m[1])) return undefined
  return { split: m[1], shard: m[2] === undefined ? undefined : Number(m[2]), file, format }
}

/**
 * Checks one segment of a dataset name, a config or a split: `[A-Za-z0-9._-]`, 1 to 96 characters,
 * not starting with `.` (hidden and temporary files) and without `..`, so no value can leave the
 * datasets folder.
 * @throws InvalidDatasetNameError naming the value and what is wrong.
 */
export function assertSegment(what: 'dataset name' | 'config' | 'split', value: unknown, segment: unknown = value): void {
  const bad = (why: string): never => {
    throw new InvalidDatasetNameError(`Invalid ${what} ${JSON.stringify(value)}: ${why}`)
  }
  if (typeof segment !== 'string' || segment === '') return bad('expected a non-empty string')
  if (!SEGMENT.test(segment)) bad('use only letters, digits, ".", "_" and "-" (at most 96 per segment)')
  if (segment.startsWith('.')) bad('a segment may not start with "."')
  if (segment.includes('..')) bad('".." is not allowed')
  // `{split}-{n}.{ext}` is a shard of `{split}`: such a split name could never be found.
  if (what === 'split' && SHARD_SUFFIX.test(segment)) bad('a split name may not end in "-" and digits (that names a shard)')
}

/** Checks a dataset name: one or two `/`-separated segments (`reviews`, `org/reviews`), see {@link assertSegment}. */
export function assertInputDatasetName(name: unknown): asserts name is string {
  if (typeof name !== 'string') return assertSegment('dataset name', name)
  const parts = name.split('/')
  if (parts.length > 2) throw new InvalidDatasetNameError(`Invalid dataset name ${JSON.stringify(name)}: at most two "/"-separated segments (namespace/name)`)
  for (const p of parts) assertSegment('dataset name', name, p)
}

// Lists of names in messages: enough to spot a typo, never a wall of text.
function listed(names: string[], max = 20): string {
  if (names.length === 0) return 'none'
  const shown = names.slice(0, max).join(', ')
  return names.length > max ? `${shown}, … ${names.length - max} more` : shown
}

async function readDir(dir: string): Promise<Dirent[]> {
  try {
    return await fsp.readdir(dir, { withFileTypes: true })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return []
    throw err
  }
}

/**
 * The server's input datasets folder (docs/bulk.md, "Datasets folder layout"):
 *
 * ```
 * {root}/{name}/{config}/{split}.{csv,tsv,jsonl,ndjson,json,parquet}
 * {root}/{name}/{config}/{split}-00000-of-00002.parquet   (shards, any of those formats)
 * ```
 *
 * `name` is one or two segments (`reviews`, `org/reviews`). A config is a folder holding at least one
 * data file; a dataset is a folder holding at least one config.
 */
export class InputDatasets {
  /** The datasets folder, absolute. */
  readonly root: string
  /** The read-only layer under this one, if any. */
  readonly base: InputDatasets | undefined
  private readonly locks = new Map<string, Promise<void>>()

  /**
   * @param root The datasets folder; it need not exist yet (it is then empty, and created by the first upload).
   *
   * Symbolic links inside the folder are followed only while they stay inside it: one pointing
   * elsewhere is as absent as a missing file, so no name can probe the disk outside the root.
   */
  constructor(root: string, options: InputDatasetsOptions = {}) {
    if (typeof root !== 'string' || root === '') throw new InvalidOptionError('InputDatasets: "root" must be a folder path')
    this.root = resolvePath(root)
    this.base = options.base
  }

  // The real path of the root (it may itself be a link), or undefined while it does not exist.
  private async realRoot(): Promise<string | undefined> {
    try {
      return await fsp.realpath(this.root)
    } catch {
      return undefined
    }
  }

  // Whether `path` exists and its real path is inside the real root.
  private async inside(path: string): Promise<boolean> {
    const root = await this.realRoot()
    if (root === undefined) return false
    try {
      const real = await fsp.realpath(path)
      return real === root || real.startsWith(root + sep)
    } catch {
      return false
    }
  }

  // Entries of a folder under the root, or none when it is missing or resolves outside the root.
  private async readInside(dir: string): Promise<Dirent[]> {
    return (await this.inside(dir)) ? readDir(dir) : []
  }

  // The layer holding files of `{name}/{config}/{split}`: this one first (it shadows the base).
  private async layerOf(name: string, config: string, split: string): Promise<{ layer: InputDatasets; files: DataFile[] } | undefined> {
    const files = (await this.dataFiles(name, config)).filter((f) => f.split === split)
    if (files.length > 0) return { layer: this, files }
    return this.base?.layerOf(name, config, split)
  }

  /**
   * Finds the files of `{name}/{config}/{split}`: `{split}.{ext}`, or shards `{split}-{n}.{ext}` /
   * `{split}-{n}-of-{m}.{ext}` sorted by shard number.
   * @throws InvalidDatasetNameError for a name, config or split that is not a valid segment.
   * @throws DatasetNotFoundError naming what is missing: the dataset, its config (listing the
   *   configs) or the split (listing the splits).
   * @throws DatasetLayoutError when the split has files of two formats, or a file and shards.
   */
  async resolve(name: string, config: string, split: string): Promise<ResolvedDataset> {
    assertInputDatasetName(name)
    assertSegment('config', config)
    assertSegment('split', split)
    const configs = await this.configs(name)
    if (configs.length === 0) throw new DatasetNotFoundError(`No dataset ${JSON.stringify(name)} in the datasets folder`)
    if (!configs.includes(config)) {
      throw new DatasetNotFoundError(`Dataset ${JSON.stringify(name)} has no config ${JSON.stringify(config)} (configs: ${listed(configs)})`)
    }
    const found = await this.layerOf(name, config, split)
    const files = found?.files ?? []
    if (!found || files.length === 0) {
      const splits = await this.splits(name, config)
      throw new DatasetNotFoundError(
        `Config ${JSON.stringify(config)} of dataset ${JSON.stringify(name)} has no split ${JSON.stringify(split)} (splits: ${listed(splits)})`,
      )
    }
    const formats = [...new Set(files.map((f) => f.format))]
    const singles = files.filter((f) => f.shard === undefined)
    if (formats.length > 1 || (singles.length > 0 && files.length > 1)) {
      throw new DatasetLayoutError(
        `Split ${JSON.stringify(split)} of ${name}/${config} has ${formats.length > 1 ? 'files of more than one format' : 'both a single file and shards'}: ` +
          `${listed(files.map((f) => f.file).sort(), 10)}; keep one`,
      )
    }
    files.sort((a, b) => (a.shard ?? 0) - (b.shard ?? 0) || (a.file < b.file ? -1 : a.file > b.file ? 1 : 0))
    const dir = found.layer.dirOf(name, config)
    return { name, config, split, files: files.map((f) => join(dir, f.file)), format: formats[0], shown: files.map((f) => `${name}/${config}/${f.file}`) }
  }

  /**
   * The column names of a split, from its first file only, without reading the file: the Parquet
   * schema (footer), the CSV/TSV header row, or the keys of the first JSONL/JSON record ([] when that
   * record is not an object, or the file has none).
   * @throws InputFileError when the file cannot be read or is not what its format says.
   */
  async columns(resolved: ResolvedDataset): Promise<string[]> {
    try {
      return await this.fileColumns(resolved)
    } catch (err) {
      throw scrubbed(err, resolved)
    }
  }

  private async fileColumns(resolved: ResolvedDataset): Promise<string[]> {
    const file = resolved.files[0]
    switch (resolved.format) {
      case 'parquet':
        return parquetColumns(file)
      case 'csv':
      case 'tsv':
        return csvHeader(file, resolved.format === 'tsv' ? '\t' : ',')
      case 'jsonl':
      case 'json':
        return firstRecordKeys(file, resolved.format)
    }
  }

  /**
   * Rows of a split, summed over its files, where that is cheap (`countRows` of lib/io): exact for
   * Parquet (footers), a quote-aware record count for CSV/TSV and non-blank lines for JSONL (bad
   * records count); undefined for JSON arrays, which would have to be parsed.
   */
  async countRows(resolved: ResolvedDataset): Promise<number | undefined> {
    let total = 0
    try {
      for (const file of resolved.files) {
        const n = await countFileRows(file, { format: resolved.format })
        if (n === undefined) return undefined
        total += n
      }
    } catch (err) {
      throw scrubbed(err, resolved)
    }
    return total
  }

  /** Every split of every dataset, sorted by name, config and split. */
  async list(): Promise<SplitEntry[]> {
    const out: SplitEntry[] = this.base ? await this.base.list() : []
    const visit = async (name: string): Promise<void> => {
      for (const config of await this.configs(name)) {
        for (const split of await this.splits(name, config)) out.push({ name, config, split })
      }
    }
    for (const top of await this.readInside(this.root)) {
      if (!isDirLike(top) || !isSegment(top.name)) continue
      await visit(top.name)
      // `org/reviews`: a second level whose folders hold configs.
      for (const second of await this.readInside(join(this.root, top.name))) {
        if (isDirLike(second) && isSegment(second.name)) await visit(`${top.name}/${second.name}`)
      }
    }
    const unique = new Map(out.map((e) => [`${e.name}\0${e.config}\0${e.split}`, e]))
    return [...unique.values()].sort((a, b) => cmp(a.name, b.name) || cmp(a.config, b.config) || cmp(a.split, b.split))
  }

  /** Configs of a dataset (folders holding at least one data file), sorted; [] for no such dataset. */
  async configs(name: string): Promise<string[]> {
    assertInputDatasetName(name)
    const out = new Set(this.base ? await this.base.configs(name) : [])
    for (const entry of await this.readInside(join(this.root, ...name.split('/')))) {
      if (isDirLike(entry) && isSegment(entry.name) && (await this.dataFiles(name, entry.name)).length > 0) out.add(entry.name)
    }
    return [...out].sort(cmp)
  }

  /** Splits of a config, sorted; [] for no such dataset or config. */
  async splits(name: string, config: string): Promise<string[]> {
    assertInputDatasetName(name)
    assertSegment('config', config)
    const own = (await this.dataFiles(name, config)).map((f) => f.split)
    return [...new Set([...(this.base ? await this.base.splits(name, config) : []), ...own])].sort(cmp)
  }

  /**
   * Stores `body` as the split `{name}/{config}/{split}.{ext}`, replacing the split: written to a
   * temporary file beside it, flushed, renamed into place, and only then the split's other files
   * (another format, or shards) removed. Readers see the old split or the new one, never a partial
   * file. Streamed: memory does not grow with the body.
   * @param ext `csv`, `tsv`, `jsonl`, `ndjson`, `json` or `parquet` (a leading `.` is fine).
   * @throws InvalidDatasetNameError for a name, config or split that is not a valid segment (no `..`,
   *   no `/` outside the name's namespace), checked before anything is written.
   * @throws UnknownFormatError for another extension.
   * @throws LimitExceededError when the body is over `maxBytes` (nothing is kept).
   */
  async upload(name: string, config: string, split: string, ext: string, body: Readable, options: UploadOptions = {}): Promise<{ path: string; bytes: number; format: RecordFormat }> {
    assertInputDatasetName(name)
    assertSegment('config', config)
    assertSegment('split', split)
    const e = typeof ext === 'string' ? ext.replace(/^\./, '').toLowerCase() : ''
    const format = DATASET_EXTENSIONS[e]
    if (!format) {
      throw new UnknownFormatError(`Cannot store a dataset file with extension ${JSON.stringify(ext)}: use ${Object.keys(DATASET_EXTENSIONS).join(', ')}`)
    }
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_UPLOAD_BYTES
    if (typeof maxBytes !== 'number' || !Number.isInteger(maxBytes) || maxBytes < 1) {
      throw new InvalidOptionError(`Option "maxBytes" must be an integer >= 1, got ${JSON.stringify(maxBytes)}`)
    }
    const dir = this.dirOf(name, config)
    // Belt and braces: the segments are checked, but the final path must still be inside the root.
    const rel = relative(this.root, dir)
    if (rel.startsWith('..') || rel.startsWith(sep) || rel === '') throw new InvalidDatasetNameError(`Invalid dataset path ${JSON.stringify(`${name}/${config}`)}`)
    const file = `${split}.${e}`
    const target = join(dir, file)
    // Uploads are the tenant's own: readable by the server's user only.
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
    // A dot name: never taken for a data file by resolve() or list() while it is written.
    const tmp = join(dir, `.upload-${randomBytes(6).toString('hex')}-${file}.part`)
    let bytes = 0
    const fh = await fsp.open(tmp, 'wx', 0o600)
    try {
      try {
        // One chunk at a time, each written before the next is read: backpressure for free. Not
        // destroyed on return: on a limit the caller still owns the body (to answer 413, then drain
        // or close it).
        for await (const chunk of body.iterator({ destroyOnReturn: false })) {
          const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer)
          bytes += buf.length
          if (bytes > maxBytes) throw new LimitExceededError(`Upload of ${name}/${config}/${file} is over the limit of ${maxBytes} bytes`)
          await fh.write(buf)
        }
        // On disk before it is renamed into place: a crash never leaves a short file under the split's name.
        await fh.sync()
      } finally {
        await fh.close()
      }
      await this.exclusive(dir, async () => {
        await fsp.rename(tmp, target)
        // The new file is in place; the split's other files (another format, shards) would now make it ambiguous.
        for (const f of await this.dataFiles(name, config)) {
          if (f.split === split && f.file !== file) await fsp.rm(join(dir, f.file), { force: true })
        }
      })
    } catch (err) {
      await fsp.rm(tmp, { force: true })
      throw err
    }
    return { path: target, bytes, format }
  }

  // Renames and clean-ups of one config folder run one at a time, so two uploads of a split in two
  // formats cannot each delete the other's file.
  private async exclusive(key: string, fn: () => Promise<void>): Promise<void> {
    const before = this.locks.get(key) ?? Promise.resolve()
    const run = before.then(fn)
    const settled = run.catch(() => {})
    this.locks.set(key, settled)
    try {
      await run
    } finally {
      if (this.locks.get(key) === settled) this.locks.delete(key)
    }
  }

  private dirOf(name: string, config: string): string {
    return join(this.root, ...name.split('/'), config)
  }

  // This layer's data files of a config (not the base's); links resolving outside the root left out.
  private async dataFiles(name: string, config: string): Promise<DataFile[]> {
    const out: DataFile[] = []
    const dir = this.dirOf(name, config)
    for (const entry of await this.readInside(dir)) {
      if (!entry.isFile() && !entry.isSymbolicLink()) continue
      const f = parseDataFile(entry.name)
      if (f && (entry.isFile() || (await this.inside(join(dir, entry.name))))) out.push(f)
    }
    return out
  }
}

// The error with the split's absolute paths replaced by dataset-relative names.
function scrubbed(err: unknown, resolved: ResolvedDataset): unknown {
  if (err instanceof Error) err.message = scrubPaths(err.message, resolved)
  return err
}

// A folder, or a symbolic link that may be one (an admin's link to data elsewhere; reading it tells).
function isDirLike(entry: Dirent): boolean {
  return entry.isDirectory() || entry.isSymbolicLink()
}

function isSegment(s: string): boolean {
  return SEGMENT.test(s) && !s.startsWith('.') && !s.includes('..')
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

// Names as the CSV reader gives them: an empty one becomes `column_<n>`.
function header(file: string, row: CsvRow): string[] {
  if ('error' in row) throw new InputFileError(`${file} line ${row.line}: the header row cannot be read: ${row.error}`, file)
  return row.fields.map((n, i) => (n === '' ? `column_${i + 1}` : n))
}

// The header row only: the file is read chunk by chunk until the first row is complete.
async function csvHeader(file: string, delimiter: string): Promise<string[]> {
  const rows = new CsvRows({ delimiter })
  const decoder = new StringDecoder('utf8')
  const stream = createReadStream(file, { highWaterMark: 64 * 1024 })
  let first = true
  try {
    for await (const chunk of stream) {
      let text = decoder.write(chunk as Buffer)
      if (first && text.length > 0) {
        first = false
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
      }
      const [row] = rows.push(text)
      if (row) return header(file, row)
    }
    const [row] = rows.push(decoder.end()).concat(rows.end())
    return row ? header(file, row) : []
  } catch (err) {
    if (err instanceof InputFileError) throw err
    throw inputFileError(file, err, 'read the header of')
  } finally {
    stream.destroy()
  }
}

// The first record through the reader, which reads only the chunk(s) holding it; then closed.
async function firstRecordKeys(file: string, format: 'jsonl' | 'json'): Promise<string[]> {
  const reader = readRecords(file, { format })
  try {
    for await (const record of reader) {
      return typeof record === 'object' && record !== null && !Array.isArray(record) ? Object.keys(record) : []
    }
    return []
  } finally {
    reader.destroy()
  }
}
