import parquet from 'parquetjs-lite'
import { InputFileError } from '../errors.js'
import { inputFileError } from './fs-errors.js'
import { checkOptionsObject, checkColumns } from './options.js'
import { RecordReader, type ReaderOptions } from './record-reader.js'

/** Options of {@link readParquet}. */
export interface ParquetReadOptions extends Omit<ReaderOptions, 'onBadRecord'> {
  /** Read only these top-level columns (the others are not even read from disk), in this order. Default: all. */
  columns?: string[]
}

// parquetjs-lite rejects with strings, not Errors; turn the ones a user can meet into plain words.
function describe(path: string, err: unknown): Error {
  if (typeof err !== 'string') return inputFileError(path, err, 'read Parquet file')
  let why = err
  if (err === 'not valid parquet file' || err === 'read failed') why = 'not a Parquet file'
  else if (err === 'invalid parquet version') {
    why = 'its footer says Parquet format version 2 (as pyarrow and most current writers write); parquetjs-lite reads only version 1 files'
  } else if (err.startsWith('invalid encoding: ')) {
    why = `it uses the ${err.slice(18)} encoding, which parquetjs-lite cannot decode (it reads PLAIN, PLAIN_DICTIONARY and RLE)`
  } else if (err.startsWith('invalid compression method') || err.includes('Not Supported')) {
    why = `it uses a compression parquetjs-lite cannot read (${err}); it reads UNCOMPRESSED, SNAPPY and GZIP`
  }
  return new InputFileError(`Cannot read Parquet file ${JSON.stringify(path)}: ${why}`, path, { cause: err })
}

/** Opens a Parquet file with parquetjs-lite, errors as `InputFileError`. */
async function openParquet(path: string): Promise<parquet.ParquetReader> {
  try {
    return await parquet.ParquetReader.openFile(path)
  } catch (err) {
    throw describe(path, err instanceof Error && err.message === 'read failed' ? 'read failed' : err)
  }
}

/** Number of rows of a Parquet file, from its footer (no row is read). */
export async function parquetRowCount(path: string): Promise<number> {
  const reader = await openParquet(path)
  try {
    return Number(reader.getRowCount())
  } finally {
    await reader.close()
  }
}

// Records must survive JSON (the wire, JSONL): INT64 comes back as BigInt, which JSON cannot hold.
function jsonSafe(value: unknown): unknown {
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString()
  if (Array.isArray(value)) return value.map(jsonSafe)
  if (typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = jsonSafe(v)
    return out
  }
  return value
}

/**
 * Reads a Parquet file as an object-mode stream of records, one row group at a time through
 * parquetjs-lite's cursor: memory is one row group, whatever the file's size, and the next row group
 * is read only when the consumer wants more. Every top-level column is a key of each record, null
 * when the value is null. INT64 values come as numbers, or as decimal strings beyond 2^53.
 *
 * parquetjs-lite reads Parquet format version 1 files with PLAIN, PLAIN_DICTIONARY or RLE encodings
 * (UNCOMPRESSED, SNAPPY, GZIP), which is what {@link writeParquet} writes; a file it cannot read
 * (e.g. pyarrow's default output) fails the reader with an `InputFileError` that says why.
 */
export function readParquet(path: string, options: ParquetReadOptions = {}): RecordReader<Record<string, unknown>> {
  checkOptionsObject(options, 'readParquet')
  checkColumns('columns', options.columns)
  return new RecordReader<Record<string, unknown>>('parquet', path, async function* () {
    const reader = await openParquet(path)
    try {
      const all = Object.keys(reader.getSchema().fields)
      const missing = (options.columns ?? []).filter((c) => !all.includes(c))
      if (missing.length > 0) {
        throw new InputFileError(`${path}: no column ${missing.map((c) => JSON.stringify(c)).join(', ')} (columns: ${all.join(', ')})`, path)
      }
      const names = options.columns ?? all
      const cursor = reader.getCursor(options.columns)
      for (;;) {
        let group: Record<string, unknown>[] | null
        try {
          group = await cursor.nextRowGroup()
        } catch (err) {
          throw describe(path, err)
        }
        if (group === null) return
        const batch = group.map((row) => {
          const record: Record<string, unknown> = {}
          for (const name of names) record[name] = row[name] === undefined ? null : jsonSafe(row[name])
          return record
        })
        // Drop the row group's own array now: the batch is all that is kept.
        group.length = 0
        if (batch.length > 0) yield batch
      }
    } finally {
      await reader.close()
    }
  }, options)
}
