/**
 * Durable store of bulk jobs, their stored results and the per-tenant bill: one SQLite file through
 * better-sqlite3 (synchronous, so every method is one atomic step of the event loop). All SQL of the
 * job store lives here; statements are prepared once, when the store opens.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import type Database from 'better-sqlite3'
import { InvalidOptionError, JobNotFoundError, JobStateError, JobStoreError, MissingDependencyError } from '../../errors.js'
import { requireOptional } from '../../optional-deps.js'

/** States of a job. `queued` and `running` are unfinished: a restarted server resumes them. */
export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled'

/** Every {@link JobState}. */
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'completed', 'failed', 'cancelled']

/** The source of a job: a column of a split of an input dataset. */
export interface JobDataset {
  name: string
  config: string
  split: string
  column: string
}

/** A bulk job as stored. Times are epoch seconds with a fraction, as the original API's `start_time`. */
export interface JobRecord {
  /** 16 hex digits. */
  id: string
  /** Id of the tenant that started the job (its owner; its rows are billed to it). */
  tenant: string
  /** The output dataset. */
  bulkName: string
  /** The model id. */
  model: string
  /** `cpu` or `gpu`. */
  compute: string
  dataset: JobDataset
  /** The model's parameters, or null. */
  parameters: Record<string, unknown> | null
  /** Other columns of the source rows copied into the outputs, in order (empty: none). */
  keepColumns: string[]
  state: JobState
  /** Rows of the split, when known. */
  total: number | null
  /** Rows stored so far, failed ones included (kept up to date by {@link JobStore.saveResults}). */
  processed: number
  /** Stored rows that failed (a subset of `processed`). */
  failed: number
  /** When the job was started (created, then reset when it starts running). */
  startTime: number
  /** When it reached a final state, or null. */
  endTime: number | null
  /** Why it failed or was cancelled, or null. */
  error: string | null
  /** Commit sha of the output dataset version it wrote, or null. */
  revision: string | null
  /** When the record was created. */
  createdAt: number
  /** The node that holds the job's claim (runs it), or null: nobody does ({@link JobStore.claim}). */
  claimedBy: string | null
  /** When that claim expires unless renewed, epoch ms, or null. */
  claimUntil: number | null
}

/** What {@link JobStore.create} takes: the job's fields; the rest get their defaults. */
export interface NewJob {
  tenant: string
  bulkName: string
  model: string
  compute: string
  dataset: JobDataset
  /** Default null. */
  parameters?: Record<string, unknown> | null
  /** Source columns copied into the outputs. Default none. */
  keepColumns?: string[]
  /** Default a random 16-hex id. */
  id?: string
  /** Default `queued`. */
  state?: JobState
  /** Default null. */
  total?: number | null
  /** Default: now. */
  startTime?: number
}

/** The fields {@link JobStore.update} may change. */
export type JobPatch = Partial<Pick<JobRecord, 'state' | 'total' | 'processed' | 'failed' | 'startTime' | 'endTime' | 'error' | 'revision'>>

/** One stored result of a job: the row's 0-based index in the split, its outputs as JSON text, its error or null. */
export interface StoredResult {
  index: number
  /** JSON text of the outputs (for a failed row, the error body). */
  outputs: string
  /** Error message of a failed row, or null. */
  error: string | null
}

/** A row for {@link JobStore.saveResults}. (The bill is the state layer's ledger, not the job store's.) */
export type ResultRow = StoredResult

/** Options of {@link JobStore}. */
export interface JobStoreOptions {
  /**
   * SQLite `synchronous` in WAL mode. `NORMAL` (default): a committed transaction survives a crash
   * of the process (SIGKILL), the last ones may be lost on a power cut. `FULL`: fsync at every
   * commit, survives that too, slower.
   */
  synchronous?: 'NORMAL' | 'FULL'
  /** How long a write waits for another process's lock on the file, in ms. Default 5000. */
  busyTimeoutMs?: number
  /**
   * Maps a raw token of a schema-v1 file to its tenant id, for the migration to v2 at open (the
   * server passes `token => tenants.authenticate(token) ?? tenants.defaultTenant(token)`, as id).
   * Default none: a v1 file is refused with a JobStoreError saying how to migrate it.
   */
  tenantOfToken?: (token: string) => string
}

/** Options of {@link JobStore.list}. */
export interface ListOptions {
  /** Only jobs in this state. Default: all. */
  state?: JobState
  /** At most this many. Default: no limit. */
  limit?: number
}

/** How a job ended, for {@link JobStore.finish}. */
export interface JobOutcome {
  state: 'completed' | 'failed'
  /** Default: now. */
  endTime?: number
  /** Why it failed. Default null. */
  error?: string | null
  /** The output commit. Default: unchanged. */
  revision?: string | null
  /** Default: unchanged. */
  total?: number | null
}

/** Version of the schema this code writes (SQLite `user_version`). */
export const JOB_STORE_SCHEMA_VERSION = 4

// Version 4 (version 3 had no claims: `claimed_by`, `claim_until`, and kept billed rows per tenant in
// `bills`, which a migrated file keeps as it was: the bill is the state layer's ledger now; version 2
// had no `keep_columns`; version 1 had `token` for `tenant`, holding raw tokens, in jobs and bills).
// Results are keyed by (job, row index): INSERT OR IGNORE makes a re-run of a row a no-op, which
// is what makes saveResults idempotent. A claim is the node running the job and when its lease
// ends (epoch ms): every write of a running job's progress is guarded by it in SQL.
const SCHEMA = `
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  bulk_name TEXT NOT NULL,
  model TEXT NOT NULL,
  compute TEXT NOT NULL,
  dataset_name TEXT NOT NULL,
  dataset_config TEXT NOT NULL,
  dataset_split TEXT NOT NULL,
  dataset_column TEXT NOT NULL,
  parameters TEXT NOT NULL,
  keep_columns TEXT NOT NULL DEFAULT '[]',
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
  total INTEGER,
  processed INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  start_time REAL NOT NULL,
  end_time REAL,
  error TEXT,
  revision TEXT,
  created_at REAL NOT NULL,
  claimed_by TEXT,
  claim_until INTEGER
);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE results (
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  outputs TEXT NOT NULL,
  error TEXT,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
`

interface JobRow {
  id: string
  tenant: string
  bulk_name: string
  model: string
  compute: string
  dataset_name: string
  dataset_config: string
  dataset_split: string
  dataset_column: string
  parameters: string
  keep_columns: string
  state: JobState
  total: number | null
  processed: number
  failed: number
  start_time: number
  end_time: number | null
  error: string | null
  revision: string | null
  created_at: number
  claimed_by: string | null
  claim_until: number | null
}

const PATCHABLE = new Set<string>(['state', 'total', 'processed', 'failed', 'startTime', 'endTime', 'error', 'revision'])
const PAGE = 1000

function toRecord(row: JobRow): JobRecord {
  return {
    id: row.id,
    tenant: row.tenant,
    bulkName: row.bulk_name,
    model: row.model,
    compute: row.compute,
    dataset: { name: row.dataset_name, config: row.dataset_config, split: row.dataset_split, column: row.dataset_column },
    parameters: JSON.parse(row.parameters) as Record<string, unknown> | null,
    keepColumns: JSON.parse(row.keep_columns) as string[],
    state: row.state,
    total: row.total,
    processed: row.processed,
    failed: row.failed,
    startTime: row.start_time,
    endTime: row.end_time,
    error: row.error,
    revision: row.revision,
    createdAt: row.created_at,
    claimedBy: row.claimed_by,
    claimUntil: row.claim_until,
  }
}

function now(): number {
  return Date.now() / 1000
}

function checkState(state: unknown): void {
  if (!(JOB_STATES as readonly unknown[]).includes(state)) {
    throw new InvalidOptionError(`Job state must be one of ${JOB_STATES.join(', ')}, got ${JSON.stringify(state)}`)
  }
}

function checkString(name: string, value: unknown): void {
  if (typeof value !== 'string' || value === '') throw new InvalidOptionError(`Job field "${name}" must be a non-empty string, got ${JSON.stringify(value)}`)
}

/**
 * The job store. `new JobStore(path)` opens (or creates, with its folder) a SQLite file in WAL mode
 * and creates the schema on first open; `':memory:'` keeps everything in memory (tests).
 *
 * Results are kept per (job, row index) until {@link deleteResults}; {@link saveResults} stores a
 * batch and updates the job's counts in one transaction, ignoring rows already stored, so a job
 * resumed after a crash never counts a row twice. The bill is not here: jobs bill through the
 * state layer's ledger, as streams and HTTP requests do.
 *
 * @throws JobStoreError when the file cannot be opened or used: not a SQLite database, a schema
 *   newer than this code, a folder that cannot be created.
 */
export class JobStore {
  /** The database file, or `:memory:`. */
  readonly path: string
  private readonly db: Database.Database
  private readonly s: ReturnType<typeof prepare>
  private readonly saveTx: (jobId: string, rows: readonly ResultRow[], claimedBy: string | undefined) => number
  private readonly updateTx: (id: string, patch: JobPatch) => JobRecord

  constructor(path: string, options: JobStoreOptions = {}) {
    if (typeof path !== 'string' || path === '') throw new InvalidOptionError('JobStore: "path" must be a file path or ":memory:"')
    const o: JobStoreOptions & { synchronous: 'NORMAL' | 'FULL'; busyTimeoutMs: number } = { synchronous: 'NORMAL', busyTimeoutMs: 5000, ...options }
    if (o.synchronous !== 'NORMAL' && o.synchronous !== 'FULL') {
      throw new InvalidOptionError(`Option "synchronous" must be "NORMAL" or "FULL", got ${JSON.stringify(o.synchronous)}`)
    }
    if (!Number.isInteger(o.busyTimeoutMs) || o.busyTimeoutMs < 0) {
      throw new InvalidOptionError(`Option "busyTimeoutMs" must be an integer >= 0, got ${JSON.stringify(o.busyTimeoutMs)}`)
    }
    this.path = path
    let db: Database.Database | undefined
    try {
      if (path !== ':memory:') createPrivate(path)
      const Sqlite = requireOptional<typeof Database>('better-sqlite3', 'The job store')
      db = new Sqlite(path)
      db.pragma(`busy_timeout = ${o.busyTimeoutMs}`)
      db.pragma('journal_mode = WAL')
      db.pragma(`synchronous = ${o.synchronous}`)
      db.pragma('foreign_keys = ON')
      migrate(db, path, o.tenantOfToken)
      this.s = prepare(db)
      if (path !== ':memory:') for (const f of [`${path}-wal`, `${path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600)
    } catch (err) {
      db?.close()
      if (err instanceof JobStoreError || err instanceof MissingDependencyError) throw err
      throw new JobStoreError(`Cannot open the job store ${JSON.stringify(path)}: ${(err as Error).message}`, { cause: err })
    }
    this.db = db

    const s = this.s
    // IMMEDIATE: take the write lock at BEGIN, so two processes on one file wait (busy_timeout)
    // instead of failing on a lock upgrade.
    const save = db.transaction((jobId: string, rows: readonly ResultRow[], claimedBy: string | undefined): number => {
      this.tenantFor(jobId, claimedBy)
      let added = 0
      let failed = 0
      for (const r of rows) {
        if (!Number.isSafeInteger(r.index) || r.index < 0) throw new InvalidOptionError(`Result index must be an integer >= 0, got ${JSON.stringify(r.index)}`)
        if (typeof r.outputs !== 'string') throw new InvalidOptionError(`Result outputs must be JSON text, got ${typeof r.outputs} (row ${r.index})`)
        const error = r.error ?? null
        if (error !== null && typeof error !== 'string') throw new InvalidOptionError(`Result error must be a string or null (row ${r.index})`)
        if (s.insertResult.run(jobId, r.index, r.outputs, error).changes === 0) continue
        added++
        if (error !== null) failed++
      }
      if (added > 0) s.addCounts.run(added, failed, jobId)
      return added
    })
    this.saveTx = (jobId, rows, claimedBy) => save.immediate(jobId, rows, claimedBy)
    const update = db.transaction((id: string, patch: JobPatch): JobRecord => {
      const row = s.getJob.get(id) as JobRow | undefined
      if (!row) throw new JobNotFoundError(`No job ${JSON.stringify(id)}`)
      const next = { ...toRecord(row) }
      for (const [k, v] of Object.entries(patch)) if (v !== undefined) (next as Record<string, unknown>)[k] = v
      s.updateJob.run({
        id,
        state: next.state,
        total: next.total,
        processed: next.processed,
        failed: next.failed,
        start_time: next.startTime,
        end_time: next.endTime,
        error: next.error,
        revision: next.revision,
      })
      return next
    })
    this.updateTx = (id, patch) => update.immediate(id, patch)
  }

  /**
   * Creates a job: state `queued` (or `state`), counts 0, `startTime` and `createdAt` now, a random
   * 16-hex id unless `id` is given.
   * @throws InvalidOptionError for a missing field or a bad state.
   */
  create(job: NewJob): JobRecord {
    for (const k of ['tenant', 'bulkName', 'model', 'compute'] as const) checkString(k, job[k])
    const d = job.dataset
    if (typeof d !== 'object' || d === null) throw new InvalidOptionError('Job field "dataset" must be {name, config, split, column}')
    for (const k of ['name', 'config', 'split', 'column'] as const) checkString(`dataset.${k}`, d[k])
    const keepColumns = job.keepColumns ?? []
    if (!Array.isArray(keepColumns) || !keepColumns.every((c) => typeof c === 'string' && c !== '')) {
      throw new InvalidOptionError(`Job field "keepColumns" must be an array of column names, got ${JSON.stringify(job.keepColumns)}`)
    }
    const state = job.state ?? 'queued'
    checkState(state)
    const created = now()
    const record: JobRecord = {
      id: job.id ?? randomBytes(8).toString('hex'),
      tenant: job.tenant,
      bulkName: job.bulkName,
      model: job.model,
      compute: job.compute,
      dataset: { name: d.name, config: d.config, split: d.split, column: d.column },
      parameters: job.parameters ?? null,
      keepColumns: [...keepColumns],
      state,
      total: job.total ?? null,
      processed: 0,
      failed: 0,
      startTime: job.startTime ?? created,
      endTime: null,
      error: null,
      revision: null,
      createdAt: created,
      claimedBy: null,
      claimUntil: null,
    }
    checkString('id', record.id)
    this.s.insertJob.run({
      id: record.id,
      tenant: record.tenant,
      bulk_name: record.bulkName,
      model: record.model,
      compute: record.compute,
      dataset_name: d.name,
      dataset_config: d.config,
      dataset_split: d.split,
      dataset_column: d.column,
      parameters: JSON.stringify(record.parameters),
      keep_columns: JSON.stringify(record.keepColumns),
      state,
      total: record.total,
      start_time: record.startTime,
      created_at: created,
    })
    return record
  }

  /** The job, or undefined. */
  get(id: string): JobRecord | undefined {
    const row = this.s.getJob.get(id) as JobRow | undefined
    return row && toRecord(row)
  }

  /** Jobs, newest first; `state` filters, `limit` caps. */
  list(options: ListOptions = {}): JobRecord[] {
    const limit = options.limit ?? -1
    if (!Number.isInteger(limit) || limit < -1) throw new InvalidOptionError(`Option "limit" must be an integer >= 0, got ${JSON.stringify(options.limit)}`)
    if (options.state !== undefined) {
      checkState(options.state)
      return (this.s.listByState.all(options.state, limit) as JobRow[]).map(toRecord)
    }
    return (this.s.listAll.all(limit) as JobRow[]).map(toRecord)
  }

  /**
   * Changes some fields of a job (in one transaction, so counts added by a concurrent
   * {@link saveResults} of another process are not overwritten unless `processed`/`failed` are in
   * `patch`). Returns the job as updated.
   * @throws JobNotFoundError for an unknown id; InvalidOptionError for a field that cannot change or a bad state.
   */
  update(id: string, patch: JobPatch): JobRecord {
    for (const k of Object.keys(patch)) if (!PATCHABLE.has(k)) throw new InvalidOptionError(`Job field "${k}" cannot be updated`)
    if (patch.state !== undefined) checkState(patch.state)
    return this.updateTx(id, patch)
  }

  /**
   * Stores result rows of a job in ONE transaction: rows whose index is already stored are
   * ignored (INSERT OR IGNORE), and only the new ones are added to the job's `processed` (and
   * `failed`, for rows with an error). Returns how many rows were new. Saving the same rows twice
   * therefore counts them once.
   *
   * With `claimedBy` (the runner's node), the rows are stored only while that node holds the job's
   * claim and the job is unfinished: a node whose claim was taken over, or whose job was cancelled,
   * stores nothing (so a job another node completed never gains rows or counts after it).
   * @throws JobNotFoundError for an unknown job; JobStateError when `claimedBy` does not hold an
   *   unfinished job's claim (nothing is stored either way).
   */
  saveResults(jobId: string, rows: readonly ResultRow[], options: { claimedBy?: string } = {}): number {
    if (rows.length === 0) {
      this.tenantFor(jobId, options.claimedBy)
      return 0
    }
    return this.saveTx(jobId, rows, options.claimedBy)
  }

  // The job's tenant; with `claimedBy`, only while that node holds the claim of the unfinished job.
  private tenantFor(jobId: string, claimedBy: string | undefined): string {
    const tenant = (claimedBy === undefined ? this.s.tenantOf.get(jobId) : this.s.claimedTenant.get(jobId, claimedBy)) as string | undefined
    if (tenant !== undefined) return tenant
    const job = this.get(jobId)
    if (!job) throw new JobNotFoundError(`No job ${JSON.stringify(jobId)}`)
    throw new JobStateError(`Job ${jobId} is ${job.state}${job.claimedBy === null ? ', claimed by no node' : `, claimed by node ${JSON.stringify(job.claimedBy)}`}: node ${JSON.stringify(claimedBy)} may not store its results`)
  }

  /**
   * Claims a job for `node` for `leaseMs` from `now` (epoch ms), in one UPDATE: it succeeds when
   * the job is unfinished and nobody holds it, or its claim has expired (a node that died or
   * hung), or `node` holds it already (then it is renewed). Returns whether `node` holds it now.
   * Two nodes claiming at once: one wins.
   */
  claim(jobId: string, node: string, leaseMs: number, now = Date.now()): boolean {
    checkClaim(node, leaseMs, now)
    return this.s.claim.run({ id: jobId, node, until: now + leaseMs, now }).changes === 1
  }

  /**
   * Extends `node`'s claim of an unfinished job to `now + leaseMs`. False when `node` no longer
   * holds it (another node took it over after the claim expired, or the job was cancelled or
   * ended): the node must stop running it, without writing its state.
   */
  renewClaim(jobId: string, node: string, leaseMs: number, now = Date.now()): boolean {
    checkClaim(node, leaseMs, now)
    return this.s.renewClaim.run({ id: jobId, node, until: now + leaseMs }).changes === 1
  }

  /** Gives up `node`'s claim (a node shutting down), so another node claims the job at once. False when `node` did not hold it. */
  releaseClaim(jobId: string, node: string): boolean {
    return this.s.releaseClaim.run(jobId, node).changes === 1
  }

  /**
   * Unfinished jobs a node may claim at `now` (epoch ms): unclaimed ones, those whose claim has
   * expired, and with `node` those it holds already (a restarted node of the same name). Running
   * ones first (they were interrupted), then oldest first.
   */
  claimable(now = Date.now(), node?: string): JobRecord[] {
    return (this.s.claimable.all({ now, node: node ?? null }) as JobRow[]).map(toRecord)
  }

  /**
   * Marks a job `running` with its `total`, if `node` holds its claim and it is unfinished.
   * False otherwise (cancelled meanwhile, or claimed by another node): nothing changes.
   */
  setRunning(jobId: string, node: string, total: number | null): boolean {
    return this.s.setRunning.run({ id: jobId, node, total }).changes === 1
  }

  /**
   * Ends a job (`completed` or `failed`) and drops its claim, if `node` holds the claim and the
   * job is unfinished: the check is in the UPDATE itself, so a node that lost its claim (or whose
   * job was cancelled) cannot end it. Returns whether it did.
   */
  finish(jobId: string, node: string, outcome: JobOutcome): boolean {
    if (outcome.state !== 'completed' && outcome.state !== 'failed') throw new InvalidOptionError(`A job finishes "completed" or "failed", got ${JSON.stringify(outcome.state)}`)
    const has = (k: keyof JobOutcome): number => (outcome[k] === undefined ? 0 : 1)
    return (
      this.s.finish.run({
        id: jobId,
        node,
        state: outcome.state,
        end_time: outcome.endTime ?? now(),
        error: outcome.error ?? null,
        revision: outcome.revision ?? null,
        set_revision: has('revision'),
        total: outcome.total ?? null,
        set_total: has('total'),
      }).changes === 1
    )
  }

  /**
   * Cancels a queued or running job, whichever node runs it (one UPDATE; its claim is dropped, so
   * the node running it sees at its next renewal that it no longer holds it). False when the
   * job is unknown or already ended.
   */
  cancel(jobId: string, endTime = now()): boolean {
    return this.s.cancel.run(endTime, jobId).changes === 1
  }

  /** Whether the row `index` of a job has a stored result. */
  isDone(jobId: string, index: number): boolean {
    return this.s.isDone.get(jobId, index) !== undefined
  }

  /** How many results of a job are stored. */
  storedCount(jobId: string): number {
    return this.s.storedCount.get(jobId) as number
  }

  /** The stored row indexes of a job, ascending, read a page at a time. */
  *doneIndexes(jobId: string): IterableIterator<number> {
    let after = -1
    for (;;) {
      const page = this.s.indexPage.all(jobId, after, PAGE) as number[]
      yield* page
      if (page.length < PAGE) return
      after = page[page.length - 1]
    }
  }

  /**
   * The stored results of a job in index order, read a page of `pageSize` rows at a time (default
   * 1000): memory is one page whatever the job's size. Paged rather than one open SQLite cursor
   * (`stmt.iterate()`), because an open cursor keeps the connection busy and any other statement
   * (another job's saveResults) would throw until it is closed — and a consumer writing Parquet
   * awaits between rows. Rows stored while iterating appear if their index is after the position.
   */
  *iterateResults(jobId: string, options: { pageSize?: number } = {}): IterableIterator<StoredResult> {
    const size = options.pageSize ?? PAGE
    if (!Number.isInteger(size) || size < 1) throw new InvalidOptionError(`Option "pageSize" must be an integer >= 1, got ${JSON.stringify(size)}`)
    let after = -1
    for (;;) {
      const page = this.s.resultPage.all(jobId, after, size) as { idx: number; outputs: string; error: string | null }[]
      for (const r of page) yield { index: r.idx, outputs: r.outputs, error: r.error }
      if (page.length < size) return
      after = page[page.length - 1].idx
    }
  }

  /** Deletes the stored results of a job (after its outputs are committed); its counts stay. Returns how many were deleted. */
  deleteResults(jobId: string): number {
    return this.s.deleteResults.run(jobId).changes
  }

  /** Jobs `queued` or `running`, oldest first: what a restarted server resumes. */
  unfinished(): JobRecord[] {
    return (this.s.unfinished.all() as JobRow[]).map(toRecord)
  }

  /** Whether the store is open. */
  get open(): boolean {
    return this.db.open
  }

  /** Closes the database (checkpointing the WAL). Idempotent. */
  close(): void {
    if (this.db.open) this.db.close()
  }
}

// The file and its folder readable by the server's user only: rows name tenants and hold inputs'
// results. SQLite gives the -wal and -shm files the mode of the database file.
function createPrivate(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600))
  chmodSync(path, 0o600)
}

function checkClaim(node: string, leaseMs: number, now: number): void {
  checkString('claimedBy', node)
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 1) throw new InvalidOptionError(`Claim lease must be an integer >= 1 (ms), got ${JSON.stringify(leaseMs)}`)
  if (!Number.isFinite(now)) throw new InvalidOptionError(`Claim time must be epoch ms, got ${JSON.stringify(now)}`)
}

// Creates the schema on a new file; migrates an older file step by step; refuses a file of a newer
// version. Front-ends of a cluster share one file and may start at the same moment: each step
// reads the version again once it holds the write lock (BEGIN IMMEDIATE) and does nothing if
// another process has done it meanwhile, so two of them never both create or alter a table.
function migrate(db: Database.Database, path: string, tenantOfToken: ((token: string) => string) | undefined): void {
  for (;;) {
    const version = db.pragma('user_version', { simple: true }) as number
    if (version === JOB_STORE_SCHEMA_VERSION) return
    if (version > JOB_STORE_SCHEMA_VERSION) {
      throw new JobStoreError(
        `The job store ${JSON.stringify(path)} has schema version ${version}, newer than this version of inference-stream reads (${JOB_STORE_SCHEMA_VERSION})`,
      )
    }
    if (version === 0) {
      step(db, 0, () => {
        db.exec(SCHEMA)
        db.pragma(`user_version = ${JOB_STORE_SCHEMA_VERSION}`)
      })
    } else if (version < 1 || (version === 1 && !tenantOfToken)) {
      throw new JobStoreError(
        `The job store ${JSON.stringify(path)} has schema version ${version}, which stores raw tokens; start the server ` +
          '(with the same tokens) on its data folder once to migrate it to tenant ids, or move the file away to start afresh',
      )
    } else if (version === 1) migrateV1(db, tenantOfToken!)
    else if (version === 2) migrateV2(db)
    else migrateV3(db)
  }
}

// Runs `fn` in a write transaction if the file is still at version `from` once the lock is held
// (another process may have migrated it while this one waited).
function step(db: Database.Database, from: number, fn: () => void): void {
  db.transaction(() => {
    if (db.pragma('user_version', { simple: true }) === from) fn()
  }).immediate()
}

// v3 → v4: jobs carry the claim of the node running them. Jobs already there are unclaimed: the
// first node to look takes the unfinished ones.
function migrateV3(db: Database.Database): void {
  step(db, 3, () => {
    db.exec('ALTER TABLE jobs ADD COLUMN claimed_by TEXT; ALTER TABLE jobs ADD COLUMN claim_until INTEGER')
    db.pragma('user_version = 4')
  })
}

// v2 → v3: jobs keep other source columns (none for the jobs already there).
function migrateV2(db: Database.Database): void {
  step(db, 2, () => {
    db.exec("ALTER TABLE jobs ADD COLUMN keep_columns TEXT NOT NULL DEFAULT '[]'")
    db.pragma('user_version = 3')
  })
}

// v1 → v2: each raw token becomes its tenant id (bills of tokens of one tenant are summed), then
// the file is rewritten so no deleted byte of a token survives: secure_delete zeroes freed
// content, VACUUM rebuilds every page, and a TRUNCATE checkpoint empties the WAL that held them.
function migrateV1(db: Database.Database, tenantOfToken: (token: string) => string): void {
  const memo = new Map<string, string>()
  db.function('tenant_of', { deterministic: true }, (token: unknown) => {
    const t = String(token)
    let id = memo.get(t)
    if (id === undefined) memo.set(t, (id = tenantOfToken(t)))
    return id
  })
  db.pragma('secure_delete = ON')
  step(db, 1, () => {
    db.exec(`
      ALTER TABLE jobs RENAME COLUMN token TO tenant;
      UPDATE jobs SET tenant = tenant_of(tenant);
      CREATE TABLE bills_v2 (tenant TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO bills_v2 (tenant, rows) SELECT tenant_of(token), sum(rows) FROM bills GROUP BY tenant_of(token);
      DROP TABLE bills;
      ALTER TABLE bills_v2 RENAME TO bills;
    `)
    db.pragma('user_version = 2')
  })
  db.exec('VACUUM')
  db.pragma('wal_checkpoint(TRUNCATE)')
}

function prepare(db: Database.Database) {
  return {
    insertJob: db.prepare(
      `INSERT INTO jobs (id, tenant, bulk_name, model, compute, dataset_name, dataset_config, dataset_split, dataset_column,
         parameters, keep_columns, state, total, processed, failed, start_time, end_time, error, revision, created_at)
       VALUES (@id, @tenant, @bulk_name, @model, @compute, @dataset_name, @dataset_config, @dataset_split, @dataset_column,
         @parameters, @keep_columns, @state, @total, 0, 0, @start_time, NULL, NULL, NULL, @created_at)`,
    ),
    getJob: db.prepare('SELECT * FROM jobs WHERE id = ?'),
    tenantOf: db.prepare('SELECT tenant FROM jobs WHERE id = ?').pluck(),
    listAll: db.prepare('SELECT * FROM jobs ORDER BY rowid DESC LIMIT ?'),
    listByState: db.prepare('SELECT * FROM jobs WHERE state = ? ORDER BY rowid DESC LIMIT ?'),
    unfinished: db.prepare("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY rowid"),
    claimedTenant: db.prepare("SELECT tenant FROM jobs WHERE id = ? AND claimed_by = ? AND state IN ('queued', 'running')").pluck(),
    claim: db.prepare(
      `UPDATE jobs SET claimed_by = @node, claim_until = @until
       WHERE id = @id AND state IN ('queued', 'running') AND (claimed_by IS NULL OR claimed_by = @node OR claim_until <= @now)`,
    ),
    renewClaim: db.prepare("UPDATE jobs SET claim_until = @until WHERE id = @id AND claimed_by = @node AND state IN ('queued', 'running')"),
    releaseClaim: db.prepare('UPDATE jobs SET claimed_by = NULL, claim_until = NULL WHERE id = ? AND claimed_by = ?'),
    claimable: db.prepare(
      `SELECT * FROM jobs WHERE state IN ('queued', 'running') AND (claimed_by IS NULL OR claim_until <= @now OR claimed_by = @node)
       ORDER BY state = 'running' DESC, rowid`,
    ),
    setRunning: db.prepare("UPDATE jobs SET state = 'running', total = @total WHERE id = @id AND claimed_by = @node AND state IN ('queued', 'running')"),
    finish: db.prepare(
      `UPDATE jobs SET state = @state, end_time = @end_time, error = @error,
         revision = CASE WHEN @set_revision THEN @revision ELSE revision END, total = CASE WHEN @set_total THEN @total ELSE total END,
         claimed_by = NULL, claim_until = NULL
       WHERE id = @id AND claimed_by = @node AND state IN ('queued', 'running')`,
    ),
    cancel: db.prepare(
      `UPDATE jobs SET state = 'cancelled', end_time = ?, error = 'Cancelled', claimed_by = NULL, claim_until = NULL
       WHERE id = ? AND state IN ('queued', 'running')`,
    ),
    updateJob: db.prepare(
      `UPDATE jobs SET state = @state, total = @total, processed = @processed, failed = @failed, start_time = @start_time,
         end_time = @end_time, error = @error, revision = @revision WHERE id = @id`,
    ),
    insertResult: db.prepare('INSERT OR IGNORE INTO results (job_id, idx, outputs, error) VALUES (?, ?, ?, ?)'),
    addCounts: db.prepare('UPDATE jobs SET processed = processed + ?, failed = failed + ? WHERE id = ?'),
    isDone: db.prepare('SELECT 1 FROM results WHERE job_id = ? AND idx = ?').pluck(),
    storedCount: db.prepare('SELECT count(*) FROM results WHERE job_id = ?').pluck(),
    indexPage: db.prepare('SELECT idx FROM results WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?').pluck(),
    resultPage: db.prepare('SELECT idx, outputs, error FROM results WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?'),
    deleteResults: db.prepare('DELETE FROM results WHERE job_id = ?'),
  }
}
