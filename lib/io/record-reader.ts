import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import { BadRecordError, InferenceStreamError } from '../errors.js'
import { inputFileError } from './fs-errors.js'
import type { RecordFormat } from './formats.js'
import { checkInteger, checkOneOf } from './options.js'

/** Options every reader takes. */
export interface ReaderOptions {
  /**
   * What a malformed record does. `'skip'` (default): it is dropped, counted in `badRecords` and
   * reported by a `'bad-record'` event with a `BadRecordError` naming its line; the stream goes on.
   * `'error'`: the reader is destroyed with that error, after every record before it was emitted.
   */
  onBadRecord?: 'skip' | 'error'
  /** Records buffered by the readable side before the file is paused. Default 16 (Node's object-mode default). */
  highWaterMark?: number
}

/** What a reader's source yields: batches of records, with a malformed record's error in its place. */
export type RecordBatch<T> = Array<T | BadRecordError>

/** A reader's source: an async iterable of batches, given the reader so it can own its streams. */
export type RecordSource<T> = (reader: RecordReader<T>) => AsyncIterable<RecordBatch<T>>

const EMPTY: RecordBatch<never> = []

/**
 * Object-mode Readable of records, the base of every reader. Pulls one batch (a file chunk's rows,
 * a slice of a Parquet row group) from its source only when the consumer wants more, so a paused consumer
 * pauses the file read: memory is one batch plus `highWaterMark` records.
 *
 * Events: the usual Readable ones, plus `'bad-record'` (a `BadRecordError`) per skipped record.
 * Errors (a missing file: `InputFileError`) surface through `destroy(err)`: 'error' once, 'close' last.
 */
export class RecordReader<T = Record<string, unknown>> extends Readable {
  /** The input file, or undefined for a stream input. */
  readonly path: string | undefined
  /** The input's format. */
  readonly format: RecordFormat
  /** Records emitted so far. */
  recordsRead = 0
  /**
   * Malformed records skipped so far (`onBadRecord: 'skip'`). Each one is also emitted as
   * `'bad-record'` with a `BadRecordError`: its `line` (1-based, where the record starts in the
   * file, quoted line breaks of earlier records included), `reason` (`unclosed quote: …`,
   * `expected 3 columns, got 5`, `not valid JSON (…)`) and `path`.
   */
  badRecords = 0

  private readonly onBadRecord: 'skip' | 'error'
  private readonly batches: AsyncIterator<RecordBatch<T>>
  private readonly owned = new Set<{ destroy(err?: Error): unknown }>()
  private batch: RecordBatch<T> = EMPTY
  private index = 0
  private pulling = false
  private readAgain = false
  private ended = false
  private failure: BadRecordError | undefined

  constructor(format: RecordFormat, path: string | undefined, source: RecordSource<T>, options: ReaderOptions = {}) {
    const o = { onBadRecord: 'skip' as const, ...options }
    checkOneOf('onBadRecord', o.onBadRecord, ['skip', 'error'])
    if (o.highWaterMark !== undefined) checkInteger('highWaterMark', o.highWaterMark, 1)
    super({ objectMode: true, highWaterMark: o.highWaterMark })
    this.format = format
    this.path = path
    this.onBadRecord = o.onBadRecord
    this.batches = source(this)[Symbol.asyncIterator]()
  }

  /** Destroys `stream` with the reader, so a destroyed reader never leaves a file open. */
  own<S extends { destroy(err?: Error): unknown }>(stream: S): S {
    this.owned.add(stream)
    return stream
  }

  /** Opens `input` (a path, or a Readable as is) as a byte stream owned by the reader. */
  openInput(input: string | Readable): Readable {
    return this.own(typeof input === 'string' ? createReadStream(input) : input)
  }

  override _read(): void {
    if (this.failure) return
    if (this.pulling) {
      // A read asked for while a pull is still winding down (push() can call back into _read
      // synchronously): remember it, or the stream would wait forever for a push.
      this.readAgain = true
      return
    }
    this.pulling = true
    this.pull().finally(() => {
      this.pulling = false
      if (this.readAgain && !this.destroyed && !this.readableEnded && !this.ended) {
        this.readAgain = false
        this._read()
      }
    })
  }

  private async pull(): Promise<void> {
    try {
      for (;;) {
        while (this.index < this.batch.length) {
          const item = this.batch[this.index++]
          if (item instanceof BadRecordError) {
            if (this.onBadRecord === 'error') {
              this.failWhenRead(item)
              return
            }
            this.badRecords++
            this.emit('bad-record', item)
            continue
          }
          // A source never yields null (it would end the stream); a custom one might.
          if (item === null) continue
          this.recordsRead++
          if (!this.push(item)) return
        }
        this.batch = EMPTY
        this.index = 0
        const next = await this.batches.next()
        if (this.destroyed) return
        if (next.done) {
          this.ended = true
          this.push(null)
          return
        }
        this.batch = next.value
      }
    } catch (err) {
      if (!this.destroyed) this.destroy(this.toError(err))
    }
  }

  // destroy() drops what is buffered; strict mode promises every record before the bad one, so
  // the error waits until the consumer has read them (see read()).
  private failWhenRead(err: BadRecordError): void {
    if (this.readableLength === 0) this.destroy(err)
    else this.failure = err
  }

  override read(size?: number): T | null {
    const chunk = super.read(size) as T | null
    if (this.failure && this.readableLength === 0 && !this.destroyed) {
      const err = this.failure
      // Next tick: the record just read reaches the consumer first.
      process.nextTick(() => this.destroy(err))
    }
    return chunk
  }

  private toError(err: unknown): Error {
    if (err instanceof InferenceStreamError) return err
    // fs errors (ENOENT, EISDIR, EACCES...) name the path; anything else is kept as it is.
    if (typeof (err as NodeJS.ErrnoException | null)?.syscall === 'string') return inputFileError(this.path, err)
    return err instanceof Error ? err : new Error(String(err))
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    for (const s of this.owned) s.destroy()
    this.owned.clear()
    // Let the source run its `finally` (close a Parquet file); not awaited: it may be waiting on a
    // read that only ends because of the destroy above.
    this.batches.return?.().catch(() => {})
    callback(err)
  }
}
