/**
 * Per-owner bookkeeping (an owner is a token and a model, see {@link ownerKey}) behind exactly-once processing and recovery: which ids are pending,
 * which finished results are retained (for duplicates and resume), which wait for a stream.
 */

/**
 * The key results and ids are kept under: a token's ids are scoped per model, so the same id may
 * be used on streams of two models (the original examples number items from 0 on every stream),
 * and a result only ever goes to a stream of its own model.
 */
export function ownerKey(tenant: string, model: string): string {
  return `${tenant}\n${model}`
}

/**
 * The owner of classic HTTP requests (`POST /models/{model}`) of a token: a space of its own, apart
 * from the token's streams of that model, so an HTTP item's result can never reach a stream and
 * streams' ids, counts and flow control are not touched by HTTP traffic. (Tokens never contain
 * whitespace, so no stream owner can be equal to it.)
 */
export function httpOwnerKey(tenant: string, model: string): string {
  return `${tenant} http\n${model}`
}

/**
 * The tenant of an owner key ({@link ownerKey} or {@link httpOwnerKey}): byte budgets are per
 * tenant, over all its models and its HTTP traffic.
 */
export function tenantOfOwner(owner: string): string {
  const nl = owner.indexOf('\n')
  const head = nl < 0 ? owner : owner.slice(0, nl)
  return head.endsWith(' http') ? head.slice(0, -5) : head
}

/** What the store knows of one (owner, id). */
export type IdState = 'unknown' | 'pending' | 'done'

/**
 * What {@link ResultStore.admit} decided. `new`: it must be queued; `pending`: the same item is
 * queued or running; `done`: the same item's result is retained; `conflict`: the id is known with
 * another fingerprint (other inputs or parameters) — the item must fail with `ERR_ID_CONFLICT`,
 * not run; `overloaded`: admitting it would put the tenant over `maxQueuedBytes` (nothing changed).
 */
export type AdmitResult = 'new' | 'pending' | 'done' | 'conflict' | 'overloaded'

/** Details of one admission. */
export interface AdmitOptions {
  /**
   * Fingerprint of the item's (inputs, parameters) — see `payloadFingerprint` in protocol.ts —
   * kept with the id while it is pending or retained. Undefined: not checked (a server-generated
   * id cannot be reused), and an undefined fingerprint matches any.
   */
  fingerprint?: string
  /** Bytes of the inputs (as JSON), counted in the tenant's queued bytes until the item finishes. Default 0. */
  bytes?: number
  /**
   * Refuse with `overloaded` when the tenant already has queued bytes and these would take it over
   * this (an item alone over it is still admitted when nothing is queued, so it is never stuck).
   * Default: no check (streams are held back by not reading their sockets instead).
   */
  maxQueuedBytes?: number
}

/** What {@link ResultStore.complete} did. */
export interface CompleteResult {
  /**
   * The result alone was over the retained budget: it is not retained. The store keeps an
   * `ERR_LIMIT_EXCEEDED` error body for the id instead (what duplicates and resume get); the
   * caller may hand the real outputs once to a stream that can take them now.
   */
  oversize: boolean
  /** Undelivered results evicted by this call to stay within the budgets (lost). */
  lost: number
}

/** Bytes a tenant holds in the store. */
export interface TenantBytes {
  /** Inputs of items admitted and not finished (queued or running). */
  readonly queued: number
  /**
   * Results finished and waiting for a stream. Results handed to a stream and not yet acked are
   * not counted: flow control must never stop reading the acks that release them (each stream
   * bounds those itself).
   */
  readonly undelivered: number
}

/** Per-owner counters reported in status messages and metrics. */
export interface OwnerCounts {
  /** Accepted, waiting for a worker. */
  queued: number
  /** Leased to a worker. */
  processing: number
  /** Finished since the server started. */
  done: number
  /** Finished results waiting for a stream of the owner. */
  undelivered: number
}

/**
 * Contract of a result store (memory now; a shared one for scale-out keeps the same meaning).
 *
 * Results are kept as JSON text (the serialized `outputs`): they are serialized once, when stored,
 * and written to sockets as they are, and their size is the text's length (UTF-16 code units: bytes for ASCII).
 *
 * The rules live in the transitions, so every backend applies them the same way:
 * - exactly-once with the idempotency-key rule: `admit` compares the fingerprint of a known id;
 * - byte accounting: `admit` adds the inputs' bytes to the tenant's queued bytes, `complete`,
 *   `drop` and `forget` take them off; `complete` adds the result's bytes to the retained bytes and
 *   the tenant's undelivered bytes, handing it to a stream (`claim`, `takeUndelivered`) or
 *   `acknowledge` takes them off, `returnUndelivered` adds them again;
 * - eviction: after `complete`, retained bytes are at most `maxRetainedBytes` (oldest delivered
 *   results first, then oldest undelivered ones, which count as lost); per owner at most
 *   `maxRetained` results (plus a small slack) and none older than the TTL (`sweep`).
 *
 * A retained result is in one of three delivery states: undelivered (waiting for a stream),
 * in flight (`claim` / `takeUndelivered` handed it to a stream; not acked) and delivered
 * (`acknowledge`). `returnUndelivered` puts in-flight ones back.
 */
export interface ResultStore {
  /** Registers an id (see {@link AdmitResult}). */
  admit(owner: string, id: string, options?: AdmitOptions): AdmitResult
  /** A worker took the item. */
  markRunning(owner: string, id: string): void
  /** Forgets a pending id that was never queued (rejected before the queue). */
  drop(owner: string, id: string): void
  /**
   * Forgets an id entirely — pending or running state, retained result, undelivered mark — without
   * counting it as lost. For an item whose result was handed straight to its requester (a
   * classic HTTP request) and must not be retained or delivered to anyone else. Counts the id as
   * done when it was pending (it finished).
   */
  forget(owner: string, id: string): void
  /**
   * Stores a finished result (`outputs` as JSON text) and marks it undelivered — or, with
   * `delivered`, delivered already (a result handed straight to its requester and kept for retries:
   * one transition, never waiting for a stream).
   */
  complete(owner: string, id: string, outputsJson: string, options?: { delivered?: boolean }): CompleteResult
  /** State of an id, with the retained outputs (JSON text) when done. */
  lookup(owner: string, id: string): { state: IdState; outputs?: string }
  /** Whether results of the owner wait for a stream. */
  hasUndelivered(owner: string): boolean
  /** Moves one id from undelivered to in flight; false when it was not undelivered. */
  claim(owner: string, id: string): boolean
  /** Moves up to `max` undelivered results (oldest first) to in flight, for delivery. */
  takeUndelivered(owner: string, max: number): Array<[id: string, outputsJson: string]>
  /** A delivery failed (socket closed, v1 result unacked): mark these undelivered again. */
  returnUndelivered(owner: string, ids: Iterable<string>): void
  /** The client has these results (v1 ack, or a legacy write completed): delivered. */
  acknowledge(owner: string, ids: Iterable<string>): void
  /** The owner's counters (zeros for an unknown owner). */
  counts(owner: string): OwnerCounts
  /** A tenant's queued and undelivered bytes (zeros for an unknown tenant). */
  tenantBytes(tenant: string): TenantBytes
  /** Bytes of all retained results. */
  retainedBytes(): number
  /** Owners that have pending or undelivered items. */
  busyOwners(): string[]
  /** Drops results past their TTL; returns how many undelivered ones were lost. */
  sweep(now?: number): number
}
