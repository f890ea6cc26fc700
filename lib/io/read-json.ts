import type { Readable } from 'node:stream'
import streamArray from 'stream-json/streamers/stream-array.js'
import verifyFile from 'stream-json/file/verifier.js'
import { BadRecordError, InputFileError } from '../errors.js'
import { checkOptionsObject, checkColumns, checkInteger } from './options.js'
import { pickColumns } from './read-jsonl.js'
import { RecordReader, type ReaderOptions, type RecordBatch } from './record-reader.js'

/** Options of {@link readJson}. */
export interface JsonReadOptions extends ReaderOptions {
  /** Keep only these keys of object records, in this order (absent keys stay absent). Default: all. */
  columns?: string[]
  /** Elements handed on per batch (fewer promise turns; memory is this many elements). Default 256. */
  batchSize?: number
}

// Where a syntax error is, for the message: stream-json's parser does not say, its verifier does.
async function locate(path: string): Promise<string> {
  try {
    await verifyFile(path)
  } catch (err) {
    const e = err as { line?: unknown; pos?: unknown }
    if (typeof e.line === 'number') return ` at line ${e.line}, column ${e.pos}`
  }
  return ''
}

/**
 * Reads a file holding one top-level JSON array as an object-mode stream of its elements, parsed
 * incrementally with stream-json (`StreamArray`): memory is one element, never the whole array, so
 * a 5 GB array reads in flat memory. A UTF-8 BOM is dropped.
 *
 * A JSON document cannot resume after a syntax error, so, unlike CSV and JSONL, a malformed file
 * fails the reader with `InputFileError` naming the line and column (and the elements before it
 * have been emitted). So does a file whose top level is not an array. A `null` element (which a
 * stream cannot carry) is a `BadRecordError`, skipped and reported by default.
 */
export function readJson(input: string | Readable, options: JsonReadOptions = {}): RecordReader<unknown> {
  checkOptionsObject(options, 'readJson')
  const o = { batchSize: 256, ...options }
  checkColumns('columns', o.columns)
  checkInteger('batchSize', o.batchSize, 1)
  const path = typeof input === 'string' ? input : undefined

  return new RecordReader<unknown>('json', path, async function* (reader) {
    const source = reader.openInput(input)
    // streamValues: false: only whole (packed) tokens, which is all the assembler reads.
    const elements = reader.own(streamArray.withParserAsStream({ streamValues: false }))
    source.once('error', (err) => elements.destroy(err))
    source.pipe(elements)
    let batch: RecordBatch<unknown> = []
    let count = 0
    try {
      for await (const item of elements) {
        const value = (item as { value: unknown }).value
        // A Node stream cannot carry null (it means the end), and null holds no input anyway.
        batch.push(value === null ? new BadRecordError(`${path ?? 'JSON input'} element ${count}: null is not a record`, { path, reason: 'null is not a record' }) : pickColumns(value, o.columns))
        count++
        if (batch.length >= o.batchSize) {
          yield batch
          batch = []
        }
      }
    } catch (err) {
      // fs errors (ENOENT...) are named by the reader; anything else here is the JSON itself.
      if (typeof (err as NodeJS.ErrnoException).syscall === 'string') throw err
      if (batch.length > 0) yield batch
      const at = path === undefined ? '' : await locate(path)
      const name = path === undefined ? 'JSON input' : path
      const message = (err as Error).message ?? String(err)
      throw new InputFileError(
        /top-level object should be an array/i.test(message)
          ? `${name}: the top level is not an array: a .json input is one JSON array of records; for one record a line, use JSON Lines (.jsonl, readJsonl)`
          : `${name}: invalid JSON${at} after ${count} element${count === 1 ? '' : 's'}: ${message}`,
        path,
        { cause: err },
      )
    }
    if (batch.length > 0) yield batch
  }, o)
}
