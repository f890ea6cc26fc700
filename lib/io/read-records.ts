import { formatOf, type RecordFormat } from './formats.js'
import { readCsv, type CsvReadOptions } from './read-csv.js'
import { readJson, type JsonReadOptions } from './read-json.js'
import { readJsonl, type JsonlReadOptions } from './read-jsonl.js'
import { readParquet, type ParquetReadOptions } from './read-parquet.js'
import type { RecordReader } from './record-reader.js'

/** Options of {@link readRecords}: `format`, and the options of the reader it picks. */
export interface ReadRecordsOptions extends CsvReadOptions, JsonlReadOptions, Omit<JsonReadOptions, 'highWaterMark'>, Omit<ParquetReadOptions, 'highWaterMark'> {
  /** The format, overriding the extension. Default: from the extension (see `formatOf`). */
  format?: RecordFormat
}

const CSV_ONLY = ['delimiter', 'quote', 'escape', 'headers', 'typed'] as const

/**
 * Reads any supported file as records, picking the reader by extension (`.csv`, `.tsv`, `.jsonl`,
 * `.ndjson`, `.json`, `.parquet`) or `format`: {@link readCsv} (`.tsv`: tab-delimited),
 * {@link readJsonl}, {@link readJson}, {@link readParquet}. Throws `UnknownFormatError` at once for
 * another extension; options of other formats are ignored.
 */
export function readRecords(path: string, options: ReadRecordsOptions = {}): RecordReader<unknown> {
  const { format: given, ...rest } = options
  const format = formatOf(path, given)
  const { onBadRecord, highWaterMark, columns, maxRecordLength, batchSize } = rest
  const common = defined({ onBadRecord, highWaterMark, columns })
  switch (format) {
    case 'csv':
    case 'tsv': {
      const csv: CsvReadOptions = defined({ ...common, maxRecordLength, ...Object.fromEntries(CSV_ONLY.map((k) => [k, rest[k]])) })
      if (format === 'tsv' && csv.delimiter === undefined) csv.delimiter = '\t'
      return readCsv(path, csv) as RecordReader<unknown>
    }
    case 'jsonl':
      return readJsonl(path, defined({ ...common, maxRecordLength }))
    case 'json':
      return readJson(path, defined({ highWaterMark, columns, batchSize }))
    case 'parquet':
      return readParquet(path, defined({ highWaterMark, columns })) as RecordReader<unknown>
  }
}

// Leaves out undefined values, so each reader's own defaults apply.
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}
