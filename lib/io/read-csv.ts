import type { Readable } from 'node:stream'
import { BadRecordError, InputFileError } from '../errors.js'
import { CsvRows, type CsvRow } from './csv-rows.js'
import { checkOptionsObject, checkBoolean, checkChar, checkColumns, checkInteger } from './options.js'
import { textChunks } from './text-chunks.js'
import { RecordReader, type ReaderOptions, type RecordBatch } from './record-reader.js'

/** Options of {@link readCsv}. */
export interface CsvReadOptions extends ReaderOptions {
  /** Field delimiter. Default `,` (`\t` for `.tsv` through `readRecords`). */
  delimiter?: string
  /** Quote character. Default `"`. */
  quote?: string
  /** Escape of a quote inside a quoted field. Default: the quote itself (`""`). */
  escape?: string
  /**
   * Column names: `true` (default) reads them from the first row; an array names the columns of a
   * file without a header row. An empty name in a header row becomes `column_<n>` (1-based).
   */
  headers?: true | string[]
  /** Keep only these columns, in this order. A name not in the header fails the reader. Default: all. */
  columns?: string[]
  /** Turn fields that are plain decimal numbers (`-1.5`, `2e3`) into numbers. Default false: every field is a string. */
  typed?: boolean
  /** Longest row in characters; a longer one is a bad record (an unclosed quote). Default 8 Mi. */
  maxRecordLength?: number
}

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/

function typedValue(field: string): string | number {
  if (!NUMBER.test(field)) return field
  const n = Number(field)
  return Number.isFinite(n) ? n : field
}

/**
 * Reads a CSV file (or a byte/string stream) as an object-mode stream of records, one object per
 * row keyed by the header. Streamed chunk by chunk with backpressure; quoted fields may hold
 * delimiters, quotes (`""`) and line breaks; a UTF-8 BOM is dropped; blank lines are skipped.
 *
 * A malformed row (broken quoting, a wrong number of fields) is a `BadRecordError` naming its line:
 * skipped and reported by default, see {@link ReaderOptions.onBadRecord}. A missing file, or a header
 * naming a column twice, fails the reader with `InputFileError`.
 */
export function readCsv(input: string | Readable, options: CsvReadOptions = {}): RecordReader<Record<string, string | number>> {
  checkOptionsObject(options, 'readCsv')
  const o = { delimiter: ',', quote: '"', headers: true as const, typed: false, maxRecordLength: 8 * 1024 * 1024, ...options }
  checkChar('delimiter', o.delimiter)
  checkChar('quote', o.quote)
  if (o.escape !== undefined) checkChar('escape', o.escape)
  if (o.headers !== true) checkColumns('headers', o.headers)
  checkColumns('columns', o.columns)
  checkBoolean('typed', o.typed)
  checkInteger('maxRecordLength', o.maxRecordLength, 1)
  const path = typeof input === 'string' ? input : undefined
  const where = path === undefined ? 'line' : `${path} line`

  return new RecordReader(o.delimiter === '\t' ? 'tsv' : 'csv', path, async function* (reader) {
    const rows = new CsvRows(o)
    let header: string[] | undefined = o.headers === true ? undefined : o.headers
    let pick: number[] | undefined
    let names: string[] = []

    const setHeader = (fields: string[], line: number): void => {
      header = fields.map((name, i) => (name === '' ? `column_${i + 1}` : name))
      const seen = new Set<string>()
      for (const name of header) {
        if (seen.has(name)) throw new InputFileError(`${where} ${line}: the header names column ${JSON.stringify(name)} twice`, path)
        seen.add(name)
      }
    }
    const choose = (): void => {
      const h = header!
      if (o.columns) {
        const missing = o.columns.filter((c) => !h.includes(c))
        if (missing.length > 0) {
          throw new InputFileError(`${path ?? 'CSV input'}: no column ${missing.map((c) => JSON.stringify(c)).join(', ')} in the header (${h.join(', ')})`, path)
        }
        pick = o.columns.map((c) => h.indexOf(c))
        names = o.columns
      } else {
        pick = h.map((_, i) => i)
        names = h
      }
    }
    if (header) choose()

    const toBatch = (parsed: CsvRow[]): RecordBatch<Record<string, string | number>> => {
      const batch: RecordBatch<Record<string, string | number>> = []
      for (const row of parsed) {
        if ('error' in row) {
          batch.push(new BadRecordError(`${where} ${row.line}: ${row.error}`, { line: row.line, path, reason: row.error }))
          continue
        }
        if (!header) {
          setHeader(row.fields, row.line)
          choose()
          continue
        }
        if (row.fields.length !== header.length) {
          const reason = `expected ${header.length} columns, got ${row.fields.length}`
          batch.push(new BadRecordError(`${where} ${row.line}: ${reason}`, { line: row.line, path, reason }))
          continue
        }
        const record: Record<string, string | number> = {}
        for (let i = 0; i < pick!.length; i++) {
          const field = row.fields[pick![i]]
          record[names[i]] = o.typed ? typedValue(field) : field
        }
        batch.push(record)
      }
      return batch
    }

    for await (const text of textChunks(reader.openInput(input))) {
      const batch = toBatch(rows.push(text))
      if (batch.length > 0) yield batch
    }
    const batch = toBatch(rows.end())
    if (batch.length > 0) yield batch
  }, o)
}
