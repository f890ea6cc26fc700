// The part of writeParquet that turns rows of cells into Parquet bytes: the same on the writer's
// thread and on its worker thread (`thread: true`), so both write byte-identical files.
import { Writable } from 'node:stream'
import parquet from 'parquetjs-lite'
import parquetTypes from 'parquetjs-lite/lib/types.js'
import plainCodec from 'parquetjs-lite/lib/codec/plain.js'
import type { ColumnType } from './output-columns.js'

/**
 * Values of a text column already in PLAIN encoding (4-byte little-endian length, then the UTF-8,
 * for each), as a worker's batch brings them: one entry in a column's values for many values.
 */
export class PlainBytes {
  constructor(readonly bytes: Buffer) {}
}

// parquetjs-lite's PLAIN BYTE_ARRAY encoder makes a Buffer of every value (Buffer.from) and then
// copies each into the page: eight small Buffers a row for a results file, a third of the write's
// time in allocation and GC. Strings (what fill() below gives a UTF8 column; the row that closes a
// group comes through appendRow as a Buffer) are written straight into the page instead — the same
// bytes (4-byte little-endian length, UTF-8), and PlainBytes as they are. Anything else goes to the
// original. The codec module
// is parquetjs-lite's own (one per thread), so the replacement is made once and checks for itself.
const encodePlain = plainCodec.encodeValues
if (!(encodePlain as { stringsDirect?: boolean }).stringsDirect) {
  const encodeValues = (type: string, values: unknown[], opts?: unknown): Buffer => {
    if (type !== 'BYTE_ARRAY') return encodePlain(type, values, opts)
    let size = 0
    for (let i = 0; i < values.length; i++) {
      const v = values[i]
      if (typeof v === 'string') size += 4 + Buffer.byteLength(v)
      else if (v instanceof PlainBytes) size += v.bytes.length
      else if (Buffer.isBuffer(v)) size += 4 + v.length
      else return encodePlain(type, values, opts)
    }
    const buf = Buffer.allocUnsafe(size)
    let pos = 0
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as string | Buffer | PlainBytes
      if (v instanceof PlainBytes) {
        pos += v.bytes.copy(buf, pos)
        continue
      }
      const n = typeof v === 'string' ? buf.write(v, pos + 4, 'utf8') : v.copy(buf, pos + 4)
      buf.writeUInt32LE(n, pos)
      pos += 4 + n
    }
    return buf
  }
  plainCodec.encodeValues = Object.assign(encodeValues, { stringsDirect: true })
}

const PARQUET_TYPES: Record<ColumnType, string> = { string: 'UTF8', json: 'UTF8', double: 'DOUBLE', int32: 'INT32', int64: 'INT64', boolean: 'BOOLEAN' }

type ColumnData = NonNullable<parquet.ParquetWriter['rowBuffer']['columnData']>[string]

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
   * Adds one row; resolves at once, or once the row group it completes is encoded and written
   * (awaiting `out`: backpressure).
   */
  async add(cells: unknown[]): Promise<void> {
    let bytes = 0
    for (let i = 0; i < cells.length; i++) bytes += cellBytes(cells[i])
    const buffered = this.writer.rowBuffer.rowCount ?? 0
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
    await this.closeGroup(row, buffered)
  }

  // Appends the row that completes the group of `buffered` rows: parquetjs-lite encodes and writes it.
  private async closeGroup(row: Record<string, unknown>, buffered: number): Promise<void> {
    this.writer.setRowGroupSize(buffered + 1)
    try {
      await this.writer.appendRow(row)
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
    const b = this.rowBuffer()
    for (let i = 0; i < cells.length; i++) this.fillCell(b.columnData![this.fieldList[i].key], this.fieldList[i], cells[i])
    b.rowCount!++
    b.pageRowCount!++
  }

  private rowBuffer(): parquet.ParquetWriter['rowBuffer'] {
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
    return b
  }

  private fillCell(column: ColumnData, field: { type: string; statistics: boolean }, cell: unknown): void {
    column.rlevels.push(0)
    column.count++
    if (cell === null) {
      column.dlevels.push(0)
      return
    }
    column.dlevels.push(1)
    // Only the statistics read distinct_values, and only columns with statistics have them.
    if (field.statistics) column.distinct_values.add(cell)
    // A UTF8 string goes in as is: toPrimitive would make a Buffer of it (see encodeValues above).
    column.values.push(field.type === 'UTF8' && typeof cell === 'string' ? cell : parquetTypes.toPrimitive(field.type, cell))
  }

  /**
   * Adds the rows of a {@link CellBatch} (a worker's input), cutting row groups exactly as
   * {@link add} would for the same rows. A text column's values are not taken apart: each run of
   * them inside one row group goes into the group as one {@link PlainBytes}; only the row that
   * closes a group is made an object, for appendRow.
   */
  async addBatch(batch: CellBatch): Promise<void> {
    const { types, names, rowGroupSize, rowGroupBytes } = this.plan
    const width = types.length
    const text = batch.columns.map((ab) => (ab === null ? null : Buffer.from(ab)))
    // Per text column: where its current run of values starts, and where the next value is.
    const start = new Array<number>(width).fill(0)
    const pos = new Array<number>(width).fill(0)
    const flushRuns = (): void => {
      const b = this.rowBuffer()
      for (let i = 0; i < width; i++) {
        if (text[i] !== null && pos[i] > start[i]) b.columnData![this.fieldList[i].key].values.push(new PlainBytes(text[i]!.subarray(start[i], pos[i])))
        start[i] = pos[i]
      }
    }
    let l = 0
    let o = 0
    for (let r = 0; r < batch.rows; r++) {
      const weight = batch.weights[r]

      const buffered = this.writer.rowBuffer.rowCount ?? 0
      if (buffered + 1 < rowGroupSize && this.groupBytes + weight < rowGroupBytes) {
        const b = this.rowBuffer()
        for (let i = 0; i < width; i++) {
          const field = this.fieldList[i]
          const column = b.columnData![field.key]
          if (text[i] === null) {
            this.fillCell(column, field, batch.others[o++])
            continue
          }
          column.rlevels.push(0)
          column.count++
          const n = batch.lengths[l++]
          if (n < 0) column.dlevels.push(0)
          else {
            column.dlevels.push(1)
            pos[i] += 4 + n
          }
        }
        b.rowCount!++
        b.pageRowCount!++
        this.groupBytes += weight
        continue
      }
      // The row that completes a group: the runs before it first, then the row through appendRow (see add).
      flushRuns()
      const row: Record<string, unknown> = {}
      for (let i = 0; i < width; i++) {
        if (text[i] === null) {
          row[names[i]] = batch.others[o++]
          continue
        }
        const n = batch.lengths[l++]
        if (n < 0) row[names[i]] = null
        else {
          row[names[i]] = text[i]!.subarray(pos[i] + 4, pos[i] + 4 + n)
          pos[i] += 4 + n
        }
        start[i] = pos[i]
      }
      await this.closeGroup(row, buffered)
    }
    flushRuns()
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
 * Rows of cells packed for a worker thread. Each text column's non-null values are already in
 * PLAIN encoding (length + UTF-8) in a buffer of its own, moved (not copied) to the worker; their
 * byte lengths, row by row (-1: null), say which rows have them. Other cells (numbers, booleans,
 * bigints, null) come in an array; each row's weight toward `rowGroupBytes` in `weights`. Cloning
 * strings across threads costs ~3 µs a row, more than encoding them; moving buffers costs nothing,
 * and the worker copies each column's bytes into its page as they are.
 */
export interface CellBatch {
  rows: number
  /** Per column: its PLAIN values (text columns), or null. */
  columns: (ArrayBuffer | null)[]
  lengths: Int32Array
  weights: Float64Array
  others: unknown[]
}

/** Packs rows of cells by the plan's column types (see {@link CellBatch}). */
export class CellBatcher {
  rows = 0
  private readonly bufs: (Buffer | null)[]
  private readonly pos: number[]
  private lengths: number[] = []
  private weights: number[] = []
  private others: unknown[] = []

  constructor(types: ColumnType[]) {
    this.bufs = types.map((t) => (isTextColumn(t) ? Buffer.allocUnsafeSlow(64 * 1024) : null))
    this.pos = types.map(() => 0)
  }

  add(cells: unknown[]): void {
    let weight = 0
    for (let i = 0; i < cells.length; i++) {
      const cell = cells[i]
      weight += cellBytes(cell)
      let buf = this.bufs[i]
      if (buf === null) this.others.push(cell)
      else if (cell === null) this.lengths.push(-1)
      else {
        const text = cell as string
        // UTF-8 takes at most 3 bytes per UTF-16 code unit.
        let at = this.pos[i]
        if (at + 4 + 3 * text.length > buf.length) buf = this.grow(i, 4 + 3 * text.length)
        const n = buf.write(text, at + 4, 'utf8')
        buf.writeUInt32LE(n, at)
        at += 4 + n
        this.pos[i] = at
        this.lengths.push(n)
      }
    }
    this.weights.push(weight)
    this.rows++
  }

  private grow(i: number, need: number): Buffer {
    const old = this.bufs[i]!
    const bigger = Buffer.allocUnsafeSlow(Math.max(2 * old.length, this.pos[i] + need))
    old.copy(bigger, 0, 0, this.pos[i])
    this.bufs[i] = bigger
    return bigger
  }

  /** The rows added since the last take, as a batch (its `columns` to be transferred); empties the batcher. */
  take(): CellBatch {
    // Buffers of their own (ArrayBuffer.slice copies; allocUnsafeSlow is never the shared pool), so they can be moved.
    const columns = this.bufs.map((b, i) => (b === null ? null : (b.buffer.slice(0, this.pos[i]) as ArrayBuffer)))
    const batch = { rows: this.rows, columns, lengths: Int32Array.from(this.lengths), weights: Float64Array.from(this.weights), others: this.others }
    this.rows = 0
    this.pos.fill(0)
    this.lengths = []
    this.weights = []
    this.others = []
    return batch
  }
}

/** What a batch's `columns` are to `postMessage`'s transfer list. */
export const transferables = (batch: CellBatch): ArrayBuffer[] => batch.columns.filter((c): c is ArrayBuffer => c !== null)

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
