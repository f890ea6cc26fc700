// The part of writeParquet that turns rows of cells into Parquet bytes: the same on the writer's
// thread and on its worker thread (`thread: true`), so both write byte-identical files.
import { Writable } from 'node:stream'
import parquet from 'parquetjs-lite'
import parquetTypes from 'parquetjs-lite/lib/types.js'
import plainCodec from 'parquetjs-lite/lib/codec/plain.js'
import type { ColumnType } from './output-columns.js'

// parquetjs-lite's PLAIN BYTE_ARRAY encoder makes a Buffer of every value (Buffer.from) and then
// copies each into the page: eight small Buffers a row for a results file, a third of the write's
// time in allocation and GC. Strings (what fill() below gives a UTF8 column; the row that closes a
// group comes through appendRow as a Buffer) are written straight into the page instead — the same
// bytes (4-byte little-endian length, UTF-8). Anything else goes to the original. The codec module
// is parquetjs-lite's own (one per thread), so the replacement is made once and checks for itself.
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

/** What a {@link ParquetEncoder} needs to know: plain data, so it crosses to a worker thread as is. */
export interface ParquetEncoderPlan {
  /** The columns' types, in order. */
  types: ColumnType[]
  /** The columns' names in the file, in order (unique, no commas). */
  names: string[]
  rowGroupSize: number
  rowGroupBytes: number
  compression: string
  metadata?: Record<string, string>
}

/** True when a column of this type holds text (string or JSON), which a batch carries as one string. */
export const isTextColumn = (type: ColumnType): boolean => type === 'string' || type === 'json'

/** What a cell weighs toward `rowGroupBytes`. */
export const cellBytes = (cell: unknown): number => (typeof cell === 'string' ? cell.length : 8)

/**
 * Rows of cells (one value or null per column, already checked against its type) into a Parquet
 * file on `out`, cutting row groups at `rowGroupSize` rows or about `rowGroupBytes`. Errors of
 * parquetjs-lite (it throws strings) come out as Errors; errors of `out` as they are.
 */
export class ParquetEncoder {
  private writer!: parquet.ParquetWriter
  private groupBytes = 0
  private fieldList: { key: string; type: string; statistics: boolean }[] = []

  constructor(
    private readonly plan: ParquetEncoderPlan,
    private readonly out: NodeJS.WritableStream,
  ) {}

  /** Starts the file (its magic bytes); `open` errors are the output's. */
  async open(): Promise<void> {
    const fields: Record<string, parquet.FieldDefinition> = {}
    this.plan.types.forEach((t, i) => {
      const type = PARQUET_TYPES[t]
      // parquetjs-lite orders string min/max by UTF-16 code units, not bytes as the format says:
      // write no string statistics rather than wrong ones.
      fields[this.plan.names[i]] = { type, optional: true, compression: this.plan.compression, statistics: type !== 'UTF8' }
    })
    const schema = new parquet.ParquetSchema(fields)
    // Column data is keyed by the field's path array as a string (as in parquetjs-lite itself).
    this.fieldList = schema.fieldList.map((f) => ({ key: String(f.path), type: f.originalType ?? f.primitiveType!, statistics: fields[f.name].statistics! }))
    this.writer = await parquet.ParquetWriter.openStream(schema, this.out, {
      rowGroupSize: this.plan.rowGroupSize,
      // One page per column chunk: rows are added outside appendRow, which is where pages are cut.
      pageSize: Number.MAX_SAFE_INTEGER,
      // Data page v1 and no page index: the most widely read layout.
      useDataPageV2: false,
      pageIndex: false,
    })
    for (const [k, v] of Object.entries(this.plan.metadata ?? {})) this.writer.setMetadata(k, v)
  }

  /**
   * Adds one row (a text cell may be a string or its UTF-8 as a Buffer; `weight` is its
   * {@link cellBytes}, computed when not given); resolves at once, or once the row group it completes is encoded and written
   * (awaiting `out`: backpressure).
   */
  async add(cells: unknown[], weight?: number): Promise<void> {
    let bytes = weight ?? 0
    if (weight === undefined) for (let i = 0; i < cells.length; i++) bytes += cellBytes(cells[i])
    const w = this.writer
    const buffered = w.rowBuffer.rowCount ?? 0
    const full = buffered + 1 >= this.plan.rowGroupSize || this.groupBytes + bytes >= this.plan.rowGroupBytes
    if (!full) {
      this.fill(cells)
      this.groupBytes += bytes
      return
    }
    // The row that completes a group goes through appendRow, which encodes the group and writes it
    // (awaiting the file: backpressure). Its count check is what cuts the group, bytes or rows.
    const row: Record<string, unknown> = {}
    for (let i = 0; i < cells.length; i++) row[this.plan.names[i]] = cells[i]
    w.setRowGroupSize(buffered + 1)
    try {
      await w.appendRow(row)
    } catch (err) {
      throw typeof err === 'string' ? new Error(`parquetjs-lite: ${err}`) : err
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
      // A UTF8 string (or its bytes) goes in as is: toPrimitive would make a Buffer of it (see
      // encodeValues above).
      column.values.push(field.type === 'UTF8' && (typeof cell === 'string' || Buffer.isBuffer(cell)) ? cell : parquetTypes.toPrimitive(field.type, cell))
    }
    b.rowCount!++
    b.pageRowCount!++
  }

  /** Writes the last row group and the footer, then ends `out`. */
  async close(): Promise<void> {
    if (!this.writer) return
    try {
      await this.writer.close()
    } catch (err) {
      throw typeof err === 'string' ? new Error(`parquetjs-lite: ${err}`) : err
    }
  }
}

/**
 * Rows of cells packed for a worker thread: the text cells of all rows as UTF-8 in ONE buffer, moved
 * (not copied) to the worker, with their byte lengths (-1: null); other cells (numbers, booleans,
 * bigints, null) in an array; each row's weight toward `rowGroupBytes`. Cloning strings across
 * threads costs ~3 µs a row, more than encoding them; moving one buffer costs nothing, and the
 * worker writes the bytes into pages as they are.
 */
export interface CellBatch {
  rows: number
  bytes: ArrayBuffer
  lengths: Int32Array
  weights: Float64Array
  others: unknown[]
}

/** Packs rows of cells by the plan's column types (see {@link CellBatch}). */
export class CellBatcher {
  rows = 0
  private buf: Buffer
  private pos = 0
  private lengths: number[] = []
  private weights: number[] = []
  private others: unknown[] = []
  private readonly textColumn: boolean[]

  constructor(
    types: ColumnType[],
    private readonly initialBytes = 256 * 1024,
  ) {
    this.textColumn = types.map(isTextColumn)
    this.buf = Buffer.allocUnsafeSlow(initialBytes)
  }

  add(cells: unknown[]): void {
    let weight = 0
    for (let i = 0; i < cells.length; i++) {
      const cell = cells[i]
      weight += cellBytes(cell)
      if (!this.textColumn[i]) this.others.push(cell)
      else if (cell === null) this.lengths.push(-1)
      else {
        const text = cell as string
        // UTF-8 takes at most 3 bytes per UTF-16 code unit.
        if (this.pos + 3 * text.length > this.buf.length) this.grow(3 * text.length)
        const n = this.buf.write(text, this.pos, 'utf8')
        this.pos += n
        this.lengths.push(n)
      }
    }
    this.weights.push(weight)
    this.rows++
  }

  private grow(need: number): void {
    const bigger = Buffer.allocUnsafeSlow(Math.max(2 * this.buf.length, this.pos + need))
    this.buf.copy(bigger, 0, 0, this.pos)
    this.buf = bigger
  }

  /** The rows added since the last take, as a batch (its `bytes` to be transferred); empties the batcher. */
  take(): CellBatch {
    // A buffer of its own (allocUnsafeSlow: never the shared pool), so it can be moved.
    const bytes = this.buf.buffer.slice(0, this.pos) as ArrayBuffer
    const batch = { rows: this.rows, bytes, lengths: Int32Array.from(this.lengths), weights: Float64Array.from(this.weights), others: this.others }
    this.rows = 0
    this.pos = 0
    this.lengths = []
    this.weights = []
    this.others = []
    return batch
  }
}

/** The rows of a {@link CellBatch}, one at a time: text cells as Buffers of their UTF-8, and each row's weight. */
export function* unpackCells(batch: CellBatch, types: ColumnType[]): Generator<{ cells: unknown[]; weight: number }> {
  const textColumn = types.map(isTextColumn)
  let pos = 0
  let l = 0
  let o = 0
  for (let r = 0; r < batch.rows; r++) {
    const cells: unknown[] = new Array(types.length)
    for (let i = 0; i < types.length; i++) {
      if (!textColumn[i]) {
        cells[i] = batch.others[o++]
        continue
      }
      const n = batch.lengths[l++]
      if (n < 0) cells[i] = null
      else {
        cells[i] = Buffer.from(batch.bytes, pos, n)
        pos += n
      }
    }
    yield { cells, weight: batch.weights[r] }
  }
}

/** A Writable that hands each chunk to `send` (a worker's pipe to the writer's thread) and is done with it at once. */
export function chunkSink(send: (chunk: Buffer) => void, onEnd: () => void): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      send(chunk)
      callback()
    },
    final(callback) {
      onEnd()
      callback()
    },
  })
}
