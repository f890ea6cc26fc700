import type { Writable } from 'node:stream'
import { formatOf, type RecordFormat } from './formats.js'
import type { RecordWriter } from './record-writer.js'
import { writeCsv, type CsvWriteOptions } from './write-csv.js'
import { writeJsonl } from './write-jsonl.js'
import { writeParquet, type ParquetWriteOptions } from './write-parquet.js'
import { UnknownFormatError } from '../errors.js'

/** Options of {@link writeRecords}: `format`, and the options of the writer it picks. */
export interface WriteRecordsOptions extends CsvWriteOptions, ParquetWriteOptions {
  /** The format, overriding the extension. Default: from the extension (see `formatOf`). */
  format?: RecordFormat
}

const CSV_ONLY = ['delimiter', 'quote', 'bom'] as const
const PARQUET_ONLY = ['schema', 'rowGroupSize', 'rowGroupBytes', 'compression', 'metadata', 'thread'] as const

/**
 * Writes InferenceStream results to any supported file, picking the writer by extension (`.csv`,
 * `.tsv`, `.jsonl`, `.ndjson`, `.parquet`) or `format`: {@link writeCsv} (`.tsv`: tab-delimited),
 * {@link writeJsonl}, {@link writeParquet}. `.json` is not written (JSON Lines streams; a JSON array
 * would have to be closed); throws `UnknownFormatError` at once for it and other extensions.
 * Options of other formats are ignored. `target` may be a Writable when `format` is given.
 */
export function writeRecords(target: string | Writable, options: WriteRecordsOptions = {}): RecordWriter {
  const { format: given, ...rest } = options
  if (typeof target !== 'string' && given === undefined) throw new UnknownFormatError('writeRecords to a stream needs the "format" option')
  const format = formatOf(typeof target === 'string' ? target : '', given)
  const common: Record<string, unknown> = { ...rest }
  for (const k of [...CSV_ONLY, ...PARQUET_ONLY]) delete common[k]
  const pick = (keys: readonly string[]): Record<string, unknown> =>
    Object.fromEntries(keys.filter((k) => (rest as Record<string, unknown>)[k] !== undefined).map((k) => [k, (rest as Record<string, unknown>)[k]]))
  switch (format) {
    case 'csv':
      return writeCsv(target, { ...common, ...pick(CSV_ONLY) })
    case 'tsv':
      return writeCsv(target, { delimiter: '\t', ...common, ...pick(CSV_ONLY) })
    case 'jsonl':
      return writeJsonl(target, common)
    case 'parquet':
      return writeParquet(target, { ...common, ...pick(PARQUET_ONLY) })
    case 'json':
      throw new UnknownFormatError(`writeRecords does not write .json (a JSON array); use .jsonl for ${JSON.stringify(target)}`)
  }
}
