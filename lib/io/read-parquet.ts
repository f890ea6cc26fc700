import { decompressLz4, decompressLz4Raw, decompressZstd } from 'hyparquet-compressors'
import { open, type FileHandle } from 'node:fs/promises'
import * as zlib from 'node:zlib'
import { parquetMetadataAsync, parquetSchema, type AsyncBuffer, type Compressors, type DecodedArray, type FileMetaData, type ParquetParsers } from 'hyparquet'
import { InputFileError } from '../errors.js'
import { inputFileError } from './fs-errors.js'
import { checkOptionsObject, checkColumns } from './options.js'
import { rowGroupSlices, SLICE_ROWS } from './parquet-row-slices.js'
import { RecordReader, type ReaderOptions } from './record-reader.js'

/** Options of {@link readParquet}. */
export interface ParquetReadOptions extends Omit<ReaderOptions, 'onBadRecord'> {
  /** Read only these top-level columns (the others are not even read from disk), in this order. Default: all. */
  columns?: string[]
}

/** What a {@link readParquet} reader emits as `'row-group'` each time it has decoded the last rows of a row group. */
export interface ParquetRowGroupEvent {
  /** Index of the row group in the file, from 0. */
  index: number
  /** Row groups in the file. */
  count: number
  /** Index in the file of the group's first row. */
  rowStart: number
  /** Rows in the group. */
  rows: number
}

// Decompressors hyparquet does not have itself (it has SNAPPY). GZIP and BROTLI from node:zlib
// (native); ZSTD from node:zlib where it has it (Node >= 22.15), else hyparquet-compressors' pure
// JS one (fzstd); LZ4 (Hadoop framing) and LZ4_RAW from hyparquet-compressors. Pyarrow and Spark
// write ZSTD and LZ4 often, and Node 20 has neither.
const zstdDecompressSync = (zlib as { zstdDecompressSync?: (b: Uint8Array) => Buffer }).zstdDecompressSync
const COMPRESSORS: Compressors = {
  GZIP: (input) => zlib.unzipSync(input),
  BROTLI: (input) => zlib.brotliDecompressSync(input),
  ZSTD: zstdDecompressSync ? (input: Uint8Array) => zstdDecompressSync(input) : (input: Uint8Array) => decompressZstd(input),
  LZ4: (input: Uint8Array, outputLength: number) => decompressLz4(input, outputLength),
  LZ4_RAW: (input: Uint8Array, outputLength: number) => decompressLz4Raw(input, outputLength),
}
const CODECS = ['UNCOMPRESSED', 'SNAPPY', 'GZIP', 'BROTLI', 'ZSTD', 'LZ4', 'LZ4_RAW'].join(', ')

// Dates and timestamps as ISO 8601 text (JSON has no date; a Date would be an object to the writers).
// A value a JS Date cannot hold (beyond year 275760) is left as its number.
function isoDate(days: number): string | number {
  const d = new Date(days * 86_400_000)
  if (Number.isNaN(d.getTime())) return days
  const iso = d.toISOString()
  return iso.slice(0, iso.indexOf('T'))
}

function isoTimestamp(value: bigint, perSecond: bigint, digits: number): string | bigint {
  const v = BigInt(value)
  let seconds = v / perSecond
  let fraction = v % perSecond
  if (fraction < 0n) {
    fraction += perSecond
    seconds -= 1n
  }
  const d = new Date(Number(seconds) * 1000)
  if (Number.isNaN(d.getTime())) return v
  // toISOString ends in `.000Z`: put the full fraction of the unit in its place.
  return `${d.toISOString().slice(0, -5)}.${fraction.toString().padStart(digits, '0')}Z`
}

const PARSERS: Partial<ParquetParsers> = {
  dateFromDays: isoDate,
  timestampFromMilliseconds: (v) => isoTimestamp(v, 1000n, 3),
  timestampFromMicroseconds: (v) => isoTimestamp(v, 1_000_000n, 6),
  timestampFromNanoseconds: (v) => isoTimestamp(v, 1_000_000_000n, 9),
}

/** hyparquet's AsyncBuffer over one open file handle: each slice is a positioned read. */
class FileSlices implements AsyncBuffer {
  constructor(
    private readonly handle: FileHandle,
    readonly byteLength: number,
  ) {}

  async slice(start: number, end = this.byteLength): Promise<ArrayBuffer> {
    const length = Math.max(0, end - start)
    const bytes = new Uint8Array(length)
    for (let done = 0; done < length; ) {
      const { bytesRead } = await this.handle.read(bytes, done, length - done, start + done)
      if (bytesRead === 0) throw new Error(`the file ended at byte ${start + done}, before byte ${end} (was it truncated while being read?)`)
      done += bytesRead
    }
    return bytes.buffer
  }
}

/** An open Parquet file: its handle, its bytes as hyparquet reads them, and its footer. */
interface ParquetFile {
  handle: FileHandle
  file: FileSlices
  metadata: FileMetaData
  /** The top-level column names, in file order. */
  columns: string[]
}

// Turns a failure into an InputFileError naming the file, in plain words where we know them.
function describe(path: string, err: unknown, where = ''): Error {
  if (err instanceof InputFileError) return err
  if (typeof (err as NodeJS.ErrnoException | null)?.code === 'string' && (err as NodeJS.ErrnoException).syscall) {
    return inputFileError(path, err, 'read Parquet file')
  }
  const message = err instanceof Error ? err.message : String(err)
  // Anything else is a damaged file or a feature hyparquet lacks: keep its words.
  let why = `it cannot be decoded (hyparquet: ${message})`
  let m: RegExpMatchArray | null
  if (/^parquet file invalid \(footer != PAR1\)|^parquet file is too short|^parquet metadata length \d+ exceeds/.test(message)) {
    why = 'not a Parquet file'
  } else if ((m = /^parquet unsupported compression codec: (\S+)/.exec(message))) {
    why = `it uses the ${m[1]} compression, which cannot be decompressed here (readable: ${CODECS})`
  } else if ((m = /^parquet unsupported encoding: (\S+)/.exec(message))) {
    why = `it uses the ${m[1]} encoding, which hyparquet cannot decode`
  } else if ((m = /^parquet (bson|interval) not supported/.exec(message))) {
    why = `it has a ${m[1].toUpperCase()} column, which hyparquet cannot decode`
  }
  return new InputFileError(`Cannot read Parquet file ${JSON.stringify(path)}${where}: ${why}`, path, { cause: err })
}

/** Opens a Parquet file and reads its footer (no row), errors as `InputFileError`. Close `handle` when done. */
async function openParquet(path: string): Promise<ParquetFile> {
  let handle: FileHandle
  try {
    handle = await open(path, 'r')
  } catch (err) {
    throw describe(path, err)
  }
  try {
    const { size } = await handle.stat()
    // Magic, footer length, magic: anything shorter is not Parquet (hyparquet would fail on a range error).
    if (size < 12) throw new Error('parquet file is too short')
    const file = new FileSlices(handle, size)
    const metadata = await parquetMetadataAsync(file)
    for (const element of metadata.schema) {
      // ENUM is UTF-8 text (parquet-avro, protobuf writers): read it as a string, not as bytes.
      if (element.type === 'BYTE_ARRAY' && (element.converted_type === 'ENUM' || element.logical_type?.type === 'ENUM')) {
        element.logical_type = { type: 'STRING' }
      }
    }
    const columns = parquetSchema(metadata).children.map((c) => c.element.name)
    return { handle, file, metadata, columns }
  } catch (err) {
    await handle.close().catch(() => {})
    throw describe(path, err)
  }
}

/** Number of rows of a Parquet file, from its footer (no row is read). */
export async function parquetRowCount(path: string): Promise<number> {
  const { handle, metadata } = await openParquet(path)
  await handle.close()
  return Number(metadata.num_rows)
}

/** The top-level column names of a Parquet file, in file order, from its footer (no row is read). */
export async function parquetColumns(path: string): Promise<string[]> {
  const { handle, columns } = await openParquet(path)
  await handle.close()
  return columns
}

/**
 * Makes a decoded value safe for JSON (the wire, JSONL) and for the writers: INT64 comes back as
 * BigInt (a number when it is a safe integer, else its decimal text); bytes (BYTE_ARRAY without a
 * text annotation, FIXED_LEN_BYTE_ARRAY) as base64 text; lists, structs and maps are walked.
 */
function jsonSafe(value: unknown): unknown {
  switch (typeof value) {
    case 'bigint':
      return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString()
    case 'undefined':
      return null
    case 'object':
      break
    default:
      return value
  }
  if (value === null) return null
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')
  if (Array.isArray(value)) return value.map(jsonSafe)
  if (ArrayBuffer.isView(value)) return Array.from(value as unknown as ArrayLike<unknown>, jsonSafe)
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString()
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = jsonSafe(v)
  return out
}

/**
 * Reads a Parquet file as an object-mode stream of records with hyparquet's page decoder, page by
 * page: pages are read from disk and decoded only when the consumer wants more, and rows are given in
 * slices of at most 1 024, so memory is about one page per column read (see `ColumnPages`) plus a
 * slice and `highWaterMark` records, whatever the size of the file or of its row groups (pandas
 * writes up to 1 Mi rows in one).
 * Each record has every top-level column (or `columns`) as a key, null when the value is null.
 *
 * Reads Parquet files of format version 1 and 2 as pyarrow, Hugging Face `datasets`, Spark, DuckDB,
 * Polars and hyparquet-writer write them (data pages v1 and v2; PLAIN, dictionary, RLE, DELTA and
 * BYTE_STREAM_SPLIT encodings; UNCOMPRESSED, SNAPPY, GZIP, BROTLI, and ZSTD where node:zlib has it).
 *
 * Values are JSON-safe: INT64 as numbers, or decimal strings beyond 2^53; DATE as `YYYY-MM-DD`;
 * timestamps as ISO 8601 UTC text with the unit's precision; bytes without a text annotation as
 * base64; lists as arrays and structs/maps as objects. Emits `'row-group'` ({@link ParquetRowGroupEvent})
 * when the last rows of each row group are decoded. Failures are `InputFileError`s naming the file (and row group).
 */
export function readParquet(path: string, options: ParquetReadOptions = {}): RecordReader<Record<string, unknown>> {
  checkOptionsObject(options, 'readParquet')
  checkColumns('columns', options.columns)
  return new RecordReader<Record<string, unknown>>('parquet', path, async function* (reader) {
    const pq = await openParquet(path)
    try {
      const missing = (options.columns ?? []).filter((c) => !pq.columns.includes(c))
      if (missing.length > 0) {
        throw new InputFileError(`${path}: no column ${missing.map((c) => JSON.stringify(c)).join(', ')} (columns: ${pq.columns.join(', ')})`, path)
      }
      const names = options.columns ?? pq.columns
      const schema = parquetSchema(pq.metadata)
      // Bytes stay bytes unless the column says text (STRING/UTF8/ENUM/JSON): see jsonSafe.
      const decode = { compressors: COMPRESSORS, parsers: PARSERS, utf8: false }
      const groups = pq.metadata.row_groups
      let rowStart = 0
      for (let index = 0; index < groups.length; index++) {
        const rows = Number(groups[index].num_rows)
        const rowEnd = rowStart + rows
        if (rows === 0) continue
        const slices = rowGroupSlices(pq.file, schema, groups[index], names, decode)
        const where = ` (row group ${index + 1} of ${groups.length}, rows ${rowStart}-${rowEnd - 1})`
        for (let done = 0; done < rows; ) {
          let slice: Map<string, DecodedArray>
          try {
            const next = await slices.next()
            if (next.done) throw new Error(`parquet row group ended after ${done} of its ${rows} rows`)
            slice = next.value
          } catch (err) {
            throw describe(path, err, where)
          }
          const columns = names.map((name) => slice.get(name) as ArrayLike<unknown>)
          const n = columns.length > 0 ? columns[0].length : Math.min(rows - done, SLICE_ROWS)
          // A slice always has rows (rowGroupSlices takes them from the pages or throws): never loop on none.
          if (n === 0) throw describe(path, new Error('parquet gave an empty slice of rows'), where)
          const batch: Record<string, unknown>[] = new Array(n)
          for (let i = 0; i < n; i++) {
            const record: Record<string, unknown> = {}
            for (let c = 0; c < names.length; c++) record[names[c]] = jsonSafe(columns[c][i])
            batch[i] = record
          }
          done += n
          if (done === rows) reader.emit('row-group', { index, count: groups.length, rowStart, rows } satisfies ParquetRowGroupEvent)
          yield batch
        }
        rowStart = rowEnd
      }
    } finally {
      await pq.handle.close().catch(() => {})
    }
  }, options)
}
