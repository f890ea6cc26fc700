import type { Readable } from 'node:stream'
import { BadRecordError } from '../errors.js'
import { LineSplitter, type Line } from './line-splitter.js'
import { checkOptionsObject, checkColumns, checkInteger, isPlainObject } from './options.js'
import { RecordReader, type ReaderOptions, type RecordBatch } from './record-reader.js'
import { textChunks } from './text-chunks.js'

/** Options of {@link readJsonl}. */
export interface JsonlReadOptions extends ReaderOptions {
  /** Keep only these keys of object records, in this order (absent keys stay absent). Default: all. */
  columns?: string[]
  /** Longest line in characters; a longer one is a bad record, dropped without being held. Default 8 Mi. */
  maxRecordLength?: number
}

/** Keeps `columns` of an object record; anything else is returned as is. */
export function pickColumns(value: unknown, columns: string[] | undefined): unknown {
  if (!columns || !isPlainObject(value)) return value
  const out: Record<string, unknown> = {}
  for (const c of columns) if (Object.hasOwn(value, c)) out[c] = value[c]
  return out
}

/**
 * Reads JSON Lines (one JSON value per line; `.jsonl`, `.ndjson`) as an object-mode stream of the
 * values, line by line with backpressure. Blank lines are skipped, `\r\n` is fine, a UTF-8 BOM is
 * dropped. A line that is not JSON (or is `null`, which a stream cannot carry) is a `BadRecordError`
 * naming its line number: skipped and reported by default, see {@link ReaderOptions.onBadRecord}.
 */
export function readJsonl(input: string | Readable, options: JsonlReadOptions = {}): RecordReader<unknown> {
  checkOptionsObject(options, 'readJsonl')
  const o = { maxRecordLength: 8 * 1024 * 1024, ...options }
  checkColumns('columns', o.columns)
  checkInteger('maxRecordLength', o.maxRecordLength, 1)
  const path = typeof input === 'string' ? input : undefined
  const where = path === undefined ? 'line' : `${path} line`

  return new RecordReader<unknown>('jsonl', path, async function* (reader) {
    const lines = new LineSplitter(o.maxRecordLength)
    const toBatch = (parsed: Line[]): RecordBatch<unknown> => {
      const batch: RecordBatch<unknown> = []
      for (const l of parsed) {
        if ('tooLong' in l) {
          const reason = `longer than ${o.maxRecordLength} characters`
          batch.push(new BadRecordError(`${where} ${l.line}: ${reason}`, { line: l.line, path, reason }))
          continue
        }
        if (l.text.trim() === '') continue
        let value: unknown
        try {
          value = JSON.parse(l.text)
        } catch (err) {
          const reason = `not valid JSON (${(err as Error).message})`
          batch.push(new BadRecordError(`${where} ${l.line}: ${reason}`, { line: l.line, path, reason, cause: err }))
          continue
        }
        // A Node stream cannot carry null (it means the end), and null holds no input anyway.
        if (value === null) batch.push(new BadRecordError(`${where} ${l.line}: null is not a record`, { line: l.line, path, reason: 'null is not a record' }))
        else batch.push(pickColumns(value, o.columns))
      }
      return batch
    }
    for await (const text of textChunks(reader.openInput(input))) {
      const batch = toBatch(lines.push(text))
      if (batch.length > 0) yield batch
    }
    const batch = toBatch(lines.end())
    if (batch.length > 0) yield batch
  }, o)
}
