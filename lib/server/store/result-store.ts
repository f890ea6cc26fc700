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

/** What the store knows of one (owner, id). */
export type IdState = 'unknown' | 'pending' | 'done'

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

/** Contract of a result store (memory now; a shared one for scale-out keeps the same meaning). */
export interface ResultStore {
  /** Registers an id. `new`: it must be queued; `pending`: it already is; `done`: a result is retained. */
  admit(owner: string, id: string): 'new' | 'pending' | 'done'
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
  /** Stores a finished result and marks it undelivered. */
  complete(owner: string, id: string, outputs: unknown): void
  /** State of an id, with the retained outputs when done. */
  lookup(owner: string, id: string): { state: IdState; outputs?: unknown }
  /** Whether results of the owner wait for a stream. */
  hasUndelivered(owner: string): boolean
  /** Removes one id from the undelivered set; false when it was not there. */
  claim(owner: string, id: string): boolean
  /** Removes up to `max` undelivered results (oldest first) for delivery. */
  takeUndelivered(owner: string, max: number): Array<[id: string, outputs: unknown]>
  /** A delivery failed (socket closed, v1 result unacked): mark these undelivered again. */
  returnUndelivered(owner: string, ids: Iterable<string>): void
  /** The owner's counters (zeros for an unknown owner). */
  counts(owner: string): OwnerCounts
  /** Owners that have pending or undelivered items. */
  busyOwners(): string[]
  /** Drops results past their TTL; returns how many undelivered ones were lost. */
  sweep(now?: number): number
}
