import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { inputFileError } from './fs-errors.js'
import { formatOf, type RecordFormat } from './formats.js'
import { parquetRowCount } from './read-parquet.js'

/**
 * Counts the lines of a file by a byte scan for `\n` (no parsing): the last line counts without a
 * line break; blank lines count too.
 */
export async function countLines(path: string): Promise<number> {
  let lines = 0
  let last = -1
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
      const buf = chunk as Buffer
      for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) lines++
      if (buf.length > 0) last = buf[buf.length - 1]
    }
  } catch (err) {
    throw inputFileError(path, err)
  }
  return last !== -1 && last !== 10 ? lines + 1 : lines
}

/**
 * The number of records of a file where that is cheap, for progress bars and ETAs: Parquet from the
 * footer (exact); CSV/TSV lines minus the header and JSONL lines, by a fast newline scan (an upper
 * bound: quoted line breaks, blank and bad lines count); undefined for a JSON array (it would have
 * to be parsed). Throws `UnknownFormatError` for an unknown extension, `InputFileError` for an
 * unreadable file.
 */
export async function countRows(path: string, options: { format?: RecordFormat } = {}): Promise<number | undefined> {
  const format = formatOf(path, options.format)
  switch (format) {
    case 'parquet':
      return parquetRowCount(path)
    case 'csv':
    case 'tsv':
      return Math.max(0, (await countLines(path)) - 1)
    case 'jsonl':
      return countLines(path)
    case 'json':
      // No count, but the same error as the reader would give for a missing file.
      await stat(path).catch((err: unknown) => {
        throw inputFileError(path, err)
      })
      return undefined
  }
}
