import type { Writable } from 'node:stream'
import parquet from 'parquetjs-lite'
import parquetTypes from 'parquetjs-lite/lib/types.js'
import plainCodec from 'parquetjs-lite/lib/codec/plain.js'
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

// parquetjs-lite's PLAIN BYTE_ARRAY encoder makes a Buffer of every value (Buffer.from) and then
// copies each into the page: eight small Buffers a row for a results file, a third of the write's
// time in allocation and GC. Strings (what fill() below gives a UTF8 column; the row that closes a
// group comes through appendRow as a Buffer) are written straight into the page instead — the same bytes (4-byte little-endian length, UTF-8). Anything else goes to
// the original. The codec module is parquetjs-lite's own (one per process), so the replacement is
// made once and checks for itself.
const encodePlain = plainCodec.encodeValues
if (!(encodePlain as { stringsDirect?: boolean }).stringsDirect) {
  const encodeValues = (type: string, values: unknown[], opts?: unknown): Buffer => {
    if (type !== 'BYTE_ARRAY') return encodePlain(type, values, opts)
    let size = 0
    for (let i = 0; i < values.length; i++) {
      const v = values[i]
      if (typeof v === 'string') size += 4 + Buffer.byteLength(v)
      else if (Buffer.isBuffer(v)) size += 4 + v.length
      else return encodePlain(type, values, opts)
    }
    const buf = Buffer.allocUnsafe(size)
    let pos = 0
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as string | Buffer
      const n = typeof v === 'string' ? buf.write(v, pos + 4, 'utf8') : v.copy(buf, pos + 4)
      buf.writeUInt32LE(n, pos)
      pos += 4 + n
    }
    return buf
  }
  plainCodec.encodeValues = Object.assign(encodeValues, { stringsDirect: true })
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
  private fieldList: { key: string; type: string; statistics: boolean }[] = []

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
    const schema = new parquet.ParquetSchema(fields)
    // Column data is keyed by the field's path array as a string (as in parquetjs-lite itself).
    this.fieldList = schema.fieldList.map((f) => ({ key: String(f.path), type: f.originalType ?? f.primitiveType!, statistics: fields[f.name].statistics! }))
    try {
      this.writer = await parquet.ParquetWriter.openStream(schema, this.out, {
        rowGroupSize: this.options.rowGroupSize,
        // One page per column chunk: rows are added outside appendRow, which is where pages are cut.
        pageSize: Number.MAX_SAFE_INTEGER,
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
    const cells: unknown[] = new Array(this.columns.length)
    let bytes = 0
    for (let i = 0; i < this.columns.length; i++) {
      const cell = parquetCell(this.columns[i], row[this.columns[i].name], this.index)
      cells[i] = cell
      bytes += typeof cell === 'string' ? cell.length : 8
    }
    this.index++
    const w = this.writer
    const buffered = w.rowBuffer.rowCount ?? 0
    const full = buffered + 1 >= this.options.rowGroupSize || this.groupBytes + bytes >= this.options.rowGroupBytes
    if (!full) {
      this.fill(cells)
      this.groupBytes += bytes
      return
    }
    // The row that completes a group goes through appendRow, which encodes the group and writes it
    // (awaiting the file: backpressure). Its count check is what cuts the group, bytes or rows.
    const out: Record<string, unknown> = {}
    for (let i = 0; i < cells.length; i++) out[this.names[i]] = cells[i]
    w.setRowGroupSize(buffered + 1)
    try {
      await w.appendRow(out)
    } catch (err) {
      throw typeof err === 'string' ? new Error(`parquetjs-lite: ${err}`) : outputFileError(this.path, err)
    }
    this.groupBytes = 0
  }

  // parquetjs-lite's appendRow shreds each row generically (objects and Sets per field per row),
  // which makes it write ~15k rows/s. Our columns are flat and optional, so a row is one value or
  // one null per column: add it to the row group buffer directly, in the very shape its shredder
  // builds (lib/shred.js: definition level 1 for a value, 0 for null; repetition level 0).
  private fill(cells: unknown[]): void {
    const b = this.writer.rowBuffer
    if (b.columnData === undefined) {
      b.rowCount = 0
      b.pageRowCount = 0
      b.columnData = {}
      b.pages = {}
      for (const field of this.fieldList) {
        b.columnData[field.key] = { dlevels: [], rlevels: [], values: [], distinct_values: new Set(), count: 0 }
        b.pages[field.key] = []
      }
    }
    for (let i = 0; i < cells.length; i++) {
      const field = this.fieldList[i]
      const column = b.columnData[field.key]
      const cell = cells[i]
      column.rlevels.push(0)
      column.count++
      if (cell === null) {
        column.dlevels.push(0)
        continue
      }
      column.dlevels.push(1)
      // Only the statistics read distinct_values, and only columns with statistics have them.
      if (field.statistics) column.distinct_values.add(cell)
      // A UTF8 string goes in as is: toPrimitive would make a Buffer that the page encoder then
      // copies again with Buffer.from (measured: ~15% of the write; the file is byte-identical).
      column.values.push(field.type === 'UTF8' && typeof cell === 'string' ? cell : parquetTypes.toPrimitive(field.type, cell))
    }
    b.rowCount!++
    b.pageRowCount!++
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
