/**
 * The server's shared state, drawn around the atomic transitions of an item (DESIGN.md §6):
 * submit → lease → finish (or release / reclaim) → deliver → acknowledge. Every method is async so
 * that memory, SQLite and Redis implementations sit behind the same seam; each transition is one
 * atomic step in every backend, so a crash can only ever fall between two transitions, never inside
 * one (no "admitted but not queued", no "billed but not stored").
 *
 * The rules every backend applies the same way, checked by one contract suite
 * (test/helpers/state-contract.ts):
 * - **exactly once per (owner, id)**: a submitted id that is queued, leased or retained is not queued
 *   again; the same id with another fingerprint is a conflict; a finished id is billed once;
 * - **leases**: a batch belongs to one consumer until it expires; `finish` of a lease that was
 *   reclaimed (or finished) changes nothing; an item delivered more than `maxDeliveries` times fails
 *   with `ERR_DELIVERY_LIMIT` instead of running again;
 * - **fair share** (../queue/fair-share.ts): tenants take turns for batches, none holds more than
 *   `maxLeasesPerTenant`;
 * - **byte budgets**: queued input bytes per tenant (`maxQueuedBytes` on submit), undelivered
 *   result bytes per tenant, retained result bytes in all (eviction: delivered first);
 * - **delivery**: a result routed to a stream stays until acknowledged; a result routed to a sink
 *   (a waiting HTTP request, a job) is handed to that node once, then forgotten unless retained.
 */
import type { Compute, Parameters } from '../../models/pipeline.js'
import type { Batching } from '../queue/length-batching.js'

/** How long a node's word that it holds a stream of an owner lasts unless renewed (a node that died). */
export const PRESENCE_TTL_MS = 30_000

/** Where a finished result goes. */
export interface Route {
  /** The node (front-end process) that submitted the item: it holds the socket or the request. */
  readonly node: string
  /**
   * A sink of that node (`http:17`, `job:<id>`): the result is handed to it once, then forgotten
   * (unless the item is `retain`ed). Absent: the owner's streams, on whichever node has one open;
   * until then it waits in the store.
   */
  readonly sink?: string
}

/** One item to submit. */
export interface SubmitItem {
  /** Id of the tenant that owns it (../tenants.ts): budgets and the bill are per tenant. */
  readonly tenant: string
  /** The id's scope: a tenant's streams of a model, its HTTP requests of a model, or a job (see ../store/result-store.ts). */
  readonly owner: string
  /** Item id, unique per owner. */
  readonly id: string
  readonly model: string
  readonly compute: Compute
  readonly inputs: unknown
  readonly parameters?: Parameters
  /** Grouping key (`groupKey`): items batch only within one group. */
  readonly group: string
  /** Fingerprint of (inputs, parameters); a known id with another one is a conflict. Absent: not checked. */
  readonly fingerprint?: string
  /** Bytes of the inputs as JSON: counted in the tenant's queued bytes until the item finishes. */
  readonly bytes: number
  readonly route: Route
  /** A sink-routed result is also retained (as delivered) under its id: an HTTP Idempotency-Key. */
  readonly retain?: boolean
}

/**
 * What submit decided for one item: `queued` (it will run); `pending` (the same item is queued or
 * running); `done` (its retained result, JSON text); `conflict` (the id is known with other inputs:
 * fail it, do not run it); `overloaded` (over the tenant's queued bytes: nothing changed).
 */
export type SubmitOutcome =
  | { readonly status: 'queued' }
  | { readonly status: 'pending' }
  | { readonly status: 'done'; readonly outputs: string }
  | { readonly status: 'conflict' }
  | { readonly status: 'overloaded' }

/** Options of one submit. */
export interface SubmitOptions {
  /**
   * Refuse an item with `overloaded` when its tenant already has queued bytes and it would take
   * them over this (an item alone over it is admitted when nothing is queued, so it is never stuck).
   */
  readonly maxQueuedBytes?: number
}

/** A queued item as a worker gets it. */
export interface LeasedItem extends SubmitItem {
  /** `Date.now()` when it was submitted. */
  readonly enqueuedAt: number
  /** Times it has been leased, this lease included. */
  readonly deliveries: number
}

/** A batch of one group, leased to one consumer until `expiresAt` (see `extend`). */
export interface StateLease {
  /** Unique in the backend (across nodes). */
  readonly id: string
  readonly consumer: string
  /** The tenant the batch was chosen for (fair share); other tenants' items may ride along. */
  readonly tenant: string
  readonly items: readonly LeasedItem[]
  /** `Date.now()` past which the lease may be reclaimed. */
  expiresAt: number
}

/** Options of one lease. */
export interface LeaseOptions {
  /** Most items in the batch. */
  readonly maxBatch: number
  /** How long the oldest item of a group may wait for the batch to fill, in ms. */
  readonly maxWaitMs: number
  /** How long the lease lasts before it may be reclaimed, in ms (renew with `extend`). */
  readonly leaseMs: number
  /** Ends the wait: the lease then resolves `null`. */
  readonly signal?: AbortSignal
  /** Asked about a group's oldest item before it is taken; `false` leaves the group queued. */
  readonly accept?: (head: LeasedItem) => boolean
  /**
   * The models the consumer serves, when not all (a worker of a cluster): groups of other models
   * are not offered to it. A hint a backend may use to skip them without taking them (Redis does);
   * `accept` must refuse them all the same. Default: every model.
   */
  readonly models?: readonly string[]
  /** Most leases one tenant may hold at once. Default: no cap. */
  readonly maxLeasesPerTenant?: number
  /**
   * How the batch is picked from the group: `'length'`, items of similar `inputLength` (the chosen
   * tenant's first in line always among them), or `'fifo'`, in line order (see
   * `PullOptions.batching`). The memory and SQLite backends apply it; Redis accepts it and leases
   * in line order (see docs/deploy.md).
   * Default `'fifo'`.
   */
  readonly batching?: Batching
}

/** The outcome of one leased item, handed to `finish`. */
export interface ItemResult {
  /** Index of the item in `lease.items`. */
  readonly index: number
  /** Outputs as JSON text, or an `{"error","code"}` body. */
  readonly outputs: string
  /** Whether the item counts toward the bill (a model ran on it). */
  readonly billable: boolean
  /** The outputs are an `{"error","code"}` body. Passed on to a sink. */
  readonly failed?: boolean
  /** Seconds the model took for the batch. Passed on to a sink (the HTTP `x-compute-time`). */
  readonly computeSeconds?: number
}

/** What `finish` did. */
export interface FinishOutcome {
  /** Items finished by this call (0 when the lease was no longer held: a late or repeated finish). */
  readonly finished: number
  /** Of them, items billed (billable and not billed before). */
  readonly billed: number
  /** Undelivered results evicted to stay within the byte budgets (lost). */
  readonly lost: number
}

/**
 * A result routed to a node: for a stream route, `{owner, id}` (the node then takes it from the
 * store with `claim` / `takeUndelivered` when one of its streams can); for a sink route, the
 * outputs too (the store keeps them only when `retain`).
 */
export interface Routed {
  readonly owner: string
  readonly id: string
  readonly sink?: string
  readonly outputs?: string
  /** From the item's {@link ItemResult}, for a sink. */
  readonly failed?: boolean
  /** From the item's {@link ItemResult}, for a sink. */
  readonly computeSeconds?: number
  /**
   * A stream result over the whole retained budget: the store keeps an error body in its place
   * (undelivered), and `outputs` holds the result, to be written once, untracked, by a stream that
   * can take it now (which then acknowledges the id).
   */
  readonly oversize?: boolean
}

/** What the store knows of one (owner, id). */
export type IdState = 'unknown' | 'pending' | 'done'

/** Per-owner counters (status messages, metrics). */
export interface OwnerCounts {
  queued: number
  processing: number
  /** Finished since the backend started (memory) or retained (durable backends). */
  done: number
  undelivered: number
}

/** A tenant's bytes in the store. */
export interface TenantBytes {
  /** Inputs of items submitted and not finished. */
  readonly queued: number
  /** Results waiting for a stream (in-flight ones not counted). */
  readonly undelivered: number
}

/** Depth of the whole backend. */
export interface StateStats {
  queued: number
  processing: number
  /** Bytes of all retained results. */
  retainedBytes: number
  /** Items failed by the delivery limit since start (dead letters). */
  deadLettered: number
}

/** One line of the ledger. */
export interface LedgerEntry {
  readonly tenant: string
  readonly model: string
  readonly items: number
}

/** A worker process of a cluster, as it announces itself (`StateBackend.announceWorker`). */
export interface WorkerInfo {
  readonly node: string
  /** Model ids it serves. */
  readonly models: readonly string[]
  /** Batches it runs at once. */
  readonly workers: number
}

/** What `reclaim` did. */
export interface ReclaimOutcome {
  /** Items put back in the queue (their lease expired). */
  readonly requeued: number
  /** Items failed with `ERR_DELIVERY_LIMIT` (leased `maxDeliveries` times already). */
  readonly deadLettered: number
}

/** The state layer's seam: one implementation per backend (memory, SQLite, Redis). */
export interface StateBackend {
  /** Dedupe and enqueue, one step per item: the outcomes in the order of `items`. */
  submit(items: readonly SubmitItem[], options?: SubmitOptions): Promise<SubmitOutcome[]>
  /**
   * Waits for a batch of one group for `consumer`, chosen by the fair-share rule, up to `maxBatch`
   * items, as soon as the group is full or its oldest item waited `maxWaitMs`. `null` when the
   * backend closes or `signal` aborts.
   */
  lease(consumer: string, options: LeaseOptions): Promise<StateLease | null>
  /** Makes waiting leases look again: a group that `accept` refused may be taken now. */
  wake(): void
  /** Renews a lease for `ms` from now; false when it is no longer held (reclaimed or finished). */
  extend(lease: StateLease, ms: number): Promise<boolean>
  /**
   * One step: stores the results, bills each billable (owner, id) at most once, routes them (see
   * `subscribe`) and ends the lease. Items not in `results` are handed back to the queue. A lease
   * no longer held (reclaimed, finished, released) changes nothing.
   */
  finish(lease: StateLease, results: readonly ItemResult[]): Promise<FinishOutcome>
  /** Hands a lease's items back to the front of the queue, unbilled. */
  release(lease: StateLease): Promise<void>
  /**
   * Takes back leases expired by `now`: their items go back to the queue, or — leased
   * `maxDeliveries` times already — finish with `ERR_DELIVERY_LIMIT` (routed, not billed).
   */
  reclaim(now: number, maxDeliveries: number): Promise<ReclaimOutcome>
  /**
   * Results routed to `node`, handed to `listener` after each transition that routes some: its sinks'
   * results, and stream results of the items it submitted and of every owner attached to it.
   */
  subscribe(node: string, listener: (routed: Routed[]) => void): () => void
  /**
   * `node` has a stream of `owner` open (`open` true) or no longer (false): stream results of the
   * owner finished from now on are routed to it too, whichever node submitted the items (a client
   * that reconnected to another front-end hears of them there). A node that dies without saying so
   * is forgotten after a while (Redis: {@link PRESENCE_TTL_MS}); the results stay in the store.
   */
  attach(node: string, owner: string, open: boolean): Promise<void>
  /** State of ids, with the retained outputs of finished ones. */
  lookup(owner: string, ids: readonly string[]): Promise<Array<{ state: IdState; outputs?: string }>>
  /** Moves one undelivered result to in flight; its outputs, or undefined when it was not undelivered. */
  claim(owner: string, id: string): Promise<string | undefined>
  /** Moves up to `max` undelivered results of `owner` (oldest first) to in flight. */
  takeUndelivered(owner: string, max: number): Promise<Array<[id: string, outputs: string]>>
  /** A delivery failed: these in-flight results are undelivered again. */
  returnUndelivered(owner: string, ids: readonly string[]): Promise<void>
  /** The client has these results: delivered (evicted first when bytes run short). */
  acknowledge(owner: string, ids: readonly string[]): Promise<void>
  /** Forgets a finished id entirely (a result handed to its requester, not to be kept). */
  forget(owner: string, id: string): Promise<void>
  counts(owner: string): Promise<OwnerCounts>
  tenantBytes(tenant: string): Promise<TenantBytes>
  stats(): Promise<StateStats>
  /** The ledger: items billed per tenant and model. */
  ledger(tenant?: string): Promise<LedgerEntry[]>
  /** Items billed to one owner (a job's bill). */
  billedTo(owner: string): Promise<number>
  /** Drops results past their retention; returns how many undelivered ones were lost. */
  sweep(now: number): Promise<number>
  /**
   * Optional (a backend shared by processes): a worker process says it serves `info.models` for
   * the next `ttlMs` (renewed while it runs; `ttlMs` 0 withdraws it). Front-ends read
   * {@link StateBackend.workersOnline} to tell a stream whose model no worker serves.
   */
  announceWorker?(info: WorkerInfo, ttlMs: number): Promise<void>
  /** Optional: the worker processes whose announcement has not run out. */
  workersOnline?(): Promise<WorkerInfo[]>
  /** Wakes pending leases with `null`; further submits fail with `ERR_SHUTTING_DOWN`. */
  close(): Promise<void>
}
