/**
 * Durable store of bulk jobs, their stored results and the per-tenant bill: one SQLite file through
 * better-sqlite3 (synchronous, so every method is one atomic step of the event loop). All SQL of the
 * job store lives here; statements are prepared once, when the store opens.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import type Database from 'better-sqlite3'
import { InvalidOptionError, JobNotFoundError, JobStoreError, MissingDependencyError } from '../../errors.js'
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

/** A row for {@link JobStore.saveResults}. */
export interface ResultRow extends StoredResult {
  /** Whether the row counts toward the tenant's bill (the model ran on it). Default true; false for a row failed before the model (no input). */
  billed?: boolean
}

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

/** Version of the schema this code writes (SQLite `user_version`). */
export const JOB_STORE_SCHEMA_VERSION = 3

// Version 3 (version 2 had no `keep_columns`; version 1 had `token` for `tenant`, holding raw
// tokens, in jobs and bills). Results
// are keyed by (job, row index): INSERT OR IGNORE makes a re-run of a row a
// no-op, which is what makes saveResults idempotent.
const SCHEMA_V3 = `
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
  created_at REAL NOT NULL
);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE results (
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  outputs TEXT NOT NULL,
  error TEXT,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE bills (
  tenant TEXT PRIMARY KEY,
  rows INTEGER NOT NULL
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
 * batch and updates the job's counts and the tenant's bill in one transaction, ignoring rows already
 * stored, so a job resumed after a crash never counts or bills a row twice.
 *
 * @throws JobStoreError when the file cannot be opened or used: not a SQLite database, a schema
 *   newer than this code, a folder that cannot be created.
 */
export class JobStore {
  /** The database file, or `:memory:`. */
  readonly path: string
  private readonly db: Database.Database
  private readonly s: ReturnType<typeof prepare>
  private readonly saveTx: (jobId: string, rows: readonly ResultRow[]) => number
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
    const save = db.transaction((jobId: string, rows: readonly ResultRow[]): number => {
      const tenant = s.tenantOf.get(jobId) as string | undefined
      if (tenant === undefined) throw new JobNotFoundError(`No job ${JSON.stringify(jobId)}`)
      let added = 0
      let failed = 0
      let billed = 0
      for (const r of rows) {
        if (!Number.isSafeInteger(r.index) || r.index < 0) throw new InvalidOptionError(`Result index must be an integer >= 0, got ${JSON.stringify(r.index)}`)
        if (typeof r.outputs !== 'string') throw new InvalidOptionError(`Result outputs must be JSON text, got ${typeof r.outputs} (row ${r.index})`)
        const error = r.error ?? null
        if (error !== null && typeof error !== 'string') throw new InvalidOptionError(`Result error must be a string or null (row ${r.index})`)
        if (s.insertResult.run(jobId, r.index, r.outputs, error).changes === 0) continue
        added++
        if (error !== null) failed++
        if (r.billed !== false) billed++
      }
      if (added > 0) s.addCounts.run(added, failed, jobId)
      if (billed > 0) s.addBill.run(tenant, billed)
      return added
    })
    this.saveTx = (jobId, rows) => save.immediate(jobId, rows)
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
   * `failed`, for rows with an error) and to the tenant's bill (rows with `billed: false` excepted).
   * Returns how many rows were new. Saving the same rows twice therefore counts and bills them once.
   * @throws JobNotFoundError for an unknown job (nothing is stored).
   */
  saveResults(jobId: string, rows: readonly ResultRow[]): number {
    if (rows.length === 0) {
      if (!this.s.tenantOf.get(jobId)) throw new JobNotFoundError(`No job ${JSON.stringify(jobId)}`)
      return 0
    }
    return this.saveTx(jobId, rows)
  }

  /** Rows billed to a tenant (by id) over all its jobs, durably. 0 for a tenant never billed. */
  billed(tenant: string): number {
    return (this.s.getBill.get(tenant) as number | undefined) ?? 0
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

// Creates the schema on a new file; migrates a v1 file; refuses a file of a newer version.
function migrate(db: Database.Database, path: string, tenantOfToken: ((token: string) => string) | undefined): void {
  const version = db.pragma('user_version', { simple: true }) as number
  if (version === JOB_STORE_SCHEMA_VERSION) return
  if (version > JOB_STORE_SCHEMA_VERSION) {
    throw new JobStoreError(
      `The job store ${JSON.stringify(path)} has schema version ${version}, newer than this version of inference-stream reads (${JOB_STORE_SCHEMA_VERSION})`,
    )
  }
  if (version === 0) {
    db.transaction(() => {
      db.exec(SCHEMA_V3)
      db.pragma(`user_version = ${JOB_STORE_SCHEMA_VERSION}`)
    }).immediate()
    return
  }
  if (version === 2) {
    migrateV2(db)
    return
  }
  if (version !== 1 || !tenantOfToken) {
    throw new JobStoreError(
      `The job store ${JSON.stringify(path)} has schema version ${version}, which stores raw tokens; start the server ` +
        '(with the same tokens) on its data folder once to migrate it to tenant ids, or move the file away to start afresh',
    )
  }
  migrateV1(db, tenantOfToken)
  migrateV2(db)
}

// v2 → v3: jobs keep other source columns (none for the jobs already there).
function migrateV2(db: Database.Database): void {
  db.transaction(() => {
    db.exec("ALTER TABLE jobs ADD COLUMN keep_columns TEXT NOT NULL DEFAULT '[]'")
    db.pragma('user_version = 3')
  }).immediate()
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
  db.transaction(() => {
    db.exec(`
      ALTER TABLE jobs RENAME COLUMN token TO tenant;
      UPDATE jobs SET tenant = tenant_of(tenant);
      CREATE TABLE bills_v2 (tenant TEXT PRIMARY KEY, rows INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO bills_v2 (tenant, rows) SELECT tenant_of(token), sum(rows) FROM bills GROUP BY tenant_of(token);
      DROP TABLE bills;
      ALTER TABLE bills_v2 RENAME TO bills;
    `)
    db.pragma('user_version = 2')
  }).immediate()
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
    updateJob: db.prepare(
      `UPDATE jobs SET state = @state, total = @total, processed = @processed, failed = @failed, start_time = @start_time,
         end_time = @end_time, error = @error, revision = @revision WHERE id = @id`,
    ),
    insertResult: db.prepare('INSERT OR IGNORE INTO results (job_id, idx, outputs, error) VALUES (?, ?, ?, ?)'),
    addCounts: db.prepare('UPDATE jobs SET processed = processed + ?, failed = failed + ? WHERE id = ?'),
    addBill: db.prepare('INSERT INTO bills (tenant, rows) VALUES (?, ?) ON CONFLICT (tenant) DO UPDATE SET rows = rows + excluded.rows'),
    getBill: db.prepare('SELECT rows FROM bills WHERE tenant = ?').pluck(),
    isDone: db.prepare('SELECT 1 FROM results WHERE job_id = ? AND idx = ?').pluck(),
    storedCount: db.prepare('SELECT count(*) FROM results WHERE job_id = ?').pluck(),
    indexPage: db.prepare('SELECT idx FROM results WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?').pluck(),
    resultPage: db.prepare('SELECT idx, outputs, error FROM results WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?'),
    deleteResults: db.prepare('DELETE FROM results WHERE job_id = ?'),
  }
}
