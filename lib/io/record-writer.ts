import { createWriteStream, type WriteStream } from 'node:fs'
import { rename } from 'node:fs/promises'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import { outputFileError } from './fs-errors.js'
import type { RecordFormat } from './formats.js'
import { checkBoolean, checkColumns, checkInteger, checkOptionsObject } from './options.js'
import { ResultRows, type ResultRowsOptions } from './result-row.js'

/** Options every writer takes. */
export interface WriterOptions extends ResultRowsOptions {
  /** Exactly these columns, in this order (others dropped, missing ones empty). Default: from the first `sampleSize` rows. */
  columns?: string[]
  /**
   * Rows held back to decide the columns (and Parquet types) before the first is written: a column
   * first seen after them is dropped (the raw `outputs` keep everything). Default 100.
   */
  sampleSize?: number
  /**
   * Write a file path through `<path>.partial`, renamed to `path` only when the file is complete,
   * so a failed or killed run never leaves a truncated file that looks whole. Default true.
   */
  atomic?: boolean
  /** Rows buffered by the writable side before `write()` returns false. Default 16. */
  highWaterMark?: number
}

/** A writer's options after defaults and checks. */
export type ResolvedWriterOptions<O extends WriterOptions> = O & { sampleSize: number; atomic: boolean }

/** Applies the defaults of {@link WriterOptions} and checks them, naming a wrong option. */
export function resolveWriterOptions<O extends WriterOptions>(options: O, what: string): ResolvedWriterOptions<O> {
  checkOptionsObject(options, what)
  const o = { sampleSize: 100, atomic: true, ...options }
  checkColumns('columns', o.columns)
  checkInteger('sampleSize', o.sampleSize, 1)
  checkBoolean('atomic', o.atomic)
  if (o.highWaterMark !== undefined) checkInteger('highWaterMark', o.highWaterMark, 1)
  return o
}

/**
 * Object-mode Writable of InferenceStream results (or records, `kind: 'records'`) into a file, the
 * base of every writer. Holds the first `sampleSize` rows to decide the columns, then writes each
 * row as it comes, holding `write`'s callback while the file is busy (backpressure). `'finish'`
 * comes only once the file is complete, closed and (atomic) renamed into place. Errors surface
 * through `destroy(err)`: an `OutputFileError` naming the path for file failures.
 */
export abstract class RecordWriter extends Writable {
  /** The output file, or undefined for a stream output. */
  readonly path: string | undefined
  /** The output's format. */
  readonly format: RecordFormat
  /** Rows written to the file so far (held sample rows not counted until written). */
  rowsWritten = 0

  /** Turns items into rows. */
  protected readonly rows: ResultRows
  /** The byte stream being written: the file (`<path>.partial` when atomic), or the given stream. */
  protected out!: NodeJS.WritableStream & { destroy(err?: Error): unknown; writableNeedDrain?: boolean }
  private readonly target: string | Writable
  private readonly tempPath: string | undefined
  private readonly sampleSize: number
  private sample: Record<string, unknown>[] | undefined = []

  constructor(format: RecordFormat, target: string | Writable, options: ResolvedWriterOptions<WriterOptions>) {
    super({ objectMode: true, highWaterMark: options.highWaterMark })
    this.format = format
    this.target = target
    this.path = typeof target === 'string' ? target : undefined
    this.tempPath = this.path !== undefined && options.atomic ? `${this.path}.partial` : this.path
    this.sampleSize = options.sampleSize
    this.rows = new ResultRows(options)
  }

  /** Starts the file with its columns, decided from `sample` (possibly empty). */
  protected abstract begin(sample: Record<string, unknown>[]): Promise<void>
  /** Writes one row, resolving when the file can take more. */
  protected abstract writeRow(row: Record<string, unknown>): Promise<void>
  /** Completes the file (footer) and ends `out`. */
  protected abstract complete(): Promise<void>

  // Open the file before the first row so a bad path fails at once, not after a sample of inference.
  override _construct(callback: (err?: Error | null) => void): void {
    if (typeof this.target !== 'string') {
      this.out = this.target
      callback()
      return
    }
    // A 1 MiB buffer: with the default 16 KiB, rows wait on a disk write every few hundred rows.
    const file: WriteStream = createWriteStream(this.tempPath!, { highWaterMark: 1024 * 1024 })
    const onError = (err: Error): void => {
      file.off('open', onOpen)
      callback(outputFileError(this.path, err, 'create output file'))
    }
    const onOpen = (): void => {
      file.off('error', onError)
      // Later failures (ENOSPC...) fail the writer, naming the path.
      file.on('error', (err) => this.destroy(outputFileError(this.path, err)))
      this.out = file
      callback()
    }
    file.once('error', onError)
    file.once('open', onOpen)
  }

  override _write(item: unknown, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    let row: Record<string, unknown>
    try {
      row = this.rows.toRow(item)
    } catch (err) {
      callback(err as Error)
      return
    }
    if (this.sample) {
      this.sample.push(row)
      if (this.sample.length < this.sampleSize) {
        callback()
        return
      }
      this.flushSample().then(() => callback(), callback)
      return
    }
    this.writeRow(row).then(() => {
      this.rowsWritten++
      callback()
    }, callback)
  }

  private async flushSample(): Promise<void> {
    const sample = this.sample!
    this.sample = undefined
    await this.begin(sample)
    for (const row of sample) {
      await this.writeRow(row)
      this.rowsWritten++
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    ;(async () => {
      if (this.sample) await this.flushSample()
      await this.complete()
      const file = this.out as Partial<WriteStream>
      if (this.path !== undefined && typeof file.close === 'function' && !file.closed) await once(this.out, 'close')
      if (this.tempPath !== this.path) {
        try {
          await rename(this.tempPath!, this.path!)
        } catch (err) {
          throw outputFileError(this.path, err, 'rename the finished file into')
        }
      }
    })().then(() => callback(), (err) => callback(err instanceof Error ? err : new Error(String(err))))
  }

  /** Writes `data` to `out`, resolving at once, or after 'drain' when the stream's buffer is full. */
  protected async send(data: string | Buffer): Promise<void> {
    if (this.out.write(data)) return
    if (this.destroyed) return
    await once(this.out as NodeJS.EventEmitter, 'drain')
  }

  /** Ends `out`, resolving when it has flushed. */
  protected async endOut(): Promise<void> {
    const out = this.out as Writable
    await new Promise<void>((resolve, reject) => {
      out.end((err?: Error | null) => (err ? reject(err) : resolve()))
    })
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Close our file by ending it, not destroying it: writes already queued (parquetjs-lite does not
    // await its header write) then complete instead of failing unobserved. The partial file stays
    // for inspection; it is not at `path`, and the next run overwrites it.
    const file = this.out as WriteStream | undefined
    if (file && typeof this.target === 'string' && !file.destroyed && !file.writableEnded) {
      file.on('error', () => {})
      file.end()
    }
    callback(err)
  }
}
