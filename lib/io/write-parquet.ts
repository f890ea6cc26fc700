import { Worker } from 'node:worker_threads'
import type { Writable } from 'node:stream'
import { InvalidOptionError } from '../errors.js'
import { outputFileError } from './fs-errors.js'
import { checkBoolean, checkInteger, checkOneOf, isPlainObject } from './options.js'
import { checkSchema, parquetCell, planColumns, type ColumnType, type OutputColumn } from './output-columns.js'
import { CellBatcher, ParquetEncoder, transferables, type ParquetEncoderPlan } from './parquet-encoder.js'
import { PARQUET_WORKER_FILE } from './parquet-worker-file.js'
import type { FromParquetWorker, ToParquetWorker } from './parquet-worker.js'
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
  /**
   * Encode and compress on a worker thread: this thread only turns results into cells (and writes
   * the bytes the worker sends back), so a pipeline that reads, infers and writes uses a second
   * core. The file is byte for byte the one written without it. Rows cross in batches of 1024; at
   * most 4 batches are on their way, and none is sent while the file's buffer is full, so memory
   * stays bounded. `rowsWritten` then counts rows handed to the worker. Default false.
   */
  thread?: boolean
}

/** Rows of cells per message to the worker thread, and the most such messages on their way. */
const THREAD_BATCH_ROWS = 1024
const THREAD_MAX_BATCHES = 4

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
  if (o.thread !== undefined) checkBoolean('thread', o.thread)
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
  private columns: OutputColumn[] = []
  private index = 0
  // In this thread:
  private encoder: ParquetEncoder | undefined
  // On a worker thread:
  private worker: Worker | undefined
  private batcher: CellBatcher | undefined
  private batchesInFlight = 0
  private unanswered = 0
  private workerClosed = false
  private failure: Error | undefined
  private wake: (() => void) | undefined
  /** The most batches that were on their way to the worker at once (tests check the bound). */
  peakBatchesInFlight = 0

  constructor(target: string | Writable, options: ParquetFileWriter['options']) {
    super('parquet', target, options)
    this.options = options
    if (options.thread) this.spawnWorker()
  }

  protected async begin(sample: Record<string, unknown>[]): Promise<void> {
    this.columns = planColumns(sample, this.rows, { columns: this.options.columns, schema: this.options.schema })
    if (this.columns.length === 0) {
      throw new InvalidOptionError('writeParquet: no rows and no "columns" or "schema" to take columns from; a Parquet file needs at least one column')
    }
    const plan: ParquetEncoderPlan = {
      types: this.columns.map((c) => c.type),
      names: parquetNames(this.columns),
      rowGroupSize: this.options.rowGroupSize,
      rowGroupBytes: this.options.rowGroupBytes,
      compression: this.options.compression,
      metadata: this.options.metadata,
    }
    if (this.options.thread) return this.startWorker(plan)
    this.encoder = new ParquetEncoder(plan, this.out)
    try {
      await this.encoder.open()
    } catch (err) {
      throw outputFileError(this.path, err)
    }
  }

  // A value that does not fit its column throws here, on the writer's thread, naming row and column.
  private cells(row: Record<string, unknown>): unknown[] {
    const cells: unknown[] = new Array(this.columns.length)
    for (let i = 0; i < this.columns.length; i++) cells[i] = parquetCell(this.columns[i], row[this.columns[i].name], this.index)
    this.index++
    return cells
  }

  protected async writeRow(row: Record<string, unknown>): Promise<void> {
    const cells = this.cells(row)
    if (this.encoder) {
      try {
        await this.encoder.add(cells)
      } catch (err) {
        throw err instanceof Error && err.message.startsWith('parquetjs-lite:') ? err : outputFileError(this.path, err)
      }
      return
    }
    this.batcher!.add(cells)
    if (this.batcher!.rows >= THREAD_BATCH_ROWS) await this.sendBatch()
  }

  protected async complete(): Promise<void> {
    if (this.encoder) {
      try {
        // Writes the last row group and the footer, then ends the file.
        await this.encoder.close()
      } catch (err) {
        throw err instanceof Error && err.message.startsWith('parquetjs-lite:') ? err : outputFileError(this.path, err)
      }
      return
    }
    if (!this.worker) return
    if (this.batcher!.rows > 0) await this.sendBatch()
    this.post({ type: 'close' })
    // 'closed' comes after the last bytes of the file (messages keep their order).
    await this.until(() => this.workerClosed)
    await this.worker.terminate()
    this.worker = undefined
    await this.endOut()
  }

  // Started with the writer, so its start (a few hundred ms: it loads parquetjs-lite) overlaps the
  // sample's inference. Held (ref) only while it owes an answer: an idle writer never keeps the
  // process alive, as a file stream does not.
  private spawnWorker(): void {
    // A young generation of 8 MB (V8's default is larger): the worker's garbage is short-lived
    // (a batch's cells, a group's pages); measured ~20 MiB less peak RSS at the same speed.
    const worker = new Worker(PARQUET_WORKER_FILE, { resourceLimits: { maxYoungGenerationSizeMb: 8 } })
    worker.unref()
    this.worker = worker
    worker.on('message', (m: FromParquetWorker) => {
      // Messages already on their way when the writer was destroyed: its file is closed.
      if (this.destroyed) return
      if (m.type === 'data') {
        // Written as it comes; sendBatch waits for 'drain' before sending more rows.
        this.out.write(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength))
        return
      }
      if (m.type === 'opened') {
        this.answered()
      } else if (m.type === 'ack') {
        this.answered()
        this.batchesInFlight--
      } else if (m.type === 'closed') {
        this.answered()
        this.workerClosed = true
      } else {
        this.fail(new Error(m.message))
      }
      this.wakeUp()
    })
    worker.on('error', (err) => this.fail(err))
    worker.on('exit', (code) => {
      if (!this.workerClosed) this.fail(new Error(`writeParquet: its worker thread exited (code ${code}) before the file was complete`))
    })
  }

  private startWorker(plan: ParquetEncoderPlan): void {
    this.batcher = new CellBatcher(plan.types)
    ;(this.out as unknown as NodeJS.EventEmitter).on('drain', () => this.wakeUp())
    this.post({ type: 'open', plan })
  }

  // Every message gets one answer ('opened', 'ack', 'closed').
  private post(m: ToParquetWorker, transfer?: ArrayBuffer[]): void {
    if (this.unanswered++ === 0) this.worker!.ref()
    this.worker!.postMessage(m, transfer)
  }

  private answered(): void {
    if (--this.unanswered === 0) this.worker?.unref()
  }

  // Backpressure: the batch goes, then the writer waits while too many are on their way or the
  // file's buffer is full.
  private async sendBatch(): Promise<void> {
    if (this.failure) throw this.failure
    const batch = this.batcher!.take()
    this.post({ type: 'rows', batch }, transferables(batch))
    this.batchesInFlight++
    if (this.batchesInFlight > this.peakBatchesInFlight) this.peakBatchesInFlight = this.batchesInFlight
    await this.until(() => this.batchesInFlight < THREAD_MAX_BATCHES && !this.out.writableNeedDrain)
  }

  private async until(ready: () => boolean): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure
      if (ready()) return
      await new Promise<void>((resolve) => (this.wake = resolve))
    }
  }

  private wakeUp(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  private fail(err: Error): void {
    if (this.failure || this.workerClosed) return
    this.failure = err
    if (this.wake) this.wakeUp()
    else this.destroy(err)
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const worker = this.worker
    this.worker = undefined
    this.workerClosed = true
    worker?.terminate().catch(() => {})
    super._destroy(err, callback)
  }
}
