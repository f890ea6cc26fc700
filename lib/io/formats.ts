import { extname } from 'node:path'
import { UnknownFormatError } from '../errors.js'

/** The file formats of the readers and writers. */
export type RecordFormat = 'csv' | 'tsv' | 'jsonl' | 'json' | 'parquet'

/** Every {@link RecordFormat}, in the order the docs list them. */
export const RECORD_FORMATS: readonly RecordFormat[] = ['csv', 'tsv', 'jsonl', 'json', 'parquet']

const BY_EXTENSION: Record<string, RecordFormat> = {
  '.csv': 'csv',
  '.tsv': 'tsv',
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.json': 'json',
  '.parquet': 'parquet',
}

/**
 * The format of `path`: `format` when given (checked), else from the extension, case-insensitive:
 * `.csv`, `.tsv`, `.jsonl`/`.ndjson`, `.json`, `.parquet`. Throws `UnknownFormatError` otherwise.
 */
export function formatOf(path: string, format?: string): RecordFormat {
  if (format !== undefined) {
    if ((RECORD_FORMATS as readonly string[]).includes(format)) return format as RecordFormat
    throw new UnknownFormatError(`Unknown format ${JSON.stringify(format)}: expected one of ${RECORD_FORMATS.join(', ')}`)
  }
  const ext = extname(path).toLowerCase()
  const found = BY_EXTENSION[ext]
  if (found) return found
  throw new UnknownFormatError(
    `Cannot tell the format of ${JSON.stringify(path)} from its extension${ext ? ` "${ext}"` : ''}: ` +
      `use .csv, .tsv, .jsonl, .ndjson, .json or .parquet, or pass the "format" option`,
  )
}
