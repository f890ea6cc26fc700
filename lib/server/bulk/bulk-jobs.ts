import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { BadRecordError, InferenceStreamError, InvalidPayloadError, JobStateError, LimitExceededError, MissingInputError, toWireError } from '../../errors.js'
import { readRecords } from '../../io/read-records.js'
import { RESERVED_COLUMNS } from '../../io/result-row.js'
import { writeParquet } from '../../io/write-parquet.js'
import { Limiter } from '../../limiter.js'
import type { ModelRegistry } from '../../models/pipeline.js'
import { scrubPaths, type InputDatasets, type ResolvedDataset } from '../datasets/input-datasets.js'
import type { OutputDatasets } from '../datasets/output-datasets.js'
import { groupKey, type WorkItem } from '../queue/work-queue.js'
import type { JobRecord, JobStore, ResultRow } from '../store/job-store.js'
import type { StreamHub } from '../stream-hub.js'
import { isErrorJson } from '../streams/local-sinks.js'
import { datasetCard } from './dataset-card.js'

/** Settings of {@link BulkJobs}. */
export interface BulkJobsOptions {
  store: JobStore
  /** The input datasets a tenant (by id) reads. */
  inputs: (tenant: string) => InputDatasets
  /** The output datasets a tenant's jobs commit to (its own). */
  outputs: (tenant: string) => OutputDatasets
  hub: StreamHub
  registry: ModelRegistry
  /**
   * Most items of one job queued or running at once. The fairness rule: a job never has more
   * than this in the shared queue, so a live stream's item waits behind at most this many job
   * items of its model. Default: workers × maxBatch.
   */
  maxInFlight: number
  /** Rows per output Parquet shard. Default 100000. */
  shardRows: number
  /** Jobs run at once; others wait in state `queued`. Default 2. */
  maxConcurrentJobs: number
  /**
   * Largest value of a row, as JSON bytes (the server's `maxInputsBytes`): a larger one fails alone
   * with `ERR_LIMIT_EXCEEDED` and is not run. Default 1 MiB.
   */
  maxInputsBytes?: number
  /**
   * This node's name in job claims: a job runs on the one node that holds its claim. Nodes sharing
   * a job store need distinct names; a node restarted under its old name takes its jobs back at
   * once, one under a new name once their claims expire.
   */
  node: string
  /**
   * How long a claim lasts unless renewed, in ms; it is renewed every third of it. A node that
   * dies loses its jobs after this, and a cancel sent to another node stops a job within a third
   * of it. Default 30000.
   */
  leaseMs?: number
  logger?: Logger
}

/** What starts a job (the body of `POST /bulk/run/{compute}/{model}`, checked). */
export interface JobRequest {
  /** Id of the tenant that owns the job. */
  tenant: string
  model: string
  compute: string
  dataset: { name: string; config: string; split: string; column: string }
  parameters?: Record<string, unknown>
  /** Other source columns copied into the outputs (checked with {@link bulkRecordColumns}). */
  keepColumns?: string[]
  bulkName: string
}

/**
 * The input columns of a job's output rows: the row index (`row`, or `row_index` when a source
 * column is named `row`), the model's input column, then the kept columns in order. A writer puts
 * `input_` before a name that a result column has (`id`, `label`, ...); two columns that would end
 * with one name are refused.
 * @throws InvalidPayloadError naming the clash.
 */
export function bulkRecordColumns(column: string, keep: readonly string[]): { index: string; columns: string[] } {
  const columns = [column, ...keep.filter((c) => c !== column)]
  const index = columns.includes('row') ? 'row_index' : 'row'
  const seen = new Map<string, string>()
  for (const name of [index, ...columns]) {
    const out = RESERVED_COLUMNS.has(name) ? `input_${name}` : name
    const earlier = seen.get(out)
    if (earlier !== undefined) {
      const what = (n: string): string => (n === index ? `the row index "${n}"` : `column "${n}"`)
      throw new InvalidPayloadError(`Kept ${what(name)} would be written as "${out}", as ${what(earlier)} is: keep only one of them`)
    }
    seen.set(out, name)
  }
  return { index, columns }
}

const DEFAULT_MAX_INPUTS_BYTES = 1024 * 1024
const DEFAULT_LEASE_MS = 30_000

// Results wait this long (or for this many) before one SQLite transaction stores them.
const SAVE_EVERY_MS = 100
const SAVE_EVERY_ROWS = 512
// How often the results of rows pending in the state layer (from before a restart) are looked up.
const AWAIT_POLL_MS = 200

/**
 * Runs bulk jobs: a model over a dataset column, through the same queue and workers as streams.
 * Each result is stored durably (SQLite) as it arrives, so a restarted server resumes a job
 * without running a stored row again; when every row is in, the outputs are written as Parquet
 * shards plus a dataset card and committed to the output dataset (a git repository).
 *
 * Several nodes may share one job store: a job runs on the node that claimed it
 * ({@link JobStore.claim}), which renews the claim every third of `leaseMs`. A node that cannot
 * renew (another node took the job over after its claim expired, or it was cancelled from another
 * node) stops the job at once without writing its state, and every write of a job's progress is
 * guarded in SQL by the claim, so a stale node can neither store rows nor end the job. The same
 * timer picks up jobs nobody holds: queued ones and those of a node that died.
 */
export class BulkJobs {
  // Jobs running here: their abort and when their claim was last renewed (epoch ms).
  private readonly running = new Map<string, { ac: AbortController; renewed: number }>()
  private readonly done = new Map<string, Promise<void>>()
  // The split each running job reads, to take its paths out of error messages.
  private readonly resolved = new Map<string, ResolvedDataset>()
  private readonly leaseMs: number
  private readonly timer: NodeJS.Timeout
  // Set by resumeUnfinished: from then on the timer also takes jobs nobody holds.
  private resumed = false
  private closing = false

  constructor(private readonly o: BulkJobsOptions) {
    this.leaseMs = o.leaseMs ?? DEFAULT_LEASE_MS
    // One timer renews the claims of the jobs running here and looks for jobs to take.
    this.timer = setInterval(() => this.tick(), Math.max(1, Math.floor(this.leaseMs / 3)))
    this.timer.unref()
  }

  /** This node's name in job claims. */
  get node(): string {
    return this.o.node
  }

  /** Creates a job (state `queued`) and starts it here if a slot is free (else another node, or this one later, does). */
  start(req: JobRequest): JobRecord {
    const job = this.o.store.create({
      tenant: req.tenant,
      bulkName: req.bulkName,
      model: req.model,
      compute: req.compute,
      dataset: req.dataset,
      parameters: req.parameters ?? null,
      keepColumns: req.keepColumns ?? [],
    })
    this.startQueued()
    return job
  }

  /**
   * Starts the jobs a previous server left queued or running (those nobody holds, or this node
   * held under the same name), and from then on picks up, at each renewal, jobs whose claim
   * expired. Returns how many jobs are unfinished in the store.
   */
  resumeUnfinished(): number {
    this.resumed = true
    const jobs = this.o.store.unfinished()
    this.startQueued()
    return jobs.length
  }

  // Claims and starts jobs nobody holds (interrupted running ones first, then the oldest queued)
  // while fewer than maxConcurrentJobs run here.
  private startQueued(): void {
    if (this.closing || this.running.size >= this.o.maxConcurrentJobs) return
    const { store, node } = this.o
    const now = Date.now()
    for (const job of store.claimable(now, node)) {
      if (this.running.size >= this.o.maxConcurrentJobs) return
      if (this.running.has(job.id)) continue
      // Another node may have claimed it since the listing: the claim is the one atomic step.
      if (store.claim(job.id, node, this.leaseMs, now)) this.launch(job, now)
    }
  }

  // Every third of a lease: renews the claims of the jobs running here (a job whose claim is gone
  // stops), then takes jobs nobody holds.
  private tick(): void {
    if (this.closing) return
    const { store, node } = this.o
    const now = Date.now()
    for (const [id, run] of this.running) {
      if (run.ac.signal.aborted) continue
      let held: boolean
      try {
        held = store.renewClaim(id, node, this.leaseMs, now)
      } catch (err) {
        // The store is busy or broken: keep going while the claim lasts, stop before another node may take it.
        this.o.logger?.error({ err, job: id }, 'renewing a bulk job claim failed')
        if (now - run.renewed >= this.leaseMs - this.leaseMs / 3) this.lose(id, 'its claim could not be renewed')
        continue
      }
      if (held) run.renewed = now
      else this.lose(id)
    }
    if (!this.resumed) return
    try {
      this.startQueued()
    } catch (err) {
      this.o.logger?.error({ err }, 'looking for bulk jobs to run failed')
    }
  }

  // Stops a job running here that this node no longer holds, writing nothing to the store: it was
  // cancelled (from another node: a cancel sent here aborts the run itself), or another node runs it now.
  private lose(id: string, why?: string): void {
    const run = this.running.get(id)
    if (!run || run.ac.signal.aborted) return
    const job = this.o.store.get(id)
    if (job?.state === 'cancelled') this.o.logger?.info({ job: id }, 'bulk job cancelled on another node: stopped here')
    else this.o.logger?.warn({ job: id, node: job?.claimedBy ?? undefined, state: job?.state }, `bulk job stopped here: ${why ?? (job?.claimedBy ? 'another node holds its claim' : 'this node no longer holds its claim')}`)
    run.ac.abort()
  }

  /**
   * Cancels a queued or running job, whichever node runs it: the store says `cancelled` at once;
   * a run here stops at once, a run on another node at its next renewal. False when the job is
   * unknown or already ended.
   */
  cancel(id: string): boolean {
    if (!this.o.store.cancel(id)) return false
    this.running.get(id)?.ac.abort()
    return true
  }

  /** Resolves when a job's run here ends (tests, shutdown). */
  async settled(id: string): Promise<void> {
    await this.done.get(id)
  }

  /** Whether a job runs on this node now. */
  runs(id: string): boolean {
    return this.running.has(id)
  }

  private launch(job: JobRecord, claimed: number): void {
    if (this.closing || this.running.has(job.id)) return
    const ac = new AbortController()
    this.running.set(job.id, { ac, renewed: claimed })
    const run = this.run(job, ac.signal)
      .catch((err: unknown) => {
        if (ac.signal.aborted) return // cancelled, the claim was lost, or the server is closing: state already set / kept
        const raw = err instanceof Error ? err.message : String(err)
        // The message goes to the client in the job's status: no server path in it.
        const message = this.resolved.has(job.id) ? scrubPaths(raw, this.resolved.get(job.id)!) : raw
        this.o.logger?.error({ err, job: job.id }, 'bulk job failed')
        if (!this.o.store.finish(job.id, this.o.node, { state: 'failed', error: message })) this.lose(job.id)
      })
      .finally(() => {
        this.running.delete(job.id)
        this.resolved.delete(job.id)
        this.startQueued()
      })
    this.done.set(job.id, run)
  }

  // Runs a job this node has claimed. Every write is guarded by the claim; losing it (lose())
  // aborts `signal`.
  private async run(job: JobRecord, signal: AbortSignal): Promise<void> {
    const { store, node } = this.o
    const inputs = this.o.inputs(job.tenant)
    const resolved = await inputs.resolve(job.dataset.name, job.dataset.config, job.dataset.split)
    this.resolved.set(job.id, resolved)
    const total = job.total ?? (await inputs.countRows(resolved))
    if (signal.aborted) return
    // Cancelled (or taken over) while the split was being looked at: leave it.
    if (!store.setRunning(job.id, node, total ?? null)) return this.lose(job.id)
    this.o.logger?.info({ job: job.id, node, model: job.model, rows: total ?? undefined, resumedAt: job.processed || undefined }, 'bulk job started')
    await this.runRows(job, resolved, signal)
    if (signal.aborted) return
    const stored = store.get(job.id) as JobRecord
    if (stored.state !== 'running' || stored.claimedBy !== node) return this.lose(job.id)
    const revision = await this.publish(stored, resolved, signal)
    if (signal.aborted) return
    if (!store.finish(job.id, node, { state: 'completed', revision, total: stored.processed })) {
      // Lost between the last check and here (a commit was made all the same; the node that holds the job makes its own).
      return this.lose(job.id)
    }
    this.o.logger?.info(
      { job: job.id, rows: stored.processed, failed: stored.failed || undefined, seconds: Math.round((Date.now() / 1000 - stored.createdAt) * 10) / 10, dataset: stored.bulkName, revision },
      'bulk job completed',
    )
    store.deleteResults(job.id)
  }

  // Sends every row not stored yet through the queue, at most maxInFlight at a time, and stores
  // results in batched transactions (while this node holds the job's claim).
  private async runRows(job: JobRecord, resolved: ResolvedDataset, signal: AbortSignal): Promise<void> {
    const { store, hub, node } = this.o
    const column = job.dataset.column
    const owner = `job\n${job.id}`
    const group = groupKey(job.model, job.compute, job.parameters ?? undefined)
    const limiter = new Limiter(this.o.maxInFlight)
    // Aborts on the job's signal, or when storing results failed: the reader loop stops either way.
    const stop = new AbortController()
    let pending: ResultRow[] = []
    let timer: NodeJS.Timeout | undefined
    let failure: Error | undefined
    const cancels = new Set<() => void>()

    const save = (): void => {
      if (timer) clearTimeout(timer)
      timer = undefined
      if (pending.length === 0 || signal.aborted) return
      const rows = pending
      pending = []
      try {
        store.saveResults(job.id, rows, { claimedBy: node })
      } catch (err) {
        // The job is no longer this node's (cancelled, or taken over): stop, writing nothing more.
        if (err instanceof JobStateError) this.lose(job.id)
        else failure = err as Error
        stop.abort()
      }
    }
    // `outputs` as JSON text (a result from the state layer), or a value to serialize (an error body
    // made here). The bill is not the job store's: the state layer billed what a model ran.
    const add = (index: number, outputs: unknown, error: string | null, json = false): void => {
      pending.push({ index, outputs: json ? (outputs as string) : JSON.stringify(outputs), error })
      if (pending.length >= SAVE_EVERY_ROWS) save()
      else timer ??= setTimeout(save, SAVE_EVERY_MS)
    }
    // A row's result from the state layer (JSON text).
    const addResult = (i: number, outputs: string): void => {
      const body = isErrorJson(outputs) ? (JSON.parse(outputs) as unknown) : undefined
      // A shutdown answer is not a result: the row stays to do, for the next server.
      if (isShutdown(body)) return
      add(i, outputs, body === undefined ? null : errorText(body), true)
    }
    // Rows the state layer holds as pending (queued or running since before a restart, or for a
    // node that lost the job): not run again, their results looked up until they are done.
    const awaiting = new Map<string, { index: number; value: unknown }>()
    let poller: NodeJS.Timeout | undefined
    const poll = async (): Promise<void> => {
      poller = undefined
      if (awaiting.size === 0 || stop.signal.aborted) return
      const ids = [...awaiting.keys()]
      try {
        const found = await hub.state.lookup(owner, ids)
        found.forEach((f, k) => {
          if (f.state === 'pending') return
          const row = awaiting.get(ids[k])!
          awaiting.delete(ids[k])
          limiter.release()
          // Done: its retained result. Unknown (it finished before results were kept for jobs, or
          // was evicted): it runs again.
          if (f.state === 'done') addResult(row.index, f.outputs ?? 'null')
          else if (!stop.signal.aborted) void limiter.acquire(stop.signal).then(() => submitRow(row.index, row.value), () => {})
        })
      } catch (err) {
        this.o.logger?.warn({ err, job: job.id }, 'looking up rows of a job failed; trying again')
      }
      if (awaiting.size > 0 && !stop.signal.aborted) poller = setTimeout(() => void poll(), AWAIT_POLL_MS)
    }
    // Runs one row through the state layer (a limiter slot is held for it). Retained: a row whose
    // result the job store has not saved yet (a crash between the two) gets it back, unbilled.
    const submitRow = (i: number, value: unknown): void => {
      let cancel: () => void = () => {}
      cancel = hub.submitDirect(
        {
          tenant: job.tenant,
          owner,
          id: String(i),
          model: job.model,
          compute: job.compute === 'gpu' ? 'gpu' : 'cpu',
          inputs: value,
          parameters: job.parameters ?? undefined,
          group,
          retain: true,
        },
        (outputs) => {
          cancels.delete(cancel)
          limiter.release()
          addResult(i, outputs)
        },
        {
          onRefused: (outcome) => {
            cancels.delete(cancel)
            if (outcome.status === 'pending') {
              awaiting.set(String(i), { index: i, value })
              poller ??= setTimeout(() => void poll(), AWAIT_POLL_MS)
              return
            }
            limiter.release()
            if (outcome.status === 'done') addResult(i, outcome.outputs)
            else if (outcome.status === 'conflict') {
              // The job's own id with other inputs: the split changed under a resumed job.
              const message = `Row ${i} changed since the job stored it (the dataset was modified while the job ran)`
              add(i, toWireError(new InvalidPayloadError(message)), message)
            }
          },
        },
      )
      cancels.add(cancel)
    }
    const onAbort = (): void => {
      for (const c of cancels) c()
      if (poller) clearTimeout(poller)
      stop.abort()
    }
    signal.addEventListener('abort', onAbort, { once: true })

    try {
      let index = 0
      // Only a resumed job has stored rows to skip: a fresh one never asks.
      const resumed = store.storedCount(job.id) > 0
      const maxBytes = this.o.maxInputsBytes ?? DEFAULT_MAX_INPUTS_BYTES
      for (const [f, file] of resolved.files.entries()) {
        const reader = jobReader(file, resolved, maxBytes)
        try {
          for await (const record of reader) {
            const i = index++
            if (signal.aborted || failure) break
            if (resumed && store.isDone(job.id, i)) continue
            // Each failed row below is recorded as failed, and not billed: no model ran on it.
            if (record instanceof BadRecordError) {
              const err = tooLong(record) ? new LimitExceededError(`Row ${i} is over the input limit of ${maxBytes} bytes`) : record
              const message = err.message.split(file).join(resolved.shown[f])
              add(i, { error: message, code: err.code }, message)
              continue
            }
            const value = (record as Record<string, unknown>)[column]
            // No value (absent, null) is missing; '' is text, run like any other (docs/models.md).
            if (value === undefined || value === null) {
              const message = `Row ${i} has no value in column "${column}"`
              add(i, toWireError(new MissingInputError(message)), message)
              continue
            }
            // The same bound as a stream's or an HTTP request's inputs: a huge cell never reaches a model.
            if (jsonBytes(value) > maxBytes) {
              const message = `Row ${i} is over the input limit of ${maxBytes} bytes`
              add(i, toWireError(new LimitExceededError(message)), message)
              continue
            }
            try {
              await limiter.acquire(stop.signal)
            } catch {
              break // aborted, or storing failed
            }
            if (stop.signal.aborted) {
              limiter.release()
              break
            }
            submitRow(i, value)
          }
        } finally {
          reader.destroy()
        }
        if (signal.aborted || failure) break
      }
      // The rows still in flight: their results come, or the run stops.
      await limiter.idle(stop.signal).catch(() => {})
    } finally {
      if (poller) clearTimeout(poller)
      signal.removeEventListener('abort', onAbort)
      save()
    }
    if (failure) throw failure
  }

  // Writes the outputs as Parquet shards (rows read back from the store in order, zipped with the
  // source column read again from the split: nothing held in memory), the card, and commits.
  private async publish(job: JobRecord, resolved: ResolvedDataset, signal: AbortSignal): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'inference-stream-bulk-'))
    try {
      const shardRows = this.o.shardRows
      const count = job.processed
      const shardCount = Math.max(1, Math.ceil(count / shardRows))
      const names: string[] = []
      const results = this.o.store.iterateResults(job.id)[Symbol.iterator]()
      const column = job.dataset.column
      const layout = bulkRecordColumns(column, job.keepColumns)
      const source = sourceValues(resolved, layout.columns, this.o.maxInputsBytes ?? DEFAULT_MAX_INPUTS_BYTES)[Symbol.asyncIterator]()
      let index = 0
      for (let s = 0; s < shardCount; s++) {
        const name = `data/${job.dataset.split}-${String(s).padStart(5, '0')}-of-${String(shardCount).padStart(5, '0')}.parquet`
        names.push(name)
        const end = Math.min(count, (s + 1) * shardRows)
        const rows = async function* (): AsyncGenerator<Record<string, unknown>> {
          while (index < end) {
            if (signal.aborted) return
            const r = results.next()
            if (r.done) return
            const { index: row, outputs, error } = r.value
            // The source split, read again in step: its row `row` holds the value the model saw.
            let values: unknown[] | undefined
            for (;;) {
              const v = await source.next()
              if (v.done) break
              if (v.value.index === row) {
                values = v.value.values
                break
              }
            }
            index++
            const parsed = JSON.parse(outputs)
            const record: Record<string, unknown> = { [layout.index]: row }
            layout.columns.forEach((c, k) => (record[c] = values?.[k] ?? null))
            // A failed row keeps its own code (ERR_LIMIT_EXCEEDED for a row over the input limit).
            const code = typeof parsed?.code === 'string' ? (parsed.code as string) : 'ERR_ITEM_FAILED'
            yield { id: String(row), outputs: parsed, record, ...(error ? { error: new InferenceStreamError(error, code) } : {}) }
          }
        }
        // The model's task fixes the flat columns: a first row without entities is `[]`, not missing.
        const task = this.o.registry.get(job.model, job.compute === 'gpu' ? 'gpu' : 'cpu')?.task
        await pipeline(Readable.from(rows()), writeParquet(join(dir, name.replace('data/', '')), { task: task === 'unknown' ? undefined : task }))
      }
      const card = datasetCard({
        bulkName: job.bulkName,
        jobId: job.id,
        model: job.model,
        compute: job.compute,
        parameters: job.parameters ?? undefined,
        source: job.dataset,
        keepColumns: job.keepColumns,
        rows: count,
        failed: job.failed,
        shards: names,
        startTime: job.startTime,
        endTime: Date.now() / 1000,
      })
      const files = [
        ...names.map((n) => ({ path: n, source: join(dir, n.replace('data/', '')) })),
        { path: 'README.md', source: Buffer.from(card) },
      ]
      // Cancelled, or the claim lost, while the shards were written: no commit. (Renewed here so a
      // claim about to expire is not taken over while this node commits.)
      signal.throwIfAborted()
      if (!this.o.store.renewClaim(job.id, this.o.node, this.leaseMs)) {
        this.lose(job.id)
        signal.throwIfAborted()
      }
      return await this.o.outputs(job.tenant).commit(job.bulkName, files, `Bulk job ${job.id}: ${job.model} over ${job.dataset.name}/${job.dataset.config}/${job.dataset.split}:${column}`, {
        replace: ['data/'],
      })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }

  /**
   * Stops every job running here. They stay `running` in the store and their claims are released,
   * so another node (or this one, started again) goes on with them at once.
   */
  async close(): Promise<void> {
    this.closing = true
    clearInterval(this.timer)
    const ids = [...this.running.keys()]
    for (const run of this.running.values()) run.ac.abort()
    await Promise.allSettled([...this.done.values()])
    for (const id of ids) {
      try {
        this.o.store.releaseClaim(id, this.o.node)
      } catch (err) {
        this.o.logger?.error({ err, job: id }, 'releasing a bulk job claim failed (another node takes it once the claim expires)')
      }
    }
  }
}

function isShutdown(outputs: unknown): boolean {
  return typeof outputs === 'object' && outputs !== null && (outputs as { code?: unknown }).code === 'ERR_SHUTTING_DOWN'
}

function errorText(outputs: unknown): string {
  const e = (outputs as { error?: unknown })?.error
  return typeof e === 'string' ? e : 'failed'
}

// The source columns again, row for row as runRows numbered them (a bad row has no values, an
// over-limit value is left out: null in the outputs).
async function* sourceValues(resolved: ResolvedDataset, columns: string[], maxBytes: number): AsyncGenerator<{ index: number; values: unknown[] | undefined }> {
  let index = 0
  for (const file of resolved.files) {
    for await (const record of jobReader(file, resolved, maxBytes)) {
      const values = record instanceof BadRecordError
        ? undefined
        : columns.map((c) => {
            const value = (record as Record<string, unknown>)[c]
            return value !== undefined && jsonBytes(value) > maxBytes ? undefined : value
          })
      yield { index: index++, values }
    }
  }
}

// A job's reader: malformed rows come in-band (a row of the job that failed, not a skipped one, so
// row numbers stay those of the file), and a CSV row is cut off well before it could be huge.
function jobReader(file: string, resolved: ResolvedDataset, maxBytes: number): AsyncIterable<unknown> & { destroy(): void } {
  const reader = readRecords(file, { format: resolved.format, maxRecordLength: Math.max(64 * 1024, maxBytes * 4) })
  // Each bad record with how many good ones the reader had pushed before it: its place in the file.
  const bad: { err: BadRecordError; after: number }[] = []
  reader.on('bad-record', (err: BadRecordError) => bad.push({ err, after: reader.recordsRead }))
  return {
    destroy: () => reader.destroy(),
    async *[Symbol.asyncIterator]() {
      let good = 0
      for await (const record of reader) {
        while (bad.length > 0 && bad[0].after <= good) yield bad.shift()!.err
        good++
        yield record
      }
      while (bad.length > 0) yield bad.shift()!.err
    },
  }
}

function tooLong(err: BadRecordError): boolean {
  return /longer than \d+ characters/.test(err.message)
}

function jsonBytes(value: unknown): number {
  // A string's JSON size without building a second copy of a large one.
  if (typeof value === 'string') return Buffer.byteLength(value) + 2
  return Buffer.byteLength(JSON.stringify(value) ?? '')
}
