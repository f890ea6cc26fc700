import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { AbortError } from '../errors.js'
import { CsvRecordCounter } from './csv-count.js'
import { inputFileError } from './fs-errors.js'
import { formatOf, type RecordFormat } from './formats.js'
import { parquetRowCount } from './read-parquet.js'

const CHUNK = 1024 * 1024

// Reads `path` from `start` in 1 MiB chunks; `push` returns an offset to start again from, or undefined.
async function scan(
  path: string,
  push: (buf: Buffer, base: number) => number | undefined,
  end: () => number | undefined,
  signal?: AbortSignal,
): Promise<void> {
  let from: number | undefined = 0
  try {
    while (from !== undefined) {
      let base: number = from
      from = undefined
      for await (const chunk of createReadStream(path, { start: base, highWaterMark: CHUNK, signal })) {
        const buf = chunk as Buffer
        from = push(buf, base)
        base += buf.length
        // Breaking out of for-await destroys the stream.
        if (from !== undefined) break
      }
      if (from === undefined) from = end()
    }
  } catch (err) {
    if (signal?.aborted) throw new AbortError(undefined, { cause: signal.reason })
    throw inputFileError(path, err)
  }
}

/**
 * Counts the lines of a file by a byte scan for `\n` (no parsing): the last line counts without a
 * line break; blank lines count too.
 */
export async function countLines(path: string, signal?: AbortSignal): Promise<number> {
  let lines = 0
  let last = -1
  await scan(
    path,
    (buf) => {
      for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) lines++
      if (buf.length > 0) last = buf[buf.length - 1]
      return undefined
    },
    () => undefined,
    signal,
  )
  return last !== -1 && last !== 10 ? lines + 1 : lines
}

function isBlank(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0b || c === 0x0c
}

/**
 * Counts the non-blank lines of a file (the records of JSON Lines, as `readJsonl` reads them:
 * a line of only whitespace is skipped, a line that is not JSON is a bad record and counts).
 */
export async function countNonBlankLines(path: string, signal?: AbortSignal): Promise<number> {
  let lines = 0
  // The current line has a non-blank byte (it may have started in an earlier chunk).
  let content = false
  await scan(
    path,
    (buf) => {
      let start = 0
      for (;;) {
        const nl = buf.indexOf(10, start)
        const end = nl === -1 ? buf.length : nl
        // Stops at the first non-blank byte: at once for any line that is a record.
        for (let i = start; !content && i < end; i++) if (!isBlank(buf[i])) content = true
        if (nl === -1) return undefined
        if (content) lines++
        content = false
        start = nl + 1
      }
    },
    () => {
      if (content) lines++
      content = false
      return undefined
    },
    signal,
  )
  return lines
}

/**
 * Counts the records of a CSV file as the reader reads them, following quotes (see
 * `CsvRecordCounter`): a quoted line break does not count, blank lines do not, a malformed row
 * counts once. The header row is included.
 */
export async function countCsvRecords(path: string, dialect: { delimiter?: string; quote?: string; escape?: string } = {}, signal?: AbortSignal): Promise<number> {
  const counter = new CsvRecordCounter(dialect)
  await scan(
    path,
    (buf, base) => counter.push(buf, base),
    () => counter.end(),
    signal,
  )
  return counter.records
}

/** Options of {@link countRows}. */
export interface CountRowsOptions {
  /** The format, overriding the extension. */
  format?: RecordFormat
  /**
   * CSV/TSV dialect, as given to the reader. Default `,` (`\t` for TSV), `"`, the quote. A character
   * outside ASCII makes the count a newline count (an upper bound).
   */
  delimiter?: string
  quote?: string
  escape?: string
  /** CSV/TSV: `true` (default) when the first row is a header (not counted); an array when the file has none. */
  headers?: true | string[]
  /** Stops the count (it rejects with `AbortError`), e.g. when the run it was for has ended. */
  signal?: AbortSignal
}

/**
 * The number of records of a file, for progress bars and ETAs, without parsing it: Parquet from
 * the footer (exact); CSV/TSV by a quote-aware byte scan (records as the reader sees them,
 * malformed ones included, header and blank lines not); JSONL non-blank lines; undefined for a
 * JSON array (it would have to be parsed). Throws `UnknownFormatError` for an unknown extension,
 * `InputFileError` for an unreadable file.
 */
export async function countRows(path: string, options: CountRowsOptions = {}): Promise<number | undefined> {
  const format = formatOf(path, options.format)
  switch (format) {
    case 'parquet':
      return parquetRowCount(path)
    case 'csv':
    case 'tsv': {
      const { delimiter = format === 'tsv' ? '\t' : ',', quote = '"', escape, headers = true } = options
      const ascii = [delimiter, quote, escape ?? quote].every((c) => c.length === 1 && c.charCodeAt(0) < 0x80)
      // A dialect of other characters: the newline count, an upper bound.
      const records = ascii ? await countCsvRecords(path, { delimiter, quote, escape }, options.signal) : await countLines(path, options.signal)
      return headers === true ? Math.max(0, records - 1) : records
    }
    case 'jsonl':
      return countNonBlankLines(path, options.signal)
    case 'json':
      // No count, but the same error as the reader would give for a missing file.
      await stat(path).catch((err: unknown) => {
        throw inputFileError(path, err)
      })
      return undefined
  }
}
