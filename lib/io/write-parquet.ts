import type { Writable } from 'node:stream'
import parquet from 'parquetjs-lite'
import { InvalidOptionError } from '../errors.js'
import { outputFileError } from './fs-errors.js'
import { checkInteger, checkOneOf, isPlainObject } from './options.js'
import { checkSchema, parquetCell, planColumns, type ColumnType, type OutputColumn } from './output-columns.js'
import { RecordWriter, resolveWriterOptions, type ResolvedWriterOptions, type WriterOptions } from './record-writer.js'

/** Options of {@link writeParquet}. */
export interface ParquetWriteOptions extends WriterOptions {
  /**
   * Types of some or all columns (see {@link ColumnType}); a column named here and absent from the
   * sample is added. Others are inferred from the first `sampleSize` rows. Default none.
   */
  schema?: Record<string, ColumnType>
  /** Most rows per row group. Default 10 000. */
  rowGroupSize?: number
  /** A row group is also cut once its values add up to about this many bytes (bounds memory for big outputs). Default 32 MiB. */
  rowGroupBytes?: number
  /** Page compression: `SNAPPY` (default; every reader has it), `GZIP` or `UNCOMPRESSED`. */
  compression?: 'SNAPPY' | 'GZIP' | 'UNCOMPRESSED'
  /** Key-value metadata stored in the footer. Default none. */
  metadata?: Record<string, string>
}

const PARQUET_TYPES: Record<ColumnType, string> = { string: 'UTF8', json: 'UTF8', double: 'DOUBLE', int32: 'INT32', int64: 'INT64', boolean: 'BOOLEAN' }

/**
 * Writes InferenceStream results as a Parquet file with parquetjs-lite: input columns beside result
 * columns (docs/io.md), every column optional (null allowed). Types come from `schema`, the known
 * result columns, and the first `sampleSize` rows; nested values (`outputs`, `labels`, `entities`)
 * are JSON text in UTF8 columns. A value that does not fit its column fails the writer with
 * `SchemaMismatchError`. Rows are buffered one row group at a time (`rowGroupSize`, `rowGroupBytes`);
 * the footer is written on `end`, before `'finish'`. Parquet format 1, data page v1, no string
 * statistics: readable by other Parquet readers (tested with hyparquet).
 */
export function writeParquet(target: string | Writable, options: ParquetWriteOptions = {}): RecordWriter {
  const o = resolveWriterOptions({ rowGroupSize: 10_000, rowGroupBytes: 32 * 1024 * 1024, compression: 'SNAPPY' as const, ...options }, 'writeParquet')
  checkSchema(o.schema)
  checkInteger('rowGroupSize', o.rowGroupSize, 1)
  checkInteger('rowGroupBytes', o.rowGroupBytes, 1)
  checkOneOf('compression', o.compression, ['SNAPPY', 'GZIP', 'UNCOMPRESSED'])
  if (o.metadata !== undefined && (!isPlainObject(o.metadata) || Object.values(o.metadata).some((v) => typeof v !== 'string'))) {
    throw new InvalidOptionError('Option "metadata" must be an object of string values')
  }
  return new ParquetFileWriter(target, o)
}

// parquetjs-lite splits column paths on ',' when reading, so such a name would make the file
// unreadable by it; other readers are fine with any name.
function parquetNames(columns: OutputColumn[]): string[] {
  const used = new Set<string>()
  return columns.map(({ name }) => {
    let safe = name.replaceAll(',', '_')
    for (let i = 2; used.has(safe); i++) safe = `${name.replaceAll(',', '_')}_${i}`
    used.add(safe)
    return safe
  })
}

class ParquetFileWriter extends RecordWriter {
  private readonly options: ResolvedWriterOptions<ParquetWriteOptions> & { rowGroupSize: number; rowGroupBytes: number; compression: string }
  private writer!: parquet.ParquetWriter
  private columns: OutputColumn[] = []
  private names: string[] = []
  private groupBytes = 0
  private index = 0

  constructor(target: string | Writable, options: ParquetFileWriter['options']) {
    super('parquet', target, options)
    this.options = options
  }

  protected async begin(sample: Record<string, unknown>[]): Promise<void> {
    this.columns = planColumns(sample, this.rows, { columns: this.options.columns, schema: this.options.schema })
    if (this.columns.length === 0) {
      throw new InvalidOptionError('writeParquet: no rows and no "columns" or "schema" to take columns from; a Parquet file needs at least one column')
    }
    this.names = parquetNames(this.columns)
    const fields: Record<string, parquet.FieldDefinition> = {}
    this.columns.forEach((c, i) => {
      const type = PARQUET_TYPES[c.type]
      // parquetjs-lite orders string min/max by UTF-16 code units, not bytes as the format says:
      // write no string statistics rather than wrong ones.
      fields[this.names[i]] = { type, optional: true, compression: this.options.compression, statistics: type !== 'UTF8' }
    })
    try {
      this.writer = await parquet.ParquetWriter.openStream(new parquet.ParquetSchema(fields), this.out, {
        rowGroupSize: this.options.rowGroupSize,
        // Data page v1 and no page index: the most widely read layout.
        useDataPageV2: false,
        pageIndex: false,
      })
    } catch (err) {
      throw outputFileError(this.path, err)
    }
    for (const [k, v] of Object.entries(this.options.metadata ?? {})) this.writer.setMetadata(k, v)
  }

  protected async writeRow(row: Record<string, unknown>): Promise<void> {
    const out: Record<string, unknown> = {}
    let bytes = 0
    for (let i = 0; i < this.columns.length; i++) {
      const cell = parquetCell(this.columns[i], row[this.columns[i].name], this.index)
      out[this.names[i]] = cell
      bytes += typeof cell === 'string' ? cell.length : 8
    }
    this.index++
    const w = this.writer
    const buffered = w.rowBuffer.rowCount ?? 0
    // A big row group is cut early: parquetjs-lite flushes when the count reaches rowGroupSize.
    w.setRowGroupSize(this.groupBytes + bytes >= this.options.rowGroupBytes ? buffered + 1 : this.options.rowGroupSize)
    try {
      await w.appendRow(out)
    } catch (err) {
      throw typeof err === 'string' ? new Error(`parquetjs-lite: ${err}`) : outputFileError(this.path, err)
    }
    this.groupBytes = w.rowBuffer.rowCount === undefined ? 0 : this.groupBytes + bytes
  }

  protected async complete(): Promise<void> {
    if (!this.writer) return
    try {
      // Writes the last row group and the footer, then ends the file.
      await this.writer.close()
    } catch (err) {
      throw typeof err === 'string' ? new Error(`parquetjs-lite: ${err}`) : outputFileError(this.path, err)
    }
  }
}
