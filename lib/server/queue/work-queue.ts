/**
 * The work queue between the stream endpoints and the workers. The memory implementation is the
 * embedded default; a Redis Streams one (consumer groups) implements the same contract, which is
 * why every call is async and a pulled batch is a lease that is acked or released.
 */
import type { Compute, Parameters } from '../../models/pipeline.js'
import { parametersKey } from '../../protocol.js'
import type { Batching } from './length-batching.js'

/** One accepted inference item. */
export interface WorkItem {
  /** Id of the tenant that owns the item (results and the bill belong to it; see tenants.ts). */
  tenant: string
  /** Tenant and model the id is scoped to (see `ownerKey`): results and duplicates are per owner. */
  owner: string
  /** Item id, unique per owner. */
  id: string
  /** Model id. */
  model: string
  /** `cpu` or `gpu` from the stream URL. */
  compute: Compute
  inputs: unknown
  parameters: Parameters | undefined
  /** Grouping key: model, compute and stable parameters. Items batch only within one group. */
  group: string
  /** `Date.now()` at enqueue, for batching waits and queue-time metrics. */
  enqueuedAt: number
  /**
   * Server-local id of the sender: for a stream item the connection, whose result goes there first
   * when still open; for a `direct` item the waiting request (a result sink of the hub).
   */
  origin?: number
  /**
   * How the result travels. `stream` (default): kept in the store for the owner and handed to its
   * streams. `direct`: handed only to the `origin` sink (a classic HTTP request), then forgotten —
   * never retained, never sent on a stream. (Scale-out: origin ids are local to the front-end
   * node that queued the item, so a shared queue must route direct results back to that node.)
   */
  delivery?: 'stream' | 'direct'
  /**
   * A `direct` item whose result is also retained under its id, as delivered (a classic HTTP
   * request with an `Idempotency-Key`): a retry with the same key gets it without running again.
   */
  retain?: boolean
  /** The queue's cache of `inputLength(inputs)` (length-aware batching), set when the item is pushed. */
  lengthHint?: number
}

/**
 * The grouping key of items (`WorkItem.group`): model, compute and parameters compared with sorted
 * keys. Every producer (streams, HTTP requests) must use it, or their items would not batch together.
 */
export function groupKey(model: string, compute: string, parameters: Parameters | undefined): string {
  return `${model}\n${compute}\n${parametersKey(parameters)}`
}

/** A batch handed to one worker: ack it when done, release it to hand it back. */
export interface Lease {
  readonly id: number
  readonly items: WorkItem[]
  /**
   * The tenant the batch was chosen for (fair share): it holds the lease. The batch may be topped
   * up with other tenants' items of the same group; they ride along and count for nobody.
   */
  readonly tenant: string
}

/** Batching settings of one pull. */
export interface PullOptions {
  /** Most items in one batch. */
  maxBatch: number
  /** How long the oldest item of a group may wait for the batch to fill, in ms. */
  maxWaitMs: number
  /** Ends the wait; the pull then resolves `null`. */
  signal?: AbortSignal
  /**
   * Asked once about the group a pull is about to take, with its oldest item, right before it is
   * taken (synchronously, so the answer may claim it): `false` leaves the group queued, in order,
   * and the pull serves another. The workers refuse a model that is loading while one of them
   * already waits for it. Default: every group is taken.
   */
  accept?: (head: WorkItem) => boolean
  /**
   * Most leases one tenant may hold at once (by `Lease.tenant`); a tenant at it is passed over
   * until one of its leases ends. The workers pass `leaseCap(workers)` (./fair-share.ts), so no
   * tenant can hold every worker. Default: no cap.
   */
  maxLeasesPerTenant?: number
  /**
   * An item for which this is true is leased in a batch of its own, and never joins another's:
   * the state backends pass "its lease ran out before", so after a worker died or hung on a batch
   * each of its items runs alone, and an item that kills its worker fails by itself. Default: none.
   */
  alone?: (item: WorkItem) => boolean
  /**
   * How the batch is picked from the group (./length-batching.ts). `'fifo'`: the chosen tenant's
   * items in line order, then other tenants' oldest. `'length'`: among the chosen tenant's next
   * `maxBatch × LENGTH_WINDOW_BATCHES` items of the group, its first in line and the others nearest
   * its length (`inputLength`: the batch that pads least), topped up with the other tenants'
   * items that pad least. The tenant's first in line is in every batch either way, so an item waits
   * at most as many of its tenant's batches of the group as there are items before it in line.
   * Default `'fifo'`.
   */
  batching?: Batching
}

/** Queue depth. */
export interface QueueStats {
  /** Items waiting for a worker. */
  queued: number
  /** Items leased to a worker and not yet acked. */
  processing: number
}

/** Contract of a work queue. */
export interface WorkQueue {
  /** Appends items (in the order given). */
  push(items: WorkItem[]): Promise<void>
  /**
   * Waits for a batch of items of one group: up to `maxBatch`, taken as soon as the group is full
   * or its oldest item has waited `maxWaitMs`. Which group is served follows the fair-share rule
   * of ./fair-share.ts (tenants take turns; each tenant's send order is kept within a group).
   * Resolves `null` when the queue closes or `signal` aborts.
   */
  pull(options: PullOptions): Promise<Lease | null>
  /** The batch is done: forget it. */
  ack(lease: Lease): Promise<void>
  /** Hands a batch back, to the front of the queue, for another worker (shutdown, crash). */
  release(lease: Lease): Promise<void>
  /** Makes pending pulls look again (a skipped group may be served now). */
  notify(): void
  /** Current depth. */
  stats(): QueueStats
  /** Wakes every pending pull with `null` and refuses new work. */
  close(): Promise<void>
}
