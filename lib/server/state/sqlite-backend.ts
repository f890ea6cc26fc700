/**
 * The durable single-node {@link StateBackend} (`serve --data-dir`): one SQLite file through
 * better-sqlite3, in WAL mode. Every transition is written inside ONE `BEGIN IMMEDIATE`
 * transaction, whatever the number of items it moves, so a `kill -9` can only fall between two
 * transitions: a submit's dedupe and enqueue, a finish's results + bill + end of lease, a
 * reclaim's requeue or dead letters are on disk together or not at all. The transitions of one
 * turn of the event loop share that transaction (group commit: one commit a turn instead of one
 * a transition), and nothing of a transition leaves the backend before it commits.
 *
 * The file is the truth; the process keeps an index of it in memory (rebuilt from the file at
 * open): the fair-share queue (../queue/memory-queue.ts, so batches are chosen exactly as the memory
 * backend chooses them, and a waiting `lease` is woken in-process, never by polling the file), and
 * per owner which ids are pending or retained with their fingerprints, bytes and delivery state
 * (so dedupe, budgets and eviction cost no read). Queued items keep their inputs in memory too,
 * as in the memory backend (bounded by the queued-bytes budgets), so a lease reads nothing;
 * retained outputs stay in the file only and are read when handed out — except the outputs of
 * results finished and not handed out yet, which are also kept in memory up to a bound (4 MiB in
 * all owners, see OUTPUTS_KEPT_BYTES): a stream takes its results right after their finish.
 * This process is the only user of the file: it holds SQLite's exclusive lock while open, so a
 * second server on the same file is refused (several processes share state through the Redis
 * backend).
 *
 * What is in the file, and what a reopen finds:
 * - `items`: one row per submitted (owner, id) from submit until it is evicted, swept or
 *   forgotten — pending (inputs, queue position, deliveries) or done (outputs, delivered or not).
 *   Queued items are queued again, in their order; a result handed to a stream and not yet
 *   acknowledged is undelivered again (the socket it went to is gone).
 * - `heads`: the columns a stream's rows share (owner, tenant, model, compute, group, route node,
 *   retain), once; a row of `items` names its head.
 * - `leases`: one row per lease (consumer, tenant, expiry, its item rows). A lease found at open is
 *   held until it is finished, released or — once expired — reclaimed; its items count that
 *   delivery (`deliveries` in the row counts ended leases, an open lease adds one).
 * - `ledger`: items billed per (owner, tenant, model) — summed per tenant and model for
 *   `ledger()`, per owner for `billedTo()` — written by the same transaction that stores the
 *   billed results. One table, so a finish dirties one page for its bill, not two.
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import type Database from 'better-sqlite3'
import { DeliveryLimitError, InvalidOptionError, LimitExceededError, MissingDependencyError, ShuttingDownError, StateStoreError, toWireError } from '../../errors.js'
import type { Compute, Parameters } from '../../models/pipeline.js'
import { requireOptional } from '../../optional-deps.js'
import { type ItemLength, MemoryWorkQueue } from '../queue/memory-queue.js'
import type { Lease, WorkItem } from '../queue/work-queue.js'
import type {
  FinishOutcome,
  IdState,
  ItemResult,
  LeasedItem,
  LeaseOptions,
  LedgerEntry,
  OwnerCounts,
  ReclaimOutcome,
  Route,
  Routed,
  StateBackend,
  StateLease,
  StateStats,
  SubmitItem,
  SubmitOptions,
  SubmitOutcome,
  TenantBytes,
  WorkerInfo,
} from './state-backend.js'
import { LocalWorkers } from './local-workers.js'
import { RouteListeners } from './route-listeners.js'

/** Options of a {@link SqliteStateBackend}. */
export interface SqliteStateBackendOptions {
  /** The database file (created with its folder, mode 0600), or `':memory:'` (tests; nothing survives). */
  path: string
  /** Finished results kept per owner (for duplicates, resume and absent clients). */
  maxRetained: number
  /** How long a finished result is kept, in ms (see `sweep`). */
  retentionMs: number
  /** Bytes of retained results in all owners; oldest delivered ones are evicted first. Default: no bound. */
  maxRetainedBytes?: number
  /**
   * SQLite `synchronous` in WAL mode. `NORMAL` (default): a committed transition survives a crash
   * of the process (SIGKILL); the last ones may be lost on a power cut. `FULL`: fsync at every
   * commit, survives that too, slower.
   */
  synchronous?: 'NORMAL' | 'FULL'
  /**
   * How long opening waits for the file's lock while another process holds it (a server stopping
   * as this one starts), in ms, before refusing with `ERR_STATE_STORE`. Default 5000.
   */
  busyTimeoutMs?: number
  /** How the queue measures an item for length-aware batching (default: characters; see `MemoryWorkQueueOptions`). */
  inputLength?: ItemLength
}

/** Version of the schema this code writes (SQLite `user_version`); a newer file is refused. */
export const STATE_STORE_SCHEMA_VERSION = 2

// SQLite `application_id` of a state file ('ISst'): another application's database is refused
// rather than written into.
const APPLICATION_ID = 0x49537374

// `items.state`: pending (queued or leased: see `leases`), done and waiting for a stream
// (in flight is not written: a result handed to a socket that dies must come again after a
// restart), done and delivered.
const ROW_PENDING = 0
const ROW_UNDELIVERED = 1
const ROW_DELIVERED = 2

// The tables of schema 2 that the migration from version 1 makes too.
const HEADS_TABLE = `CREATE TABLE heads (
  head INTEGER PRIMARY KEY,
  owner TEXT NOT NULL,
  tenant TEXT NOT NULL,
  model TEXT NOT NULL,
  compute TEXT NOT NULL,
  grp TEXT NOT NULL,
  node TEXT NOT NULL,
  retain INTEGER NOT NULL
);`
const itemsTable = (name: string): string => `CREATE TABLE ${name} (
  row INTEGER PRIMARY KEY,
  head INTEGER NOT NULL,
  id TEXT NOT NULL,
  parameters TEXT,
  fingerprint TEXT,
  bytes INTEGER NOT NULL,
  sink TEXT,
  enqueued_at INTEGER NOT NULL,
  pos INTEGER NOT NULL,
  deliveries INTEGER NOT NULL,
  state INTEGER NOT NULL,
  inputs TEXT,
  outputs TEXT,
  done_at INTEGER,
  done_seq INTEGER
);`

// No UNIQUE (owner, id) index: the in-memory index is the dedupe (this process is the only
// writer), and every row is reached by its rowid, so each write touches one b-tree.
//
// The columns the items of a stream share (owner, tenant, model, compute, group, route node,
// retain: 150–200 bytes of keys, hashes and a UUID) are stored once in `heads` and an item row
// names its head by number: rows of about 100 bytes instead of 250, so a transition dirties fewer
// pages and a commit writes fewer to the WAL (measured: 15 → 8 pages a commit of 64 items, the
// statements and commits about a third cheaper). Heads no row names are deleted at open and, as
// they accumulate, by a sweep.
const SCHEMA_V2 = `
${HEADS_TABLE}
${itemsTable('items')}
CREATE TABLE leases (
  id TEXT PRIMARY KEY,
  consumer TEXT NOT NULL,
  tenant TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  rows TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE ledger (
  owner TEXT NOT NULL,
  tenant TEXT NOT NULL,
  model TEXT NOT NULL,
  items INTEGER NOT NULL,
  PRIMARY KEY (owner, tenant, model)
) WITHOUT ROWID;
`

// The parameters of a multi-row statement go as arguments (`run(...params)`), not as one array:
// better-sqlite3 reads an array's elements one by one through the V8 API, about twice the cost.
//
// Rows a multi-row statement writes or reads at most (a submit's inserts, a finish's and an
// acknowledgement's updates, the outputs handed to streams): one statement per chunk instead of one
// per row saves the per-statement cost (binding, step, reset, the call into better-sqlite3). The
// rows written and the transaction are the same. 64 rows × 6 parameters is far below SQLite's
// limit of 32 766.
const ROWS_PER_STATEMENT = 64
// Pending rows: the columns a submit's items share (their head, sink, the time, and the offset of
// queue positions to row numbers, both given in order) are bound once per statement, the rest
// once per row: binding a value costs a call through the V8 API, and a string a conversion to
// UTF-8 and a copy. Parameters are numbered in the order they appear, so the
// shared ones (in the SELECT list) come before the rows' (in VALUES).
const PENDING_SHARED = 4
const PENDING_PARAMS = 6
const PENDING_INSERT = (n: number): string =>
  'INSERT INTO items (row, head, id, parameters, fingerprint, bytes, sink, enqueued_at, pos, deliveries, state, inputs) ' +
  `SELECT v.column1, ?, v.column2, v.column3, v.column4, v.column5, ?, ?, v.column1 + ?, 0, ${ROW_PENDING}, v.column6 ` +
  `FROM (VALUES ${Array(n).fill('(?, ?, ?, ?, ?, ?)').join(', ')}) AS v`

// Whether two items of a submit write the same shared columns (see PENDING_SHARED).
function sameShared(a: SubmitItem, b: SubmitItem): boolean {
  return (
    a.owner === b.owner &&
    a.tenant === b.tenant &&
    a.model === b.model &&
    a.compute === b.compute &&
    a.group === b.group &&
    a.route.node === b.route.node &&
    a.route.sink === b.route.sink &&
    !a.retain === !b.retain
  )
}

// Version 1 (0.1.0) kept every column in `items`; opening such a file moves the shared columns to
// `heads` (one transaction: all or nothing).
const MIGRATE_V1_TO_V2 = `
${HEADS_TABLE}
INSERT INTO heads (owner, tenant, model, compute, grp, node, retain)
  SELECT DISTINCT owner, tenant, model, compute, grp, node, retain FROM items;
${itemsTable('items_v2')}
INSERT INTO items_v2 (row, head, id, parameters, fingerprint, bytes, sink, enqueued_at, pos, deliveries, state, inputs, outputs, done_at, done_seq)
  SELECT i.row, h.head, i.id, i.parameters, i.fingerprint, i.bytes, i.sink, i.enqueued_at, i.pos, i.deliveries, i.state, i.inputs, i.outputs, i.done_at, i.done_seq
  FROM items AS i JOIN heads AS h
    ON h.owner = i.owner AND h.tenant = i.tenant AND h.model = i.model AND h.compute = i.compute AND h.grp = i.grp AND h.node = i.node AND h.retain = i.retain;
DROP TABLE items;
ALTER TABLE items_v2 RENAME TO items;
`

// Finished pending rows: (state, done_at) once per statement, then (row, outputs, bytes, done_seq)
// a row, joined on rowid.
const FINISHED_SHARED = 2
const FINISHED_PARAMS = 4
const FINISHED_UPDATE = (n: number): string =>
  'UPDATE items SET state = ?, done_at = ?, outputs = v.column2, bytes = v.column3, done_seq = v.column4, inputs = NULL, parameters = NULL ' +
  `FROM (VALUES ${Array(n).fill('(?, ?, ?, ?)').join(', ')}) AS v WHERE items.row = v.column1`

// Outputs of results finished and not handed out yet are also kept in memory, up to this many
// bytes (UTF-16 code units, as `bytes` counts) in all owners: a stream takes its results right
// after their finish, and reading them back from the file cost as much as writing them. The file
// stays the truth (a result is stored before it is handed out, and a restart reads it from there);
// the copy is the string stored, dropped once handed out, acknowledged or removed. Past the bound
// (results waiting for an absent client) outputs are read from the file, as before.
const OUTPUTS_KEPT_BYTES = 4 * 1024 * 1024

// In-memory phases of an entry.
const QUEUED = 0
const RUNNING = 1
const UNDELIVERED = 2
const IN_FLIGHT = 3
const DELIVERED = 4

/** One row of `items` as the index knows it (no inputs, no outputs). */
interface Entry {
  readonly row: number
  readonly id: string
  readonly owner: OwnerState
  readonly fingerprint: string | undefined
  /** Pending: bytes of the inputs; done: bytes of the stored outputs. */
  readonly bytes: number
  phase: number
  /** `Date.now()` when it finished (done entries). */
  readonly at: number
  /**
   * A done entry's stored outputs, kept in memory from its finish until it is handed out (see
   * OUTPUTS_KEPT_BYTES); undefined otherwise (then read from the file).
   */
  outputs: string | undefined
}

class TenantState {
  readonly bytes = { queued: 0, undelivered: 0 }
  owners = 0
  constructor(readonly key: string) {}
}

class OwnerState {
  readonly pending = new Map<string, Entry>()
  processing = 0
  // Insertion order is completion order: eviction and the TTL take the oldest first.
  readonly done = new Map<string, Entry>()
  readonly undelivered = new Set<string>()
  constructor(
    readonly key: string,
    readonly tenant: TenantState,
  ) {}
}

/** A queued item as the in-memory queue holds it. */
type QueueItem = WorkItem & LeasedItem & { deliveries: number; readonly row: number; suspect?: boolean }

interface Held {
  readonly lease: StateLease
  readonly queueLease: Lease
}

interface ItemRow {
  row: number
  owner: string
  id: string
  tenant: string
  model: string
  compute: string
  grp: string
  parameters: string | null
  fingerprint: string | null
  bytes: number
  node: string
  sink: string | null
  retain: number
  enqueued_at: number
  deliveries: number
  inputs: string | null
}

interface HeadRow {
  head: number
  owner: string
  tenant: string
  model: string
  compute: string
  grp: string
  node: string
  retain: number
}

// The key of a head in the index (`SqliteStateBackend.heads`): its columns as one JSON array, so
// no two heads share a key whatever their strings hold (a head names the owner of its rows).
const headKey = (owner: string, tenant: string, model: string, compute: string, grp: string, node: string, retain: number): string =>
  JSON.stringify([owner, tenant, model, compute, grp, node, retain])

// Heads the index holds before a sweep deletes those no row names (then twice the number left,
// at least this).
const HEADS_SWEPT_AT = 1024

// A transaction that transitions join until it commits (see `tx`).
interface Group {
  readonly done: Promise<void>
  resolve(): void
  reject(err: Error): void
}

function newGroup(): Group {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const done = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  // A group whose transitions all failed by throwing has no one awaiting it.
  done.catch(() => {})
  return { done, resolve, reject }
}

interface LeaseRow {
  id: string
  consumer: string
  tenant: string
  expires_at: number
  rows: string
}

const OUT_QUEUED: SubmitOutcome = Object.freeze({ status: 'queued' })
const OUT_PENDING: SubmitOutcome = Object.freeze({ status: 'pending' })
const OUT_CONFLICT: SubmitOutcome = Object.freeze({ status: 'conflict' })
const OUT_OVERLOADED: SubmitOutcome = Object.freeze({ status: 'overloaded' })

// String.prototype.isWellFormed (Node 20; ES2024, past the TypeScript lib this package compiles with).
const isWellFormed = (text: string): boolean => (text as unknown as { isWellFormed(): boolean }).isWellFormed()

function leasedCopy(q: QueueItem): LeasedItem {
  const item: { -readonly [K in keyof LeasedItem]: LeasedItem[K] } = {
    tenant: q.tenant,
    owner: q.owner,
    id: q.id,
    model: q.model,
    compute: q.compute,
    inputs: q.inputs,
    parameters: q.parameters,
    group: q.group,
    fingerprint: q.fingerprint,
    bytes: q.bytes,
    route: q.route,
    enqueuedAt: q.enqueuedAt,
    deliveries: q.deliveries,
  }
  if (q.retain !== undefined) item.retain = q.retain
  return item
}

/**
 * The SQLite {@link StateBackend}: `new SqliteStateBackend({ path, maxRetained, retentionMs })`
 * opens (or creates) the file and rebuilds the in-memory index from it. The same rules as
 * {@link MemoryStateBackend}, checked by the same contract suite; what survives a crash is listed
 * in this module's header. `close()` closes the file: calls after it reject with `ERR_SHUTTING_DOWN`.
 *
 * @throws StateStoreError when the file cannot be opened or used (not SQLite, another application's
 *   file, a newer schema); MissingDependencyError without better-sqlite3; InvalidOptionError.
 */
export class SqliteStateBackend implements StateBackend {
  /** The database file, or `:memory:`. */
  readonly path: string
  private readonly db: Database.Database
  private readonly s: ReturnType<typeof prepare>
  private readonly maxRetained: number
  private readonly retentionMs: number
  private readonly maxRetainedBytes: number
  // Retained results may exceed maxRetained by this much before a chunked eviction, and the byte
  // eviction goes down to the low water (as the memory store does: chunks, not one per result).
  private readonly evictSlack: number
  private readonly bytesLowWater: number

  private queue: MemoryWorkQueue
  private readonly inputLength: ItemLength | undefined
  private readonly owners = new Map<string, OwnerState>()
  private readonly tenants = new Map<string, TenantState>()
  private readonly order = new Set<Entry>()
  private readonly held = new Map<string, Held>()
  private readonly listeners = new RouteListeners()
  private readonly workers = new LocalWorkers()
  private retained = 0
  // Bytes of the outputs entries keep in memory (see OUTPUTS_KEPT_BYTES).
  private keptBytes = 0
  private deadLettered = 0
  // Queue positions: a submit appends after `hi`, a requeue goes in front of `lo`.
  private hi = 0
  private lo = 0
  private doneSeq = 0
  // Row ids are given here (the next one is past every row of the file), so a submit knows its
  // rows before its multi-row inserts run.
  private nextRow = 1
  // The head (see SCHEMA_V2) of each combination of shared columns in the file, by `headKey`, and
  // the number of heads at which a sweep deletes the unused ones.
  private readonly heads = new Map<string, number>()
  private headsSweptAt = HEADS_SWEPT_AT
  // Multi-row statements by kind and row count, prepared on first use.
  private readonly manyRows = new Map<string, Database.Statement>()
  // Pending rows finished by the running transaction and not written yet (FINISHED_SHARED values,
  // then FINISHED_PARAMS a row): written ROWS_PER_STATEMENT a statement, or when the shared values
  // change, the rest before the transaction commits.
  private readonly finished: unknown[] = []
  // Lease ids: unique per open (a stale lease object of an earlier open never matches a new lease).
  private readonly nonce = randomBytes(6).toString('base64url')
  private nextLease = 1
  private closed = false
  // The open transaction this turn's transitions join (see `tx`).
  private group: Group | undefined

  private readonly submitTx: (items: readonly SubmitItem[], maxQueuedBytes: number | undefined, now: number) => { out: SubmitOutcome[]; queued: QueueItem[] }
  private readonly leaseTx: (id: string, consumer: string, tenant: string, expiresAt: number, items: QueueItem[]) => void
  private readonly extendTx: (id: string, expiresAt: number) => void
  private readonly finishTx: (held: Held, results: readonly ItemResult[]) => { out: FinishOutcome; requeue: QueueItem[]; routed: Map<string, Routed[]> }
  private readonly releaseTx: (held: Held) => void
  private readonly reclaimTx: (now: number, maxDeliveries: number) => { out: ReclaimOutcome; settled: Array<[Lease, QueueItem[]]>; routed: Map<string, Routed[]> }
  private readonly acknowledgeTx: (owner: OwnerState, ids: readonly string[]) => void
  private readonly forgetTx: (owner: OwnerState, id: string) => void
  private readonly sweepTx: (now: number) => number

  constructor(options: SqliteStateBackendOptions) {
    const o = { synchronous: 'NORMAL' as const, busyTimeoutMs: 5000, ...options }
    this.inputLength = o.inputLength
    this.queue = new MemoryWorkQueue({ inputLength: o.inputLength })
    if (typeof o.path !== 'string' || o.path === '') throw new InvalidOptionError('SqliteStateBackend: option "path" must be a file path or ":memory:"')
    if (!Number.isInteger(o.maxRetained) || o.maxRetained < 0) throw new InvalidOptionError(`Option "maxRetained" must be an integer >= 0, got ${JSON.stringify(o.maxRetained)}`)
    if (typeof o.retentionMs !== 'number' || !(o.retentionMs >= 0)) throw new InvalidOptionError(`Option "retentionMs" must be a number >= 0, got ${JSON.stringify(o.retentionMs)}`)
    if (o.maxRetainedBytes !== undefined && (typeof o.maxRetainedBytes !== 'number' || !(o.maxRetainedBytes >= 0))) {
      throw new InvalidOptionError(`Option "maxRetainedBytes" must be a number >= 0, got ${JSON.stringify(o.maxRetainedBytes)}`)
    }
    if (o.synchronous !== 'NORMAL' && o.synchronous !== 'FULL') throw new InvalidOptionError(`Option "synchronous" must be "NORMAL" or "FULL", got ${JSON.stringify(o.synchronous)}`)
    if (!Number.isInteger(o.busyTimeoutMs) || o.busyTimeoutMs < 0) throw new InvalidOptionError(`Option "busyTimeoutMs" must be an integer >= 0, got ${JSON.stringify(o.busyTimeoutMs)}`)
    this.path = o.path
    this.maxRetained = o.maxRetained
    this.retentionMs = o.retentionMs
    this.maxRetainedBytes = o.maxRetainedBytes ?? Infinity
    this.evictSlack = Math.max(1, Math.floor(o.maxRetained / 64))
    this.bytesLowWater = this.maxRetainedBytes - this.maxRetainedBytes / 64

    let db: Database.Database | undefined
    try {
      if (o.path !== ':memory:') createPrivate(o.path)
      const Sqlite = requireOptional<typeof Database>('better-sqlite3', 'The SQLite state store')
      db = new Sqlite(o.path)
      db.pragma(`busy_timeout = ${o.busyTimeoutMs}`)
      // EXCLUSIVE before WAL: the first access takes the file's lock for as long as it is open (no
      // shared-memory index, no lock calls per transaction: about half the cost of a small commit),
      // and a second process on the same file is refused instead of writing behind the index.
      db.pragma('locking_mode = EXCLUSIVE')
      db.pragma('journal_mode = WAL')
      db.pragma(`synchronous = ${o.synchronous}`)
      // A checkpoint (copying the WAL into the file, with fsyncs) every 10 000 pages (~40 MiB)
      // instead of 1000: small transitions dirty the same few pages again and again, and a
      // checkpoint writes each page once (measured: +30% items/s at one item per transition).
      db.pragma('wal_autocheckpoint = 10000')
      migrate(db, o.path)
      this.s = prepare(db)
      this.s.deleteUnusedHeads.run()
      if (o.path !== ':memory:') for (const f of [`${o.path}-wal`, `${o.path}-shm`]) if (existsSync(f)) chmodSync(f, 0o600)
      this.db = db
      this.load()
    } catch (err) {
      db?.close()
      if (err instanceof StateStoreError || err instanceof MissingDependencyError) throw err
      if ((err as { code?: string }).code === 'SQLITE_BUSY') {
        throw new StateStoreError(`The state store ${JSON.stringify(o.path)} is in use by another process (another server on the same data folder?)`, { cause: err })
      }
      throw new StateStoreError(`Cannot open the state store ${JSON.stringify(o.path)}: ${(err as Error).message}`, { cause: err })
    }

    this.submitTx = this.tx((items, maxQueuedBytes, now) => this.submitStep(items, maxQueuedBytes, now))
    this.leaseTx = this.tx((id, consumer, tenant, expiresAt, items) => {
      this.s.insertLease.run(id, consumer, tenant, expiresAt, JSON.stringify(items.map((i) => i.row)))
    })
    this.extendTx = this.tx((id, expiresAt) => {
      this.s.extendLease.run(expiresAt, id)
    })
    this.finishTx = this.tx((held, results) => this.finishStep(held, results))
    this.releaseTx = this.tx((held) => {
      this.s.deleteLease.run(held.lease.id)
      this.requeue(held.queueLease.items as QueueItem[])
    })
    this.reclaimTx = this.tx((now, maxDeliveries) => this.reclaimStep(now, maxDeliveries))
    this.acknowledgeTx = this.tx((s, ids) => {
      const rows: number[] = []
      for (const id of ids) {
        const d = s.done.get(id)
        if (!d || d.phase === DELIVERED) continue
        if (d.phase === UNDELIVERED) {
          s.undelivered.delete(id)
          s.tenant.bytes.undelivered -= d.bytes
          this.unkeep(d)
        }
        d.phase = DELIVERED
        rows.push(d.row)
      }
      if (rows.length > 0) this.setDelivered(rows)
    })
    this.forgetTx = this.tx((s, id) => {
      const p = this.unpend(s, id)
      if (p) this.s.deleteRow.run(p.row)
      const d = s.done.get(id)
      if (d) this.removeDone(d)
    })
    this.sweepTx = this.tx((now) => {
      let lost = 0
      for (const s of [...this.owners.values()]) {
        for (const d of s.done.values()) {
          if (now - d.at < this.retentionMs) break // completion order: the rest are younger
          if (this.removeDone(d)) lost++
        }
        if (s.pending.size === 0 && s.done.size === 0) this.deleteOwner(s)
      }
      if (this.heads.size >= this.headsSweptAt) {
        this.s.deleteUnusedHeads.run()
        this.loadHeads()
        this.headsSweptAt = Math.max(HEADS_SWEPT_AT, 2 * this.heads.size)
      }
      return lost
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Transactions and the in-memory index
  // ---------------------------------------------------------------------------------------------

  /**
   * `fn` as a transition of the open group: the first transition of a turn of the event loop
   * opens a `BEGIN IMMEDIATE` transaction, the ones after it in the same turn join it, and it
   * commits once at the end of the turn (`setImmediate`). Callers await {@link committed} before
   * anything of the transition leaves the backend (an outcome, a routed result, outputs handed
   * out), so what a caller sees is on disk. `fn` updates the index as it writes; should it throw,
   * or the commit fail (disk full, I/O error), the group is rolled back, the index rebuilt from the
   * file as it was before the group, and every transition of the group rejects.
   */
  private tx<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    return (...args: A): R => {
      this.check()
      let g = this.group
      if (!g) {
        this.s.begin.run()
        g = this.group = newGroup()
        const opened = g
        setImmediate(() => this.commitGroup(opened))
      }
      try {
        const r = fn(...args)
        // The rows `complete` left to write (nothing in a step reads them back).
        if (this.finished.length > 0) this.writeFinished()
        return r
      } catch (err) {
        this.abortGroup(g, err as Error)
        throw err
      }
    }
  }

  /** Resolves once the group the last transition joined is on disk; rejects if it was rolled back. */
  private committed(): Promise<void> {
    return this.group?.done ?? Promise.resolve()
  }

  private commitGroup(g: Group): void {
    if (this.group !== g) return // rolled back, or committed by close()
    this.group = undefined
    try {
      this.s.commit.run()
    } catch (err) {
      this.abortGroup(g, err as Error)
      return
    }
    g.resolve()
  }

  private abortGroup(g: Group, err: Error): void {
    if (this.group === g) this.group = undefined
    this.finished.length = 0
    try {
      if (this.db.inTransaction) this.s.rollback.run()
      if (this.db.open) this.load()
    } catch {
      // The file cannot be read either: the transition's own error says more.
    }
    g.reject(err)
  }

  private check(): void {
    if (!this.db.open) throw new ShuttingDownError('The state store is closed')
  }

  /** (Re)builds the index from the file: owners, the queue (in queue order), held leases, retained results. */
  private load(): void {
    const old = this.queue
    this.queue = new MemoryWorkQueue({ inputLength: this.inputLength })
    // Pulls waiting on the old queue wake with null and wait again on the new one (see `lease`).
    void old.close()
    this.owners.clear()
    this.tenants.clear()
    this.order.clear()
    this.held.clear()
    this.retained = 0
    this.keptBytes = 0
    this.loadHeads()
    const bounds = this.s.bounds.get() as { hi: number | null; lo: number | null; seq: number | null; row: number | null }
    this.nextRow = Math.max(this.nextRow, (bounds.row ?? 0) + 1)
    this.hi = Math.max(this.hi, bounds.hi ?? 0)
    this.lo = Math.min(this.lo, bounds.lo ?? 0)
    this.doneSeq = Math.max(this.doneSeq, bounds.seq ?? 0)

    const leases = this.s.allLeases.all() as LeaseRow[]
    const leaseOfRow = new Map<number, number>()
    const leaseItems: QueueItem[][] = leases.map(() => [])
    leases.forEach((l, i) => {
      for (const row of JSON.parse(l.rows) as number[]) leaseOfRow.set(row, i)
    })
    const queued: QueueItem[] = []
    const byRow = new Map<number, QueueItem>()
    for (const r of this.s.pendingRows.iterate() as IterableIterator<ItemRow>) {
      const s = this.ownerState(r.owner, r.tenant)
      const e: Entry = { row: r.row, id: r.id, owner: s, fingerprint: r.fingerprint ?? undefined, bytes: r.bytes, phase: QUEUED, at: 0, outputs: undefined }
      s.pending.set(r.id, e)
      s.tenant.bytes.queued += r.bytes
      const route: Route = r.sink === null ? { node: r.node } : { node: r.node, sink: r.sink }
      const q: QueueItem = {
        row: r.row,
        tenant: r.tenant,
        owner: r.owner,
        id: r.id,
        model: r.model,
        compute: r.compute as Compute,
        inputs: r.inputs === null ? undefined : JSON.parse(r.inputs),
        parameters: r.parameters === null ? undefined : (JSON.parse(r.parameters) as Parameters),
        group: r.grp,
        fingerprint: r.fingerprint ?? undefined,
        bytes: r.bytes,
        route,
        enqueuedAt: r.enqueued_at,
        deliveries: r.deliveries,
      }
      if (r.retain) (q as { retain?: boolean }).retain = true
      const li = leaseOfRow.get(r.row)
      if (li === undefined) queued.push(q)
      else {
        // Leased when the file was last written: that lease is one more delivery.
        q.deliveries++
        e.phase = RUNNING
        s.processing++
        byRow.set(r.row, q)
      }
    }
    if (queued.length > 0) void this.queue.push(queued)
    leases.forEach((l, i) => {
      for (const row of JSON.parse(l.rows) as number[]) {
        const q = byRow.get(row)
        if (q) leaseItems[i].push(q)
      }
      const items = leaseItems[i]
      const queueLease = this.queue.adopt(l.tenant, items)
      const lease: StateLease = { id: l.id, consumer: l.consumer, tenant: l.tenant, items: items.map(leasedCopy), expiresAt: l.expires_at }
      this.held.set(l.id, { lease, queueLease })
    })
    for (const r of this.s.doneRows.iterate() as IterableIterator<{ row: number; owner: string; id: string; tenant: string; fingerprint: string | null; bytes: number; state: number; done_at: number }>) {
      const s = this.ownerState(r.owner, r.tenant)
      const undelivered = r.state === ROW_UNDELIVERED
      const e: Entry = { row: r.row, id: r.id, owner: s, fingerprint: r.fingerprint ?? undefined, bytes: r.bytes, phase: undelivered ? UNDELIVERED : DELIVERED, at: r.done_at, outputs: undefined }
      s.done.set(r.id, e)
      this.order.add(e)
      this.retained += r.bytes
      if (undelivered) {
        s.undelivered.add(r.id)
        s.tenant.bytes.undelivered += r.bytes
      }
    }
  }

  private loadHeads(): void {
    this.heads.clear()
    for (const h of this.s.allHeads.iterate() as IterableIterator<HeadRow>) {
      this.heads.set(headKey(h.owner, h.tenant, h.model, h.compute, h.grp, h.node, h.retain), h.head)
    }
  }

  // The head of an item's shared columns, written in the running transaction if it is new (a
  // rollback reloads the index, heads included).
  private headOf(item: { owner: string; tenant: string; model: string; compute: string; group: string; route: Route; retain?: boolean }): number {
    const retain = item.retain ? 1 : 0
    const key = headKey(item.owner, item.tenant, item.model, item.compute, item.group, item.route.node, retain)
    let head = this.heads.get(key)
    if (head === undefined) {
      head = Number(this.s.insertHead.run(item.owner, item.tenant, item.model, item.compute, item.group, item.route.node, retain).lastInsertRowid)
      this.heads.set(key, head)
    }
    return head
  }

  private ownerState(owner: string, tenant: string): OwnerState {
    let s = this.owners.get(owner)
    if (!s) {
      let t = this.tenants.get(tenant)
      if (!t) this.tenants.set(tenant, (t = new TenantState(tenant)))
      t.owners++
      s = new OwnerState(owner, t)
      this.owners.set(owner, s)
    }
    return s
  }

  private deleteOwner(s: OwnerState): void {
    this.owners.delete(s.key)
    if (--s.tenant.owners === 0) this.tenants.delete(s.tenant.key)
  }

  // The statement for `n` rows of `kind`, prepared on first use (`raw`: rows read as arrays).
  private many(kind: string, n: number, sql: () => string, raw = false): Database.Statement {
    const key = `${kind}${n}`
    let st = this.manyRows.get(key)
    if (!st) {
      st = this.db.prepare(sql())
      if (raw) st.raw(true)
      this.manyRows.set(key, st)
    }
    return st
  }

  // Inserts the pending rows whose parameters `params` holds (PENDING_SHARED, then PENDING_PARAMS a
  // row); empties it.
  private insertPending(params: unknown[]): void {
    const n = (params.length - PENDING_SHARED) / PENDING_PARAMS
    this.many('insert', n, () => PENDING_INSERT(n)).run(...params)
    params.length = 0
  }

  // The stored outputs of done `entries`, in their order: those kept in memory, the others read
  // from the file, one range query a run of consecutive rows (exactly those rows), one read a row
  // of no run.
  private outputsOf(entries: readonly Entry[]): string[] {
    const out = new Array<string>(entries.length)
    let rows: number[] | undefined
    for (let i = 0; i < entries.length; i++) {
      const kept = entries[i].outputs
      if (kept !== undefined) out[i] = kept
      else (rows ??= []).push(entries[i].row)
    }
    if (rows === undefined) return out
    const byRow = new Map<number, string>()
    rows.sort((a, b) => a - b)
    for (let i = 0; i < rows.length; ) {
      let j = i
      while (j + 1 < rows.length && rows[j + 1] <= rows[j] + 1) j++
      if (j > i) for (const [row, outputs] of this.s.outputsRange.all(rows[i], rows[j]) as Array<[number, string]>) byRow.set(row, outputs)
      else byRow.set(rows[i], this.s.outputs.get(rows[i]) as string)
      i = j + 1
    }
    for (let i = 0; i < entries.length; i++) if (out[i] === undefined) out[i] = byRow.get(entries[i].row) as string
    return out
  }

  // Writes the finished rows of `this.finished`; empties it. A row deleted since (evicted in the same
  // step) is no longer there and is not written: the delete stands, as if it came after.
  private writeFinished(): void {
    const n = (this.finished.length - FINISHED_SHARED) / FINISHED_PARAMS
    this.many('finished', n, () => FINISHED_UPDATE(n)).run(...this.finished)
    this.finished.length = 0
  }

  // Marks the rows delivered; empties `rows`. Rows are numbered in submit order, so the results a stream acknowledges are mostly runs of
  // consecutive rows: one range update a run (it writes exactly those rows, every number of the
  // range being one of them), the rows of no run ROWS_PER_STATEMENT a statement.
  private setDelivered(rows: number[]): void {
    rows.sort((a, b) => a - b)
    const single: number[] = []
    for (let i = 0; i < rows.length; ) {
      let j = i
      while (j + 1 < rows.length && rows[j + 1] <= rows[j] + 1) j++
      if (j > i) this.s.deliveredRange.run(rows[i], rows[j])
      else {
        single.push(rows[i])
        if (single.length === ROWS_PER_STATEMENT) this.setDeliveredRows(single)
      }
      i = j + 1
    }
    if (single.length > 0) this.setDeliveredRows(single)
    rows.length = 0
  }

  // Marks the rows delivered (at most ROWS_PER_STATEMENT); empties `rows`.
  private setDeliveredRows(rows: number[]): void {
    const n = rows.length
    this.many('delivered', n, () => `UPDATE items SET state = ${ROW_DELIVERED} WHERE row IN (${Array(n).fill('?').join(', ')})`).run(...rows)
    rows.length = 0
  }

  // Drops the outputs an entry keeps in memory.
  private unkeep(d: Entry): void {
    if (d.outputs === undefined) return
    d.outputs = undefined
    this.keptBytes -= d.bytes
  }

  // The stored outputs of a done entry.
  private outputsOfEntry(d: Entry): string {
    return d.outputs ?? (this.s.outputs.get(d.row) as string)
  }

  // Takes a pending entry off the index, releasing its queued bytes (the row is the caller's).
  private unpend(s: OwnerState, id: string): Entry | undefined {
    const p = s.pending.get(id)
    if (!p) return undefined
    if (p.phase === RUNNING) s.processing--
    s.pending.delete(id)
    s.tenant.bytes.queued -= p.bytes
    return p
  }

  // Deletes a retained result; true when it had not been delivered (lost).
  private removeDone(d: Entry): boolean {
    const s = d.owner
    this.unkeep(d)
    s.done.delete(d.id)
    this.order.delete(d)
    this.retained -= d.bytes
    this.s.deleteRow.run(d.row)
    if (d.phase === DELIVERED) return false
    if (d.phase === UNDELIVERED) {
      s.tenant.bytes.undelivered -= d.bytes
      s.undelivered.delete(d.id)
    }
    return true
  }

  // Puts leased items back at the front of the queue, in lease order, with their delivery count.
  private requeue(items: readonly QueueItem[]): void {
    let pos = this.lo - items.length
    this.lo = pos
    for (const item of items) {
      this.s.requeueRow.run(item.deliveries, pos++, item.row)
      const p = this.owners.get(item.owner)?.pending.get(item.id)
      if (p?.phase === RUNNING) {
        p.phase = QUEUED
        p.owner.processing--
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Steps (each runs inside its transaction)
  // ---------------------------------------------------------------------------------------------

  private submitStep(items: readonly SubmitItem[], maxQueuedBytes: number | undefined, now: number): { out: SubmitOutcome[]; queued: QueueItem[] } {
    const out: SubmitOutcome[] = []
    const queued: QueueItem[] = []
    // The inserts, ROWS_PER_STATEMENT rows a statement, consecutive items with the same shared
    // columns together (the loop reads no row it inserts). `head`: the item whose shared columns
    // `params` holds.
    const params: unknown[] = []
    let head: SubmitItem | undefined
    for (const item of items) {
      const s = this.ownerState(item.owner, item.tenant)
      const fp = item.fingerprint
      const p = s.pending.get(item.id)
      if (p) {
        out.push(fp !== undefined && p.fingerprint !== undefined && p.fingerprint !== fp ? OUT_CONFLICT : OUT_PENDING)
        continue
      }
      const d = s.done.get(item.id)
      if (d) {
        if (fp !== undefined && d.fingerprint !== undefined && d.fingerprint !== fp) out.push(OUT_CONFLICT)
        else out.push({ status: 'done', outputs: (this.outputsOfEntry(d) as string | undefined) ?? 'null' })
        continue
      }
      const bytes = item.bytes ?? 0
      const queuedBytes = s.tenant.bytes.queued
      if (maxQueuedBytes !== undefined && queuedBytes > 0 && queuedBytes + bytes > maxQueuedBytes) {
        out.push(OUT_OVERLOADED)
        continue
      }
      const pos = ++this.hi
      const row = this.nextRow++
      if (head !== undefined && (params.length === PENDING_SHARED + ROWS_PER_STATEMENT * PENDING_PARAMS || !sameShared(head, item) || pos - row !== params[PENDING_SHARED - 1])) {
        this.insertPending(params)
      }
      if (params.length === 0) {
        head = item
        params.push(this.headOf(item), item.route.sink ?? null, now, pos - row)
      }
      params.push(row, item.id, item.parameters === undefined ? null : JSON.stringify(item.parameters), fp ?? null, bytes, JSON.stringify(item.inputs) ?? null)
      s.pending.set(item.id, { row, id: item.id, owner: s, fingerprint: fp, bytes, phase: QUEUED, at: 0, outputs: undefined })
      s.tenant.bytes.queued += bytes
      // One fixed shape, as the memory backend (a literal, not a spread: the spread copies made
      // submits, leases and the GC measurably slower on a stream's hot path).
      queued.push({
        tenant: item.tenant,
        owner: item.owner,
        id: item.id,
        model: item.model,
        compute: item.compute,
        inputs: item.inputs,
        parameters: item.parameters,
        group: item.group,
        fingerprint: item.fingerprint,
        bytes,
        route: item.route,
        retain: item.retain,
        enqueuedAt: now,
        deliveries: 0,
        row,
      })
      out.push(OUT_QUEUED)
    }
    if (params.length > 0) this.insertPending(params)
    return { out, queued }
  }

  private finishStep(held: Held, results: readonly ItemResult[]): { out: FinishOutcome; requeue: QueueItem[]; routed: Map<string, Routed[]> } {
    this.s.deleteLease.run(held.lease.id)
    this.held.delete(held.lease.id)
    const items = held.queueLease.items as QueueItem[]
    const byIndex = new Map<number, ItemResult>()
    for (const r of results) if (Number.isInteger(r.index) && r.index >= 0 && r.index < items.length && !byIndex.has(r.index)) byIndex.set(r.index, r)
    const requeue = byIndex.size === items.length ? [] : items.filter((_, i) => !byIndex.has(i))
    if (requeue.length > 0) this.requeue(requeue)
    const now = Date.now()
    const routed = new Map<string, Routed[]>()
    let billed = 0
    let lost = 0
    // Bills of this step, summed per (owner, tenant, model): one upsert each.
    const bills = new Map<string, { owner: string; tenant: string; model: string; n: number }>()
    for (const [i, r] of byIndex) {
      const item = items[i]
      const stored = this.storeResult(item, r, routed, now)
      lost += stored.lost
      if (!r.billable || !stored.first) continue
      billed++
      const key = `${item.owner}\0${item.tenant}\0${item.model}`
      const bill = bills.get(key)
      if (bill) bill.n++
      else bills.set(key, { owner: item.owner, tenant: item.tenant, model: item.model, n: 1 })
    }
    for (const bill of bills.values()) this.s.addBill.run(bill.owner, bill.tenant, bill.model, bill.n)
    return { out: { finished: byIndex.size, billed, lost }, requeue, routed }
  }

  /**
   * Stores one finished item's result (or forgets it: a sink route without `retain`) and adds it to
   * the routing of its node. `first`: the id had no result yet (a finished id is never billed
   * twice); `lost`: undelivered results evicted to make room.
   */
  private storeResult(item: QueueItem, r: Pick<ItemResult, 'outputs' | 'failed' | 'computeSeconds'>, routed: Map<string, Routed[]>, now: number): { first: boolean; lost: number } {
    const { owner, id, route } = item
    const { outputs } = r
    let list = routed.get(route.node)
    if (!list) routed.set(route.node, (list = []))
    const s = this.ownerState(owner, item.tenant)
    if (route.sink === undefined) {
      // Over the whole retained budget alone: the store keeps an error body; the node gets the result to write once.
      list.push(outputs.length > this.maxRetainedBytes ? { owner, id, outputs, oversize: true } : { owner, id })
      return this.complete(s, item, outputs, false, now)
    }
    list.push({ owner, id, sink: route.sink, outputs, failed: r.failed, computeSeconds: r.computeSeconds })
    if (item.retain) return this.complete(s, item, outputs, true, now)
    const p = this.unpend(s, id)
    if (p) this.s.deleteRow.run(p.row)
    const d = s.done.get(id)
    if (d) this.removeDone(d)
    return { first: p !== undefined || d === undefined, lost: 0 }
  }

  // The memory store's `complete`, on rows: the pending row becomes a done row.
  private complete(s: OwnerState, item: QueueItem, outputsJson: string, delivered: boolean, now: number): { first: boolean; lost: number } {
    const p = this.unpend(s, item.id)
    if (!p && s.done.has(item.id)) return { first: false, lost: 0 } // already finished: keep the first result
    let outputs = outputsJson
    // UTF-16 length, as the memory store counts.
    let bytes = outputs.length
    if (bytes > this.maxRetainedBytes) {
      outputs = JSON.stringify(toWireError(new LimitExceededError(`Result of ${bytes} bytes is over the retained budget (${this.maxRetainedBytes} bytes): sent at most once, not kept`)))
      bytes = outputs.length
    }
    const state = delivered ? ROW_DELIVERED : ROW_UNDELIVERED
    const seq = ++this.doneSeq
    let row: number
    if (p) {
      row = p.row
      const f = this.finished
      if (f.length > 0 && (f.length === FINISHED_SHARED + ROWS_PER_STATEMENT * FINISHED_PARAMS || f[0] !== state || f[1] !== now)) this.writeFinished()
      if (f.length === 0) f.push(state, now)
      f.push(row, outputs, bytes, seq)
    } else {
      // Forgotten while it ran: a row of its own again.
      row = this.nextRow++
      this.s.insertDone.run(row, this.headOf(item), item.id, bytes, item.route.sink ?? null, item.enqueuedAt, state, outputs, now, seq)
    }
    const d: Entry = { row, id: item.id, owner: s, fingerprint: p?.fingerprint, bytes, phase: delivered ? DELIVERED : UNDELIVERED, at: now, outputs: undefined }
    s.done.set(item.id, d)
    this.order.add(d)
    this.retained += bytes
    if (!delivered) {
      s.undelivered.add(item.id)
      s.tenant.bytes.undelivered += bytes
      // Only a well-formed string: the file holds UTF-8, and reads a lone surrogate back as U+FFFD.
      if (this.keptBytes + bytes <= OUTPUTS_KEPT_BYTES && isWellFormed(outputs)) {
        d.outputs = outputs
        this.keptBytes += bytes
      }
    }
    let lost = 0
    if (s.done.size > this.maxRetained + this.evictSlack) lost += this.evictCount(s)
    if (this.retained > this.maxRetainedBytes) lost += this.evictBytes()
    return { first: true, lost }
  }

  private evictCount(s: OwnerState): number {
    let lost = 0
    let n = s.done.size - this.maxRetained
    for (const d of s.done.values()) {
      if (n-- <= 0) break
      if (this.removeDone(d)) lost++
    }
    return lost
  }

  // The oldest delivered results first, then the oldest undelivered ones, down to the low water.
  private evictBytes(): number {
    let lost = 0
    for (const d of this.order) {
      if (this.retained <= this.bytesLowWater) return lost
      if (d.phase === DELIVERED) this.removeDone(d)
    }
    for (const d of this.order) {
      if (this.retained <= this.bytesLowWater) return lost
      if (this.removeDone(d)) lost++
    }
    return lost
  }

  private reclaimStep(now: number, maxDeliveries: number): { out: ReclaimOutcome; settled: Array<[Lease, QueueItem[]]>; routed: Map<string, Routed[]> } {
    let requeued = 0
    let dead = 0
    const routed = new Map<string, Routed[]>()
    const settled: Array<[Lease, QueueItem[]]> = []
    const at = Date.now()
    for (const [id, held] of [...this.held]) {
      if (held.lease.expiresAt > now) continue
      this.held.delete(id)
      this.s.deleteLease.run(id)
      const items = held.queueLease.items as QueueItem[]
      const again = items.filter((item) => item.deliveries < maxDeliveries)
      this.requeue(again)
      // A worker died or hung on these: each runs alone from now on (PullOptions.alone).
      for (const item of again) item.suspect = true
      settled.push([held.queueLease, again])
      requeued += again.length
      for (const item of items) {
        if (item.deliveries < maxDeliveries) continue
        const error = new DeliveryLimitError(`Item ${JSON.stringify(item.id)} was leased ${item.deliveries} times and never finished (a worker died or hung on it each time); it is not run again`)
        this.storeResult(item, { outputs: JSON.stringify(toWireError(error)), failed: true }, routed, at)
        dead++
      }
    }
    return { out: { requeued, deadLettered: dead }, settled, routed }
  }

  private route(routed: Map<string, Routed[]>): void {
    this.listeners.route(routed)
  }

  // ---------------------------------------------------------------------------------------------
  // The seam
  // ---------------------------------------------------------------------------------------------

  async submit(items: readonly SubmitItem[], options: SubmitOptions = {}): Promise<SubmitOutcome[]> {
    if (this.closed) throw new ShuttingDownError('The server is shutting down')
    if (items.length === 0) return []
    const { out, queued } = this.submitTx(items, options.maxQueuedBytes, Date.now())
    if (queued.length > 0) void this.queue.push(queued)
    await this.committed()
    return out
  }

  async lease(consumer: string, options: LeaseOptions): Promise<StateLease | null> {
    const { accept, signal } = options
    for (;;) {
      if (this.closed || signal?.aborted) return null
      const queue = this.queue
      const queueLease = await queue.pull({
        maxBatch: options.maxBatch,
        maxWaitMs: options.maxWaitMs,
        signal,
        maxLeasesPerTenant: options.maxLeasesPerTenant,
      batching: options.batching,
        accept: accept ? (head) => accept(head as QueueItem) : undefined,
      // Its lease ran out before (its worker died or hung): run alone, so a poison item fails by itself.
      alone: (item) => (item as QueueItem).suspect === true,
      })
      if (this.closed) return null
      // The index was rebuilt while this pull waited (a failed transaction): wait on the new queue.
      if (queue !== this.queue) continue
      if (!queueLease) return null
      const items = queueLease.items as QueueItem[]
      const id = `${this.nonce}.${this.nextLease++}`
      const expiresAt = Date.now() + options.leaseMs
      this.leaseTx(id, consumer, queueLease.tenant, expiresAt, items)
      for (const item of items) {
        item.deliveries++
        const p = this.owners.get(item.owner)?.pending.get(item.id)
        if (p && p.phase === QUEUED) {
          p.phase = RUNNING
          p.owner.processing++
        }
      }
      const lease: StateLease = { id, consumer, tenant: queueLease.tenant, items: items.map(leasedCopy), expiresAt }
      this.held.set(id, { lease, queueLease })
      // The lease (its items' delivery count) is on disk before the batch runs: a model that kills
      // the process on an item must find that delivery counted when the server comes back.
      await this.committed()
      return lease
    }
  }

  wake(): void {
    this.queue.notify()
  }

  async extend(lease: StateLease, ms: number): Promise<boolean> {
    this.check()
    const held = this.held.get(lease.id)
    if (!held) return false
    const expiresAt = Date.now() + ms
    this.extendTx(lease.id, expiresAt)
    held.lease.expiresAt = lease.expiresAt = expiresAt
    return true
  }

  async finish(lease: StateLease, results: readonly ItemResult[]): Promise<FinishOutcome> {
    this.check()
    const held = this.held.get(lease.id)
    if (!held) return { finished: 0, billed: 0, lost: 0 }
    const { out, requeue, routed } = this.finishTx(held, results)
    this.queue.settle(held.queueLease, requeue)
    await this.committed()
    this.route(routed)
    return out
  }

  async release(lease: StateLease): Promise<void> {
    this.check()
    const held = this.held.get(lease.id)
    if (!held) return
    this.releaseTx(held)
    this.held.delete(lease.id)
    this.queue.settle(held.queueLease, held.queueLease.items)
    await this.committed()
  }

  async reclaim(now: number, maxDeliveries: number): Promise<ReclaimOutcome> {
    this.check()
    let expired = false
    for (const held of this.held.values()) if (held.lease.expiresAt <= now) expired = true
    if (!expired) return { requeued: 0, deadLettered: 0 }
    const { out, settled, routed } = this.reclaimTx(now, maxDeliveries)
    for (const [queueLease, again] of settled) this.queue.settle(queueLease, again)
    this.deadLettered += out.deadLettered
    await this.committed()
    this.route(routed)
    return out
  }

  subscribe(node: string, listener: (routed: Routed[]) => void): () => void {
    return this.listeners.subscribe(node, listener)
  }

  async announceWorker(info: WorkerInfo, ttlMs: number): Promise<void> {
    this.workers.announce(info, ttlMs)
  }

  async workersOnline(): Promise<WorkerInfo[]> {
    return this.workers.online()
  }

  async attach(node: string, owner: string, open: boolean): Promise<void> {
    this.listeners.attach(node, owner, open)
  }


  async lookup(owner: string, ids: readonly string[]): Promise<Array<{ state: IdState; outputs?: string }>> {
    this.check()
    const s = this.owners.get(owner)
    const out = ids.map((id): { state: IdState; outputs?: string } => {
      if (!s) return { state: 'unknown' }
      if (s.pending.has(id)) return { state: 'pending' }
      const d = s.done.get(id)
      return d ? { state: 'done', outputs: this.outputsOfEntry(d) } : { state: 'unknown' }
    })
    // Outputs leave the backend once the finish that stored them is on disk (see `tx`).
    await this.committed()
    return out
  }

  async claim(owner: string, id: string): Promise<string | undefined> {
    this.check()
    const s = this.owners.get(owner)
    if (!s || !s.undelivered.delete(id)) return undefined
    const d = s.done.get(id) as Entry
    d.phase = IN_FLIGHT
    s.tenant.bytes.undelivered -= d.bytes
    const outputs = this.outputsOfEntry(d)
    this.unkeep(d)
    await this.committed()
    return outputs
  }

  async takeUndelivered(owner: string, max: number): Promise<Array<[string, string]>> {
    this.check()
    const s = this.owners.get(owner)
    const out: Array<[string, string]> = []
    if (!s) return out
    const taken: Entry[] = []
    for (const id of s.undelivered) {
      if (taken.length >= max) break
      const d = s.done.get(id)
      if (d) taken.push(d)
      else s.undelivered.delete(id)
    }
    if (taken.length === 0) return out
    // The outputs first, ROWS_PER_STATEMENT rows a query (one call instead of one per row); the
    // index changes only once they are read.
    const outputs = this.outputsOf(taken)
    for (let i = 0; i < taken.length; i++) {
      const d = taken[i]
      this.unkeep(d)
      s.undelivered.delete(d.id)
      d.phase = IN_FLIGHT
      s.tenant.bytes.undelivered -= d.bytes
      out.push([d.id, outputs[i]])
    }
    await this.committed()
    return out
  }

  async returnUndelivered(owner: string, ids: readonly string[]): Promise<void> {
    this.check()
    const s = this.owners.get(owner)
    if (!s) return
    for (const id of ids) {
      const d = s.done.get(id)
      // Only in-flight ones: an acknowledged result stays delivered. In flight is not in the file
      // (a restart makes it undelivered again), so nothing to write.
      if (!d || d.phase !== IN_FLIGHT) continue
      s.tenant.bytes.undelivered += d.bytes
      d.phase = UNDELIVERED
      s.undelivered.add(id)
    }
  }

  async acknowledge(owner: string, ids: readonly string[]): Promise<void> {
    this.check()
    const s = this.owners.get(owner)
    if (!s || ids.length === 0) return
    this.acknowledgeTx(s, ids)
    await this.committed()
  }

  async forget(owner: string, id: string): Promise<void> {
    this.check()
    const s = this.owners.get(owner)
    if (!s || (!s.pending.has(id) && !s.done.has(id))) return
    this.forgetTx(s, id)
    await this.committed()
  }

  async counts(owner: string): Promise<OwnerCounts> {
    this.check()
    const s = this.owners.get(owner)
    if (!s) return { queued: 0, processing: 0, done: 0, undelivered: 0 }
    // `done`: results retained (a durable count: the file holds no "finished since start").
    return { queued: s.pending.size - s.processing, processing: s.processing, done: s.done.size, undelivered: s.undelivered.size }
  }

  async tenantBytes(tenant: string): Promise<TenantBytes> {
    this.check()
    const t = this.tenants.get(tenant)
    return t ? { queued: t.bytes.queued, undelivered: t.bytes.undelivered } : { queued: 0, undelivered: 0 }
  }

  async stats(): Promise<StateStats> {
    this.check()
    const q = this.queue.stats()
    return { queued: q.queued, processing: q.processing, retainedBytes: this.retained, deadLettered: this.deadLettered }
  }

  async ledger(tenant?: string): Promise<LedgerEntry[]> {
    this.check()
    const entries = (tenant === undefined ? this.s.ledgerAll.all() : this.s.ledgerOf.all(tenant)) as LedgerEntry[]
    await this.committed()
    return entries
  }

  async billedTo(owner: string): Promise<number> {
    this.check()
    const billed = (this.s.ownerBill.get(owner) as number | undefined) ?? 0
    await this.committed()
    return billed
  }

  async sweep(now: number): Promise<number> {
    const lost = this.sweepTx(now)
    await this.committed()
    return lost
  }

  /**
   * Wakes pending leases with `null` and closes the file (a WAL checkpoint); every later call
   * rejects with `ERR_SHUTTING_DOWN`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // The open group commits first: its transitions' callers are waiting for it.
    if (this.group) this.commitGroup(this.group)
    await this.queue.close()
    if (this.db.open) this.db.close()
  }
}

// The file and its folder readable by the server's user only: rows name tenants and hold inputs
// and results. SQLite gives the -wal and -shm files the mode of the database file.
function createPrivate(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600))
  chmodSync(path, 0o600)
}

// Creates the schema on a new file; refuses another application's file and a newer schema.
function migrate(db: Database.Database, path: string): void {
  const app = db.pragma('application_id', { simple: true }) as number
  const version = db.pragma('user_version', { simple: true }) as number
  const tables = db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table'").pluck().get() as number
  if ((app !== APPLICATION_ID && app !== 0) || (app === 0 && (version !== 0 || tables > 0))) {
    throw new StateStoreError(`${JSON.stringify(path)} is not a state store of inference-stream (another SQLite database): point the server at another folder`)
  }
  if (version === STATE_STORE_SCHEMA_VERSION) return
  if (version === 1) {
    db.transaction(() => {
      db.exec(MIGRATE_V1_TO_V2)
      db.pragma(`user_version = ${STATE_STORE_SCHEMA_VERSION}`)
    }).immediate()
    return
  }
  if (version > STATE_STORE_SCHEMA_VERSION) {
    throw new StateStoreError(
      `The state store ${JSON.stringify(path)} has schema version ${version}, newer than this version of inference-stream reads (${STATE_STORE_SCHEMA_VERSION}): upgrade inference-stream, or move the file away to start afresh`,
    )
  }
  db.transaction(() => {
    db.exec(SCHEMA_V2)
    db.pragma(`application_id = ${APPLICATION_ID}`)
    db.pragma(`user_version = ${STATE_STORE_SCHEMA_VERSION}`)
  }).immediate()
}

function prepare(db: Database.Database) {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    insertDone: db.prepare(
      `INSERT INTO items (row, head, id, bytes, sink, enqueued_at, pos, deliveries, state, outputs, done_at, done_seq)
       VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?)`,
    ),
    insertHead: db.prepare('INSERT INTO heads (owner, tenant, model, compute, grp, node, retain) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    allHeads: db.prepare('SELECT head, owner, tenant, model, compute, grp, node, retain FROM heads'),
    // Heads no row names (`NOT IN` a list SQLite builds once, not a query per head).
    deleteUnusedHeads: db.prepare('DELETE FROM heads WHERE head NOT IN (SELECT head FROM items)'),
    requeueRow: db.prepare('UPDATE items SET deliveries = ?, pos = ? WHERE row = ?'),
    deleteRow: db.prepare('DELETE FROM items WHERE row = ?'),
    deliveredRange: db.prepare(`UPDATE items SET state = ${ROW_DELIVERED} WHERE row >= ? AND row <= ?`),
    outputs: db.prepare('SELECT outputs FROM items WHERE row = ?').pluck(),
    outputsRange: db.prepare('SELECT row, outputs FROM items WHERE row >= ? AND row <= ?').raw(),
    insertLease: db.prepare('INSERT INTO leases (id, consumer, tenant, expires_at, rows) VALUES (?, ?, ?, ?, ?)'),
    extendLease: db.prepare('UPDATE leases SET expires_at = ? WHERE id = ?'),
    deleteLease: db.prepare('DELETE FROM leases WHERE id = ?'),
    allLeases: db.prepare('SELECT id, consumer, tenant, expires_at, rows FROM leases'),
    addBill: db.prepare(
      'INSERT INTO ledger (owner, tenant, model, items) VALUES (?, ?, ?, ?) ON CONFLICT (owner, tenant, model) DO UPDATE SET items = items + excluded.items',
    ),
    ledgerAll: db.prepare('SELECT tenant, model, sum(items) AS items FROM ledger GROUP BY tenant, model ORDER BY tenant, model'),
    ledgerOf: db.prepare('SELECT tenant, model, sum(items) AS items FROM ledger WHERE tenant = ? GROUP BY model ORDER BY model'),
    ownerBill: db.prepare('SELECT sum(items) FROM ledger WHERE owner = ?').pluck(),
    bounds: db.prepare(`SELECT max(pos) AS hi, min(pos) AS lo, max(done_seq) AS seq, max(row) AS row FROM items`),
    pendingRows: db.prepare(
      `SELECT i.row, h.owner, i.id, h.tenant, h.model, h.compute, h.grp, i.parameters, i.fingerprint, i.bytes, h.node, i.sink, h.retain, i.enqueued_at, i.deliveries, i.inputs
       FROM items AS i JOIN heads AS h ON h.head = i.head WHERE i.state = ${ROW_PENDING} ORDER BY i.pos`,
    ),
    doneRows: db.prepare(
      `SELECT i.row, h.owner, i.id, h.tenant, i.fingerprint, i.bytes, i.state, i.done_at
       FROM items AS i JOIN heads AS h ON h.head = i.head WHERE i.state <> ${ROW_PENDING} ORDER BY i.done_seq`,
    ),
  }
}
