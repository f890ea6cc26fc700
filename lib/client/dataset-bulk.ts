import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  AbortError,
  BulkJobCancelledError,
  BulkJobFailedError,
  InferenceStreamError,
  InvalidOptionError,
} from '../errors.js'
import { readParquet } from '../io/read-parquet.js'
import type { RecordReader } from '../io/record-reader.js'
import {
  BulkClient,
  checkJobRequest,
  isTransient,
  resolveWait,
  type BulkDatasetFile,
  type BulkJobRequest,
  type BulkJobStatus,
} from './bulk-client.js'

/**
 * One output row of a bulk job, as its Parquet shards hold it (docs/bulk.md, "Client"):
 * `id` (the row index as a string), `row` (index in the source split), the source column under its
 * own name (`input_<name>` when it is named like a result column), the flat task columns
 * (`label`, `score`, … per task), `outputs` (the model's outputs as JSON text, or parsed with
 * `parseOutputs`), `error` and `error_code` (null for a row that did not fail).
 */
export interface BulkRow {
  id: string
  row: number
  outputs: unknown
  error: string | null
  error_code: string | null
  [column: string]: unknown
}

/** Options of {@link DatasetBulk}. Give exactly one of `job`, `jobId` and `dataset`. */
export interface DatasetBulkOptions {
  /**
   * Server base URL, `http(s)://host:port`, of a server started with `--data-dir`. Required. Several
   * (front-ends sharing the jobs and the data folder) fail over as {@link BulkClient} does: polls,
   * shard downloads and `cancel()` go to the next on no answer or 502–504; starting the job only
   * when it surely reached no server.
   */
  url: string | readonly string[]
  /** Bearer token. Default none (a server without tokens accepts loopback clients). */
  token?: string
  /** Start this job, wait for it, then read its outputs. */
  job?: BulkJobRequest
  /** Attach to this existing job: wait for it, then read its outputs. */
  jobId?: string
  /** Read output dataset `dataset` directly (no job), at `revision`. */
  dataset?: string
  /** With `dataset`: a branch, tag or commit sha. Default `main` (the latest run). */
  revision?: string
  /** First delay between status polls, in ms; it grows 1.5× per poll up to `maxPollIntervalMs`. Default 250. */
  pollIntervalMs?: number
  /** Longest delay between status polls, in ms. Default 5000. */
  maxPollIntervalMs?: number
  /** Failed requests in a row tolerated while polling or downloading (no answer, 429, 502–504). Default 10. */
  retries?: number
  /** `JSON.parse` the `outputs` column of each row. Default false: JSON text, as stored. */
  parseOutputs?: boolean
  /** Folder of the temporary shard files (one at a time, deleted after use). Default `os.tmpdir()`. */
  tmpDir?: string
  /** Rows buffered before the shard read pauses. Default 16. */
  highWaterMark?: number
  /** Aborts: stops polling and reading and destroys the stream with `AbortError`. The job goes on on the server. */
  signal?: AbortSignal
}

interface Resolved {
  client: BulkClient
  mode: 'job' | 'attach' | 'dataset'
  job: BulkJobRequest | undefined
  jobId: string | undefined
  dataset: string | undefined
  revision: string
  wait: { pollIntervalMs: number; maxPollIntervalMs: number; retries: number }
  parseOutputs: boolean
  tmpDir: string
  highWaterMark: number
  signal: AbortSignal | undefined
}

function resolveOptions(options: DatasetBulkOptions): Resolved {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('DatasetBulk options must be an object')
  const o = { parseOutputs: false, highWaterMark: 16, ...options }
  const given = (['job', 'jobId', 'dataset'] as const).filter((k) => o[k] !== undefined)
  if (given.length !== 1) {
    throw new InvalidOptionError(`DatasetBulk needs exactly one of "job" (start one), "jobId" (attach) and "dataset" (read a revision), got ${given.length ? given.join(', ') : 'none'}`)
  }
  if (o.job !== undefined) checkJobRequest(o.job)
  if (o.jobId !== undefined && (typeof o.jobId !== 'string' || !/^[A-Za-z0-9_-]+$/.test(o.jobId))) {
    throw new InvalidOptionError(`Option "jobId" must be a job id (letters, digits, "_", "-"), got ${JSON.stringify(o.jobId)}`)
  }
  if (o.dataset !== undefined && (typeof o.dataset !== 'string' || o.dataset.length === 0)) throw new InvalidOptionError(`Option "dataset" must be a non-empty string, got ${JSON.stringify(o.dataset)}`)
  if (o.revision !== undefined) {
    if (o.dataset === undefined) throw new InvalidOptionError('Option "revision" goes with "dataset" (a job\'s outputs are read at the revision it committed)')
    if (typeof o.revision !== 'string' || o.revision.length === 0) throw new InvalidOptionError(`Option "revision" must be a non-empty string, got ${JSON.stringify(o.revision)}`)
  }
  if (typeof o.parseOutputs !== 'boolean') throw new InvalidOptionError(`Option "parseOutputs" must be a boolean, got ${JSON.stringify(o.parseOutputs)}`)
  if (!Number.isInteger(o.highWaterMark) || o.highWaterMark < 1) throw new InvalidOptionError(`Option "highWaterMark" must be an integer >= 1, got ${JSON.stringify(o.highWaterMark)}`)
  if (o.tmpDir !== undefined && (typeof o.tmpDir !== 'string' || o.tmpDir.length === 0)) throw new InvalidOptionError('Option "tmpDir" must be a folder path')
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidOptionError('Option "signal" must be an AbortSignal')
  return {
    client: new BulkClient({ url: o.url, token: o.token }),
    mode: o.job ? 'job' : o.jobId ? 'attach' : 'dataset',
    job: o.job,
    jobId: o.jobId,
    dataset: o.dataset,
    revision: o.revision ?? 'main',
    wait: resolveWait(o),
    parseOutputs: o.parseOutputs,
    tmpDir: o.tmpDir ?? tmpdir(),
    highWaterMark: o.highWaterMark,
    signal: o.signal,
  }
}

// Data shards of an output dataset: `data/**.parquet`, in path order with numbers compared as
// numbers (`-2` before `-10`; the server's zero-padded names sort the same either way).
const collator = new Intl.Collator('en', { numeric: true })
function dataShards(siblings: BulkDatasetFile[]): BulkDatasetFile[] {
  return siblings.filter((s) => s.rfilename.startsWith('data/') && s.rfilename.endsWith('.parquet')).sort((a, b) => collator.compare(a.rfilename, b.rfilename))
}

/**
 * Object-mode Readable of the output rows of a bulk job ({@link BulkRow}). It starts a job
 * (`job`), attaches to one (`jobId`) or reads any revision of an output dataset (`dataset` +
 * `revision`). For a job it polls the status with backoff until the job is final; a completed job's
 * outputs are then read at the commit the job made: each Parquet shard is downloaded to a temporary
 * file (streamed), read one row group at a time, and deleted. Rows are pushed only as the consumer
 * reads (backpressure): memory is one row group plus `highWaterMark` rows.
 *
 * Events besides the stream's own: `'job'` (`{jobid, bulk_name}`, once known), `'progress'` (each
 * polled {@link BulkJobStatus}), `'shard'` (`{path, index, count}`, as each shard starts).
 *
 * Errors surface through `destroy(err)`: a failed job `BulkJobFailedError` (`ERR_JOB_FAILED`,
 * `jobError` = the job's error), a cancelled one `BulkJobCancelledError` (`ERR_JOB_CANCELLED`),
 * a refused request `HttpError` (`ERR_HTTP`, the server's message, `status`, `remoteCode`), the
 * signal `AbortError`. Destroying the stream does not cancel the job (see {@link cancel}).
 *
 * @example
 * await pipeline(
 *   new DatasetBulk({ url, token, job: { model: 'builtin/sentiment', dataset_name: 'reviews',
 *     dataset_config: 'default', dataset_split: 'train', dataset_column: 'text' } }),
 *   writeRecords('reviews.sentiment.jsonl', { kind: 'records' }),
 * )
 */
export class DatasetBulk extends Readable {
  private readonly o: Resolved
  private readonly ac = new AbortController()
  private readonly done: Promise<void>
  private readonly onAbort: (() => void) | undefined
  private jobIdValue: string | undefined
  private bulkNameValue: string | undefined
  private revisionValue: string | undefined
  private statusValue: BulkJobStatus | undefined
  private reader: RecordReader<Record<string, unknown>> | undefined
  private wanted = false
  private waiter: (() => void) | undefined
  private rows = 0

  constructor(options: DatasetBulkOptions) {
    const o = resolveOptions(options)
    super({ objectMode: true, highWaterMark: o.highWaterMark })
    this.o = o
    this.jobIdValue = o.jobId
    this.bulkNameValue = o.dataset ?? o.job?.bulk_name
    if (o.mode === 'dataset') this.revisionValue = o.revision
    const signal = o.signal
    if (signal) {
      this.onAbort = () => this.destroy(new AbortError(undefined, { cause: signal.reason }))
      if (signal.aborted) queueMicrotask(this.onAbort)
      else signal.addEventListener('abort', this.onAbort, { once: true })
    }
    // Started on the next tick, so listeners of 'job' and 'progress' attached now see everything.
    this.done = new Promise<void>((r) => setImmediate(r))
      .then(() => (this.destroyed ? undefined : this.run()))
      .catch((err: unknown) => {
        if (!this.destroyed) this.destroy(toError(err))
      })
  }

  /** The job's id: given, or once the job is started. Undefined when reading a `dataset`. */
  get jobId(): string | undefined {
    return this.jobIdValue
  }

  /** The output dataset: given, or once the job is known. */
  get bulkName(): string | undefined {
    return this.bulkNameValue
  }

  /** The commit sha read: once the job completed, or once the `dataset`'s revision is resolved (before: the revision given). */
  get revision(): string | undefined {
    return this.revisionValue
  }

  /** The job's last polled status. Undefined when reading a `dataset`, or before the first poll. */
  get status(): BulkJobStatus | undefined {
    return this.statusValue
  }

  /** Rows pushed so far. */
  get rowsRead(): number {
    return this.rows
  }

  /**
   * Cancels the job on the server; the stream then ends with `BulkJobCancelledError` at its next
   * poll. Rejects with `HttpError` (409, remoteCode `ERR_JOB_STATE`) when the job already ended.
   */
  async cancel(): Promise<BulkJobStatus> {
    const id = this.jobIdValue ?? (await this.jobKnown())
    return this.o.client.cancel(id)
  }

  // The job id, once the start request has answered.
  private jobKnown(): Promise<string> {
    if (this.o.mode === 'dataset') return Promise.reject(new InvalidOptionError('cancel(): this DatasetBulk reads a dataset, not a job'))
    return new Promise((resolve, reject) => {
      const onJob = (j: { jobid: string }): void => {
        this.off('close', onClose)
        resolve(j.jobid)
      }
      const onClose = (): void => {
        this.off('job', onJob)
        reject(new InvalidOptionError('cancel(): the stream closed before its job was started'))
      }
      this.once('job', onJob)
      this.once('close', onClose)
    })
  }

  private async run(): Promise<void> {
    const { client, mode } = this.o
    const signal = this.ac.signal
    let name: string
    let revision: string
    if (mode === 'dataset') {
      name = this.o.dataset as string
      revision = this.o.revision
    } else {
      let jobId = this.o.jobId as string
      if (mode === 'job') {
        const started = await client.start(this.o.job as BulkJobRequest, { signal })
        jobId = started.jobid
        this.jobIdValue = started.jobid
        this.bulkNameValue = started.bulk_name
        this.emit('job', { jobid: started.jobid, bulk_name: started.bulk_name })
      }
      const final = await client.wait(jobId, {
        ...this.o.wait,
        signal,
        onStatus: (s) => this.onStatus(s),
      })
      const details = { jobId, jobError: final.error, jobStatus: final as unknown as Record<string, unknown> }
      if (final.state === 'failed') throw new BulkJobFailedError(`Bulk job ${jobId} failed: ${final.error ?? 'no error given'}`, details)
      if (final.state === 'cancelled') throw new BulkJobCancelledError(`Bulk job ${jobId} was cancelled${final.error && final.error !== 'Cancelled' ? `: ${final.error}` : ''}`, details)
      if (typeof final.revision !== 'string') throw new BulkJobFailedError(`Bulk job ${jobId} completed without an output revision`, details)
      name = final.bulk_name
      revision = final.revision
    }
    const info = await this.retrying(() => client.info(name, revision, { signal }))
    // Pinned to the sha: a run committed meanwhile cannot mix into this read.
    this.revisionValue = info.sha
    this.bulkNameValue = name
    const shards = dataShards(info.siblings)
    if (shards.length === 0) {
      this.push(null)
      return
    }
    const dir = await mkdtemp(join(this.o.tmpDir, 'inference-stream-bulk-'))
    try {
      for (let i = 0; i < shards.length; i++) {
        const shard = shards[i]
        const file = join(dir, `shard-${i}.parquet`)
        await this.retrying(() => client.download(name, info.sha, shard.rfilename, file, { signal, size: shard.size }))
        if (this.destroyed) return
        this.emit('shard', { path: shard.rfilename, index: i, count: shards.length })
        await this.pushRows(file)
        await rm(file, { force: true })
        if (this.destroyed) return
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
    this.push(null)
  }

  private onStatus(s: BulkJobStatus): void {
    const first = this.statusValue === undefined
    this.statusValue = s
    if (this.bulkNameValue === undefined || first) this.bulkNameValue = s.bulk_name
    if (s.revision) this.revisionValue = s.revision
    if (first && this.o.mode === 'attach') this.emit('job', { jobid: s.jobid, bulk_name: s.bulk_name })
    this.emit('progress', s)
  }

  // Reads one shard's rows, pushing each only while the consumer wants more.
  private async pushRows(file: string): Promise<void> {
    const reader = readParquet(file)
    this.reader = reader
    try {
      for await (const record of reader) {
        if (this.destroyed) return
        const row = this.toRow(record)
        this.rows++
        this.wanted = false
        if (!this.push(row) && !this.wanted) await this.demand()
        if (this.destroyed) return
      }
    } catch (err) {
      // A reader torn down by our own destroy: not an error of the stream.
      if (this.destroyed) return
      throw err
    } finally {
      this.reader = undefined
      reader.destroy()
    }
  }

  private toRow(record: Record<string, unknown>): BulkRow {
    if (this.o.parseOutputs && typeof record.outputs === 'string') {
      try {
        record.outputs = JSON.parse(record.outputs)
      } catch {
        // Not JSON (a dataset written by someone else): kept as text.
      }
    }
    return record as BulkRow
  }

  private demand(): Promise<void> {
    return new Promise((resolve) => (this.waiter = resolve))
  }

  // Runs an idempotent request again after a transient failure, up to `retries` times in a row.
  private async retrying<T>(fn: () => Promise<T>): Promise<T> {
    let delay = this.o.wait.pollIntervalMs
    for (let failures = 0; ; failures++) {
      try {
        return await fn()
      } catch (err) {
        if (!isTransient(err) || failures >= this.o.wait.retries || this.ac.signal.aborted) throw err
      }
      await sleep(delay, undefined, { signal: this.ac.signal })
      delay = Math.min(this.o.wait.maxPollIntervalMs, Math.round(delay * 1.5))
    }
  }

  override _read(): void {
    this.wanted = true
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.ac.abort()
    if (this.onAbort) this.o.signal?.removeEventListener('abort', this.onAbort)
    this.reader?.destroy()
    const w = this.waiter
    this.waiter = undefined
    w?.()
    // 'close' only once the run has stopped and its temporary files are gone.
    this.done.then(
      () => callback(err),
      () => callback(err),
    )
  }
}

function toError(err: unknown): Error {
  if (err instanceof InferenceStreamError) return err
  if (err instanceof Error) return err
  return new InferenceStreamError(String(err))
}
