import { once } from 'node:events'
import type { Writable } from 'node:stream'
import { format, type CsvFormatterStream } from 'fast-csv'
import { checkBoolean, checkChar } from './options.js'
import { csvCell, planColumns } from './output-columns.js'
import { RecordWriter, resolveWriterOptions, type ResolvedWriterOptions, type WriterOptions } from './record-writer.js'

/** Options of {@link writeCsv}. */
export interface CsvWriteOptions extends WriterOptions {
  /** Field delimiter. Default `,` (`\t` for `.tsv` through `writeRecords`). */
  delimiter?: string
  /** Quote character, used only where a field needs it. Default `"`. */
  quote?: string
  /** Start the file with a UTF-8 BOM (for spreadsheet programs). Default false. */
  bom?: boolean
}

/**
 * Writes InferenceStream results as CSV with fast-csv: a header row, then one row per result, the
 * columns of docs/io.md decided from the first `sampleSize` rows. Null is an empty field; arrays and
 * objects (`outputs`, `labels`, `entities`) are JSON text. To a path (atomic by default) or a Writable.
 */
export function writeCsv(target: string | Writable, options: CsvWriteOptions = {}): RecordWriter {
  const o = resolveWriterOptions({ delimiter: ',', quote: '"', bom: false, ...options }, 'writeCsv')
  checkChar('delimiter', o.delimiter)
  checkChar('quote', o.quote)
  checkBoolean('bom', o.bom)
  return new CsvWriter(target, o)
}

class CsvWriter extends RecordWriter {
  private formatter!: CsvFormatterStream<string[], string[]>
  private names: string[] = []
  private readonly options: ResolvedWriterOptions<CsvWriteOptions>

  constructor(target: string | Writable, options: ResolvedWriterOptions<CsvWriteOptions>) {
    super(options.delimiter === '\t' ? 'tsv' : 'csv', target, options)
    this.options = options
  }

  protected async begin(sample: Record<string, unknown>[]): Promise<void> {
    this.names = planColumns(sample, this.rows, { columns: this.options.columns }).map((c) => c.name)
    const { delimiter, quote, bom } = this.options
    this.formatter = format<string[], string[]>({ headers: this.names, alwaysWriteHeaders: true, includeEndRowDelimiter: true, delimiter, quote, escape: quote, writeBOM: bom })
    this.formatter.on('error', (err) => this.destroy(err))
    this.formatter.pipe(this.out as Writable)
  }

  protected async writeRow(row: Record<string, unknown>): Promise<void> {
    const cells = this.names.map((name) => csvCell(row[name]))
    if (!this.formatter.write(cells)) await once(this.formatter, 'drain')
  }

  protected async complete(): Promise<void> {
    // pipe() ends the file when the formatter ends; wait for the file to have flushed.
    const done = once(this.out as Writable, 'finish')
    this.formatter.end()
    await done
  }
}
